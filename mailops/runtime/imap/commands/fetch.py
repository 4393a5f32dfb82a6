"""FETCH and UID FETCH (RFC 3501 §6.4.5), with CONDSTORE's MODSEQ and CHANGEDSINCE
(RFC 7162) and EXPUNGEISSUED (RFC 5530) for messages another session expunged.

A request is parsed into items, and each item into a small function that writes its
part of one `* n FETCH (…)` line. Messages go in batches: the cache blobs of a batch
come from the index in one call and message files are read only when an item needs
the body, both in a worker thread; the lines are then made by a tight loop that
joins bytes, and the output is flushed as it grows (`drain`), so `FETCH 1:*` on a
large folder streams in bounded memory. Answers cut from cache blobs (ENVELOPE,
BODY, BODYSTRUCTURE, HEADER.FIELDS) are remembered in a bounded memo, so the second
`FETCH 1:* ENVELOPE` of a folder does not touch the index.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailops.runtime.imap import message as msg
from mailops.runtime.imap.dispatch import ONLY_SELECTED, No, command
from mailops.runtime.imap.parse import BadCommand, Command, Reader
from mailops.runtime.store import FolderView, Message, MessageGone, mime
from mailops.runtime.store.flags import SEEN

if TYPE_CHECKING:
    from mailops.runtime.imap.session import Session

BATCH = 1000  # messages per trip to the index
BATCH_BYTES = 8 * 1024 * 1024  # message bytes read per trip when bodies are sent
MEMO_BYTES = 32 * 1024 * 1024  # answers remembered, for the whole process

_ATT = re.compile(rb"[A-Za-z0-9.]+")
_PART = re.compile(rb"[1-9][0-9]{0,9}(?:\.[1-9][0-9]{0,9})*")
_SIMPLE = frozenset(
    {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
     "RFC822.TEXT", "UID", "BODYSTRUCTURE", "MODSEQ"}
)  # fmt: skip
_FROM_CACHE = frozenset({"ENVELOPE", "BODY", "BODYSTRUCTURE"})
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
# The RFC822 forms are BODY sections under other names (RFC 3501 §6.4.5).
_RFC822_SECTIONS = {
    "RFC822": (msg.Section(), False),
    "RFC822.HEADER": (msg.Section(text=msg.HEADER), True),
    "RFC822.TEXT": (msg.Section(text=msg.TEXT), False),
}
EXPUNGED_TEXT = "Some of the requested messages no longer exist"


# ===================================================================== requests


@dataclass(frozen=True, slots=True)
class Item:
    """One fetch-att. `section` is set for BODY[…] and the RFC822 body forms."""

    name: str
    section: msg.Section | None = None
    peek: bool = True
    origin: int | None = None
    count: int | None = None


@dataclass(slots=True)
class Request:
    items: list[Item]
    changed_since: int | None = None


def parse_request(r: Reader) -> Request:
    """fetch arguments after the sequence set: a macro, one fetch-att or a list of
    them, then the optional modifiers (RFC 4466 §2.4)."""
    if r.peek() == b"(":
        items = r.parenthesized(lambda: _item(r, _name(r)))
        if not items:
            raise BadCommand("empty list of fetch attributes")
    else:
        name = _name(r)
        items = [Item(n) for n in _MACROS[name]] if name in _MACROS else [_item(r, name)]
    request = Request(items)
    if r.maybe_sp():
        for name, value in r.parenthesized(lambda: _modifier(r)):
            if name == "CHANGEDSINCE":
                request.changed_since = value
    r.end()
    return request


def _name(r: Reader) -> str:
    return r.match(_ATT, "a fetch attribute").decode("ascii").upper()


def _item(r: Reader, name: str) -> Item:
    if name in ("BODY", "BODY.PEEK") and r.peek() == b"[":
        section = _section(r)
        origin, count = _partial(r)
        return Item("BODY", section, name == "BODY.PEEK", origin, count)
    if name == "BODY" or name in _SIMPLE:
        if name in _RFC822_SECTIONS:
            section, peek = _RFC822_SECTIONS[name]
            return Item(name, section, peek)
        return Item(name)
    raise BadCommand(f"unknown fetch attribute {name}")


def _section(r: Reader) -> msg.Section:
    r.expect(b"[")
    part: tuple[int, ...] = ()
    found = _PART.match(r.data, r.pos)
    if found:
        r.pos = found.end()
        part = tuple(int(n) for n in found.group().split(b"."))
        if r.peek() == b"]":
            r.pos += 1
            return msg.Section(part)
        r.expect(b".")
    text = _section_text(r, allow_mime=bool(part))
    fields: tuple[bytes, ...] = ()
    if text in (msg.HEADER_FIELDS, msg.HEADER_FIELDS_NOT):
        r.sp()
        names = r.parenthesized(r.astring)
        if not names:
            raise BadCommand("HEADER.FIELDS needs at least one field name")
        fields = tuple(name.upper() for name in names)
    r.expect(b"]")
    return msg.Section(part, text, fields)


def _section_text(r: Reader, allow_mime: bool) -> str:
    for text in (msg.HEADER_FIELDS_NOT, msg.HEADER_FIELDS, msg.HEADER, msg.TEXT, msg.MIME):
        if r.maybe(text.encode()):
            if text == msg.MIME and not allow_mime:
                raise BadCommand("MIME needs a part number")
            return text
    if r.peek() == b"]" and not allow_mime:
        return ""
    raise BadCommand("invalid section")


def _partial(r: Reader) -> tuple[int | None, int | None]:
    if not r.maybe(b"<"):
        return None, None
    origin = r.number()
    r.expect(b".")
    count = r.nz_number()
    r.expect(b">")
    return origin, count


def _modifier(r: Reader) -> tuple[str, Any]:
    name = r.atom().upper()
    if name == "CHANGEDSINCE":
        r.sp()
        return name, r.number()
    raise BadCommand(f"unknown FETCH modifier {name}")


# ============================================================== remembered answers


class AnswerMemo:
    """Answers sent lately that come from the cache blob: ENVELOPE, BODY,
    BODYSTRUCTURE and the message's own HEADER.FIELDS.

    Mail readers and sync clients ask for the same few items of every message again
    and again (Dovecot keeps such fields in its cache file for the same reason).
    What a UID's message holds never changes, so answers are kept in memory — one
    table per (folder, UIDVALIDITY, item), the least recently used tables dropped
    first once the process holds more than `limit` bytes. A FETCH whose items are
    all remembered does not read the index at all.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.tables: OrderedDict[tuple[Any, ...], dict[int, bytes]] = OrderedDict()
        self.sizes: dict[tuple[Any, ...], int] = {}
        self.total = 0

    def table(self, key: tuple[Any, ...]) -> dict[int, bytes]:
        table = self.tables.get(key)
        if table is None:
            table = self.tables[key] = {}
            self.sizes[key] = 0
        self.tables.move_to_end(key)
        return table

    def remember(self, key: tuple[Any, ...], uid: int, answer: bytes) -> None:
        table = self.tables.get(key)
        if table is None or self.sizes[key] + len(answer) > self.limit:
            return  # dropped meanwhile, or one table would hold it all
        table[uid] = answer
        self.sizes[key] += len(answer) + 64  # the bytes and roughly the dict entry
        self.total += len(answer) + 64
        while self.total > self.limit and len(self.tables) > 1:
            oldest = next(iter(self.tables))
            self.tables.pop(oldest)
            self.total -= self.sizes.pop(oldest)


