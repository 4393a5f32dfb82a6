"""One IMAP connection's bytes: command framing, literals, TLS and COMPRESS.

`read_command` returns a whole command — its lines and literals as they came,
`{N}\\r\\n` markers included, without the final CRLF — after sending the `+`
continuation a synchronising literal needs. Limits keep a client from making the
server hold more than one bounded line and one bounded literal at a time.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import zlib

MAX_LINE = 256 * 1024  # one line of a command (long UID sets from sync clients)
MAX_COMMAND = 1024 * 1024  # all of a command's lines together, literals not counted
MAX_LITERALS = 64  # literals in one command
READ_SIZE = 64 * 1024
INFLATE_STEP = 256 * 1024
WRITE_HIGH_WATER = 256 * 1024  # `send` drains once this much waits

_LITERAL_AT_END = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\r?\n\Z")


class Closed(Exception):
    """The connection is over: EOF, an error, or a limit that ends it."""


class TooBig(Exception):
    """A command or literal over the limits; the connection can go on (tagged BAD)."""

    def __init__(self, head: bytes, text: str) -> None:
        super().__init__(text)
        self.head = head  # the command's first bytes, for its tag
        self.text = text


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._pending = 0
        self._inflate: zlib._Decompress | None = None
        self._deflate: zlib._Compress | None = None

    # ------------------------------------------------------------ reading

    async def _fill(self) -> None:
        inflate = self._inflate
        if inflate is not None and inflate.unconsumed_tail:
            chunk = inflate.unconsumed_tail
        else:
            chunk = await self.reader.read(READ_SIZE)
            if not chunk:
                raise Closed("end of input")
        if inflate is not None:
            try:
                # Bounded steps: a small compressed input cannot expand into a big buffer.
                chunk = inflate.decompress(chunk, INFLATE_STEP)
            except zlib.error:
                raise Closed("bad DEFLATE stream") from None
        self._buf += chunk

    async def read_line(self, limit: int = MAX_LINE) -> bytes:
        """One line with its line ending; Closed when over `limit` (nothing to resync on)."""
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end >= limit:
                raise Closed("line too long")
            if end >= 0:
                line = bytes(self._buf[: end + 1])
                del self._buf[: end + 1]
                return line
            if len(self._buf) > limit:
                raise Closed("line too long")
            start = len(self._buf)
            await self._fill()

    async def read_exact(self, size: int) -> bytes:
        while len(self._buf) < size:
            await self._fill()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    async def skip(self, size: int) -> None:
        """Read and drop `size` bytes (a non-synchronising literal we refuse)."""
        while size > 0:
            if not self._buf:
                await self._fill()
            taken = min(size, len(self._buf))
            del self._buf[:taken]
            size -= taken

    async def read_command(self, max_literal: int) -> bytes:
        parts: list[bytes] = []
        total = literals = 0
        while True:
            line = await self.read_line()
            total += len(line)
            found = _LITERAL_AT_END.search(line)
            if found is None:
                parts.append(line.rstrip(b"\r\n"))
                if total > MAX_COMMAND:
                    raise TooBig(parts[0][:64], "command too long")
                return b"".join(parts)
            size, sync = int(found.group(2)), not found.group(3)
            literals += 1
            head = (parts[0] if parts else line)[:64]
            if size > max_literal or literals > MAX_LITERALS or total > MAX_COMMAND:
                if not sync:  # the client sends it anyway (RFC 7888 §4): read past it
                    await self.skip(size)
                    await self.read_line()
                raise TooBig(head, f"literal too big (the limit is {max_literal} octets)")
            parts.append(line[: found.end(3) + 1] + b"\r\n")
            if sync:
                self.write(b"+ Ready for literal data\r\n")
                await self.flush()
            parts.append(await self.read_exact(size))

    def buffered(self) -> bool:
        """Whether input is waiting beyond the current command (STARTTLS injection)."""
        return bool(self._buf) or bool(getattr(self.reader, "_buffer", b""))

    # ------------------------------------------------------------ writing

    def write(self, data: bytes) -> None:
        self._out.append(data)
        self._pending += len(data)

    @property
    def pending(self) -> int:
        return self._pending

    def push(self) -> None:
        """Hand what is waiting to the transport without waiting for the client."""
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._pending = 0
            if self._deflate is not None:
                data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
            self.writer.write(data)

    async def flush(self) -> None:
        self.push()
        await self.writer.drain()

    # ------------------------------------------------------------ layers

    async def start_tls(self, context: ssl.SSLContext) -> None:
        # No task in between (asyncio.timeout, not wait_for): the loop must not run
        # before start_tls pauses reading, or the client's first TLS bytes land in
        # the plain-text buffer and the handshake never completes.
        async with asyncio.timeout(30):
            await self.writer.start_tls(context)

    def start_compress(self) -> None:
        """COMPRESS=DEFLATE (RFC 4978): raw deflate both ways from the next byte on."""
        self._inflate = zlib.decompressobj(-15)
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        if self._buf:  # bytes already read after the COMPRESS command are compressed
            pending, self._buf = bytes(self._buf), bytearray()
            try:
                self._buf += self._inflate.decompress(pending, INFLATE_STEP)
            except zlib.error:
                raise Closed("bad DEFLATE stream") from None

    @property
    def compressed(self) -> bool:
        return self._deflate is not None

    def close(self) -> None:
        self.writer.close()
