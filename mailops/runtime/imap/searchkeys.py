"""SEARCH programs (RFC 3501 §6.4.4, CONDSTORE's MODSEQ of RFC 7162 §3.1.5): parsed
into a small tree of keys, then evaluated against a folder view.

Evaluation works on sets of UIDs. Each key narrows a set of candidates: a
conjunction hands the survivors of its cheap keys (flags, sizes, dates, numbers) to
its costly ones (header and body text), so a scan, when one is needed, reads only
the messages that can still match. Text keys go to a `FolderText` (the store's text
index, or a scan); strings are compared in its normal form (`mailtext.normalize`).
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

from mailops.runtime.imap.parse import BadCommand, Reader, SequenceSet
from mailops.runtime.store import Message
from mailops.runtime.store.mailtext import normalize
from mailops.runtime.store.textindex import FolderText

MAX_DEPTH = 64  # NOT/OR/parentheses nested deeper than this is not a real client
MAX_KEYS = 1000  # keys in one program
CHARSETS = ("UTF-8", "US-ASCII")
DAY = 86400
_UID = operator.attrgetter("uid")

# Cost classes: a conjunction evaluates cheaper keys first.
CHEAP, DATES, TEXT = 0, 1, 2


class UnknownCharset(Exception):
    """CHARSET names a charset other than CHARSETS (answered NO [BADCHARSET])."""


# ======================================================================== the tree


class Key:
    """A search key. `select` returns the members of `uids` the key matches."""

    __slots__ = ()
    cost: ClassVar[int] = CHEAP

    def select(self, ev: Evaluation, uids: set[int]) -> set[int]:
        raise NotImplementedError

    def children(self) -> Sequence[Key]:
        return ()


@dataclass(frozen=True, slots=True)
class All(Key):
    def select(self, ev: Evaluation, uids: set[int]) -> set[int]:
        return uids


@dataclass(frozen=True, slots=True)
class Flag(Key):
    """A system flag or keyword set (`present`) or not; flag names ignore case."""

    flag: str
    present: bool

    def select(self, ev: Evaluation, uids: set[int]) -> set[int]:
        wanted = self.flag.lower()
        verdict: dict[frozenset[str], bool] = {}  # messages share a few flag sets
        out = set()
        for uid in uids:
            flags = ev.message[uid].flags
            has = verdict.get(flags)
            if has is None:
                has = verdict[flags] = any(f.lower() == wanted for f in flags)
            if has == self.present:
                out.add(uid)
        return out


@dataclass(frozen=True, slots=True)
class Recent(Key):
    present: bool

    def select(self, ev: Evaluation, uids: set[int]) -> set[int]:
        return uids & ev.recent if self.present else uids - ev.recent


@dataclass(frozen=True, slots=True)
class Size(Key):
    """LARGER (`larger`) or SMALLER than n octets of RFC822.SIZE."""

    larger: bool
    size: int

    def select(self, ev: Evaluation, uids: set[int]) -> set[int]:
        if self.larger:
            return {uid for uid in uids if ev.message[uid].vsize > self.size}
        return {uid for uid in uids if ev.message[uid].vsize < self.size}


def _compare(op: str, value: int, low: int, high: int) -> bool:
    """BEFORE/ON/SINCE: `value` against the day that runs from `low` to `high`."""
    if op == "BEFORE":
        return value < low
    if op == "ON":
        return low <= value < high
    return value >= low


@dataclass(frozen=True, slots=True)
class Arrived(Key):
    """BEFORE/ON/SINCE: the internal date's day (UTC, as INTERNALDATE shows it)."""

    op: str
    day: dt.date

    def select(self, ev: Evaluation, uids: set[int]) -> set[int]:
        low = calendar.timegm(self.day.timetuple())
        return {
            uid for uid in uids if _compare(self.op, ev.message[uid].internal_date, low, low + DAY)
        }


@dataclass(frozen=True, slots=True)
class Sent(Key):
    """SENTBEFORE/SENTON/SENTSINCE: the day written in the Date: field. Messages
    without a readable Date: field match none of them."""

    cost: ClassVar[int] = DATES
    op: str
    day: dt.date

    def select(self, ev: Evaluation, uids: set[int]) -> set[int]:
        day = self.day.toordinal()
        sent = ev.content.sent(uids)
        return {uid for uid, when in sent.items() if _compare(self.op, when, day, day + 1)}


@dataclass(frozen=True, slots=True)
class Numbers(Key):
    """A sequence set of message sequence numbers (`uid` False) or of UIDs."""

    numbers: SequenceSet
    uid: bool

    def select(self, ev: Evaluation, uids: set[int]) -> set[int]:
        return uids & ev.named(self)


