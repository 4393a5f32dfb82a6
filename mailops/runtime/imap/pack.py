"""Writing IMAP responses: strings, lists, NIL — the data forms of RFC 3501 §4.

Everything is bytes. `encode` maps Python values onto IMAP data: None → NIL,
int → number, `Atom` → as is, str/bytes → a quoted string when that is safe and
short, else a literal, list/tuple → a parenthesized list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from mailops.runtime.store import names

_QUOTABLE = re.compile(rb'[^\x00\r\n\x80-\xff]{0,200}')
_QUOTABLE_UTF8 = re.compile(rb'[^\x00\r\n]{0,200}')
_ATOMIC = re.compile(rb"[^(){ \x00-\x1f\x7f%*\"\\\]\x80-\xff]+")


class Atom(str):
    """Text written as it is: flags, keywords, atoms (`\\Seen`, `NIL`-free names)."""


class Raw(bytes):
    """Bytes that are already encoded IMAP data (a cached ENVELOPE, say)."""


def string(value: bytes | str | None, utf8: bool = False) -> bytes:
    """An nstring: NIL, a quoted string, or a literal for 8-bit, CR/LF or long text."""
    if value is None:
        return b"NIL"
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    pattern = _QUOTABLE_UTF8 if utf8 else _QUOTABLE
    if pattern.fullmatch(data):
        if b"\\" in data or b'"' in data:
            data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        return b'"' + data + b'"'
    return literal(data)


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def astring(value: bytes | str) -> bytes:
    """An atom when the text allows it, else a string (for mailbox names, keys)."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if _ATOMIC.fullmatch(data) and data.upper() != b"NIL":
        return data
    return string(data)


def mailbox(name: str, utf8: bool = False) -> bytes:
    """A mailbox name on the wire: modified UTF-7 unless UTF8=ACCEPT is enabled."""
    if name == names.INBOX:
        return b"INBOX"
    text = name if utf8 else names.encode_mutf7(name)
    return string(text, utf8=utf8)


def encode(value: Any) -> bytes:
    if value is None:
        return b"NIL"
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, Atom):
        return value.encode("ascii")
    if isinstance(value, bool):
        raise TypeError("no IMAP form for a boolean")
    if isinstance(value, int):
        return str(value).encode("ascii")
    if isinstance(value, (str, bytes)):
        return string(value)
    if isinstance(value, (list, tuple)):
        return b"(" + b" ".join(encode(item) for item in value) + b")"
    raise TypeError(f"no IMAP form for {type(value).__name__}")


def flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + " ".join(sorted(flags)).encode("utf-8", "surrogateescape") + b")"
