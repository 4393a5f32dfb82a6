"""The searchable text of a message, in the one normal form that IMAP SEARCH compares.

IMAP's string search keys (FROM, SUBJECT, HEADER, BODY, TEXT, …) ask for messages
whose header field or body *contains* a string, ignoring case (RFC 3501 §6.4.4). The
message side is decoded to Unicode first — RFC 2047 encoded words, base64 and
quoted-printable bodies, charsets, HTML reduced to what a reader sees — and both
sides then take the form `normalize` gives, so that plain substring search answers
the key. The text index (`textindex`) stores exactly this text; a scan computes it
from the message file. Both must agree, so everything that decides what a message
"contains" lives here.
"""

from __future__ import annotations

import binascii
import codecs
import datetime as dt
import email.utils
import functools
import html
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mailops.runtime.store import mime

# Header fields with a column of their own in the index (FROM, TO, CC, BCC, SUBJECT).
ADDRESS_FIELDS = ("from", "to", "cc", "bcc", "subject")
MAX_HEADER = 256_000  # characters of header lines the index keeps per message
MAX_BODY = 4_000_000  # characters of body text the index keeps per message


# ================================================================== normal form


def normalize(text: str) -> str:
    """Case-folded, NFC, with NUL and every run of white space (line breaks too) made
    one space. A needle in this form is in a text in this form when `in` says so."""
    text = text.casefold()
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if "\0" in text:
        text = text.replace("\0", " ")
    # split() and join() collapse white space several times faster than a regex;
    # the ends are put back because " cat" and "cat" are different needles.
    words = text.split()
    if not words:
        return " " if text else ""
    joined = " ".join(words)
    if text[0].isspace():
        joined = " " + joined
    if text[-1].isspace():
        joined += " "
    return joined


# ==================================================================== decoding

# Charsets read as the superset that real mail means by them (as browsers do).
_SUPERSETS = {"iso8859-1": "cp1252", "gb2312": "gb18030", "gbk": "gb18030"}


