"""One IMAP connection: states, dispatch, and the untagged updates between commands.

States follow RFC 3501 §3: not authenticated → authenticated → selected → logout.
Commands run one at a time in the order they came. After each command, before its
tagged response, the session looks at the selected folder again and reports what
others changed: EXPUNGE (not during FETCH, STORE, SEARCH — §7.4.1), EXISTS, RECENT
and FETCH FLAGS. Command handlers live in `commands/` and see the session through
the small API below (`untagged`, `messages`, `require_view`, `flags_of`, …).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import ipaddress
import ssl
from typing import TYPE_CHECKING

from mailops.runtime.imap import commands as _commands  # noqa: F401  (registers handlers)
from mailops.runtime.imap import pack
from mailops.runtime.imap.conn import Closed, Conn, TooBig
from mailops.runtime.imap.dispatch import (
    AUTHENTICATED,
    COMMANDS,
    NOT_AUTHENTICATED,
    SELECTED,
    No,
)
from mailops.runtime.imap.parse import (
    BadCommand,
    SequenceSet,
    TaggedBad,
    parse_command,
    sequence_set_of,
)
from mailops.runtime.log import log
from mailops.runtime.store import FolderView, Mailbox, Message, StoreError, Subscription

if TYPE_CHECKING:
    from mailops.runtime.directory import Account
    from mailops.runtime.imap.server import ImapService

MAX_BAD_COMMANDS = 20  # in a row; then the client is not speaking IMAP
MAX_AUTH_FAILURES = 3
# Command rate: a client may run this many commands a second, then it is slowed
# down (never refused: sync clients pipeline hundreds of STOREs legitimately).
RATE_PER_SECOND = 2000
PRE_LOGIN_TIMEOUT = 60.0  # seconds of silence allowed before logging in
# Commands during which EXPUNGE must not be sent (RFC 3501 §7.4.1); their UID forms may.
_NO_EXPUNGE = frozenset({"FETCH", "STORE", "SEARCH"})


class Session:
    def __init__(self, service: ImapService, conn: Conn, implicit_tls: bool, client: str):
        self.service = service
        self.conn = conn
        self.tls = implicit_tls
        self.client = client
        self.account: Account | None = None
        self.mailbox: Mailbox | None = None
        self.view: FolderView | None = None
        self.subscription: Subscription | None = None
        self.enabled: set[str] = set()  # ENABLE'd extensions (CONDSTORE, UTF8=ACCEPT, …)
        self.busy = False
        self.bad_commands = 0
        self.auth_failures = 0
        self.closing: str | None = None  # BYE text: the session ends after this command
        self.logged_out = False  # LOGOUT answered: the session ends
        self.tagged_done = False  # the handler sent its own tagged OK (STARTTLS, COMPRESS)
        self._window_start = 0.0  # command rate: start and count of the current second
        self._window_count = 0

    # ------------------------------------------------------------ state

    @property
    def state(self) -> str:
        if self.account is None:
            return NOT_AUTHENTICATED
        return SELECTED if self.view is not None else AUTHENTICATED

    @property
    def utf8(self) -> bool:
        return "UTF8=ACCEPT" in self.enabled

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.enabled

    def enable_condstore(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162 §3.1): from now on MODSEQ is reported,
        and the client learns where the selected folder stands."""
        if self.condstore:
            return
        self.enabled.add("CONDSTORE")
        if self.view is not None:
            self.untagged(b"OK [HIGHESTMODSEQ %d] CONDSTORE enabled" % self.view.highestmodseq)

    @property
    def qresync(self) -> bool:
        """RFC 7162: expunges are reported as VANISHED (UIDs), not EXPUNGE."""
        return "QRESYNC" in self.enabled

    def plaintext_ok(self) -> bool:
        """Passwords only over TLS, or from loopback when the host config allows it."""
        if self.tls:
            return True
        if not self.service.config().plaintext_auth_on_loopback:
            return False
        try:
            return ipaddress.ip_address(self.client).is_loopback
        except ValueError:
            return False

    def starttls_available(self) -> bool:
        return not self.tls and self.service.tls() is not None

    # ------------------------------------------------------------ output

    def untagged(self, line: bytes | str) -> None:
        if isinstance(line, str):
            line = line.encode("utf-8", "surrogateescape")
        self.conn.write(b"* " + line + b"\r\n")

    def send(self, data: bytes) -> None:
        """Raw bytes, already framed (a FETCH response with literals, say)."""
        self.conn.write(data)

    async def drain(self) -> None:
        """Let big responses (FETCH 1:*) go out as they are made, not all at the end."""
        if self.conn.pending >= 256 * 1024:
            await self.conn.flush()

    async def continuation(self, text: bytes = b"") -> bytes:
        """Send `+ text` and read the client's answer line (AUTHENTICATE, IDLE)."""
        self.conn.write(b"+ " + text + b"\r\n")
        await self.conn.flush()
        return (await self.conn.read_line()).rstrip(b"\r\n")

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        try:
            caps = " ".join(self.service.capabilities(self))
            self.untagged(f"OK [CAPABILITY {caps}] mailops IMAP4rev1 ready")
            await self.conn.flush()
            while not self.service.stopping:
                data = await self._read_command()
                await self._pace()
                self.busy = True
                try:
                    await self.execute(data)
                finally:
                    self.busy = False
                if self.closing or self.logged_out:
                    if self.closing:
                        self.untagged(f"BYE {self.closing}")
                    await self.conn.flush()
                    break
                await self.conn.flush()
        except Closed:
            pass
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass  # the client went away
        except Exception as exc:  # a bug: log it, never show a traceback to the client
            log("imap.error", client=self.client, user=self._address(), error=repr(exc))
            with contextlib.suppress(Exception):
                self.untagged("BYE Internal error, closing the connection")
                await asyncio.wait_for(self.conn.flush(), 5)
        finally:
            await self.close()

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._window_start >= 1.0:
            self._window_start, self._window_count = now, 0
        self._window_count += 1
        if self._window_count > RATE_PER_SECOND:
            await asyncio.sleep(self._window_start + 1.0 - now)

    async def _read_command(self) -> bytes:
        timeout = self.service.idle_timeout()
        if self.account is None:  # RFC 3501 §5.4 asks 30 minutes of logged-in clients only
            timeout = min(timeout, PRE_LOGIN_TIMEOUT)
        while True:
            try:
                async with asyncio.timeout(timeout):
                    return await self.conn.read_command(self.service.max_literal())
            except TimeoutError:
                log("imap.timeout", client=self.client, user=self._address())
                self.untagged("BYE Disconnected for inactivity")
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.conn.flush(), 5)
                raise Closed from None
            except TooBig as exc:
                words = exc.head.split(b" ", 2)
                tag = words[0].decode("ascii", "replace") or "*"
                if len(words) > 1 and words[1].upper() == b"APPEND":
                    self._tagged(tag, "NO", exc.text, "TOOBIG")  # RFC 7889
                else:
                    await self._bad(tag, exc.text)
                await self.conn.flush()

    async def execute(self, data: bytes) -> None:
        try:
            cmd = parse_command(data, utf8=self.utf8)
        except TaggedBad as exc:
            await self._bad(exc.tag, str(exc))
            return
        except BadCommand as exc:
            await self._bad("*", str(exc))
            return
        entry = COMMANDS.get(cmd.name)
        if entry is None:
            await self._bad(cmd.tag, f"unknown command {cmd.name}")
            return
        if self.state not in entry.states:
            await self._bad(cmd.tag, f"{cmd.name} is not allowed in the {self.state} state")
            return
        try:
            text = await entry.handler(self, cmd)
        except No as exc:
            self.report_updates(expunges=cmd.name not in _NO_EXPUNGE)
            self._tagged(cmd.tag, "NO", exc.text, exc.code)
        except BadCommand as exc:
            await self._bad(cmd.tag, str(exc))
        except StoreError as exc:
            self._tagged(cmd.tag, "NO", str(exc))
        else:
            self.bad_commands = 0
            if self.tagged_done:
                self.tagged_done = False
                return
            self.report_updates(expunges=cmd.name not in _NO_EXPUNGE)
            self._tagged(cmd.tag, "OK", text or f"{cmd.name} completed")

    def _tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        head = f"{tag} {status} " + (f"[{code}] " if code else "")
        self.conn.write((head + text).encode("utf-8", "surrogateescape") + b"\r\n")

    async def _bad(self, tag: str, text: str) -> None:
        self.bad_commands += 1
        self._tagged(tag, "BAD", text)
        if self.bad_commands >= MAX_BAD_COMMANDS:
            self.untagged("BYE Too many bad commands")
            await self.conn.flush()
            raise Closed

    # ------------------------------------------------------------ the selected folder

    def require_view(self) -> FolderView:
        if self.view is None:
            raise BadCommand("no mailbox selected")
        return self.view

    def messages(self, numbers: SequenceSet, uid: bool) -> list[tuple[int, Message]]:
        """(sequence number, message) for a sequence set of numbers or, with `uid`, UIDs."""
        messages = self.require_view().messages
        if uid:
            uids = [m.uid for m in messages]
            return [(i + 1, messages[i]) for i in _positions(uids, numbers.pick(uids))]
        if not messages:
            return []
        return [(n, messages[n - 1]) for n in numbers.numbers(len(messages))]

    def flags_of(self, message: Message) -> bytes:
        """The FLAGS list of a message as this session sees it (\\Recent included)."""
        flags = message.flags
        if self.view is not None and message.uid in self.view.recent:
            flags = flags | {"\\Recent"}
        return pack.flag_list(flags)

    def report_updates(self, expunges: bool = True) -> None:
        """Untagged responses for what changed in the selected folder since last time."""
        view = self.view
        if view is None:
            return
        before = view.messages
        try:
            changes = view.refresh(expunges)
        except StoreError:
            return  # the folder went away: the next command that needs it says so
        if changes.expunged and self.qresync:
            gone = sorted(before[seq - 1].uid for seq in changes.expunged)
            self.untagged("VANISHED " + sequence_set_of(gone))
        else:
            for offset, seq in enumerate(changes.expunged):
                self.untagged(b"%d EXPUNGE" % (seq - offset))
        if changes.added:
            self.untagged(b"%d EXISTS" % len(view.messages))
            self.untagged(b"%d RECENT" % len(view.recent))
        if changes.changed:
            position = {m.uid: n for n, m in enumerate(view.messages, 1)}
            for message in changes.changed:
                self.untagged(self.flags_response(position[message.uid], message, uid=True))

    def flags_response(self, seq: int, message: Message, uid: bool) -> bytes:
        line = b"%d FETCH (FLAGS %s" % (seq, self.flags_of(message))
        if uid:
            line += b" UID %d" % message.uid
        if self.condstore:
            line += b" MODSEQ (%d)" % message.modseq
        return line + b")"

    async def select(self, name: str, readonly: bool) -> FolderView:
        """Open a folder for this session, closing any other first (RFC 3501 §6.3.1)."""
        self.unselect()
        assert self.mailbox is not None
        view = await asyncio.to_thread(self.mailbox.select, name, readonly=readonly, origin=self)
        self.view = view
        self.subscription = self.service.store().notifier.subscribe(view.key(), origin=self)
        return view

    def unselect(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None
        self.view = None

    # ------------------------------------------------------------ login

    async def login(self, user: str, password: str) -> None:
        """Check a password and open the mailbox; No on failure."""
        account = await self.service.authenticator().login(self.client, user, password)
        if account is None:
            self.auth_failures += 1
            log("imap.login_failed", client=self.client, user=user)
            if self.auth_failures >= MAX_AUTH_FAILURES:
                self.closing = "Too many failed logins"
            raise No("Authentication failed", "AUTHENTICATIONFAILED")
        try:
            self.mailbox = await asyncio.to_thread(
                self.service.store().open, account.domain, account.user, account.quota
            )
        except Exception as exc:
            log("imap.open_failed", user=account.address, error=repr(exc))
            raise No("Cannot open the mailbox, try again later", "UNAVAILABLE") from None
        self.account = account
        log("imap.login", client=self.client, user=account.address, tls=self.tls)

    def _address(self) -> str | None:
        return self.account.address if self.account else None

    async def close(self) -> None:
        self.unselect()
        self.conn.close()
        if self.mailbox is not None:
            mailbox, self.mailbox = self.mailbox, None
            await asyncio.to_thread(self.service.store().release, mailbox)


def _positions(values: list[int], chosen: list[int]) -> list[int] | range:
    """Indexes in sorted `values` of the sorted members `chosen`."""
    if chosen:
        first = bisect.bisect_left(values, chosen[0])
        if values[first : first + len(chosen)] == chosen:
            return range(first, first + len(chosen))  # a run, like UID 1:*: no search
    return [bisect.bisect_left(values, v) for v in chosen]