@dataclass(frozen=True, slots=True)
class ModSeq(Key):
    """CONDSTORE: messages changed at or after a mod-sequence (per-flag entries are
    accepted and ignored: the store keeps one MODSEQ per message, RFC 7162 §3.1.5)."""

    modseq: int

    def select(self, ev: Evaluation, uids: set[int]) -> set[int]:
        return {uid for uid in uids if ev.message[uid].modseq >= self.modseq}


@dataclass(frozen=True, slots=True)
class Header(Key):
    """A header field that contains the string; FROM, TO, CC, BCC, SUBJECT are this
    key with their field name. An empty string matches every message with the field."""

    cost: ClassVar[int] = TEXT
    name: str  # lower case
    needle: str  # normalized

    def select(self, ev: Evaluation, uids: set[int]) -> set[int]:
        return ev.content.header(self.name, self.needle, uids) if uids else set()


@dataclass(frozen=True, slots=True)
class Body(Key):
    cost: ClassVar[int] = TEXT
    needle: str

    def select(self, ev: Evaluation, uids: set[int]) -> set[int]:
        return ev.content.body(self.needle, uids) if uids else set()


@dataclass(frozen=True, slots=True)
class Text(Key):
    """TEXT: the string in the header or the body."""

    cost: ClassVar[int] = TEXT
    needle: str

    def select(self, ev: Evaluation, uids: set[int]) -> set[int]:
        return ev.content.text(self.needle, uids) if uids else set()


@dataclass(frozen=True, slots=True)
class Not(Key):
    key: Key

    def select(self, ev: Evaluation, uids: set[int]) -> set[int]:
        return uids - self.key.select(ev, uids)

    @property
    def cost(self) -> int:  # type: ignore[override]
        return self.key.cost

    def children(self) -> Sequence[Key]:
        return (self.key,)


@dataclass(frozen=True, slots=True)
class Or(Key):
    first: Key
    second: Key

    def select(self, ev: Evaluation, uids: set[int]) -> set[int]:
        found = self.first.select(ev, uids)
        return found | self.second.select(ev, uids - found)

    @property
    def cost(self) -> int:  # type: ignore[override]
        return max(self.first.cost, self.second.cost)

    def children(self) -> Sequence[Key]:
        return (self.first, self.second)


@dataclass(frozen=True, slots=True)
class And(Key):
    keys: tuple[Key, ...]

    def select(self, ev: Evaluation, uids: set[int]) -> set[int]:
        for key in sorted(self.keys, key=lambda k: k.cost):
            if not uids:
                break
            uids = key.select(ev, uids)
        return uids

    @property
    def cost(self) -> int:  # type: ignore[override]
        return max((k.cost for k in self.keys), default=CHEAP)

    def children(self) -> Sequence[Key]:
        return self.keys


def walk(key: Key) -> Iterator[Key]:
    """The key and every key inside it."""
    yield key
    for child in key.children():
        yield from walk(child)


# ===================================================================== evaluation


class Evaluation:
    """One run of a program over a view's numbered messages (`messages`: the message
    at sequence number n is messages[n - 1], in UID order)."""

    def __init__(self, messages: Sequence[Message], recent: set[int], content: FolderText):
        self.messages = messages
        self.uids = list(map(_UID, messages))
        self.recent = recent
        self.content = content
        self._named: dict[int, set[int]] = {}

    @functools.cached_property
    def message(self) -> dict[int, Message]:
        """uid → message, for the keys that look at flags, sizes and dates."""
        return dict(zip(self.uids, self.messages, strict=True))

    def named(self, key: Numbers) -> set[int]:
        """The UIDs a sequence set names. Message numbers beyond the last are a BAD
        (RFC 3501 §9), like FETCH; an empty folder makes every set empty."""
        found = self._named.get(id(key))
        if found is None:
            if key.uid:
                found = set(key.numbers.pick(self.uids))
            elif self.uids:
                found = {self.uids[n - 1] for n in key.numbers.numbers(len(self.uids))}
            else:
                found = set()
            self._named[id(key)] = found
        return found

    def run(self, program: Key) -> list[int]:
        """The indexes in `messages` of the matching messages, ascending."""
        for key in walk(program):  # a bad sequence set is a BAD whatever else matches
            if isinstance(key, Numbers):
                self.named(key)
        matched = program.select(self, set(self.uids))
        return [i for i, uid in enumerate(self.uids) if uid in matched]


