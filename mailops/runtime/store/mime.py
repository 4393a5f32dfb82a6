"""The parse the index caches per message: header block, envelope, MIME structure.

Computed once (at scan time for new mail, on first use otherwise) so that IMAP's
FETCH ENVELOPE, BODY, BODYSTRUCTURE and HEADER.FIELDS never open the message file
and cost no more than a slice of the cache blob. The blob holds:

- the raw header block of the message (for HEADER.FIELDS and header SEARCH);
- ENVELOPE, BODY and BODYSTRUCTURE already encoded as IMAP data (RFC 3501 §7.4.2);
- a small JSON document: the part tree with raw offsets ("start", "header_size",
  "body_size") for `BODY[section]` fetches.

Layout: `MCP3`, five 4-byte big-endian lengths (header, envelope, body,
bodystructure, json), a line feed, then those five pieces in that order. The line
feed lets a pattern that starts with "\n" find the first header field in place
(`header_span`). Blobs with another magic are stale: `is_current` says so and the
store parses the message again.

The MIME rules follow what Dovecot does, so that clients see what they are used to:
a boundary line needs only to start with `--boundary` and the longest boundary of
any enclosing multipart wins (RFC 2046 §5.1.2); the line break before a delimiter
belongs to the delimiter; a part without Content-Type is text/plain (message/rfc822
inside multipart/digest); Content-* fields count only in MIME parts; RFC 2231
continuations are joined but not decoded (RFC 2231 §8); sizes count line ends as
CRLF and "lines" counts line feeds.
"""

from __future__ import annotations

import bisect
import json
import re
import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

MAGIC = b"MCP3"
_LAYOUT = struct.Struct(">5I")
_HEAD = len(MAGIC) + _LAYOUT.size + 1  # the pieces start after the line feed
_FIRST_TWO = struct.Struct(">2I")
_FIRST_FOUR = struct.Struct(">4I")
MAX_DEPTH = 100  # nested multiparts/messages beyond this are leaves (Dovecot's limit)
MAX_PARTS = 10_000

Address = tuple[bytes | None, bytes | None, bytes | None, bytes | None]

# ======================================================================== the blob


def parse_to_cache(data: bytes) -> bytes:
    """The cache blob of a message (see the module docstring)."""
    root = _Parser(data).message()
    header = data[root.start : root.body_start]
    if root.plain_7bit():
        # Dovecot answers such messages with this fixed form once it has seen them.
        body = _PLAIN_7BIT % (root.size, root.lines)
        structure = body + b" NIL NIL NIL NIL"
    else:
        body, structure = root.imap(extended=False), root.imap(extended=True)
    pieces = (
        header,
        _envelope_imap(root.envelope()),
        body,
        structure,
        json.dumps(root.tree(), separators=(",", ":")).encode(),
    )
    return MAGIC + _LAYOUT.pack(*map(len, pieces)) + b"\n" + b"".join(pieces)


_PLAIN_7BIT = b'"text" "plain" ("charset" "us-ascii") NIL NIL "7bit" %d %d'


def is_current(blob: bytes) -> bool:
    """Whether a blob has this module's format (older ones are parsed again)."""
    return blob[:4] == MAGIC


def _piece(blob: bytes, index: int) -> bytes:
    if blob[:4] != MAGIC:
        raise ValueError("not a current mailops cache entry")
    sizes = _LAYOUT.unpack_from(blob, 4)
    start = _HEAD + sum(sizes[:index])
    return blob[start : start + sizes[index]]


# The four accessors below run once per message of a FETCH: they trust the blob to
# be current (FolderView.cached only returns current ones) and slice it directly.


def cached_header(blob: bytes) -> bytes:
    """The raw header block of the message, with the empty line that ends it."""
    return blob[_HEAD : _HEAD + int.from_bytes(blob[4:8], "big")]


def header_span(blob: bytes) -> tuple[int, int]:
    """Where the header block is in the blob; blob[start - 1] is a line feed."""
    return _HEAD, _HEAD + int.from_bytes(blob[4:8], "big")


def cached_envelope(blob: bytes) -> bytes:
    """ENVELOPE as IMAP data: `(date subject from … message-id)`."""
    header, envelope = _FIRST_TWO.unpack_from(blob, 4)
    start = _HEAD + header
    return blob[start : start + envelope]


def cached_body(blob: bytes) -> bytes:
    """BODY (the non-extensible BODYSTRUCTURE) as IMAP data."""
    header, envelope, body, _ = _FIRST_FOUR.unpack_from(blob, 4)
    start = _HEAD + header + envelope
    return blob[start : start + body]


def cached_bodystructure(blob: bytes) -> bytes:
    header, envelope, body, structure = _FIRST_FOUR.unpack_from(blob, 4)
    start = _HEAD + header + envelope + body
    return blob[start : start + structure]


def cached_tree(blob: bytes) -> dict[str, Any]:
    """The part tree with raw offsets ("start", "header_size", "body_size"; "parts"
    of a multipart, "body" of a message/rfc822 part) for BODY[section]."""
    return json.loads(_piece(blob, 4))


def load_cache(blob: bytes) -> tuple[bytes, dict[str, Any]]:
    """(raw header block, {"envelope": values, "body": part tree}) from a cache blob.
    The envelope values (str, addresses as lists) are parsed again from the header:
    FETCH uses the encoded form, this is for callers that want values."""
    header = cached_header(blob)
    part = _Part(header, 0)
    part.body_start = len(header)
    part.fields = _fields(header)
    return header, {"envelope": _envelope_values(part.envelope()), "body": cached_tree(blob)}


# ================================================================== header fields

