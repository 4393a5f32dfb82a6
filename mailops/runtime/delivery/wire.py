"""Commands and replies of an established SMTP session, several in flight at once.

aiosmtplib sets a session up (connect, EHLO, STARTTLS, AUTH) well, but then
sends one command and waits for its reply before the next: with MAIL, RCPT,
DATA and the message that is four round trips and four writes a message, and
on a busy queue those wake-ups, not the network, are what delivery costs. When
the session is ready, `Wire` takes its transport over (`adopt`) so that a
client can write MAIL, every RCPT and DATA at once and then read their replies
in order (PIPELINING, RFC 2920). Replies are parsed as they arrive and kept in
order; a reply nobody asked for is kept too, which is how the pool notices a
server that said goodbye (421) while the session sat idle.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import NamedTuple

import aiosmtplib

MAX_LINE = 8192  # a reply line longer than this is not SMTP (RFC 5321 §4.5.3.1.5: 512)
MAX_PENDING = 64 * 1024  # bytes of replies nobody has read: bounds a server that floods us


class Reply(NamedTuple):
    code: int
    text: str  # the lines' texts without their codes, joined by "\n"


class WireError(ConnectionError):
    """The session is unusable: closed by the server, garbled, or lost."""


class Wire(asyncio.Protocol):
    def __init__(self, transport: asyncio.Transport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout  # seconds to wait for any one reply
        self._buffer = bytearray()
        self._lines: list[bytes] = []  # lines of a multi-line reply read so far
        self._replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: WireError | None = None

    @classmethod
    def adopt(cls, smtp: aiosmtplib.SMTP, timeout: float) -> Wire:
        """Take over the transport of a session aiosmtplib has set up; from here on
        `smtp` is not used again (its protocol no longer sees the server's bytes)."""
        transport = smtp.transport
        if not isinstance(transport, asyncio.Transport) or transport.is_closing():
            raise WireError("connection lost")
        wire = cls(transport, timeout)
        transport.set_protocol(wire)
        return wire

    @property
    def ready(self) -> bool:
        """Connected, and nothing unread: the server has not spoken out of turn."""
        return (
            self._error is None
            and not self.transport.is_closing()
            and not self._replies
            and not self._buffer
        )

    def send(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self.transport.is_closing():
            raise WireError("connection closed")
        self.transport.write(data)

    async def reply(self) -> Reply:
        """The next reply in order; WireError when the session ends first,
        TimeoutError when none comes within `timeout` seconds."""
        if self._replies:  # pipelined replies often arrive together: no timer needed
            return self._replies.popleft()
        async with asyncio.timeout(self.timeout):
            while not self._replies:
                if self._error is not None:
                    raise self._error
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
        return self._replies.popleft()

    async def command(self, line: bytes) -> Reply:
        """Send one command line (CRLF included) and wait for its reply."""
        self.send(line)
        return await self.reply()

    def close(self) -> None:
        self.transport.close()

    # ------------------------------------------------------------ asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            self._parse()
        except WireError as exc:
            self._fail(exc)
            self.transport.close()
        self._wake()

    def eof_received(self) -> bool:
        return False  # the server closed its side: close ours too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._error is None:
            reason = getattr(exc, "strerror", None) or (str(exc) if exc else "")
            self._fail(WireError(f"connection lost{f' ({reason})' if reason else ''}"))
        self._wake()

    # ------------------------------------------------------------ parsing

    def _parse(self) -> None:
        """Move every complete reply from the buffer to `_replies`."""
        start = 0
        while (end := self._buffer.find(b"\n", start)) >= 0:
            line = bytes(self._buffer[start:end]).rstrip(b"\r")
            start = end + 1
            if len(line) > MAX_LINE:
                raise WireError("reply line too long")
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
                raise WireError(f"not an SMTP reply: {line[:60]!r}")
            self._lines.append(line)
            if line[3:4] != b"-":  # the last line of the reply
                text = "\n".join(x[4:].decode("utf-8", "replace").strip() for x in self._lines)
                self._replies.append(Reply(int(line[:3]), text))
                self._lines = []
        del self._buffer[:start]
        if len(self._buffer) > MAX_LINE or sum(map(len, self._lines)) > MAX_PENDING:
            raise WireError("reply too long")
        if sum(len(r.text) for r in self._replies) > MAX_PENDING:
            raise WireError("too many unread replies")

    def _fail(self, error: WireError) -> None:
        if self._error is None:
            self._error = error

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
