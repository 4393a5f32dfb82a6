"""Opening and closing a folder, and what is done to it as a whole: SELECT, EXAMINE,
CLOSE, UNSELECT, CHECK, EXPUNGE, UID EXPUNGE (RFC 4315) and IDLE (RFC 2177)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailops.runtime.imap.dispatch import AUTH, ONLY_SELECTED, No, command
from mailops.runtime.imap.parse import BadCommand, Command, Reader, SequenceSet, sequence_set_of
from mailops.runtime.store import NoSuchFolder, StoreError
from mailops.runtime.store.flags import DELETED, SEEN

if TYPE_CHECKING:
    from mailops.runtime.imap.session import Session

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
IDLE_KEEPALIVE = 120.0  # "* OK Still here" so NAT boxes keep an idle connection open


@command("SELECT", "EXAMINE", states=AUTH)
async def select(s: Session, cmd: Command) -> str | None:
    name = cmd.args.mailbox()
    resync = None
    if cmd.args.maybe_sp():
        resync = _select_params(s, cmd.args)
    cmd.args.end()
    readonly = cmd.name == "EXAMINE"
    if s.view is not None:
        s.unselect()
        s.untagged("OK [CLOSED] Previous mailbox closed")  # RFC 7162 §3.2.11
    try:
        view = await s.select(name, readonly)
    except NoSuchFolder:
        raise No(f"No mailbox named {name!r}", "NONEXISTENT") from None
    keywords = sorted({f for m in view.messages for f in m.flags if not f.startswith("\\")})
    flags = " ".join([*SYSTEM_FLAGS, *keywords])
    s.untagged(f"FLAGS ({flags})")
    permanent = "" if readonly else " ".join([*SYSTEM_FLAGS, *keywords, "\\*"])
    s.untagged(f"OK [PERMANENTFLAGS ({permanent})] Flags permitted")
    s.untagged(b"%d EXISTS" % len(view.messages))
    s.untagged(b"%d RECENT" % len(view.recent))
    unseen = next((n for n, m in enumerate(view.messages, 1) if SEEN not in m.flags), None)
    if unseen is not None:
        s.untagged(b"OK [UNSEEN %d] First unseen" % unseen)
    s.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % view.uidvalidity)
    s.untagged(b"OK [UIDNEXT %d] Predicted next UID" % view.uidnext)
    s.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % view.highestmodseq)
    if resync is not None and resync.uidvalidity == view.uidvalidity:
        _resynchronise(s, resync)
    mode = "READ-ONLY" if readonly else "READ-WRITE"
    return f"[{mode}] {cmd.name} completed"


@dataclass(frozen=True)
class Resync:
    """SELECT's QRESYNC parameters (RFC 7162 §3.2.5): what the client knew then."""

    uidvalidity: int
    modseq: int
    known: SequenceSet | None


def _select_params(s: Session, args: Reader) -> Resync | None:
    resync = None

    def param() -> None:
        nonlocal resync
        name = args.atom().upper()
        if name == "CONDSTORE":  # RFC 7162 §3.1.8: SELECT (CONDSTORE) enables it
            s.enabled.add("CONDSTORE")
        elif name == "QRESYNC" and s.qresync:
            args.sp()
            resync = args.parenthesized(lambda: _qresync_value(args))[-1]
        else:
            raise BadCommand(f"unknown SELECT parameter {name}")

    args.parenthesized(param)
    return resync


def _qresync_value(args: Reader) -> Resync:
    """uidvalidity SP mod-sequence [SP known-uids [SP seq-match-data]], read at once."""
    uidvalidity = args.nz_number()
    args.sp()
    modseq = args.number()
    known = None
    if args.maybe_sp():
        known = args.sequence_set()
        if args.maybe_sp():  # seq-match-data only saves work we do not need to save
            args.parenthesized(args.sequence_set)
    return Resync(uidvalidity, modseq, known)


def _resynchronise(s: Session, resync: Resync) -> None:
    """What changed since the client's last look: VANISHED (EARLIER), then FETCH."""
    view = s.require_view()
    gone = view.expunged_since(resync.modseq)
    if resync.known is not None:
        gone = resync.known.pick(gone)
    if gone:
        s.untagged("VANISHED (EARLIER) " + sequence_set_of(gone))
    for seq, message in enumerate(view.messages, 1):
        if message.modseq > resync.modseq:
            s.untagged(s.flags_response(seq, message, uid=True))


@command("CLOSE", states=ONLY_SELECTED)
async def close(s: Session, cmd: Command) -> str | None:
    """Remove \\Deleted messages without telling (RFC 3501 §6.4.2), then deselect."""
    cmd.args.end()
    view = s.require_view()
    if not view.readonly:
        doomed = [m.uid for m in view.messages if DELETED in m.flags]
        if doomed:
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(view.expunge, doomed)
    s.unselect()
    return None


@command("UNSELECT", states=ONLY_SELECTED)
async def unselect(s: Session, cmd: Command) -> str | None:
    cmd.args.end()
    s.unselect()
    return None


@command("CHECK", states=ONLY_SELECTED)
async def check(s: Session, cmd: Command) -> str | None:
    cmd.args.end()  # every change is on disk when it is answered: nothing to do
    return None


@command("EXPUNGE", "UID EXPUNGE", states=ONLY_SELECTED)
async def expunge(s: Session, cmd: Command) -> str | None:
    """Remove \\Deleted messages (all, or those in a UID set: RFC 4315). The EXPUNGE
    responses come from the session's update report before the tagged OK."""
    chosen = None
    if cmd.uid:
        chosen = set(cmd.args.sequence_set().pick([m.uid for m in s.require_view().messages]))
    cmd.args.end()
    view = s.require_view()
    if view.readonly:
        raise No("Mailbox is open read-only", "READ-ONLY")
    doomed = [
        m.uid
        for m in view.messages
        if DELETED in m.flags and (chosen is None or m.uid in chosen)
    ]
    if doomed:
        await asyncio.to_thread(view.expunge, doomed)
    return None


@command("IDLE", states=AUTH)
async def idle(s: Session, cmd: Command) -> str | None:
    """Report changes as they happen until the client says DONE (RFC 2177)."""
    cmd.args.end()
    s.report_updates()
    s.send(b"+ idling\r\n")
    await s.conn.flush()
    reading = asyncio.ensure_future(s.conn.read_line())
    deadline = asyncio.get_running_loop().time() + s.service.idle_timeout()
    try:
        while True:
            waiters: set[asyncio.Future] = {reading}
            if s.subscription is not None:
                waiters.add(asyncio.ensure_future(s.subscription.wait()))
            loop = asyncio.get_running_loop()
            done, pending = await asyncio.wait(
                waiters,
                timeout=min(max(deadline - loop.time(), 0), IDLE_KEEPALIVE),
                return_when=asyncio.FIRST_COMPLETED,
            )
            for waiter in pending - {reading}:
                waiter.cancel()
            if reading in done:
                line = reading.result().rstrip(b"\r\n")
                if line.upper() != b"DONE":
                    raise BadCommand("expected DONE")
                return "IDLE terminated"
            if done:
                s.report_updates()
            elif loop.time() >= deadline:
                s.closing = "IDLE for too long"
                return "IDLE terminated"
            else:
                s.untagged("OK Still here")
            await s.conn.flush()
    finally:
        if not reading.done():
            reading.cancel()