_BLANK_LINE = re.compile(rb"\n\r?\n")
# One field: a line that does not start with white space, and its continuation lines.
_FIELD = re.compile(rb"[^ \t\n][^\n]*\n?(?:[ \t][^\n]*\n?)*")
LWSP = b" \t"


def header_fields(block: bytes) -> Iterator[tuple[bytes, bytes, int, int]]:
    """(lower-case name, value, start, end) of each field of a header block.

    The value is what follows the colon, first-line white space skipped, folding
    kept, the final line break dropped; a line without a colon is a field whose
    name is the whole line and whose value is empty (as Dovecot reads it).
    """
    for match in _FIELD.finditer(block):
        raw = match.group()
        if raw in (b"\r\n", b"\n", b"\r"):
            break  # the empty line that ends the header
        text = raw[:-1] if raw.endswith(b"\n") else raw
        if text.endswith(b"\r"):
            text = text[:-1]
        line_end = text.find(b"\n")
        colon = text.find(b":", 0, line_end if line_end >= 0 else len(text))
        if colon < 0:
            yield text.lower(), b"", match.start(), match.end()
            continue
        value = text[colon + 1 :]
        first = value.split(b"\n", 1)[0]
        first = first[:-1] if first.endswith(b"\r") else first
        lead = len(first) - len(first.lstrip(LWSP))
        if lead and lead == len(first):
            lead = 1  # a first line of white space only loses just one character
        yield text[:colon].rstrip(LWSP).lower(), value[lead:], match.start(), match.end()


# Name and value of each field of a header block with "\n" put in front; lines
# without a colon are not fields (nothing in the envelope or Content-* reads them).
_NAME_VALUE = re.compile(rb"\n([^ \t\r\n:][^\r\n:]*?)[ \t]*:([ \t]*)([^\n]*(?:\n[ \t][^\n]*)*)")


