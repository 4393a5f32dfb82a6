"""Changing messages: STORE (±FLAGS[.SILENT], UNCHANGEDSINCE of RFC 7162), COPY and
MOVE (RFC 6851), with their UID forms and UIDPLUS's COPYUID (RFC 4315)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mailops.runtime.imap.dispatch import ONLY_SELECTED, No, command
from mailops.runtime.imap.parse import BadCommand, Command, sequence_set_of
from mailops.runtime.store import NoSuchFolder, OverQuota, StoreError
from mailops.runtime.store import flags as flagmod

if TYPE_CHECKING:
    from mailops.runtime.imap.session import Session

_MODES = {"FLAGS": "=", "+FLAGS": "+", "-FLAGS": "-"}


@command("STORE", "UID STORE", states=ONLY_SELECTED)
async def store(s: Session, cmd: Command) -> str | None:
    args = cmd.args
    numbers = args.sequence_set()
    args.sp()
    unchanged_since = None
    if args.maybe(b"("):
        args.expect(b"UNCHANGEDSINCE ")
        unchanged_since = args.number()
        args.expect(b")")
        args.sp()
        s.enable_condstore()
    item = args.atom().upper()
    silent = item.endswith(".SILENT")
    mode = _MODES.get(item.removesuffix(".SILENT"))
    if mode is None:
        raise BadCommand("expected FLAGS, +FLAGS or -FLAGS (optionally .SILENT)")
    args.sp()
    flags = _checked_flags(args.flags())
    args.end()
    view = s.require_view()
    if view.readonly:
        raise No("Mailbox is open read-only", "READ-ONLY")
    chosen = s.messages(numbers, cmd.uid)
    seq_of = {m.uid: seq for seq, m in chosen}
    now, refused = await asyncio.to_thread(
        view.store_flags, [m.uid for _, m in chosen], flags, mode, unchanged_since
    )
    for message in now:
        # RFC 7162 §3.1.3: with UNCHANGEDSINCE, FETCH is sent even when .SILENT.
        if not silent or unchanged_since is not None:
            s.untagged(s.flags_response(seq_of[message.uid], message, uid=cmd.uid))
    if refused:
        listed = sorted(refused) if cmd.uid else sorted(seq_of[u] for u in refused)
        return f"[MODIFIED {sequence_set_of(listed)}] Conditional STORE failed"
    return None


def _checked_flags(flags: list[str]) -> list[str]:
    for flag in flags:
        if flag.lower() == "\\recent":
            raise BadCommand("\\Recent cannot be stored")
        if not flagmod.valid_keyword(flag):
            raise BadCommand(f"invalid flag {flag}")
    return flags


@command("COPY", "UID COPY", "MOVE", "UID MOVE", states=ONLY_SELECTED)
async def copy(s: Session, cmd: Command) -> str | None:
    numbers = cmd.args.sequence_set()
    cmd.args.sp()
    dest = cmd.args.mailbox()
    cmd.args.end()
    view = s.require_view()
    moving = cmd.name.endswith("MOVE")
    if moving and view.readonly:
        raise No("Mailbox is open read-only", "READ-ONLY")
    uids = [m.uid for _, m in s.messages(numbers, cmd.uid)]
    if not uids:
        return "No messages" if cmd.uid else None
    try:
        validity, pairs = await asyncio.to_thread(view.move if moving else view.copy, uids, dest)
    except NoSuchFolder:
        raise No(f"No mailbox named {dest!r}", "TRYCREATE") from None
    except OverQuota as exc:
        raise No(str(exc), "OVERQUOTA") from None
    except StoreError as exc:
        raise No(str(exc), "CANNOT") from None
    if not pairs:
        return None
    code = (
        f"COPYUID {validity} {sequence_set_of([a for a, _ in pairs])} "
        f"{sequence_set_of([b for _, b in pairs])}"
    )
    if moving:  # RFC 6851 §4.3: COPYUID in an untagged OK, before the EXPUNGEs
        s.untagged(f"OK [{code}] Moved")
        return None
    return f"[{code}] COPY completed"