MEMO = AnswerMemo(MEMO_BYTES)


# ==================================================================== the plan


Encoder = Callable[[Message, bytes | None, bytes | None], bytes]


class Plan:
    """What a request needs (cache blobs, message files, \\Seen) and how each item
    is written: one encoder per item, called as encode(message, blob, data)."""

    def __init__(self, s: Session, items: list[Item]) -> None:
        self.session = s
        self.items = items
        self.names = {item.name for item in items}
        self.needs_file = any(i.section is not None and not i.section.header_only for i in items)
        self.needs_cache = any(i.section is not None or i.name in _FROM_CACHE for i in items)
        self.sets_seen = any(i.section is not None and not i.peek for i in items)
        self._flags: dict[tuple[frozenset[str], bool], bytes] = {}
        self.memos: list[dict[int, bytes]] = []  # tables of remembered answers in use
        self.encoders = [self._encoder(item) for item in items]
        # When remembered answers are all that needs the cache, known UIDs skip it.
        self.memo_only = bool(self.memos) and not self.needs_file and not self.sets_seen and all(
            i.name in ("UID", "FLAGS", "RFC822.SIZE", "INTERNALDATE", "MODSEQ") or _memoized(i)
            for i in items
        )

    def blobs_needed(self, uids: list[int]) -> list[int]:
        """The UIDs whose cache blobs a batch needs."""
        if not self.needs_cache:
            return []
        if self.memo_only:
            return [uid for uid in uids if any(uid not in table for table in self.memos)]
        return uids

    def flags(self, message: Message) -> bytes:
        """FLAGS as this session sees them (\\Recent included), made once per flag set."""
        view = self.session.view
        key = (message.flags, view is not None and message.uid in view.recent)
        found = self._flags.get(key)
        if found is None:
            found = self._flags[key] = self.session.flags_of(message)
        return found

    def _encoder(self, item: Item) -> Encoder:
        name = item.name
        if name == "UID":
            return lambda m, blob, data: b"UID %d" % m.uid
        if name == "FLAGS":
            return lambda m, blob, data: b"FLAGS " + self.flags(m)
        if name == "RFC822.SIZE":
            return lambda m, blob, data: b"RFC822.SIZE %d" % m.vsize
        if name == "INTERNALDATE":
            return lambda m, blob, data: b"INTERNALDATE " + msg.internal_date(m.internal_date)
        if name == "MODSEQ":
            return lambda m, blob, data: b"MODSEQ (%d)" % m.modseq
        if not _memoized(item):
            assert item.section is not None
            return _section_encoder(item)
        view = self.session.require_view()
        what = item.section.fields if item.section is not None else name
        # The folder by where it is, plus UIDVALIDITY: a UID then names one message.
        key = (str(view.mailbox.path), view.name, view.uidvalidity, what)
        self.memos.append(MEMO.table(key))
        if name == "ENVELOPE":
            return _remembered(key, b"ENVELOPE ", lambda blob: mime.cached_envelope(blob))
        if name == "BODY" and item.section is None:
            return _remembered(key, b"BODY ", lambda blob: b"(%s)" % mime.cached_body(blob))
        if name == "BODYSTRUCTURE":
            return _remembered(
                key, b"BODYSTRUCTURE ", lambda blob: b"(%s)" % mime.cached_bodystructure(blob)
            )
        return _fields_encoder(item, key)