def _fields(block: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, value) of each field: `header_fields` without offsets, in
    one regex pass, for the parse of every message."""
    out = []
    for name, space, value in _NAME_VALUE.findall(b"\n" + block):
        if value.endswith(b"\r"):
            value = value[:-1]
        if space and value[:1] in b"\r\n":
            value = space[1:] + value  # a first line of white space loses one character
        out.append((name.lower(), value))
    return out


# =============================================================== RFC 822 lexing

# atext of RFC 5322 plus 8-bit bytes; "mime" is atext without the MIME tspecials.
_ATEXT = frozenset(b"!#$%&'*+-/=?^_`{|}~" + bytes(range(0x30, 0x3A)) + bytes(range(0x41, 0x5B))
                   + bytes(range(0x61, 0x7B)) + bytes(range(0x80, 0x100)))
_MIME_TOKEN = _ATEXT - frozenset(b"/=?") | frozenset(b".")
_ATEXT_OR_DOT = _ATEXT | frozenset(b".")
_SPACE = frozenset(b" \t\r\n")


def _run_of(chars: frozenset[int]) -> re.Pattern[bytes]:
    return re.compile(b"[" + b"".join(re.escape(bytes([c])) for c in sorted(chars)) + b"]*")


_RUNS = {chars: _run_of(chars) for chars in (_ATEXT, _MIME_TOKEN, _ATEXT_OR_DOT)}


class _Lexer:
    """A cursor over a header value with the RFC 822 token rules Dovecot uses.

    Methods return 1 (more input follows), 0 (input ended) or -1 (syntax error),
    so the address grammar can mirror its error recovery exactly.
    """

    __slots__ = ("data", "end", "last_comment", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)
        self.last_comment = b""

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < self.end else 0

    def skip_comment(self) -> int:
        data, level = self.data, 1
        self.last_comment = b""
        self.pos += 1
        start = self.pos
        parts: list[bytes] = []
        while self.pos < self.end:
            char = data[self.pos]
            if char == 0x28:  # (
                level += 1
            elif char == 0x29:  # )
                level -= 1
                if level == 0:
                    parts.append(data[start : self.pos])
                    self.last_comment = b"".join(parts)
                    self.pos += 1
                    return 1 if self.pos < self.end else 0
            elif char == 0x5C:  # backslash: the next character is literal
                parts.append(data[start : self.pos])
                start = self.pos + 1
                self.pos += 1
                if self.pos >= self.end:
                    return -1
            self.pos += 1
        return -1

    def skip_lwsp(self) -> int:
        data = self.data
        while self.pos < self.end:
            char = data[self.pos]
            if char in _SPACE:
                self.pos += 1
            elif char == 0x28:
                if self.skip_comment() < 0:
                    return -1
            else:
                break
        return 1 if self.pos < self.end else 0

    def _run(self, allowed: frozenset[int]) -> bytes:
        start = self.pos
        self.pos = _RUNS[allowed].match(self.data, start).end()  # type: ignore[union-attr]
        return self.data[start : self.pos]

    def atom(self, out: list[bytes]) -> int:
        if self.pos >= self.end or self.data[self.pos] not in _ATEXT:
            return -1
        out.append(self._run(_ATEXT))
        return self.skip_lwsp() if self.pos < self.end else 0

    def dot_atom(self, out: list[bytes]) -> int:
        """dot-atom, with white space around the dots allowed (RFC 822)."""
        if self.pos >= self.end or self.data[self.pos] not in _ATEXT:
            return -1
        while True:
            out.append(self._run(_ATEXT))
            if self.pos >= self.end:
                return 0
            ret = self.skip_lwsp()
            if ret <= 0:
                return ret
            if self.data[self.pos] != 0x2E:
                return 1
            self.pos += 1
            out.append(b".")
            ret = self.skip_lwsp()
            if ret <= 0:
                return ret

    def mime_token(self, out: list[bytes]) -> int:
        out.append(self._run(_MIME_TOKEN))
        return self.skip_lwsp() if self.pos < self.end else 0

    def quoted_string(self, out: list[bytes]) -> int:
        data = self.data
        self.pos += 1
        start = self.pos
        while self.pos < self.end:
            char = data[self.pos]
            if char == 0x22:
                out.append(data[start : self.pos])
                self.pos += 1
                return self.skip_lwsp()
            if char == 0x0A:  # folding inside the string: drop the line break
                cut = self.pos - 1 if self.pos > start and data[self.pos - 1] == 0x0D else self.pos
                out.append(data[start:cut])
                start = self.pos + 1
            elif char == 0x5C:
                self.pos += 1
                if self.pos >= self.end:
                    return -1
                out.append(data[start : self.pos - 1])
                start = self.pos
            self.pos += 1
        return -1

    def phrase(self, out: list[bytes]) -> int:
        """phrase / obs-phrase: words and dots, joined by single spaces."""
        if self.pos >= self.end:
            return 0
        if self.data[self.pos] == 0x2E:
            return -1
        while True:
            if self.data[self.pos] == 0x22:
                ret = self.quoted_string(out)
            else:
                out.append(self._run(_ATEXT_OR_DOT))
                ret = self.skip_lwsp() if self.pos < self.end else 0
            if ret <= 0:
                return ret
            if self.data[self.pos] not in _ATEXT_OR_DOT and self.data[self.pos] != 0x22:
                break
            out.append(b" ")
        return self.skip_lwsp()

    def domain(self, out: list[bytes]) -> int:
        """After "@": a dot-atom or a [domain literal]."""
        self.pos += 1
        if self.skip_lwsp() <= 0:
            return -1
        if self.data[self.pos] != 0x5B:
            return self.dot_atom(out)
        start = self.pos
        while self.pos < self.end:
            char = self.data[self.pos]
            if char == 0x5C:
                self.pos += 1
            elif char == 0x5D:
                self.pos += 1
                out.append(self.data[start : self.pos])
                return self.skip_lwsp()
            self.pos += 1
        return -1


# ==================================================================== addresses


class _Addresses:
    """An address-list (RFC 5322 §3.4) as IMAP address structures, with Dovecot's
    recovery from broken input (MISSING_MAILBOX, MISSING_DOMAIN, SYNTAX_ERROR)."""

    def __init__(self, value: bytes) -> None:
        self.lex = _Lexer(value)
        self.found: list[Address] = []
        self._reset()

    def _reset(self) -> None:
        self.name: bytes | None = None
        self.route: bytes | None = None
        self.mailbox: bytes | None = None
        self.domain: bytes | None = None
        self.local_text = b""
        self.invalid = False

    def _add(self) -> None:
        self.found.append((self.name, self.route, self.mailbox, self.domain))
        self._reset()

    def _add_fixed(self) -> None:
        if self.mailbox is None:
            self.mailbox = b"MISSING_MAILBOX"
        if not self.domain:
            self.domain = b"MISSING_DOMAIN"
        self._add()

    def parse(self) -> list[Address]:
        if self.lex.skip_lwsp() <= 0:
            return []
        while True:
            if self._address() == 0:
                break
            if self.lex.peek() != 0x2C or self.lex.pos >= self.lex.end:
                break
            self.lex.pos += 1
            ret = self.lex.skip_lwsp()
            if ret <= 0:
                if ret < 0:
                    self._add_fixed()
                break
        return self.found

    def _address(self) -> int:
        start = self.lex.pos
        ret = self._group()
        if ret < 0:
            self.lex.pos = start
            ret = self._mailbox()
        return ret

    def _group(self) -> int:
        lex = self.lex
        words: list[bytes] = []
        if lex.phrase(words) <= 0 or lex.peek() != 0x3A:
            return -1
        lex.pos += 1
        ret = lex.skip_lwsp()
        self.mailbox = b"".join(words)
        self._add()
        if ret > 0 and lex.peek() != 0x3B:
            while True:
                self._mailbox()
                if lex.pos >= lex.end or lex.peek() != 0x2C:
                    break
                lex.pos += 1
                if lex.skip_lwsp() <= 0:
                    ret = -1
                    break
        if ret >= 0:
            if lex.pos >= lex.end or lex.peek() != 0x3B:
                ret = -1
            else:
                lex.pos += 1
                ret = lex.skip_lwsp()
        self._add()  # the end of the group: all four NIL
        return 0 if ret == 0 else 1

    def _mailbox(self) -> int:
        start = self.lex.pos
        ret = self._name_addr()
        if ret < 0:
            self.lex.pos = start
            self._reset()
            ret = self._addr_spec()
            if self.invalid and self.name is None and self.domain is None:
                self.name, self.mailbox = self.mailbox, None  # a lone word is a name
        self._add_fixed()
        return ret

    def _name_addr(self) -> int:
        lex = self.lex
        words: list[bytes] = []
        if lex.phrase(words) <= 0 or lex.peek() != 0x3C:
            return -1
        self.name = b"".join(words) or None
        if self._angle_addr() < 0:
            self.domain = b"SYNTAX_ERROR"
            self.invalid = True
        return 1 if lex.pos < lex.end else 0

    def _angle_addr(self) -> int:
        lex = self.lex
        lex.pos += 1
        if lex.skip_lwsp() <= 0:
            return -1
        if lex.peek() == 0x40:
            if self._domain_list() > 0 and lex.peek() == 0x3A:
                lex.pos += 1
            else:
                self.route = b"INVALID_ROUTE"
                if lex.pos >= lex.end:
                    return -1
            if lex.skip_lwsp() <= 0:
                return -1
        if lex.peek() != 0x3E:  # "<>" has neither mailbox nor domain
            if self._local_part() <= 0:
                return -1
            if lex.peek() == 0x40:
                out: list[bytes] = []
                if lex.domain(out) <= 0:
                    return -1
                self.domain = b"".join(out)
        if lex.peek() != 0x3E:
            return -1
        lex.pos += 1
        return lex.skip_lwsp()

    def _domain_list(self) -> int:
        lex = self.lex
        route: list[bytes] = []
        while True:
            if lex.pos >= lex.end:
                return 0
            if lex.peek() != 0x40:
                break
            if route:
                route.append(b",")
            route.append(b"@")
            ret = lex.domain(route)
            if ret <= 0:
                return ret
            while lex.skip_lwsp() > 0 and lex.peek() == 0x2C:
                lex.pos += 1
        self.route = b"".join(route)
        return 1

    def _local_part(self) -> int:
        lex = self.lex
        out: list[bytes] = []
        ret = lex.quoted_string(out) if lex.peek() == 0x22 else self._dotted_words(out)
        self.local_text = b"".join(out)  # kept even when broken: it may become a name
        if ret < 0:
            return -1
        self.mailbox = self.local_text
        return ret

    def _dotted_words(self, out: list[bytes]) -> int:
        """A local part of atoms and dots, leniently: "a..b" and "a." pass, and
        white space may come before a dot but not after it."""
        lex = self.lex
        ret = -1
        while True:
            while lex.pos < lex.end and lex.peek() == 0x2E:
                out.append(b".")
                lex.pos += 1
                if lex.pos >= lex.end:
                    return 0
                ret = 1
            if lex.peek() == 0x40:
                return ret
            ret = lex.atom(out)
            if ret <= 0 or lex.peek() != 0x2E:
                return ret

    def _addr_spec(self) -> int:
        lex = self.lex
        lex.last_comment = b""
        quoted = lex.peek() == 0x22
        ret = self._local_part()
        ret2 = -2
        if ret <= 0:
            self.invalid = True
        if ret != 0 and lex.pos < lex.end and lex.peek() == 0x40:
            out: list[bytes] = []
            ret2 = lex.domain(out)
            if ret2 >= 0:
                self.domain = b"".join(out)
            if ret2 <= 0:
                ret = ret2
        if lex.last_comment:
            self.name = lex.last_comment
        elif ret2 == -2:
            # "user" alone is a mailbox; "user and more words" is a display name.
            words = [self.local_text, b" "]
            before = len(b"".join(words))
            lex.phrase(words)
            if len(b"".join(words)) != before:
                self.mailbox = None
                self.name = b"".join(words)
            elif not quoted:
                self.domain = b""
            self.invalid = True
            ret = -1
        return ret


def parse_addresses(value: bytes) -> list[Address]:
    """An address-list header value → (name, route, mailbox, host) tuples; a group
    is (None, None, name, None) … (None, None, None, None)."""
    simple = _simple_addresses(value)
    return simple if simple is not None else _Addresses(value).parse()


_A = rb"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\xff]"
_DOT_ATOM = _A + rb"+(?:\." + _A + rb"+)*"
# The everyday forms, for which the grammar above gives the obvious answer: words
# (single spaces, no leading dot) or a quoted string without escapes before
# <local@domain>, or local@domain alone; then a comma or the end.
_SIMPLE_ADDRESS = re.compile(
    rb'[ \t]*(?:(?:(' + _A + rb'(?:' + _A + rb'|\.| (?=' + _A + rb'|\.))*)|"([^"\\\r\n]*)")[ \t]*)?'
    rb"<(" + _DOT_ATOM + rb")@(" + _DOT_ATOM + rb")>[ \t]*(,|\Z)"
    rb"|[ \t]*(" + _DOT_ATOM + rb")@(" + _DOT_ATOM + rb")[ \t]*(,|\Z)"
)


def _simple_addresses(value: bytes) -> list[Address] | None:
    """The address list when every address has an everyday form, else None."""
    found: list[Address] = []
    pos, end = 0, len(value)
    while pos < end:
        match = _SIMPLE_ADDRESS.match(value, pos)
        if match is None:
            return None
        word, quoted, local, domain, sep, bare_local, bare_domain, bare_sep = match.groups()
        if local is not None:
            found.append((word or quoted or None, None, local, domain))
            sep_found = sep
        else:
            found.append((None, None, bare_local, bare_domain))
            sep_found = bare_sep
        pos = match.end()
        if sep_found == b"," and pos >= end:
            return None  # a trailing comma: the full grammar decides
    return found or None


# ================================================================ content fields


def _content_type(value: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]] | None]:
    """(type, subtype, parameters or None when the field is broken)."""
    lex = _Lexer(value)
    lex.skip_lwsp()
    out: list[bytes] = []
    ok = _type_subtype(lex, out)
    text = b"".join(out)
    kind, slash, sub = text.partition(b"/")
    if not ok:
        return kind, sub if slash else b"", None
    return kind, sub, _parameters(lex)


def _type_subtype(lex: _Lexer, out: list[bytes]) -> bool:
    if lex.skip_lwsp() <= 0:
        return False
    if lex.mime_token(out) <= 0 or not out[-1]:
        return False
    if lex.peek() != 0x2F:
        out.clear()
        return False
    lex.pos += 1
    if lex.skip_lwsp() <= 0:
        out.clear()
        return False
    out.append(b"/")
    before = len(out)
    ret = lex.mime_token(out)
    if ret < 0 or not out[before] or (lex.pos < lex.end and lex.peek() != 0x3B):
        out.clear()
        return False
    return True


# After the first "*" of a parameter name: "*" alone (extended), or "*n" / "*n*".
_SECTION_NAME = re.compile(rb"\*(?:([0-9]+)(\*)?|)")


def _parameters(lex: _Lexer) -> list[tuple[bytes, bytes]]:
    """`; key=value` parameters with RFC 2231 continuations joined (not decoded)."""
    plain: list[tuple[bytes, bytes]] = []
    pieces: list[tuple[bytes, int, bool, bytes]] = []  # (name, index, extended, value)
    while True:
        ret, key, value = _parameter(lex)
        if ret == 0:
            break
        if ret < 0:
            if lex.pos >= lex.end:
                break
            lex.pos += 1
            continue
        star = key.find(b"*")
        if star < 0:
            plain.append((key, value))
            continue
        found = _SECTION_NAME.fullmatch(key, star)
        if found is None:
            plain.append((key, value))  # not name*, name*n or name*n*: an ordinary name
        else:
            index = int(found.group(1) or 0)
            extended = not found.group(1) or bool(found.group(2))
            pieces.append((key[:star], index, extended, value))
    return plain + _joined(pieces)


def _parameter(lex: _Lexer) -> tuple[int, bytes, bytes]:
    if lex.pos >= lex.end:
        return 0, b"", b""
    if lex.peek() != 0x3B:
        return -1, b"", b""
    lex.pos += 1
    if lex.skip_lwsp() <= 0:
        return -1, b"", b""
    key: list[bytes] = []
    if lex.mime_token(key) <= 0:  # an empty name passes, as in Dovecot
        return -1, b"", b""
    if lex.peek() != 0x3D:
        return -1, b"", b""
    lex.pos += 1
    value: list[bytes] = []
    ret = lex.skip_lwsp()
    if ret <= 0:
        pass  # no value
    elif lex.peek() == 0x22:
        ret = lex.quoted_string(value)
    elif lex.peek() == 0x3D:  # broken but common: name==?utf-8?b?…?=
        start = lex.pos
        while lex.pos < lex.end and lex.data[lex.pos] not in b"; \t\r\n":
            lex.pos += 1
        value.append(lex.data[start : lex.pos])
    else:
        ret = lex.mime_token(value)
    return (-1 if ret < 0 else 1), key[0], b"".join(value)


def _joined(pieces: list[tuple[bytes, int, bool, bytes]]) -> list[tuple[bytes, bytes]]:
    if not pieces:
        return []
    pieces.sort(key=lambda piece: (piece[0], piece[1]))
    out: list[tuple[bytes, bytes]] = []
    i = 0
    while i < len(pieces):
        j = i
        while j < len(pieces) and pieces[j][0].lower() == pieces[i][0].lower():
            j += 1
        group = pieces[i:j]
        extended = any(piece[2] for piece in group)
        if any(piece[1] != n for n, piece in enumerate(group)):  # a missing index
            for name, index, ext, value in group:
                out.append((b"%s*%d%s" % (name, index, b"*" if ext else b""), value))
        else:
            value = b"''" if extended and not group[0][2] else b""
            for _, _, ext, piece in group:
                value += piece.replace(b"%", b"%25") if extended and not ext else piece
            out.append((group[0][0] + (b"*" if extended else b""), value))
        i = j
    return out


def _token_field(value: bytes) -> bytes | None:
    """Content-Transfer-Encoding: one token and nothing else."""
    lex = _Lexer(value)
    lex.skip_lwsp()
    out: list[bytes] = []
    if lex.mime_token(out) < 0 or lex.skip_lwsp() != 0 or not out[0]:
        return None
    return out[0]


def _disposition(value: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    lex = _Lexer(value)
    lex.skip_lwsp()
    out: list[bytes] = []
    if lex.mime_token(out) < 0:
        return None
    return out[0], _parameters(lex)


def _languages(value: bytes) -> list[bytes] | None:
    lex = _Lexer(value)
    lex.skip_lwsp()
    found: list[bytes] = []
    while True:
        out: list[bytes] = []
        if lex.atom(out) < 0:
            break
        found.append(out[0])
        if lex.pos >= lex.end or lex.peek() != 0x2C:
            break
        lex.pos += 1
        lex.skip_lwsp()
    return found or None


# ==================================================================== the parts

MULTIPART, RFC822, TEXT, DIGEST = 1, 2, 4, 8
HEADER_CUT = 16  # a boundary line ended the header
_ENVELOPE_FIELDS = (
    b"date", b"subject", b"from", b"sender", b"reply-to",
    b"to", b"cc", b"bcc", b"in-reply-to", b"message-id",
)  # fmt: skip
_ENVELOPE_INDEX = {name: i for i, name in enumerate(_ENVELOPE_FIELDS)}


class _Part:
    """One MIME entity: raw offsets, flags, and what its Content-* fields say."""

    __slots__ = (
        "body_start", "children", "data", "description", "disposition", "encoding",
        "end", "fields", "flags", "id", "language", "lines", "location", "md5", "params",
        "size", "start", "subtype", "type",
    )  # fmt: skip

    def __init__(self, data: bytes, start: int) -> None:
        self.data = data
        self.start = start
        self.body_start = start
        self.end = start
        self.flags = 0
        self.children: list[_Part] = []
        self.fields: list[tuple[bytes, bytes]] = []
        self.type: bytes | None = None
        self.subtype: bytes | None = None
        self.params: list[tuple[bytes, bytes]] = []
        self.id = self.description = self.encoding = self.md5 = self.location = None
        self.disposition: tuple[bytes, list[tuple[bytes, bytes]]] | None = None
        self.language: list[bytes] | None = None
        self.size = self.lines = 0

    # ------------------------------------------------------------ fields

    def read_header(self, parent: _Part | None) -> bytes | None:
        """Set flags and content data from the header; returns the boundary if any."""
        self.fields = _fields(self.data[self.start : self.body_start])
        mime = parent is not None and parent.flags & MULTIPART
        boundary = None
        seen_type = False
        for name, value in self.fields:
            if name == b"mime-version":
                mime = True
            elif name == b"content-type" and not seen_type:
                mime, seen_type = True, True
                boundary = self._content_type(value)
            elif name.startswith(b"content-"):
                self._content_field(name, value)
        if not mime:  # not MIME: every Content-* field is ignored
            self.flags = 0
            self.type = self.subtype = None
            self.params, self.id, self.description, self.encoding = [], None, None, None
            self.md5 = self.location = self.disposition = self.language = None
            boundary = None
        if not seen_type or not mime:
            digest = parent is not None and parent.flags & DIGEST
            self.flags |= RFC822 if digest else TEXT
        return boundary

    def _content_type(self, value: bytes) -> bytes | None:
        kind, sub, params = _content_type(value)
        self.type, self.subtype, self.params = kind, sub, params or []
        full = (kind + b"/" + sub).lower() if sub or kind else b""
        if full == b"message/rfc822":
            self.flags |= RFC822
        elif kind.lower() == b"text":
            self.flags |= TEXT
        elif kind.lower() == b"multipart" and sub:
            self.flags |= MULTIPART | (DIGEST if sub.lower() == b"digest" else 0)
        if params is None or not self.flags & MULTIPART:
            return None
        for key, param in params:
            if key.lower() == b"boundary":
                return param
        return None

    def _content_field(self, name: bytes, value: bytes) -> None:
        """The first of each Content-* field counts (Dovecot's rule)."""
        if name == b"content-id" and self.id is None:
            self.id = value
        elif name == b"content-md5" and self.md5 is None:
            self.md5 = value
        elif name == b"content-transfer-encoding" and self.encoding is None:
            self.encoding = _token_field(value)
        elif name == b"content-language" and self.language is None:
            self.language = _languages(value)
        elif name == b"content-location" and self.location is None:
            self.location = value
        elif name == b"content-description" and self.description is None:
            self.description = value
        elif name == b"content-disposition" and not (self.disposition and self.disposition[1]):
            self.disposition = _disposition(value)

    def envelope(self) -> list[Any]:
        """The ten envelope members from this part's header. Of repeated fields the
        last string counts, while addresses of all of them are put together."""
        found: list[Any] = [None] * 10
        for name, value in self.fields:
            index = _ENVELOPE_INDEX.get(name)
            if index is None:
                continue
            if index in (0, 1, 8, 9):
                found[index] = value
            else:
                found[index] = (found[index] or []) + parse_addresses(value) or None
        found[3] = found[3] or found[2]  # no Sender: From (RFC 3501 §7.4.2)
        found[4] = found[4] or found[2]
        return found

    def plain_7bit(self) -> bool:
        """A lone text/plain part in us-ascii, 7bit, with nothing else said about it."""
        params = self.params
        return (
            self.flags & TEXT != 0
            and not self.children
            and (self.subtype is None or self.subtype.lower() == b"plain")
            and (
                not params
                or (params[0][0].lower() == b"charset" and params[0][1].lower() == b"us-ascii")
            )
            and self.id is None
            and self.description is None
            and (self.encoding is None or self.encoding.lower() == b"7bit")
            and self.md5 is None
            and self.disposition is None
            and self.language is None
            and self.location is None
        )

    # ------------------------------------------------------------ sizes

    def measure(self) -> None:
        """Size in CRLF form and number of line feeds of the body (counted once)."""
        data, start, end = self.data, self.body_start, self.end
        self.lines = data.count(b"\n", start, end)
        self.size = end - start + self.lines - data.count(b"\r\n", start, end)

    # ------------------------------------------------------------ output

    def tree(self) -> dict[str, Any]:
        """The part tree with offsets, for BODY[section]."""
        node: dict[str, Any] = {
            "type": _text(self.type),
            "subtype": _text(self.subtype),
            "start": self.start,
            "header_size": self.body_start - self.start,
            "body_size": self.end - self.body_start,
        }
        if self.flags & MULTIPART:
            node["parts"] = [child.tree() for child in self.children]
        elif self.flags & RFC822 and self.children:
            node["body"] = self.children[0].tree()
        return node

    def imap(self, extended: bool) -> bytes:
        """BODY (`extended` False) or BODYSTRUCTURE of this part."""
        if self.flags & MULTIPART:
            return self._multipart(extended)
        return self._single(extended)

    def _multipart(self, extended: bool) -> bytes:
        if self.children:
            out = b"".join(b"(" + child.imap(extended) + b")" for child in self.children)
        else:  # RFC 3501 needs at least one part
            out = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0'
            out += b" NIL NIL NIL NIL)" if extended else b")"
        out += b" " + (nstring(self.subtype) if self.subtype is not None else b'"x-unknown"')
        if extended:
            out += b" " + _params(self.params, False) + self._common()
        return out

    def _single(self, extended: bool) -> bytes:
        if self.flags & RFC822:
            out = b'"message" "rfc822"'
            text = False
        else:
            text = self.type is None or self.type.lower() == b"text"
            out = nstring(self.type) if self.type is not None else b'"text"'
            if self.subtype is not None:
                out += b" " + nstring(self.subtype)
            else:
                out += b' "plain"' if text else b' "unknown"'
        out += b" " + _params(self.params, text)
        out += b" " + nstring_nolf(self.id) + b" " + nstring_nolf(self.description)
        out += b" " + (nstring(self.encoding) if self.encoding is not None else b'"7bit"')
        out += b" %d" % self.size
        if text:
            out += b" %d" % self.lines
        elif self.flags & RFC822 and self.children:
            child = self.children[0]
            out += b" " + _envelope_imap(child.envelope())
            out += b" (" + child.imap(extended) + b")"
            out += b" %d" % self.lines
        if extended:
            out += b" " + nstring_nolf(self.md5) + self._common()
        return out

    def _common(self) -> bytes:
        """body-fld-dsp, body-fld-lang and body-fld-loc."""
        if self.disposition is None:
            out = b" NIL"
        else:
            kind, params = self.disposition
            out = b" (" + nstring(kind) + b" " + _params(params, False) + b")"
        if self.language is None:
            out += b" NIL"
        else:
            out += b" (" + b" ".join(nstring(lang) for lang in self.language) + b")"
        return out + b" " + nstring_nolf(self.location)


def _measure(part: _Part) -> None:
    part.measure()
    for child in part.children:
        _measure(child)


def _params(params: list[tuple[bytes, bytes]], default_charset: bool) -> bytes:
    items = [nstring(key) + b" " + nstring(value) for key, value in params]
    if default_charset and not any(key.lower() == b"charset" for key, _ in params):
        items.append(b'"charset" "us-ascii"')
    return b"(" + b" ".join(items) + b")" if items else b"NIL"


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "surrogateescape")


