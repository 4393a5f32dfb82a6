"""One POP3 connection: AUTHORIZATION → TRANSACTION → UPDATE (RFC 1939 §3).

The session sees the INBOX as it was at login (a snapshot: mail delivered meanwhile
waits for the next session, as RFC 1939 expects of a locked maildrop). DELE only
marks; messages are removed in the UPDATE state, after QUIT, and nowhere else. A
dropped connection, a timeout or a shutdown removes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mailops.runtime.log import log
from mailops.runtime.pop3 import parse, wire
from mailops.runtime.pop3.parse import Bad, Command
from mailops.runtime.store import FolderView, Mailbox, Message, MessageGone
from mailops.runtime.store.flags import SEEN

if TYPE_CHECKING:
    from mailops.runtime.directory import Account
    from mailops.runtime.pop3.server import Pop3Service

MAX_AUTH_FAILURES = 3
MAX_BAD_COMMANDS = 10
WRITE_BUFFER = 1 << 20  # drain when this much is waiting for the client

PLAINTEXT_REFUSED = "-ERR [AUTH] Plain-text authentication needs TLS: use STLS first"


class _Closed(Exception):
    """The session is over (QUIT, EOF, timeout, or an error already answered)."""


class Pop3Session:
    def __init__(
        self,
        service: Pop3Service,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        implicit_tls: bool,
    ) -> None:
        self.service = service
        self.reader = reader
        self.writer = writer
        self.tls = implicit_tls
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        self.busy = False  # executing a command (shutdown waits for it)
        self.user: str | None = None  # from USER, waiting for PASS
        self.account: Account | None = None
        self.mailbox: Mailbox | None = None
        self.view: FolderView | None = None
        self.messages: list[Message] = []
        self.deleted: set[int] = set()  # message numbers marked by DELE
        self.retrieved: set[int] = set()  # message numbers fully sent by RETR
        self.auth_failures = 0
        self.bad_commands = 0

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        try:
            await self._send("+OK mailops POP3 ready")
            while not self.service.stopping:
                line = await self._read_line()
                self.busy = True
                try:
                    await self._dispatch(parse.parse_command(line))
                finally:
                    self.busy = False
        except _Closed:
            pass
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing it asked for is left half done
        except Exception as exc:  # a bug: log it, never show a traceback to the client
            log("pop3.error", client=self.client, user=self._address(), error=repr(exc))
            await self._try_send("-ERR [SYS/TEMP] Internal error, closing the connection")
        finally:
            await self._cleanup()

    async def _read_line(self, limit_timeout: float | None = None) -> bytes:
        timeout = limit_timeout or self.service.idle_timeout()
        try:
            # asyncio.timeout, not wait_for: no extra task per command line.
            async with asyncio.timeout(timeout):
                line = await self.reader.readuntil(b"\n")
        except TimeoutError:
            log("pop3.timeout", client=self.client, user=self._address())
            await self._try_send("-ERR [SYS/TEMP] Disconnected for inactivity")
            raise _Closed from None
        except asyncio.LimitOverrunError:
            await self._try_send("-ERR Line too long, closing the connection")
            raise _Closed from None
        except asyncio.IncompleteReadError:
            raise _Closed from None
        return line

    async def _send(self, line: str, drain: bool = True) -> None:
        self.writer.write(line.encode("utf-8") + b"\r\n")
        if drain:
            await self.writer.drain()

    async def _try_send(self, line: str) -> None:
        with contextlib.suppress(Exception):  # the connection is going away anyway
            await asyncio.wait_for(self._send(line), 5)

    async def _cleanup(self) -> None:
        self.writer.close()
        await self._close_mailbox()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 5)

    # ------------------------------------------------------------ dispatch

    async def _dispatch(self, command: Command | Bad) -> None:
        if isinstance(command, Bad):
            await self._bad(command.reason)
            return
        table = _TRANSACTION if self.view else _AUTHORIZATION
        handler = table.get(command.name)
        if handler is None:
            await self._bad("Unknown command" if command.name not in _ALL else "Not allowed now")
            return
        self.bad_commands = 0
        await handler(self, command)

    async def _bad(self, reason: str) -> None:
        self.bad_commands += 1
        await self._send(f"-ERR {reason}")
        if self.bad_commands >= MAX_BAD_COMMANDS:
            await self._send("-ERR Too many bad commands, closing the connection")
            raise _Closed

    # ------------------------------------------------------------ AUTHORIZATION

    def _plaintext_ok(self) -> bool:
        if self.tls:
            return True
        if not self.service.config().plaintext_auth_on_loopback:
            return False
        try:
            return ipaddress.ip_address(self.client).is_loopback
        except ValueError:
            return False

    def _stls_available(self) -> bool:
        return not self.tls and self.service.tls() is not None

    async def capa(self, command: Command) -> None:
        lines = ["+OK Capability list follows", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE"]
        lines.append("PIPELINING")
        if self.view is None:
            if self._stls_available():
                lines.append("STLS")
            if self._plaintext_ok():
                lines += ["USER", "SASL PLAIN"]
        lines += ["IMPLEMENTATION mailops", "."]
        await self._send("\r\n".join(lines))

    async def stls(self, command: Command) -> None:
        context = self.service.tls()
        if self.tls or context is None:
            await self._send("-ERR TLS is already active" if self.tls else "-ERR TLS not available")
            return
        if _buffered(self.reader):
            # RFC 2595 §4 / CVE-2011-0411: anything pipelined after STLS was sent in the
            # clear and must not be taken as coming over TLS.
            await self._send("-ERR Commands were pipelined after STLS, closing the connection")
            raise _Closed
        await self._send("+OK Begin TLS negotiation")
        try:
            await asyncio.wait_for(self.writer.start_tls(context), 30)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            log("pop3.tls_failed", client=self.client, error=exc)
            raise _Closed from None
        self.tls = True
        self.user = None  # RFC 2595 §4: forget what was said before TLS

    async def user_cmd(self, command: Command) -> None:
        if not self._plaintext_ok():
            await self._send(PLAINTEXT_REFUSED)
            return
        if not command.rest or len(command.rest) > 255:
            await self._send("-ERR USER needs a user name")
            return
        self.user = command.rest.strip()
        await self._send("+OK Send the password")

    async def pass_cmd(self, command: Command) -> None:
        if not self._plaintext_ok():
            await self._send(PLAINTEXT_REFUSED)
            return
        if self.user is None:
            await self._send("-ERR Send USER first")
            return
        user, self.user = self.user, None
        await self._login(user, command.rest)

    async def auth(self, command: Command) -> None:
        if not command.args:
            await self._send("+OK Mechanisms follow\r\nPLAIN\r\n.")  # RFC 1734 style list
            return
        if command.args[0].upper() != "PLAIN" or len(command.args) > 2:
            await self._send("-ERR Unsupported authentication mechanism")
            return
        if not self._plaintext_ok():
            await self._send(PLAINTEXT_REFUSED)
            return
        if len(command.args) == 2:
            response = command.args[1]
        else:
            await self._send("+ ")
            response = parse.strip_eol(await self._read_line()).decode("ascii", "replace")
            if response == "*":
                await self._send("-ERR Authentication cancelled")
                return
        blob = parse.decode_base64(response)
        credentials = parse.plain_credentials(blob) if blob is not None else None
        if credentials is None:
            await self._send("-ERR [AUTH] Malformed PLAIN response")
            return
        await self._login(*credentials)

    async def _login(self, user: str, password: str) -> None:
        account = await self.service.authenticator().login(self.client, user, password)
        if account is None:
            self.auth_failures += 1
            log("pop3.login_failed", client=self.client, user=user)
            await self._send("-ERR [AUTH] Authentication failed")
            if self.auth_failures >= MAX_AUTH_FAILURES:
                await self._send("-ERR Too many failed logins, closing the connection")
                raise _Closed
            return
        store = self.service.store()
        if not store.acquire_lease(account.address, "pop3"):
            log("pop3.in_use", client=self.client, user=account.address)
            await self._send("-ERR [IN-USE] Mailbox is open in another POP3 session")
            return
        self.account = account
        try:
            self.mailbox = await asyncio.to_thread(
                store.open, account.domain, account.user, account.quota
            )
            self.view = await asyncio.to_thread(self.mailbox.select, "INBOX", origin=self)
        except Exception as exc:
            log("pop3.open_failed", user=account.address, error=repr(exc))
            await self._close_mailbox()
            await self._send("-ERR [SYS/TEMP] Cannot open the mailbox, try again later")
            return
        self.messages = list(self.view.messages)
        count, size = self._totals()
        log("pop3.login", client=self.client, user=account.address, messages=count, tls=self.tls)
        await self._send(f"+OK Logged in, {count} messages ({size} octets)")

    async def _close_mailbox(self) -> None:
        # The lease first and without awaiting: even a cancelled session frees it.
        if self.account is not None:
            account, self.account = self.account, None
            self.service.store().release_lease(account.address, "pop3")
        if self.mailbox is not None:
            mailbox, self.mailbox, self.view = self.mailbox, None, None
            await asyncio.to_thread(self.service.store().release, mailbox)

    # ------------------------------------------------------------ TRANSACTION

    def _totals(self) -> tuple[int, int]:
        live = [m for n, m in enumerate(self.messages, 1) if n not in self.deleted]
        return len(live), sum(wire.pop3_size(m) for m in live)

    async def _message(self, arg: str) -> tuple[int, Message] | None:
        """The message a number names, or None after answering -ERR."""
        number = parse.message_number(arg)
        if number is None:
            await self._send("-ERR Invalid message number")
        elif number > len(self.messages):
            await self._send(f"-ERR There is no message {number}")
        elif number in self.deleted:
            await self._send(f"-ERR Message {number} is deleted")
        else:
            return number, self.messages[number - 1]
        return None

    async def stat(self, command: Command) -> None:
        count, size = self._totals()
        await self._send(f"+OK {count} {size}")

    async def list(self, command: Command) -> None:
        await self._listing(command, lambda m: str(wire.pop3_size(m)))

    async def uidl(self, command: Command) -> None:
        await self._listing(command, wire.uidl)

    async def _listing(self, command: Command, value: Callable[[Message], str]) -> None:
        if len(command.args) > 1:
            await self._send("-ERR Too many arguments")
            return
        if command.args:
            found = await self._message(command.args[0])
            if found is not None:
                await self._send(f"+OK {found[0]} {value(found[1])}")
            return
        lines = ["+OK Listing follows"]
        lines += [
            f"{n} {value(m)}" for n, m in enumerate(self.messages, 1) if n not in self.deleted
        ]
        lines.append(".")
        await self._send("\r\n".join(lines))

    async def retr(self, command: Command) -> None:
        if len(command.args) != 1:
            await self._send("-ERR RETR needs a message number")
            return
        found = await self._message(command.args[0])
        if found is None:
            return
        number, message = found
        handle = await self._open(message)
        if handle is None:
            return
        with handle:
            stuffer = wire.Stuffer(crlf_only=message.vsize == message.size)
            head = f"+OK {wire.pop3_size(message)} octets\r\n".encode()
            chunk = handle.read(min(wire.CHUNK, message.size + 1))
            # Most messages fit one chunk: reply line, message and terminator go out in
            # one write (one segment, one syscall) instead of three.
            while True:
                body = stuffer.feed(chunk)
                chunk = handle.read(wire.CHUNK) if chunk else b""
                if not chunk:
                    self.writer.write(head + body + stuffer.finish())
                    break
                self.writer.write(head + body)
                head = b""
                await self._drain_if_full()
        await self._drain_if_full()
        self.retrieved.add(number)

    async def top(self, command: Command) -> None:
        if len(command.args) != 2:
            await self._send("-ERR TOP needs a message number and a line count")
            return
        lines = parse.line_count(command.args[1])
        if lines is None:
            await self._send("-ERR Invalid line count")
            return
        found = await self._message(command.args[0])
        if found is None:
            return
        handle = await self._open(found[1])
        if handle is None:
            return
        with handle:
            data = wire.top_of(handle, lines)
        stuffer = wire.Stuffer()
        self.writer.write(b"+OK Top of message follows\r\n" + stuffer.feed(data) + stuffer.finish())
        await self._drain_if_full()

    async def _open(self, message: Message):
        assert self.view is not None
        try:
            return self.view.open(message.uid)
        except MessageGone:
            await self._send("-ERR [SYS/PERM] The message was removed by another session")
            return None

    async def _drain_if_full(self) -> None:
        transport = self.writer.transport
        if transport.get_write_buffer_size() >= WRITE_BUFFER or not _buffered(self.reader):
            # Drain when the buffer is big, or when the client waits for this reply.
            await self.writer.drain()

    async def dele(self, command: Command) -> None:
        if len(command.args) != 1:
            await self._send("-ERR DELE needs a message number")
            return
        found = await self._message(command.args[0])
        if found is not None:
            self.deleted.add(found[0])
            await self._send(f"+OK Message {found[0]} deleted")

    async def rset(self, command: Command) -> None:
        self.deleted.clear()
        count, size = self._totals()
        await self._send(f"+OK {count} messages ({size} octets)")

    async def noop(self, command: Command) -> None:
        await self._send("+OK")

    # ------------------------------------------------------------ UPDATE

    async def quit(self, command: Command) -> None:
        if self.view is None:
            await self._send("+OK Bye")
            raise _Closed
        view = self.view
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
            log("pop3.update_failed", user=self._address(), error=repr(exc))
            await self._send("-ERR [SYS/TEMP] Some deleted messages were not removed")
            raise _Closed from None
        log(
            "pop3.logout",
            client=self.client,
            user=self._address(),
            retrieved=len(self.retrieved),
            deleted=len(removed),
        )
        await self._send(f"+OK Bye, {len(removed)} messages deleted")
        raise _Closed

    def _address(self) -> str | None:
        return self.account.address if self.account else None


Handler = Callable[[Pop3Session, Command], Awaitable[None]]
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


def _buffered(reader: asyncio.StreamReader) -> int:
    """Bytes the client sent that we have not read yet.

    StreamReader has no public way to ask; its `_buffer` has been there since 3.4.
    """
    return len(getattr(reader, "_buffer", b""))
