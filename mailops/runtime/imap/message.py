"""What FETCH says about one message: sections, partial ranges, dates, line ends.

ENVELOPE, BODY and BODYSTRUCTURE are encoded once, when the store parses a message
(`store.mime`); here they are only sliced out of the cache blob. This module does the
rest of RFC 3501 §6.4.5: finding `BODY[section]` in the raw message from the cached
part tree, cutting header subsets, `<origin.count>` ranges, and turning what is sent
into CRLF text without NULs, so that every size matches the bytes on the wire.

Where RFC 3501 leaves a choice, Dovecot's answer is taken (clients are tested
against it): a missing part is an empty string; `[n.HEADER]`/`[n.TEXT]` of a part
that is not message/rfc822 are empty; `[1]` of a single-part message is its body;
`[n.MIME]` of a message/rfc822 part is its MIME header.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from mailops.runtime.imap import pack
from mailops.runtime.imap.parse import MONTHS
from mailops.runtime.store import mime

HEADER = "HEADER"
HEADER_FIELDS = "HEADER.FIELDS"
HEADER_FIELDS_NOT = "HEADER.FIELDS.NOT"
TEXT = "TEXT"
MIME = "MIME"


@dataclass(frozen=True, slots=True)
class Section:
    """A section-spec: part numbers, then "" / HEADER / HEADER.FIELDS[.NOT] / TEXT / MIME."""

    part: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[bytes, ...] = ()  # upper case, as the client named them

    def label(self) -> bytes:
        """The section as the response names it: `1.2.HEADER.FIELDS (FROM TO)`."""
        spec = ".".join(str(n) for n in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        out = spec.encode("ascii")
        if self.fields:
            out += b" (" + b" ".join(pack.astring(name) for name in self.fields) + b")"
        return out

    @property
    def header_only(self) -> bool:
        """Answerable from the cached header block alone (no file read)."""
        return not self.part and self.text in (HEADER, HEADER_FIELDS, HEADER_FIELDS_NOT)


# ------------------------------------------------------------------ finding parts


def find_part(tree: dict[str, Any], numbers: tuple[int, ...]) -> dict[str, Any] | None:
    """The part a section's numbers name, or None (RFC 3501 §6.4.5, Dovecot's reading).

    In a multipart, n is its nth part. Elsewhere only 1 is valid and names the
    entity itself, and only a message/rfc822 part may be gone into further: its
    numbers then apply to the message it encloses.
    """
    node = tree
    for i, number in enumerate(numbers):
        more = i + 1 < len(numbers)
        if "parts" in node:
            if number > len(node["parts"]):
                return None
            node = node["parts"][number - 1]
        elif number != 1 or (more and "body" not in node):
            return None
        if more and "body" in node:
            node = node["body"]
    return node


def _range(node: dict[str, Any], what: str) -> tuple[int, int]:
    start = node["start"]
    body = start + node["header_size"]
    if what == "header":
        return start, body
    if what == "body":
        return body, body + node["body_size"]
    return start, body + node["body_size"]


# ------------------------------------------------------------------ extraction


def section_bytes(section: Section, data: bytes, tree: dict[str, Any]) -> bytes:
    """The raw bytes of a section of `data` (before line-end normalisation)."""
    node: dict[str, Any] | None = tree
    if section.part:
        node = find_part(tree, section.part)
        if node is None:
            return b""
        if section.text == MIME:
            start, end = _range(node, "header")
            return data[start:end]
        if not section.text:
            start, end = _range(node, "body")
            return data[start:end]
        if "body" not in node:  # HEADER, TEXT … of a part that is not a message
            return b""
        node = node["body"]
    assert node is not None
    if not section.text:
        return data
    if section.text == TEXT:
        start, end = _range(node, "body")
        return data[start:end]
    start, end = _range(node, "header")
    block = data[start:end]
    if section.text == HEADER:
        return block
    return header_subset(block, section, from_cache=not section.part)


def header_subset(block: bytes, section: Section, from_cache: bool) -> bytes:
    """HEADER.FIELDS / HEADER.FIELDS.NOT of a header block: the chosen fields as
    they are (folding kept), in message order, then the empty line. Like Dovecot,
    the empty line is always there for the message's own HEADER.FIELDS (which comes
    from its cache), and elsewhere only when the header had one."""
    wanted = {name.lower() for name in section.fields}
    exclude = section.text == HEADER_FIELDS_NOT
    out = [
        block[start:end]
        for name, _, start, end in mime.header_fields(block)
        if (name in wanted) != exclude
    ]
    if (from_cache and not exclude) or _ends_with_blank_line(block):
        out.append(b"\r\n")
    return b"".join(out)


def _ends_with_blank_line(block: bytes) -> bool:
    return block in (b"\n", b"\r\n") or block.endswith((b"\n\n", b"\n\r\n"))


def fields_pattern(names: tuple[bytes, ...]) -> re.Pattern[bytes]:
    """A pattern that finds the named fields in a header block after a "\\n": one
    scan of the block in C per message, for the common HEADER.FIELDS."""
    alternatives = b"|".join(re.escape(name) for name in names)
    return re.compile(rb"\n((?:" + alternatives + rb")[ \t]*:[^\n]*(?:\n[ \t][^\n]*)*)", re.I)


def cached_fields(blob: bytes, pattern: re.Pattern[bytes]) -> bytes:
    """The message's own HEADER.FIELDS, found in its cache blob without a copy."""
    start, end = mime.header_span(blob)
    found = pattern.findall(blob, start - 1, end)  # the blob has a "\n" before the header
    if not found:
        return b"\r\n"
    if blob[end - 1] != 0x0A and blob.endswith(found[-1], start, end):
        return b"\n".join(found) + b"\r\n"  # the last field ends the file: no line end
    return b"\n".join(found) + b"\n\r\n"


# ------------------------------------------------------------------ what is sent


def wire(data: bytes, bare_lf: bool) -> bytes:
    """Bytes as FETCH sends them: every line end CRLF (when the message has a bare
    LF somewhere) and NUL as 0x80, since literals must not carry NUL (RFC 3501 §4.3)."""
    if bare_lf and b"\n" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if b"\0" in data:
        data = data.replace(b"\0", b"\x80")
    return data


def partial(data: bytes, origin: int | None, count: int | None) -> bytes:
    """`<origin.count>` of the CRLF form: empty when it starts beyond the end."""
    if origin is None:
        return data
    return data[origin : origin + count] if count is not None else data[origin:]


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


# ------------------------------------------------------------------ dates

_MONTHS = [m.encode("ascii") for m in MONTHS]


def internal_date(seconds: int) -> bytes:
    """INTERNALDATE as a quoted date-time, in UTC: "07-Feb-1994 21:52:25 +0000"."""
    t = time.gmtime(seconds)
    return b'"%02d-%s-%04d %02d:%02d:%02d +0000"' % (
        t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec,
    )  # fmt: skip
