"""A line-oriented client connection for the probes: SMTP replies, IMAP and POP3
lines, STARTTLS in the middle of a session, every read and write bounded by
a timeout. Bytes on the wire only; what they mean is each protocol's module."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

from mailops.audit.net import ProtocolError

MAX_LINE = 1 << 20


@dataclass(frozen=True)
class Reply:
    """An SMTP reply: its code and the text of each line."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class Wire:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float):
        self.reader, self.writer, self.timeout = reader, writer, timeout

    @classmethod
    async def open(
        cls,
        address: str,
        port: int,
        timeout: float,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Wire:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                address,
                port,
                ssl=tls,
                server_hostname=server_hostname if tls else None,
                ssl_handshake_timeout=timeout if tls else None,
                limit=MAX_LINE,
            ),
            timeout,
        )
        return cls(reader, writer, timeout)

    async def raw_line(self) -> bytes:
        """One line without its CRLF; the server closing instead is an error."""
        data = await asyncio.wait_for(self.reader.readuntil(b"\n"), self.timeout)
        return data.rstrip(b"\r\n")

    async def line(self) -> str:
        return (await self.raw_line()).decode("utf-8", "replace")

    async def exactly(self, size: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(size), self.timeout)

    async def send(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.writer.write(data if data.endswith(b"\r\n") else data + b"\r\n")
        await asyncio.wait_for(self.writer.drain(), self.timeout)

    async def reply(self) -> Reply:
        """An SMTP reply, however many lines (`250-…` continues, `250 …` ends)."""
        lines = []
        while True:
            line = await self.line()
            if len(line) < 3 or not line[:3].isdigit():
                raise ProtocolError(f"not an SMTP reply: {line[:80]!r}")
            lines.append(line[4:])
            if line[3:4] != "-":
                return Reply(int(line[:3]), tuple(lines))

    async def command(self, text: str) -> Reply:
        await self.send(text)
        return await self.reply()

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        await self.writer.start_tls(
            context, server_hostname=server_hostname, ssl_handshake_timeout=self.timeout
        )

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        return self.writer.get_extra_info("ssl_object")

    def peer_certificate(self) -> bytes | None:
        obj = self.ssl_object
        return obj.getpeercert(binary_form=True) if obj is not None else None

    def tls_version(self) -> str:
        obj = self.ssl_object
        if obj is None:
            return "no TLS"
        cipher = obj.cipher()
        return f"{obj.version()} {cipher[0] if cipher else ''}".strip()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):  # closing a connection the server dropped
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
