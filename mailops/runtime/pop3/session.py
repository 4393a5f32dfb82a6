"""One POP3 session: AUTHORIZATION → TRANSACTION → UPDATE (RFC 1939 §3).

The session sees the INBOX as it was at login (a snapshot: mail delivered meanwhile
waits for the next session, as RFC 1939 expects of a locked maildrop). DELE only
marks; messages are removed in the UPDATE state, after QUIT, and nowhere else. A
dropped connection, a timeout or a shutdown removes nothing.

Command handlers are plain methods that answer at once (`Pop3Connection` calls them
straight from its read callback), except where a command must wait — for the
password check, the mailbox, TLS, a slow client, or the disk at QUIT: then the
handler returns an awaitable, which the connection runs before taking the next
command. Raising `SessionOver` ends the session after what was written is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO

from mailops.runtime.log import log
from mailops.runtime.pop3 import parse, wire
from mailops.runtime.pop3.parse import Bad, Command
from mailops.runtime.store import FolderView, Mailbox, Message, MessageGone, Store
from mailops.runtime.store.flags import SEEN

if TYPE_CHECKING:
    from mailops.runtime.directory import Account
    from mailops.runtime.pop3.connection import Pop3Connection
    from mailops.runtime.pop3.server import Pop3Service

MAX_AUTH_FAILURES = 3
MAX_BAD_COMMANDS = 10

PLAINTEXT_REFUSED = "-ERR [AUTH] Plain-text authentication needs TLS: use STLS first"
GONE = "-ERR [SYS/PERM] The message was removed by another session"

Pending = Awaitable[None] | None  # what a handler returns: None when it is done


class SessionOver(Exception):
    """The session is over (QUIT, too many errors, an error already answered)."""


class Pop3Session:
    def __init__(self, conn: Pop3Connection, service: Pop3Service) -> None:
        # A weak reference: the connection owns the session, and a cycle between the
        # two would keep the INBOX listing (some 100 bytes a message) in memory after
        # the session, until the cyclic garbage collector happens to run.
        self.conn = weakref.proxy(conn)
        self.service = service
        self.user: str | None = None  # from USER, waiting for PASS
        self.account: Account | None = None
        self.mailbox: Mailbox | None = None
        self.view: FolderView | None = None
        self.messages: list[Message] = []
        self.sizes: list[int] = []  # POP3 size of each message, by number - 1
        self.uids: list[str] | None = None  # UIDL of each message, once asked for
        self.live_size = 0  # octets of the messages not marked deleted
        self.deleted: set[int] = set()  # message numbers marked by DELE
        self.retrieved: set[int] = set()  # message numbers fully sent by RETR
        # The next message's RETR reply, made while the client reads the last one.
        self.ahead: tuple[int, bytes] | None = None
        self.last_retr = 0  # the message number of the last RETR
        self.auth_failures = 0
        self.bad_commands = 0

    # ------------------------------------------------------------ the connection's calls

    def greet(self) -> None:
        self.conn.send("+OK mailops POP3 ready")

    def handle(self, line: bytes) -> Pending:
        command = parse.parse_command(line)
        if isinstance(command, Bad):
            return self._bad(command.reason)
        table = _TRANSACTION if self.view else _AUTHORIZATION
        handler = table.get(command.name)
        if handler is None:
            return self._bad("Unknown command" if command.name not in _ALL else "Not allowed now")
        self.bad_commands = 0
        return handler(self, command)

    def timed_out(self) -> None:
        log("pop3.timeout", client=self.conn.client, user=self.address())
        self.conn.send("-ERR [SYS/TEMP] Disconnected for inactivity")

    def release_lease(self) -> None:
        if self.account is not None:
            account, self.account = self.account, None
            self.service.store().release_lease(account.address, "pop3")

    async def close_mailbox(self) -> None:
        self.ahead = None
        if self.mailbox is not None:
            mailbox, self.mailbox, self.view = self.mailbox, None, None
            await asyncio.to_thread(self.service.store().release, mailbox)

    def address(self) -> str | None:
        return self.account.address if self.account else None

    def _send(self, line: str) -> None:
        self.conn.send(line)

    def _bad(self, reason: str) -> None:
        self.bad_commands += 1
        self._send(f"-ERR {reason}")
        if self.bad_commands >= MAX_BAD_COMMANDS:
            self._send("-ERR Too many bad commands, closing the connection")
            raise SessionOver

    # ------------------------------------------------------------ AUTHORIZATION

    def _plaintext_ok(self) -> bool:
        if self.conn.tls:
            return True
        if not self.service.config().plaintext_auth_on_loopback:
            return False
        try:
            return ipaddress.ip_address(self.conn.client).is_loopback
        except ValueError:
            return False

    def _stls_available(self) -> bool:
        return not self.conn.tls and self.service.tls() is not None

    def capa(self, command: Command) -> None:
        lines = ["+OK Capability list follows", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE"]
        lines.append("PIPELINING")
        if self.view is None:
            if self._stls_available():
                lines.append("STLS")
            if self._plaintext_ok():
                lines += ["USER", "SASL PLAIN"]
        lines += ["IMPLEMENTATION mailops", "."]
        self._send("\r\n".join(lines))

    def stls(self, command: Command) -> Pending:
        context = self.service.tls()
        if self.conn.tls or context is None:
            self._send("-ERR TLS is already active" if self.conn.tls else "-ERR TLS not available")
            return None
        if self.conn.pending_input():
            # RFC 2595 §4 / CVE-2011-0411: anything pipelined after STLS was sent in the
            # clear and must not be taken as coming over TLS.
            self._send("-ERR Commands were pipelined after STLS, closing the connection")
            raise SessionOver
        self._send("+OK Begin TLS negotiation")
        # Read nothing more in the clear: the client's ClientHello may arrive before
        # the task below runs, and must reach the TLS layer, not our line buffer.
        self.conn.hold_input()
        return self._start_tls(context)

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        try:
            await self.conn.start_tls(context)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            log("pop3.tls_failed", client=self.conn.client, error=exc)
            raise SessionOver from None
        self.user = None  # RFC 2595 §4: forget what was said before TLS

    def user_cmd(self, command: Command) -> None:
        if not self._plaintext_ok():
            self._send(PLAINTEXT_REFUSED)
            return
        if not command.rest or len(command.rest) > 255:
            self._send("-ERR USER needs a user name")
            return
        self.user = command.rest.strip()
        self._send("+OK Send the password")

    def pass_cmd(self, command: Command) -> Pending:
        if not self._plaintext_ok():
            self._send(PLAINTEXT_REFUSED)
            return None
        if self.user is None:
            self._send("-ERR Send USER first")
            return None
        user, self.user = self.user, None
        return self._login(user, command.rest)

    def auth(self, command: Command) -> Pending:
        if not command.args:
            self._send("+OK Mechanisms follow\r\nPLAIN\r\n.")  # RFC 1734 style list
            return None
        if command.args[0].upper() != "PLAIN" or len(command.args) > 2:
            self._send("-ERR Unsupported authentication mechanism")
            return None
        if not self._plaintext_ok():
            self._send(PLAINTEXT_REFUSED)
            return None
        if len(command.args) == 2:
            return self._auth_plain(command.args[1])
        return self._auth_continued()

    async def _auth_continued(self) -> None:
        self._send("+ ")
        response = parse.strip_eol(await self.conn.read_line()).decode("ascii", "replace")
        if response == "*":
            self._send("-ERR Authentication cancelled")
            return
        login = self._auth_plain(response)
        if login is not None:
            await login

    def _auth_plain(self, response: str) -> Pending:
        blob = parse.decode_base64(response)
        credentials = parse.plain_credentials(blob) if blob is not None else None
        if credentials is None:
            self._send("-ERR [AUTH] Malformed PLAIN response")
            return None
        return self._login(*credentials)

    async def _login(self, user: str, password: str) -> None:
        account = await self.service.authenticator().login(self.conn.client, user, password)
        if account is None:
            self.auth_failures += 1
            log("pop3.login_failed", client=self.conn.client, user=user)
            self._send("-ERR [AUTH] Authentication failed")
            if self.auth_failures >= MAX_AUTH_FAILURES:
                self._send("-ERR Too many failed logins, closing the connection")
                raise SessionOver
            return
        store = self.service.store()
        if not store.acquire_lease(account.address, "pop3"):
            log("pop3.in_use", client=self.conn.client, user=account.address)
            self._send("-ERR [IN-USE] Mailbox is open in another POP3 session")
            return
        self.account = account
        try:
            self.mailbox, self.view = await asyncio.to_thread(_open_inbox, store, account, self)
        except Exception as exc:
            log("pop3.open_failed", user=account.address, error=repr(exc))
            self.release_lease()
            self._send("-ERR [SYS/TEMP] Cannot open the mailbox, try again later")
            return
        self.messages = list(self.view.messages)
        self.sizes = [wire.pop3_size(m) for m in self.messages]
        self.live_size = sum(self.sizes)
        log(
            "pop3.login",
            client=self.conn.client,
            user=account.address,
            messages=len(self.messages),
            tls=self.conn.tls,
        )
        self._send(f"+OK Logged in, {len(self.messages)} messages ({self.live_size} octets)")

    # ------------------------------------------------------------ TRANSACTION

    def _message(self, arg: str) -> int | None:
        """The number of the message `arg` names, or None after answering -ERR."""
        number = parse.message_number(arg)
        if number is None:
            self._send("-ERR Invalid message number")
        elif number > len(self.messages):
            self._send(f"-ERR There is no message {number}")
        elif number in self.deleted:
            self._send(f"-ERR Message {number} is deleted")
        else:
            return number
        return None

    def stat(self, command: Command) -> None:
        self._send(f"+OK {len(self.messages) - len(self.deleted)} {self.live_size}")

    def list(self, command: Command) -> None:
        self._listing(command, self.sizes)

    def uidl(self, command: Command) -> None:
        if self.uids is None:  # made on first use, once: clients ask for UIDL repeatedly
            self.uids = [wire.uidl(m) for m in self.messages]
        self._listing(command, self.uids)

    def _listing(self, command: Command, values: Sequence[object]) -> None:
        """LIST or UIDL: `values` holds each message's, by number - 1."""
        if len(command.args) > 1:
            self._send("-ERR Too many arguments")
            return
        if command.args:
            number = self._message(command.args[0])
            if number is not None:
                self._send(f"+OK {number} {values[number - 1]}")
            return
        deleted = self.deleted
        lines = ["+OK Listing follows"]
        lines += [f"{n} {value}" for n, value in enumerate(values, 1) if n not in deleted]
        lines.append(".")
        self._send("\r\n".join(lines))

    def retr(self, command: Command) -> Pending:
        if len(command.args) != 1:
            self._send("-ERR RETR needs a message number")
            return None
        number = self._message(command.args[0])
        if number is None:
            return None
        message = self.messages[number - 1]
        if message.size > wire.CHUNK:
            return self._stream(number, message)  # large: as fast as the client reads
        ahead, self.ahead = self.ahead, None
        if ahead is not None and ahead[0] == number:
            reply = ahead[1]
        else:
            try:
                reply = self._reply(number, message)
            except MessageGone:
                self._send(GONE)
                return None
        # Nearly every message: reply line, message and terminator in one write (one
        # segment, one system call), straight away.
        self.conn.write(reply)
        self.retrieved.add(number)
        self._next(number)
        return None

    def _next(self, number: int) -> None:
        """After RETR `number`: read the next one ahead when the client goes through
        the messages in order (this RETR followed the one before it), unless it has
        sent more commands already (they come first, and may not want it)."""
        in_order, self.last_retr = number == self.last_retr + 1, number
        if in_order and number < len(self.messages) and not self.conn.pending_input():
            self.conn.after_reply(self._read_ahead, number + 1)

    def _reply(self, number: int, message: Message) -> bytes:
        """RETR's whole reply for a message that is not large (MessageGone if it is gone)."""
        assert self.view is not None
        data = self.view.read(message.uid, message.size)
        head = f"+OK {self.sizes[number - 1]} octets\r\n".encode()
        return wire.multiline(head, data, _crlf_only(message))

    def _read_ahead(self, number: int) -> None:
        """Make the reply to RETR `number` now, while the client is still reading the
        one before: clients download in order, one RETR at a time, so the file work
        (open, read, dot-stuffing) is then done before the client asks, not after.
        Maildir files never change once delivered, so the bytes stay right; a message
        that cannot be read is left for its RETR to report."""
        if self.view is None or self.ahead is not None or number > len(self.messages):
            return
        if number != self.last_retr + 1 or number in self.deleted:
            return  # another RETR came first (pipelined), or DELE
        message = self.messages[number - 1]
        if message.size > wire.CHUNK:
            return
        with contextlib.suppress(MessageGone, OSError):
            self.ahead = (number, self._reply(number, message))

    async def _stream(self, number: int, message: Message) -> None:
        handle = self._open(message)
        if handle is None:
            return
        with handle:
            stuffer = wire.Stuffer(_crlf_only(message))
            self.conn.write(f"+OK {self.sizes[number - 1]} octets\r\n".encode())
            while data := handle.read(wire.CHUNK):
                self.conn.write(stuffer.feed(data))
                await self.conn.drain()
            self.conn.write(stuffer.finish())
        self.retrieved.add(number)
        self._next(number)

    def top(self, command: Command) -> None:
        if len(command.args) != 2:
            self._send("-ERR TOP needs a message number and a line count")
            return
        lines = parse.line_count(command.args[1])
        if lines is None:
            self._send("-ERR Invalid line count")
            return
        number = self._message(command.args[0])
        if number is None:
            return
        handle = self._open(self.messages[number - 1])
        if handle is None:
            return
        with handle:
            data = wire.top_of(handle, lines)
        self.conn.write(wire.multiline(b"+OK Top of message follows\r\n", data))

    def _open(self, message: Message) -> BinaryIO | None:
        assert self.view is not None
        try:
            return self.view.open(message.uid)
        except MessageGone:
            self._send(GONE)
            return None

    def dele(self, command: Command) -> None:
        if len(command.args) != 1:
            self._send("-ERR DELE needs a message number")
            return
        number = self._message(command.args[0])
        if number is not None:
            self.deleted.add(number)
            self.live_size -= self.sizes[number - 1]
            self._send(f"+OK Message {number} deleted")

    def rset(self, command: Command) -> None:
        self.deleted.clear()
        self.live_size = sum(self.sizes)
        self._send(f"+OK {len(self.messages)} messages ({self.live_size} octets)")

    def noop(self, command: Command) -> None:
        self._send("+OK")

    # ------------------------------------------------------------ UPDATE

    def quit(self, command: Command) -> Pending:
        if self.view is None:
            self._send("+OK Bye")
            raise SessionOver
        return self._update(self.view)

    async def _update(self, view: FolderView) -> None:
        deleted = [self.messages[n - 1].uid for n in sorted(self.deleted)]
        seen = [
            self.messages[n - 1].uid
            for n in sorted(self.retrieved - self.deleted)
            if SEEN not in self.messages[n - 1].flags
        ]
        try:
            removed = await asyncio.to_thread(view.expunge, deleted) if deleted else []
            if seen:  # as Dovecot does: what POP3 downloaded shows as read in IMAP
                await asyncio.to_thread(view.store_flags, seen, [SEEN], "+")
        except Exception as exc:
            log("pop3.update_failed", user=self.address(), error=repr(exc))
            self._send("-ERR [SYS/TEMP] Some deleted messages were not removed")
            raise SessionOver from None
        log(
            "pop3.logout",
            client=self.conn.client,
            user=self.address(),
            retrieved=len(self.retrieved),
            deleted=len(removed),
        )
        self._send(f"+OK Bye, {len(removed)} messages deleted")
        raise SessionOver