def _memoized(item: Item) -> bool:
    """Answered from the cache blob alone, so remembered: ENVELOPE, BODY, BODYSTRUCTURE
    and the message's own HEADER.FIELDS (from the cached header)."""
    section = item.section
    if section is None:
        return item.name in _FROM_CACHE
    return section.header_only and section.text == msg.HEADER_FIELDS


def _remembered(key: tuple[Any, ...], label: bytes, answer: Callable[[bytes], bytes]) -> Encoder:
    table = MEMO.table(key)

    def encode(m: Message, blob: bytes | None, data: bytes | None) -> bytes:
        found = table.get(m.uid)
        if found is None:
            assert blob is not None
            found = answer(blob)
            MEMO.remember(key, m.uid, found)
        return label + found

    return encode


def _label(item: Item) -> bytes:
    """`BODY[1.2.MIME]<0> `, or the RFC822 form's name, before the literal."""
    if item.name != "BODY":
        return item.name.encode() + b" "
    assert item.section is not None
    label = b"BODY[" + item.section.label() + b"]"
    return label + (b"<%d> " % item.origin if item.origin is not None else b" ")


def _fields_encoder(item: Item, memo_key: tuple[Any, ...]) -> Encoder:
    """The message's own HEADER.FIELDS: from the cached header block, remembered."""
    assert item.section is not None
    label, origin, count = _label(item), item.origin, item.count
    pattern = msg.fields_pattern(item.section.fields)
    table = MEMO.table(memo_key)

    def fields(m: Message, blob: bytes | None, data: bytes | None) -> bytes:
        found = table.get(m.uid)
        if found is None:
            assert blob is not None
            found = msg.wire(msg.cached_fields(blob, pattern), _has_bare_lf(m))
            MEMO.remember(memo_key, m.uid, found)
        if origin is not None:
            found = msg.partial(found, origin, count)
        return label + b"{%d}\r\n" % len(found) + found

    return fields