# =================================================================== the parser

class _Delimiter(NamedTuple):
    """A boundary line: where it starts, the multipart it belongs to, whether it is
    the close delimiter, and whether the line break before it stays with the content
    above (when it cut a header short) instead of going with the delimiter."""

    line: int
    owner: _Part
    close: bool
    kept: bool = False


def _dash_lines(data: bytes) -> list[int]:
    """Offsets of the lines that start with "--" (the only candidates for boundaries)."""
    found = [0] if data.startswith(b"--") else []
    pos = data.find(b"\n--")
    while pos >= 0:
        found.append(pos + 1)
        pos = data.find(b"\n--", pos + 3)
    return found


class _Parser:
    """Finds every part of a message in one pass over its boundary lines.

    Each part is read from its start: the header (which may be cut short by a
    boundary line), then the body, which ends at the first line that starts with
    `--` and the boundary of an enclosing multipart. `part` returns the part and that
    delimiter (line offset, owning multipart, close?) for the callers to act on.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._dashes: list[int] | None = None  # found when the first multipart needs them
        self.stack: list[tuple[bytes, _Part]] = []
        self.count = 0

    @property
    def dashes(self) -> list[int]:
        if self._dashes is None:
            self._dashes = _dash_lines(self.data)
        return self._dashes

    def message(self) -> _Part:
        root, _ = self.part(0, None, 0)
        _measure(root)
        return root

    def part(self, start: int, parent: _Part | None, depth: int):
        part = _Part(self.data, start)
        self.count += 1
        cut = self._read_header(part)
        boundary = part.read_header(parent)
        if cut is None:
            cut = self._boundary_after_header(part, boundary)
        if cut is not None:
            part.body_start = part.end = self._strip_line_break(cut.line, part.start)
            part.flags |= HEADER_CUT
            if part.flags & RFC822:  # it still encloses a message: an empty one
                empty = _Part(self.data, part.body_start)
                empty.flags = TEXT
                part.children = [empty]
            return part, cut._replace(kept=True)
        deep = depth >= MAX_DEPTH or self.count >= MAX_PARTS
        if part.flags & MULTIPART and boundary is not None and not deep:
            return self._multipart(part, boundary, depth)
        if part.flags & RFC822 and not deep:
            child, pending = self.part(part.body_start, part, depth + 1)
            part.children = [child]
            part.end = pending.line if pending is not None and pending.kept else child.end
            return part, pending
        if part.flags & RFC822:
            part.flags &= ~RFC822
        pending = self._next_delimiter(part.body_start)
        part.end = self._before(pending, part.body_start)
        return part, pending

    def _read_header(self, part: _Part):
        """Set where the header ends: at its empty line, or earlier at a boundary line
        (then that delimiter is returned; the line break before it goes with it)."""
        data, start = self.data, part.start
        if data.startswith(b"\n", start) or data.startswith(b"\r\n", start):
            part.body_start = start + (1 if data[start] == 0x0A else 2)
            return None
        blank = _BLANK_LINE.search(data, start)
        end = blank.end() if blank else len(data)
        if self.stack:
            dashes = self.dashes
            i = bisect.bisect_left(dashes, start)
            while i < len(dashes) and dashes[i] < end:
                found = self._match(dashes[i])
                if found is not None:
                    part.body_start = self._strip_line_break(found.line, start)
                    return found
                i += 1
        part.body_start = end
        return None

    def _boundary_after_header(self, part: _Part, boundary: bytes | None):
        """A delimiter on the line right after the header's empty line takes that
        line break too, so the header loses it and the body is empty (Dovecot) —
        unless the line belongs to this part's own boundary, which opens its body."""
        line = part.body_start
        if not self.stack or not self.data.startswith(b"--", line):
            return None
        own = (boundary, part) if part.flags & MULTIPART and boundary is not None else None
        found = self._match(line, own)
        return None if found is None or found.owner is part else found

    def _multipart(self, part: _Part, boundary: bytes, depth: int):
        self.stack.append((boundary, part))
        pending = self._next_delimiter(part.body_start)
        while pending is not None and pending.owner is part:
            line, close = pending.line, pending.close
            after = self.data.find(b"\n", line) + 1
            if not after:  # the last line, without a line end: no part follows
                break
            if close:
                self.stack.remove((boundary, part))
                pending = self._next_delimiter(after)  # the epilogue
                part.end = self._before(pending, after)  # not into the delimiter line
                return part, pending
            child, pending = self.part(after, part, depth + 1)
            part.children.append(child)
        self.stack.remove((boundary, part))
        if pending is not None and pending.owner is part:
            part.end, pending = len(self.data), None
        else:
            part.end = self._before(pending, part.body_start)
        return part, pending

    def _match(self, line: int, innermost: tuple[bytes, _Part] | None = None):
        """The delimiter at `line` (a line starting with "--"), or None: the longest
        boundary in use that the line starts with; the innermost on a tie."""
        data = self.data
        best: tuple[bytes, _Part] | None = None
        entries = reversed(self.stack) if innermost is None else [innermost, *reversed(self.stack)]
        for entry in entries:
            longer = best is None or len(entry[0]) > len(best[0])
            if longer and data.startswith(entry[0], line + 2):
                best = entry
        if best is None:
            return None
        return _Delimiter(line, best[1], data.startswith(b"--", line + 2 + len(best[0])))

    def _next_delimiter(self, start: int):
        if not self.stack:
            return None
        dashes = self.dashes
        for i in range(bisect.bisect_left(dashes, start), len(dashes)):
            found = self._match(dashes[i])
            if found is not None:
                return found
        return None

    def _before(self, pending: _Delimiter | None, floor: int) -> int:
        """Where content ends before a delimiter (or at the end of the message)."""
        if pending is None:
            return len(self.data)
        if pending.kept:
            return pending.line
        return self._strip_line_break(pending.line, floor)

    def _strip_line_break(self, line: int, floor: int) -> int:
        """The offset before the [CR]LF that ends at `line`, not going below `floor`."""
        if line > floor and self.data[line - 1] == 0x0A:
            line -= 1
            if line > floor and self.data[line - 1] == 0x0D:
                line -= 1
        return line