# ======================================================================== parsing


@dataclass(frozen=True, slots=True)
class Program:
    key: Key
    charset: str  # as the client named it, upper case; "US-ASCII" when not named

    @property
    def uses_modseq(self) -> bool:
        return any(isinstance(key, ModSeq) for key in walk(self.key))


_FLAGS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_ADDRESSES = ("FROM", "TO", "CC", "BCC", "SUBJECT")
_ARRIVED = ("BEFORE", "ON", "SINCE")
_SENT = {"SENTBEFORE": "BEFORE", "SENTON": "ON", "SENTSINCE": "SINCE"}
_ENTRY_TYPES = ("PRIV", "SHARED", "ALL")


def parse_program(args: Reader) -> Program:
    """search-program: ["CHARSET" SP charset SP] search-key *(SP search-key), to the
    end of the command. BadCommand when it does not parse; UnknownCharset."""
    charset = "US-ASCII"
    if args.maybe(b"CHARSET "):
        charset = args.astring().decode("ascii", "replace").upper()
        if charset not in CHARSETS:
            raise UnknownCharset(charset)
        args.sp()
    parser = _Parser(args)
    keys = [parser.key(0)]
    while not args.at_end():
        args.sp()
        keys.append(parser.key(0))
    return Program(keys[0] if len(keys) == 1 else And(tuple(keys)), charset)


class _Parser:
    def __init__(self, args: Reader) -> None:
        self.args = args
        self.count = 0
        self._simple: dict[str, Callable[[], Key]] = {
            "ALL": All,
            "NEW": lambda: And((Recent(True), Flag("\\Seen", False))),
            "OLD": lambda: Recent(False),
            "RECENT": lambda: Recent(True),
            "KEYWORD": lambda: Flag(self._flag(), True),
            "UNKEYWORD": lambda: Flag(self._flag(), False),
            "LARGER": lambda: Size(True, self._number()),
            "SMALLER": lambda: Size(False, self._number()),
            "UID": lambda: Numbers(self._sequence_set(), uid=True),
            "MODSEQ": self._modseq,
            "HEADER": self._header,
            "BODY": lambda: Body(self._string()),
            "TEXT": lambda: Text(self._string()),
        }

    def key(self, depth: int) -> Key:
        self.count += 1
        if depth > MAX_DEPTH or self.count > MAX_KEYS:
            raise BadCommand("search program too deeply nested or too long")
        args = self.args
        head = args.peek()
        if head == b"(":
            keys = args.parenthesized(lambda: self.key(depth + 1))
            if not keys:
                raise BadCommand("empty parentheses in a search program")
            return keys[0] if len(keys) == 1 else And(tuple(keys))
        if head.isdigit() or head == b"*":
            return Numbers(args.sequence_set(), uid=False)
        name = args.atom().upper()
        if name == "NOT":
            args.sp()
            return Not(self.key(depth + 1))
        if name == "OR":
            args.sp()
            first = self.key(depth + 1)
            args.sp()
            return Or(first, self.key(depth + 1))
        return self._named(name)

    def _named(self, name: str) -> Key:
        if name in _FLAGS:
            return Flag(*_FLAGS[name])
        if name in _ADDRESSES:
            return Header(name.lower(), self._string())
        if name in _ARRIVED:
            return Arrived(name, self._date())
        if name in _SENT:
            return Sent(_SENT[name], self._date())
        make = self._simple.get(name)
        if make is None:
            raise BadCommand(f"unknown search key {name}")
        return make()

    # ------------------------------------------------------------ arguments

    def _string(self) -> str:
        self.args.sp()
        return normalize(self.args.astring().decode("utf-8", "replace"))

    def _date(self) -> dt.date:
        self.args.sp()
        return self.args.date()

    def _number(self) -> int:
        self.args.sp()
        return self.args.number()

    def _sequence_set(self) -> SequenceSet:
        self.args.sp()
        return self.args.sequence_set()

    def _flag(self) -> str:
        self.args.sp()
        return self.args.flag()

    def _header(self) -> Key:
        self.args.sp()
        name = self.args.astring().decode("utf-8", "replace").lower()
        return Header(name, self._string())

    def _modseq(self) -> Key:
        """MODSEQ [entry-name SP entry-type-req SP] mod-sequence-valzer."""
        args = self.args
        args.sp()
        if args.peek() == b'"':
            args.string()
            args.sp()
            if args.atom().upper() not in _ENTRY_TYPES:
                raise BadCommand("MODSEQ entry type must be priv, shared or all")
            args.sp()
        return ModSeq(args.number())