def _section_encoder(item: Item) -> Encoder:
    """BODY[section]<origin.count> and the RFC822 forms: a label and a literal."""
    section = item.section
    assert section is not None
    label, origin, count = _label(item), item.origin, item.count
    bare_lf = _has_bare_lf

    if section.header_only:

        def header(m: Message, blob: bytes | None, data: bytes | None) -> bytes:
            assert blob is not None
            block = mime.cached_header(blob)
            if section.text != msg.HEADER:
                block = msg.header_subset(block, section, from_cache=True)
            return label + msg.literal(msg.partial(msg.wire(block, bare_lf(m)), origin, count))

        return header

    def body(m: Message, blob: bytes | None, data: bytes | None) -> bytes:
        assert blob is not None and data is not None
        if section.part:
            raw = msg.section_bytes(section, data, mime.cached_tree(blob))
        elif section.text:  # TEXT of the message: after its cached header
            raw = msg.section_bytes(section, data, _root(data, blob))
        else:
            raw = data
        return label + msg.literal(msg.partial(msg.wire(raw, bare_lf(m)), origin, count))

    return body


def _root(data: bytes, blob: bytes) -> dict[str, Any]:
    """The top part's offsets for TEXT of the whole message (from the cached header)."""
    size = len(mime.cached_header(blob))
    return {"start": 0, "header_size": size, "body_size": len(data) - size}


def _has_bare_lf(m: Message) -> bool:
    """The index knows: a file with a bare LF is bigger in CRLF form."""
    return m.vsize != m.size


# ===================================================================== the loop


@command("FETCH", "UID FETCH", states=ONLY_SELECTED)
async def fetch(s: Session, cmd: Command) -> str | None:
    view = s.require_view()
    numbers = cmd.args.sequence_set()
    cmd.args.sp()
    request = parse_request(cmd.args)
    items = _answered_items(s, request, cmd.uid)
    chosen = s.messages(numbers, cmd.uid)
    if request.changed_since is not None:
        chosen = [(seq, m) for seq, m in chosen if m.modseq > request.changed_since]
    plan = Plan(s, items)
    missing = False
    for batch in _batches(chosen, plan.needs_file):
        missing |= await _send_batch(s, view, plan, batch)
    if missing:
        raise No(EXPUNGED_TEXT, "EXPUNGEISSUED")
    return None


def _answered_items(s: Session, request: Request, uid: bool) -> list[Item]:
    """The items of every answer: as asked, with UID for UID FETCH (RFC 3501 §6.4.8)
    and MODSEQ with CHANGEDSINCE (RFC 7162 §3.1.4.1). Asking for MODSEQ turns
    CONDSTORE on for the session, which the client learns from HIGHESTMODSEQ."""
    items = request.items
    names = {item.name for item in items}
    if uid and "UID" not in names:
        items = [Item("UID"), *items]
    if request.changed_since is not None and "MODSEQ" not in names:
        items = [*items, Item("MODSEQ")]
    if request.changed_since is not None or "MODSEQ" in names:
        s.enable_condstore()
    return items


