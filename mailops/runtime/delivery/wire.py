"""Commands and replies of an established SMTP session, several in flight at once.

aiosmtplib sets a session up (connect, EHLO, STARTTLS, AUTH) well, but then
sends one command and waits for its reply before the next: with MAIL, RCPT,
DATA and the message that is four round trips and four writes a message, and
on a busy queue those wake-ups, not the network, are what delivery costs. When
the session is ready, `Wire` takes its transport over (`adopt`) so that a
client can write MAIL, every RCPT and DATA at once and then read their replies
in order (PIPELINING, RFC 2920).

Whoever sends a command claims its reply at once (`send(data, replies=n)` hands
back one future per expected reply), and replies are given to the claims in the
order the commands went out. So one transaction may hand the session on as soon
as its message is sent: the next one's MAIL, RCPT and DATA follow the message in
the same stream, and each side still gets its own replies. A reply nobody claimed
is kept, which is how the pool notices a server that said goodbye (421) while the
session sat idle.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import NamedTuple, cast

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
        self._claims: deque[asyncio.Future[Reply]] = deque()  # in the order sent
        self._unclaimed: list[Reply] = []  # replies nobody asked for
        self._error: WireError | None = None

    @classmethod
    def adopt(cls, smtp: aiosmtplib.SMTP, timeout: float) -> Wire:
        """Take over the transport of a session aiosmtplib has set up; from here on
        `smtp` is not used again (its protocol no longer sees the server's bytes)."""
        transport = smtp.transport
        # Any loop's transport (uvloop's are not asyncio.Transport subclasses).
        if transport is None or transport.is_closing():
            raise WireError("connection lost")
        wire = cls(cast(asyncio.Transport, transport), timeout)
        transport.set_protocol(wire)
        return wire

    @property
    def ready(self) -> bool:
        """Connected, and the server has not spoken out of turn. Replies may still be
        due to commands already sent: they are claimed, and come in order."""
        return self._error is None and not self.transport.is_closing() and not self._unclaimed

    def send(self, data: bytes, *, replies: int) -> list[asyncio.Future[Reply]]:
        """Write `data` (commands, or a message and what follows it) and claim the
        `replies` replies it will get, as futures for `reply`."""
        if self._error is not None:
            raise self._error
        if self.transport.is_closing():
            raise WireError("connection closed")
        if self._unclaimed:
            raise WireError("the server spoke out of turn")
        loop = asyncio.get_running_loop()
        claims = [loop.create_future() for _ in range(replies)]
        self._claims.extend(claims)
        self.transport.write(data)
        return claims

    async def reply(self, claim: asyncio.Future[Reply]) -> Reply:
        """The reply claimed by `claim`; WireError when the session ends first,
        TimeoutError when it does not come within `timeout` seconds — and then the
        session is closed, since every later reply would go to the wrong claim."""
        if claim.done():  # pipelined replies often arrive together: no timer needed
            return claim.result()
        try:
            async with asyncio.timeout(self.timeout):
                return await claim
        except TimeoutError:
            self._fail(WireError("timed out waiting for a reply"))
            self.transport.close()
            raise

    async def command(self, line: bytes) -> Reply:
        """Send one command line (CRLF included) and wait for its reply."""
        (claim,) = self.send(line, replies=1)
        return await self.reply(claim)

    def close(self) -> None:
        self.transport.close()
        self._fail(WireError("connection closed"))

    # ------------------------------------------------------------ asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            self._parse()
        except WireError as exc:
            self._fail(exc)
            self.transport.close()

    def eof_received(self) -> bool:
        return False  # the server closed its side: close ours too

    def connection_lost(self, exc: Exception | None) -> None:
        reason = getattr(exc, "strerror", None) or (str(exc) if exc else "")
        self._fail(WireError(f"connection lost{f' ({reason})' if reason else ''}"))

    # ------------------------------------------------------------ parsing

    def _parse(self) -> None:
        """Hand every complete reply in the buffer to its claim."""
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
                self._lines = []
                self._hand_over(Reply(int(line[:3]), text))
        del self._buffer[:start]
        if len(self._buffer) > MAX_LINE or sum(map(len, self._lines)) > MAX_PENDING:
            raise WireError("reply too long")
        if sum(len(r.text) for r in self._unclaimed) > MAX_PENDING:
            raise WireError("too many replies nobody asked for")

    def _hand_over(self, reply: Reply) -> None:
        if not self._claims:
            self._unclaimed.append(reply)
            return
        claim = self._claims.popleft()
        if not claim.done():  # a claimant that was cancelled still uses up its reply
            claim.set_result(reply)

    def _fail(self, error: WireError) -> None:
        """From now on the session is unusable: every claim not yet answered fails."""
        if self._error is None:
            self._error = error
        while self._claims:
            claim = self._claims.popleft()
            if not claim.done():
                claim.set_exception(self._error)
                claim.exception()  # retrieved: a claim nobody awaits any more is no error
