"""Message bytes → POP3 multi-line responses: CRLF line ends and dot-stuffing.

Maildir files hold what was delivered: CRLF from SMTP, bare LF from local tools, maybe
no final line break. POP3 sends every line ending as CRLF, doubles a leading "." (RFC
1939 §3) and ends with ".CRLF". `multiline` does this for a message read whole;
`Stuffer` does it chunk by chunk, so a large message streams without being held in
memory. Sizes announced by LIST match what RETR sends before dot-stuffing.
"""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from mailops.runtime.store import Message

_BARE_LF = re.compile(rb"(?<!\r)\n")
_DOT_LINE = re.compile(rb"\n\.")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
TERMINATOR = b".\r\n"
CHUNK = 256 * 1024
MAX_UIDL = 70  # RFC 1939 §7: 1 to 70 characters in 0x21–0x7E


def pop3_size(message: Message) -> int:
    """Octets RETR sends before dot-stuffing: CRLF size, plus the CRLF a message
    without a final line break gets so that the terminator starts a line."""
    return message.vsize + (0 if message.eol else 2)


def uidl(message: Message) -> str:
    """A stable unique id: the Maildir base name, which never changes for the life of
    the message (not even when the index is rebuilt), hashed when it does not fit."""
    key = message.key
    # 0x21–0x7E: printable ASCII but the space (str methods: no per-character loop).
    if 0 < len(key) <= MAX_UIDL and key.isascii() and key.isprintable() and " " not in key:
        return key
    return "H" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def multiline(head: bytes, data: bytes, crlf_only: bool = False) -> bytes:
    """A whole response: the `head` line, then a whole message (or TOP's part of one)
    as a multi-line body with its terminator: what `Stuffer` makes of it, in one go.

    The passes over the message are C loops, picked by measurement (a 6 KiB message):
    the bare-LF check (two counts, skipped when `crlf_only` is known) and the
    conversion (two replaces) are several times faster than the lookbehind regex;
    dot-stuffing with the literal regex is faster than `bytes.replace`, which scans
    twice; and one `join` copies the message once more, not once per part.
    """
    if not crlf_only and data.count(b"\n") != data.count(b"\r\n"):
        # Every LF becomes CRLF, a CRLF stays one (so does the CR of a CR CRLF).
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    data = _DOT_LINE.sub(b"\n..", data)
    return b"".join(
        (
            head,
            b"." if data.startswith(b".") else b"",
            data,
            b"\r\n" if data and not data.endswith(b"\n") else b"",  # the terminator
            TERMINATOR,  # must start a line
        )
    )


class Stuffer:
    def __init__(self, crlf_only: bool = False) -> None:
        """`crlf_only`: the message is known to hold no bare LF (its CRLF size equals its
        size, as for everything SMTP delivered), so line ends need no conversion."""
        self._line_start = True
        self._after_cr = False
        self._empty = True
        self._crlf_only = crlf_only

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        self._empty = False
        if not self._crlf_only and chunk.count(b"\n") != chunk.count(b"\r\n"):
            head = b""
            if self._after_cr and chunk.startswith(b"\n"):
                head, chunk = b"\n", chunk[1:]  # the LF of a CRLF split between chunks
            chunk = head + _BARE_LF.sub(b"\r\n", chunk)
        out = chunk.replace(b"\n.", b"\n..") if b"\n." in chunk else chunk
        if self._line_start and out.startswith(b"."):
            out = b"." + out
        self._after_cr = out.endswith(b"\r")
        self._line_start = out.endswith(b"\n")
        return out

    def finish(self) -> bytes:
        if self._empty or self._line_start:
            return TERMINATOR
        return b"\r\n" + TERMINATOR


def top_of(handle: BinaryIO, lines: int) -> bytes:
    """The header, the empty line and the first `lines` body lines (TOP)."""
    data = b""
    while True:
        chunk = handle.read(64 * 1024)
        data += chunk
        cut = _top_cut(data, lines)
        if cut is not None:
            return data[:cut]
        if not chunk:
            return data


def _top_cut(data: bytes, lines: int) -> int | None:
    if data.startswith(b"\r\n"):
        body = 2
    elif data.startswith(b"\n"):
        body = 1
    else:
        match = _HEADER_END.search(data)
        if match is None:
            return None
        body = match.end()
    pos = body
    for _ in range(lines):
        newline = data.find(b"\n", pos)
        if newline == -1:
            return None
        pos = newline + 1
    return pos