@functools.lru_cache(maxsize=256)
def _codec(charset: str | None) -> str | None:
    """A Python codec for a MIME charset name; None for unknown, missing or US-ASCII
    (8-bit text labelled us-ascii is common: it is guessed at as unlabelled text is)."""
    if not charset:
        return None
    name = charset.strip().strip('"').split("*", 1)[0]  # RFC 2231: charset*language
    try:
        found = codecs.lookup(name).name
    except (LookupError, ValueError):
        return None
    if found == "ascii":
        return None
    return _SUPERSETS.get(found, found)


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Text from bytes in `charset`; without a usable one, UTF-8 when the bytes are
    valid UTF-8 and Windows-1252 (the usual unlabelled 8-bit text) otherwise."""
    codec = _codec(charset)
    if codec is not None and codec != "utf-8":
        try:
            text = data.decode(codec, "replace")
        except (LookupError, UnicodeError):  # a bytes codec ("base64"), idna
            pass
        else:
            # Some codecs (unicode-escape, utf-7) can yield lone surrogates, which are
            # not text and could not be stored.
            return _SURROGATE.sub("\ufffd", text)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8" if codec == "utf-8" else "cp1252", "replace")


_SURROGATE = re.compile("[\ud800-\udfff]")
_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_LINE_BREAK = re.compile(rb"\r?\n")


def decode_header(value: bytes) -> str:
    """A header field value as text: unfolded, RFC 2047 encoded words decoded.

    White space between two encoded words is dropped (RFC 2047 §6.2), and adjacent
    words in one charset are joined before decoding, because senders split multi-byte
    characters across words. Words that do not decode stay as written.
    """
    value = _LINE_BREAK.sub(b"", value)
    out: list[str] = []
    pending: list[bytes] = []  # the bytes of adjacent words in `charset`
    charset = ""
    position = 0  # the end of the last word decoded

    def flush() -> None:
        if pending:
            out.append(decode_bytes(b"".join(pending), charset))
            pending.clear()

    for word in _ENCODED_WORD.finditer(value):
        decoded = _encoded_word(word.group(2), word.group(3))
        if decoded is None:
            continue  # stays in the text before the next word
        gap = value[position : word.start()]
        word_charset = word.group(1).decode("ascii", "replace").lower()
        if not pending or gap.strip(b" \t"):
            flush()
            out.append(decode_bytes(gap))
        elif word_charset != charset:
            flush()
        charset = word_charset
        pending.append(decoded)
        position = word.end()
    flush()
    out.append(decode_bytes(value[position:]))
    return "".join(out)


def _encoded_word(encoding: bytes, payload: bytes) -> bytes | None:
    try:
        if encoding in b"bB":
            padded = payload + b"=" * (-len(payload) % 4)  # a missing padding is common
            return binascii.a2b_base64(padded, strict_mode=True)
        return binascii.a2b_qp(payload, header=True)
    except (binascii.Error, ValueError):
        return None


_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def transfer_decode(body: bytes, encoding: str) -> bytes:
    """A body part's bytes with its Content-Transfer-Encoding undone, leniently: stray
    characters in base64 are skipped, a broken quoted-printable escape is kept."""
    if encoding == "base64":
        compact = _NOT_BASE64.sub(b"", body)
        compact = compact[: len(compact) - len(compact) % 4]
        try:
            return binascii.a2b_base64(compact)
        except (binascii.Error, ValueError):
            return b""
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    return body


_HTML_HIDDEN = re.compile(r"<(script|style|head)\b.*?</\1\s*>|<!--.*?-->", re.I | re.S)
_HTML_BLOCK = re.compile(
    r"</?(?:br|p|div|tr|td|th|li|ul|ol|h[1-6]|table|blockquote|hr|pre)\b[^>]*>", re.I
)
_HTML_TAG = re.compile(r"<[^>]*>")


def html_text(markup: str) -> str:
    """What a reader sees of HTML: scripts, styles and tags gone, entities decoded.
    Block tags separate words; inline tags (<b>, <span>) do not."""
    markup = _HTML_HIDDEN.sub(" ", markup)
    markup = _HTML_BLOCK.sub("\n", markup)
    return html.unescape(_HTML_TAG.sub("", markup))


# ======================================================================= header


@dataclass(frozen=True, slots=True)
class Head:
    """A message header in normal form.

    `fields` maps each of ADDRESS_FIELDS to the values of those fields joined by "\\n"
    (None when the message has no such field); `lines` is "\\n<name>: <value>" for
    every field and a final "\\n"; `sent` is the day (an ordinal) written in the Date:
    field, time and zone ignored (RFC 3501 SENT*); `partial` when `lines` was cut.
    """

    fields: dict[str, str | None]
    lines: str
    sent: int | None
    partial: bool = False

    def has(self, name: str, needle: str) -> bool:
        """A field `name` whose value contains `needle` ("" : any such field)."""
        if name in self.fields:
            value = self.fields[name]
            return value is not None and needle in value
        return lines_have(self.lines, name, needle)


EMPTY_HEAD = Head(dict.fromkeys(ADDRESS_FIELDS), "\n", None)


def lines_have(lines: str, name: str, needle: str) -> bool:
    """Whether `lines` (a Head's) has a field `name` whose value contains `needle`."""
    prefix = f"\n{name}: "
    start = lines.find(prefix)
    while start >= 0:
        end = lines.find("\n", start + 1)
        if end < 0:  # lines cut short for the index
            end = len(lines)
        if needle in lines[start + len(prefix) : end]:
            return True
        start = lines.find(prefix, end)
    return False


_HEADER_END = re.compile(rb"\n\r?\n")
# A field: a name of RFC 5322 ftext at the start of a line, a colon, and the value
# with its continuation lines. Lines that are not fields (no colon) are skipped.
_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.M)