def _batches(chosen: list[tuple[int, Message]], by_size: bool):
    """Runs of at most BATCH messages and, when files are read, about BATCH_BYTES."""
    batch: list[tuple[int, Message]] = []
    size = 0
    for entry in chosen:
        batch.append(entry)
        size += entry[1].size
        if len(batch) >= BATCH or (by_size and size >= BATCH_BYTES):
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


async def _send_batch(
    s: Session, view: FolderView, plan: Plan, batch: list[tuple[int, Message]]
) -> bool:
    """Answer for one batch; True when some message could not be answered.

    This loop runs once per message of a FETCH 1:*, so it is kept plain: lines are
    collected and sent together, except message bodies, which go out one by one.
    """
    uids = [m.uid for _, m in batch]
    wanted = plan.blobs_needed(uids)
    blobs, datas, updated = await asyncio.to_thread(_load, view, plan, wanted, uids, batch)
    encoders = plan.encoders
    needs_file = plan.needs_file
    wanted_set = set(wanted) if len(wanted) != len(uids) else None
    lines: list[bytes] = []
    missing = False
    for seq, m in batch:
        blob = blobs.get(m.uid)
        data = datas.get(m.uid) if needs_file else None
        if blob is None and wanted and (wanted_set is None or m.uid in wanted_set):
            missing = True  # expunged by someone else: still numbered here
            continue
        if needs_file and data is None:
            missing = True
            continue
        if updated and m.uid in updated:
            lines.append(_with_new_flags(s, plan, seq, updated[m.uid], blob, data))
        else:
            parts = [encode(m, blob, data) for encode in encoders]
            lines.append(b"* %d FETCH (%s)\r\n" % (seq, b" ".join(parts)))
        if needs_file:
            s.send(lines.pop())
            await s.drain()
    if lines:
        s.send(b"".join(lines))
        await s.drain()
    return missing


def _with_new_flags(
    s: Session, plan: Plan, seq: int, m: Message, blob: bytes | None, data: bytes | None
) -> bytes:
    """A FETCH line for a message whose \\Seen was just set: FLAGS come along even when
    not asked for (RFC 3501 §6.4.5), with MODSEQ once CONDSTORE is on (RFC 7162 §3.2)."""
    parts = [f(m, blob, data) for f in plan.encoders]
    if "FLAGS" not in plan.names:
        parts.append(b"FLAGS " + plan.flags(m))
        if s.condstore and "MODSEQ" not in plan.names:
            parts.append(b"MODSEQ (%d)" % m.modseq)
    return b"* %d FETCH (%s)\r\n" % (seq, b" ".join(parts))


def _load(
    view: FolderView,
    plan: Plan,
    wanted: list[int],
    uids: list[int],
    batch: list[tuple[int, Message]],
) -> tuple[dict[int, bytes], dict[int, bytes], dict[int, Message]]:
    """In a worker thread: the `wanted` cache blobs, files, and \\Seen for a batch."""
    blobs = view.cached(wanted) if wanted else {}
    datas: dict[int, bytes] = {}
    if plan.needs_file:
        for uid in uids:
            with contextlib.suppress(MessageGone):  # expunged meanwhile: reported later
                datas[uid] = view.read(uid)
    updated: dict[int, Message] = {}
    if plan.sets_seen and not view.readonly:
        unseen = [m.uid for _, m in batch if SEEN not in m.flags and m.uid in blobs]
        if unseen:
            now, _ = view.store_flags(unseen, [SEEN], "+")
            updated = {m.uid: m for m in now if SEEN in m.flags}
    return blobs, datas, updated