# =========================================================== IMAP string encoding


def nstring(value: bytes | None) -> bytes:
    """NIL, a quoted string, or a literal: literal for 8-bit, CR, LF, NUL or more than
    four characters that need a backslash (Dovecot's choice, so output matches)."""
    if value is None:
        return b"NIL"
    if _PLAIN.fullmatch(value):
        return b'"' + value + b'"'
    if _NEEDS_LITERAL.search(value) or value.count(b'"') + value.count(b"\\") > 4:
        return b"{%d}\r\n" % len(value) + value.replace(b"\0", b"\x80")
    if b'"' in value or b"\\" in value:
        value = value.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + value + b'"'


def nstring_nolf(value: bytes | None) -> bytes:
    """An nstring with CR and LF removed (folded header values)."""
    if value is None or _PLAIN.fullmatch(value):
        return nstring(value)
    if b"\n" in value or b"\r" in value:
        value = value.replace(b"\r", b"").replace(b"\n", b"")
    return nstring(value)


_PLAIN = re.compile(rb'[^\x00\r\n\x80-\xff"\\]*')  # quoted as it is
_NEEDS_LITERAL = re.compile(rb"[\x00\r\n\x80-\xff]")
_LWSP_RUN = re.compile(rb"[ \t\r\n]+")
_HUMAN_PLAIN = re.compile(rb'(?:[^ \t\r\n\x00"\\\x80-\xff]| (?! |\Z))*')


