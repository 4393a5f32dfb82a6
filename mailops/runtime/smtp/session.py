"""aiosmtpd's SMTP protocol, with logins that do not block the event loop.

aiosmtpd's built-in PLAIN and LOGIN call a synchronous authenticator; an
argon2id check takes tens of milliseconds, which would stall every other
session. These versions parse the same way and await the Authenticator.
"""

from __future__ import annotations

import asyncio
import binascii
import ipaddress
import re
from base64 import b64decode

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, syntax

from mailops.runtime.auth import Authenticator

_SIMPLE_PATH = re.compile(
    r"<([A-Za-z0-9!#$&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9.-]{1,253})>(.*)", re.DOTALL
)


class Session(SMTP):
    """One SMTP connection. Besides async logins, five changes make a session
    cheap, since a busy MX takes a new connection for nearly every message:
    `__dir__` keeps aiosmtpd's per-connection introspection short, multi-line
    replies go out in one write, plain `<local@domain>` paths skip the RFC 5322
    header parser (anything else still goes through it), DATA is read in
    large pieces rather than line by line, and the replies to a pipelined
    MAIL, RCPT… and DATA go out together (RFC 2920 §3.2)."""

    _method_names: tuple[str, ...] | None = None
    # The reader's buffer limit. Command lines keep aiosmtpd's own 512-byte
    # limit (command_size_limit); DATA is read up to its terminator in pieces.
    line_length_limit = 64 * 1024

    def __dir__(self):
        # aiosmtpd's __init__ calls inspect.getmembers(self) and dir(self) only to
        # find the auth_* and smtp_* methods; listing just those saves ~40% of it.
        cls = type(self)
        if cls._method_names is None:
            names = [n for n in super().__dir__() if n.startswith(("auth_", "smtp_"))]
            cls._method_names = tuple(names)
        return list(cls._method_names)

    async def push(self, status) -> None:
        response = status.encode("utf-8") if isinstance(status, str) else status
        self._pending.append(response + b"\r\n")
        if response[3:4] == b"-":
            return  # a continuation line: wait for the last
        if self._grouping:
            # A reply to MAIL/RCPT/RSET waits for the replies after it: a pipelining
            # client has sent those commands in one go, and aiosmtpd handles them
            # without waiting. Flushed at the end of this loop turn at the latest,
            # so a client that waits for each reply gets it all the same.
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
            return
        self._flush()
        await self._writer.drain()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._pending and not self._writer.is_closing():
            self._writer.write(b"".join(self._pending))
        self._pending.clear()

    async def _grouped(self, command, arg: str) -> None:
        """Run an aiosmtpd command whose reply may wait for the next one's (RFC 2920
        §3.2 lists RSET, MAIL and RCPT among the commands whose replies a server
        SHOULD send as a unit; the reply to a message may join them too)."""
        self._grouping = True
        try:
            await command(arg)
        finally:
            self._grouping = False

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str) -> None:
        await self._grouped(super().smtp_MAIL, arg)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str) -> None:
        await self._grouped(super().smtp_RCPT, arg)

    @syntax("RSET")
    async def smtp_RSET(self, arg: str) -> None:
        await self._grouped(super().smtp_RSET, arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content = await self._read_data()
        if content is None:
            self._set_post_data_state()
            await self.push("552 5.3.4 Message too big for this system")
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        # A pipelining client may have sent its next MAIL, RCPT… and DATA right after
        # the message (RFC 2920 §3.1): this reply goes out with theirs.
        await self._grouped(self.push, "250 OK" if status is MISSING else status)

    async def _read_data(self) -> bytes | None:
        """The message up to the exact <CR><LF>.<CR><LF>, dot-unstuffed; None
        when it is larger than allowed (read to its end all the same).

        Only that exact sequence ends the data — never a bare LF or CR around
        the dot — so SMTP smuggling cannot end a message early; bare CR/LF
        inside are refused later (handlers). Pieces end at ".\r\n", which is
        the terminator whenever the bytes before it end in CRLF (the data
        begins right after the DATA line's CRLF)."""
        limit = self.data_size_limit
        pieces: list[bytes] = []
        size, tail = 0, b"\r\n"
        while True:
            try:
                piece = await self._reader.readuntil(b".\r\n")
            except asyncio.LimitOverrunError as exc:
                piece = await self._reader.readexactly(exc.consumed)
            size += len(piece)
            if limit is None or size <= limit + 3:
                pieces.append(piece)
            tail = (tail + piece)[-5:]
            if tail == b"\r\n.\r\n":
                break
        if limit is not None and size > limit + 3:
            return None
        data = b"\r\n" + b"".join(pieces)[:-3]  # drop the final ".\r\n"
        return data.replace(b"\r\n.", b"\r\n")[2:]

    def _getaddr(self, arg: str):
        match = _SIMPLE_PATH.fullmatch(arg.strip())
        if match and ".." not in match.group(1) and not match.group(1).startswith("."):
            return match.group(1), match.group(2)
        return super()._getaddr(arg)

    def __init__(
        self,
        handler,
        *,
        authenticator: Authenticator | None = None,
        plaintext_on_loopback: bool = False,
        **kwargs,
    ):
        self.mailops_auth = authenticator
        self.plaintext_on_loopback = plaintext_on_loopback
        self._pending: list[bytes] = []  # reply lines not yet written
        self._grouping = False  # inside MAIL/RCPT/RSET: their replies may wait
        self._flush_scheduled = False
        super().__init__(handler, **kwargs)

    def connection_made(self, transport) -> None:
        first = self._original_transport is None and self.transport is None
        super().connection_made(transport)
        if not first:
            return  # the STARTTLS upgrade of a session already set up
        # 465: TLS from the first byte; aiosmtpd only knows STARTTLS, so say so here.
        self.session.implicit_tls = transport.get_extra_info("sslcontext") is not None
        if self.session.implicit_tls or (
            self.plaintext_on_loopback and ipaddress.ip_address(self.client_ip()).is_loopback
        ):
            self._auth_require_tls = False

    def client_ip(self) -> str:
        peer = self.session.peer if self.session else None
        return str(peer[0]) if isinstance(peer, tuple) else "unknown"

    async def auth_PLAIN(self, _, args: list[str]) -> AuthResult:
        blob = await self._first_response(args, "")
        if isinstance(blob, AuthResult):
            return blob
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await self.push("501 5.5.2 Cannot split the PLAIN response")
            return AuthResult(success=False, handled=True)
        return await self._login(parts[1], parts[2])

    async def auth_LOGIN(self, _, args: list[str]) -> AuthResult:
        login = await self._first_response(args, self.AuthLoginUsernameChallenge)
        if isinstance(login, AuthResult):
            return login
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=False)
        return await self._login(login, password)

    async def _first_response(self, args: list[str], challenge: str) -> bytes | AuthResult:
        """The client's first SASL response: given with the command (SASL-IR) or
        asked for; an AuthResult when there is none or it is not base64."""
        if len(args) == 1:
            blob = await self.challenge_auth(challenge)
            return AuthResult(success=False, handled=False) if blob is MISSING else blob
        blob = _b64(args[1])
        if blob is None:
            await self.push("501 5.5.2 Cannot decode base64")
            return AuthResult(success=False, handled=True)
        return blob

    async def _login(self, login: bytes, password: bytes) -> AuthResult:
        if self.mailops_auth is None:
            return AuthResult(success=False, handled=False)
        try:
            user, secret = login.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False)
        account = await self.mailops_auth.login(self.client_ip(), user, secret)
        if account is None:
            # handled=False: aiosmtpd then sends the message (its default is to stay silent).
            return AuthResult(
                success=False, handled=False, message="535 5.7.8 Authentication credentials invalid"
            )
        return AuthResult(success=True, auth_data=account)


def _b64(text: str) -> bytes | None:
    try:
        return b64decode(text.encode(), validate=True)
    except (binascii.Error, ValueError):
        return None