def _crlf_only(message: Message) -> bool:
    """The index says the file has no bare LF (its CRLF size is its size), as for all
    that came by SMTP: line ends need no conversion, nor a scan for one."""
    return message.vsize == message.size


def _open_inbox(store: Store, account: Account, origin: object) -> tuple[Mailbox, FolderView]:
    """The mailbox and a view of its INBOX, in one trip to a worker thread."""
    mailbox = store.open(account.domain, account.user, account.quota)
    try:
        return mailbox, mailbox.select("INBOX", origin=origin)
    except BaseException:
        store.release(mailbox)
        raise


Handler = Callable[[Pop3Session, Command], Pending]
_AUTHORIZATION: dict[str, Handler] = {
    "CAPA": Pop3Session.capa,
    "STLS": Pop3Session.stls,
    "USER": Pop3Session.user_cmd,
    "PASS": Pop3Session.pass_cmd,
    "AUTH": Pop3Session.auth,
    "QUIT": Pop3Session.quit,
}
_TRANSACTION: dict[str, Handler] = {
    "CAPA": Pop3Session.capa,
    "STAT": Pop3Session.stat,
    "LIST": Pop3Session.list,
    "UIDL": Pop3Session.uidl,
    "RETR": Pop3Session.retr,
    "TOP": Pop3Session.top,
    "DELE": Pop3Session.dele,
    "RSET": Pop3Session.rset,
    "NOOP": Pop3Session.noop,
    "QUIT": Pop3Session.quit,
}
_ALL = frozenset(
    {"CAPA", "STLS", "USER", "PASS", "AUTH", "QUIT", "STAT", "LIST", "UIDL", "RETR", "TOP"}
    | {"DELE", "RSET", "NOOP", "APOP", "LAST"}
)