def human_string(value: bytes | None) -> bytes:
    """Text meant for people (subject, display names): runs of white space become
    one space and the ends are trimmed; anything changed, quoted or 8-bit goes as a
    literal, the rest as a quoted string."""
    if value is None:
        return b"NIL"
    if _HUMAN_PLAIN.fullmatch(value) and not value.startswith(b" "):
        return b'"' + value + b'"'
    text = _LWSP_RUN.sub(b" ", value).strip(b" ")
    if not text:
        return b'""'
    return b"{%d}\r\n" % len(text) + text.replace(b"\0", b"\x80")


def _address_list(addresses: list[Address] | None) -> bytes:
    if not addresses:
        return b"NIL"
    out = []
    for name, route, mailbox, host in addresses:
        out.append(
            b"(" + human_string(name) + b" " + nstring_nolf(route) + b" "
            + nstring_nolf(mailbox) + b" " + nstring_nolf(host) + b")"
        )  # fmt: skip
    return b"(" + b"".join(out) + b")"


def _envelope_imap(envelope: list[Any]) -> bytes:
    date, subject, *addresses, in_reply_to, message_id = envelope
    out = [nstring_nolf(date), human_string(subject)]
    out += [_address_list(a) for a in addresses]
    out += [nstring_nolf(in_reply_to), nstring_nolf(message_id)]
    return b"(" + b" ".join(out) + b")"


def _envelope_values(envelope: list[Any]) -> list[Any]:
    """The envelope as JSON-friendly values (str, decoded with surrogateescape)."""

    def text(value: bytes | None) -> str | None:
        return None if value is None else value.decode("utf-8", "surrogateescape")

    out: list[Any] = []
    for i, value in enumerate(envelope):
        if i in (0, 1, 8, 9) or value is None:
            out.append(text(value))
        else:
            out.append([[text(x) for x in address] for address in value])
    return out