def header_fields(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(lower-case name, raw value) of each field of the header that starts `data`.
    One regular expression over the block: several times faster than reading it line
    by line, which matters when ten thousand messages are indexed at once."""
    if data.startswith((b"\n", b"\r\n")):
        return
    end = _HEADER_END.search(data)
    block = data[: end.start() + 1] if end else data
    for match in _FIELD.finditer(block):
        yield match.group(1).decode("ascii").lower(), match.group(2)


def head_of(data: bytes, *, limit: bool = False, lines: bool = True) -> Head:
    """The Head of a message (or of any entity) whose header starts `data`. With
    `limit`, lines beyond MAX_HEADER characters are cut off; without `lines`, only
    the ADDRESS_FIELDS and the sent day are decoded (`lines` is left empty)."""
    found: dict[str, list[str]] = {}
    text: list[str] = []
    date: bytes | None = None
    for name, raw_value in header_fields(data):
        if name == "date" and date is None:
            date = raw_value
        if not lines and name not in ADDRESS_FIELDS:
            continue
        value = normalize(decode_header(raw_value)).strip(" ")
        text.append(f"{name}: {value}")
        if name in ADDRESS_FIELDS:
            found.setdefault(name, []).append(value)
    fields = {name: "\n".join(found[name]) if name in found else None for name in ADDRESS_FIELDS}
    joined = "\n" + "\n".join(text) + "\n" if lines else ""
    partial = limit and len(joined) > MAX_HEADER
    return Head(fields, joined[:MAX_HEADER] if partial else joined, _sent_day(date), partial)


def _sent_day(value: bytes | None) -> int | None:
    if value is None:
        return None
    text = _LINE_BREAK.sub(b"", value).decode("ascii", "replace")
    try:  # defensive: the parser is lenient, but it reads what strangers wrote
        parsed = email.utils.parsedate_tz(text)
        return dt.date(*parsed[:3]).toordinal() if parsed else None
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


# ========================================================================= body


def structure_of(data: bytes, blob: bytes | None) -> dict[str, Any]:
    """The MIME part tree of a message (see `mime`): from its cache blob, or parsed
    now when the blob is missing or of an older format."""
    if blob is not None and mime.is_current(blob):
        return mime.cached_tree(blob)
    return mime.cached_tree(mime.parse_to_cache(data))


def body_of(data: bytes, structure: dict[str, Any], *, limit: bool = False) -> tuple[str, bool]:
    """(body text, cut?) of a message: its text parts decoded (each alternative too:
    a word may be only in the HTML one, which is what most readers show), attached
    messages with their header; attachments that are not text are left out. With
    `limit`, text beyond MAX_BODY characters is cut off."""
    parts: list[str] = []
    _collect(data, structure, parts, 0)
    text = "\n".join(parts)
    if limit and len(text) > MAX_BODY:
        return text[:MAX_BODY], True
    return text, False


def _collect(data: bytes, node: dict[str, Any], out: list[str], depth: int) -> None:
    if depth > mime.MAX_DEPTH:
        return
    if "parts" in node and (node.get("subtype") or "").lower() == "alternative":
        out.extend(_alternatives(data, node["parts"], depth))
    elif "parts" in node:
        for part in node["parts"]:
            _collect(data, part, out, depth + 1)
    elif "body" in node:  # message/rfc822: its header is part of the outer body
        inner = node["body"]
        header = data[inner["start"] : inner["start"] + inner["header_size"]]
        out.append(head_of(header).lines.strip("\n"))
        _collect(data, inner, out, depth + 1)
    elif (node.get("type") or "text").lower() in ("text", "multipart"):
        # No Content-Type is text/plain; a multipart without a boundary reads as text.
        out.append(normalize(_part_text(data, node)))


def _alternatives(data: bytes, parts: list[dict[str, Any]], depth: int) -> list[str]:
    """The texts of alternatives, without those contained in another: the plain text
    is often all inside the HTML's text, and a string found in the one is then found
    in the other, so indexing it twice would only cost time and space."""
    texts: list[str] = []
    for part in parts:
        found: list[str] = []
        _collect(data, part, found, depth + 1)
        texts.append("\n".join(found))
    kept: list[str] = []
    for i, text in enumerate(texts):
        inside = any(
            text in other and (len(other) > len(text) or j < i)
            for j, other in enumerate(texts)
            if j != i
        )
        if not inside:
            kept.append(text)
    return kept


_CHARSET = re.compile(rb"""(?:^|;)\s*charset\s*=\s*"?([^";\s]+)""", re.I)


def _part_text(data: bytes, node: dict[str, Any]) -> str:
    start = node["start"]
    body_start = start + node["header_size"]
    body = data[body_start : body_start + node["body_size"]]
    encoding, charset = "", None
    for name, value in header_fields(data[start:body_start]):
        if name == "content-transfer-encoding" and not encoding:
            encoding = value.strip().lower().decode("ascii", "replace")
        elif name == "content-type" and charset is None:
            found = _CHARSET.search(_LINE_BREAK.sub(b"", value))
            charset = found.group(1).decode("ascii", "replace") if found else ""
    text = decode_bytes(transfer_decode(body, encoding), charset)
    if (node.get("subtype") or "").lower() == "html":
        text = html_text(text)
    return text


# ===================================================================== document


@dataclass(frozen=True, slots=True)
class Document:
    """All of a message's searchable text (what a scan compares)."""

    head: Head
    body: str

    def has_text(self, needle: str) -> bool:
        """TEXT: in the header or the body."""
        return needle in self.head.lines or needle in self.body
