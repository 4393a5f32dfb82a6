"""The parse the index caches per message: header block, envelope, MIME structure.

Computed once (at scan time for new mail, on first use otherwise) so that IMAP's
FETCH ENVELOPE, BODYSTRUCTURE and HEADER.FIELDS never open the message file. The
shapes follow RFC 3501 §7.4.2 so the IMAP encoder only has to write them out:

- envelope: [date, subject, from, sender, reply-to, to, cc, bcc, in-reply-to,
  message-id]; strings are raw header values (unfolded), addresses are lists of
  [name, adl, mailbox, host] with group start [None, None, group, None] and end
  [None, None, None, None]; sender and reply-to default to from.
- body: {"type", "subtype", "params", "id", "description", "encoding", "size",
  "lines", "md5", "disposition", "language", "location", "start", "header_size",
  "body_size"} per leaf ("envelope" and "body" too for message/rfc822) and
  {"type": "multipart", "subtype", "parts", ...} for multiparts. "size" counts CRLF
  octets; "start", "header_size", "body_size" are raw offsets in the file, for
  BODY[section] fetches.

Header text is kept as bytes decoded with surrogateescape, so 8-bit headers round-trip.
The cache blob is `MCP1`, a 4-byte header length, the header bytes, then JSON.
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any

MAGIC = b"MCP1"
MAX_DEPTH = 40  # nested multiparts/messages beyond this are treated as opaque
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:", re.MULTILINE)

Body = dict[str, Any]


def parse_to_cache(data: bytes) -> bytes:
    header_size = _header_size(data, 0, len(data))
    structure = {
        "envelope": envelope(parse_header(data[:header_size])),
        "body": _entity(data, 0, len(data), ("text", "plain"), 0),
    }
    header = data[:header_size]
    return MAGIC + struct.pack(">I", len(header)) + header + json.dumps(structure).encode()


def load_cache(blob: bytes) -> tuple[bytes, dict[str, Any]]:
    """(raw header block, {"envelope": …, "body": …}) from a cache blob."""
    if not blob.startswith(MAGIC):
        raise ValueError("not a mailops cache entry")
    (length,) = struct.unpack(">I", blob[4:8])
    return blob[8 : 8 + length], json.loads(blob[8 + length :])


# ------------------------------------------------------------------ header block


def _header_size(data: bytes, start: int, end: int) -> int:
    """Length of the header block at `start`, with the empty line that ends it."""
    if data.startswith(b"\r\n", start):
        return 2
    if data.startswith(b"\n", start):
        return 1
    match = _HEADER_END.search(data, start, end)
    if match is None:
        return end - start  # all header, no body
    return match.end() - start


def parse_header(block: bytes) -> list[tuple[str, str]]:
    """(lower-case name, unfolded value) of every field, in order."""
    fields: list[tuple[str, str]] = []
    matches = list(_FIELD.finditer(block))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(block)
        value = block[match.end() : end]
        value = re.sub(rb"\r?\n(?=[ \t])", b"", value).strip()
        name = match.group(1).decode("ascii").lower()
        fields.append((name, value.decode("utf-8", "surrogateescape")))
    return fields


def _first(fields: list[tuple[str, str]], name: str) -> str | None:
    for key, value in fields:
        if key == name:
            return value
    return None


# ---------------------------------------------------------------------- envelope


def envelope(fields: list[tuple[str, str]]) -> list[Any]:
    def addresses(name: str) -> list[list[str | None]] | None:
        value = _first(fields, name)
        return parse_addresses(value) or None if value is not None else None

    sender_from = addresses("from")
    return [
        _first(fields, "date"),
        _first(fields, "subject"),
        sender_from,
        addresses("sender") or sender_from,
        addresses("reply-to") or sender_from,
        addresses("to"),
        addresses("cc"),
        addresses("bcc"),
        _first(fields, "in-reply-to"),
        _first(fields, "message-id"),
    ]


_TOKEN = re.compile(
    r'\s*(?:(?P<quoted>"(?:[^"\\]|\\.)*"?)|(?P<comment>\()|(?P<special>[<>,:;@])|(?P<atom>[^\s"(),:;<>@]+))',
    re.DOTALL,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            break
        pos = match.end()
        if match.group("comment"):
            pos = _skip_comment(text, pos)
        elif match.group("quoted") is not None:
            quoted = match.group("quoted")
            out.append(("q", re.sub(r"\\(.)", r"\1", quoted[1:-1] if len(quoted) > 1 else "")))
        elif match.group("special"):
            out.append(("s", match.group("special")))
        else:
            out.append(("a", match.group("atom")))
    return out


def _skip_comment(text: str, pos: int) -> int:
    depth = 1
    while pos < len(text) and depth:
        ch = text[pos]
        if ch == "\\":
            pos += 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        pos += 1
    return pos


def parse_addresses(text: str) -> list[list[str | None]]:
    """RFC 5322 address-list → IMAP address structures; lenient with broken input."""
    result: list[list[str | None]] = []
    phrase: list[str] = []
    route: list[tuple[str, str]] = []
    in_angle = False
    for kind, value in [*_tokens(text), ("s", ",")]:
        if kind == "s" and value == "<":
            in_angle, route = True, []
        elif kind == "s" and value == ">":
            in_angle = False
            result.append(_address(" ".join(phrase) or None, route))
            phrase, route = [], []
        elif in_angle:
            route.append((kind, value))
        elif kind == "s" and value == ":":
            result.append([None, None, " ".join(phrase), None])
            phrase = []
        elif kind == "s" and value in ",;":
            if phrase:
                result.append(_address(None, [("a", p) for p in phrase]))
                phrase = []
            if value == ";":
                result.append([None, None, None, None])
        else:
            phrase.append(value)
    return result


def _address(name: str | None, tokens: list[tuple[str, str]]) -> list[str | None]:
    spec = "".join(value for _, value in tokens)
    if ":" in spec:  # obsolete source route: @a,@b:user@host
        adl, _, spec = spec.rpartition(":")
        route: str | None = adl
    else:
        route = None
    mailbox, at, host = spec.rpartition("@")
    if not at:
        mailbox, host = spec, ""
    return [name, route, mailbox or None, host or None]


# -------------------------------------------------------------------- structure


def _content_type(fields: list[tuple[str, str]], default: tuple[str, str]):
    value = _first(fields, "content-type")
    if not value or "/" not in value.split(";", 1)[0]:
        return default[0], default[1], _default_params(default)
    main, _, params = value.partition(";")
    kind, _, sub = main.strip().partition("/")
    return kind.strip().lower(), sub.strip().lower(), parse_params(params)


def _default_params(default: tuple[str, str]) -> list[list[str]]:
    return [["charset", "us-ascii"]] if default == ("text", "plain") else []


def parse_params(text: str) -> list[list[str]]:
    params: list[list[str]] = []
    for match in re.finditer(r'\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', text):
        key, value = match.group(1).lower(), match.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) > 1:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.append([key, value])
    return params


def _disposition(fields: list[tuple[str, str]]) -> list[Any] | None:
    value = _first(fields, "content-disposition")
    if not value:
        return None
    kind, _, params = value.partition(";")
    return [kind.strip().lower(), parse_params(params)]


def _entity(data: bytes, start: int, end: int, default: tuple[str, str], depth: int) -> Body:
    header_size = _header_size(data, start, end)
    fields = parse_header(data[start : start + header_size])
    kind, sub, params = _content_type(fields, default)
    body_start = start + header_size
    body = data[body_start:end]
    common: Body = {
        "params": params,
        "disposition": _disposition(fields),
        "language": _first(fields, "content-language"),
        "location": _first(fields, "content-location"),
        "start": start,
        "header_size": header_size,
        "body_size": end - body_start,
    }
    boundary = dict((k, v) for k, v in params).get("boundary")
    if kind == "multipart" and boundary and depth < MAX_DEPTH:
        child_default = ("message", "rfc822") if sub == "digest" else ("text", "plain")
        parts = [
            _entity(data, s, e, child_default, depth + 1)
            for s, e in _split_parts(data, body_start, end, boundary.encode("utf-8", "replace"))
        ]
        if not parts:  # RFC 3501 needs at least one part; show the body as text
            parts = [_leaf(data, body_start, end, [], ("text", "plain"))]
        return {"type": "multipart", "subtype": sub, "parts": parts, **common}
    leaf = _leaf(data, body_start, end, fields, (kind, sub))
    leaf.update(common)
    if kind == "message" and sub in ("rfc822", "global") and depth < MAX_DEPTH:
        inner_header = _header_size(data, body_start, end)
        leaf["envelope"] = envelope(parse_header(data[body_start : body_start + inner_header]))
        leaf["body"] = _entity(data, body_start, end, ("text", "plain"), depth + 1)
        leaf["lines"] = _lines(body)
    return leaf


def _leaf(data: bytes, start: int, end: int, fields, kind_sub: tuple[str, str]) -> Body:
    body = data[start:end]
    leaf: Body = {
        "type": kind_sub[0],
        "subtype": kind_sub[1],
        "id": _first(fields, "content-id"),
        "description": _first(fields, "content-description"),
        "encoding": (_first(fields, "content-transfer-encoding") or "7bit").lower(),
        "size": len(body) + body.count(b"\n") - body.count(b"\r\n"),
        "md5": _first(fields, "content-md5"),
    }
    if kind_sub[0] == "text":
        leaf["lines"] = _lines(body)
    return leaf


def _lines(body: bytes) -> int:
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


def _split_parts(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """(start, end) of each body part between `--boundary` lines (RFC 2046 §5.1.1).

    The line break before a delimiter belongs to the delimiter, not to the part.
    """
    delimiter = re.compile(rb"^--" + re.escape(boundary) + rb"(--)?[ \t]*\r?$", re.MULTILINE)
    parts: list[tuple[int, int]] = []
    part_start: int | None = None
    for match in delimiter.finditer(data, start, end):
        if part_start is not None:
            part_end = max(match.start(), part_start)
            if part_end > part_start and data[part_end - 1] == 0x0A:
                part_end -= 1
                if part_end > part_start and data[part_end - 1] == 0x0D:
                    part_end -= 1
            parts.append((part_start, part_end))
        if match.group(1):  # close delimiter: the epilogue follows
            return parts
        part_start = match.end() + (1 if data[match.end() : match.end() + 1] == b"\n" else 0)
    if part_start is not None:  # no close delimiter: the last part runs to the end
        parts.append((part_start, end))
    return parts
