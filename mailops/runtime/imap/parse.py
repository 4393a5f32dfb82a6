"""Reading IMAP commands (RFC 3501 §9 grammar, with the extensions' additions).

The framing layer (`conn`) hands over a whole command as the bytes that came over
the wire — lines and literals together, `{N}\\r\\n` markers included, without the
final CRLF. `Reader` walks that buffer with one method per grammar element; every
mistake raises `BadCommand`, which the session answers with a tagged BAD. Nothing
here allocates more than the command itself, so hostile input costs at most its size.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from mailops.runtime.store import names

T = TypeVar("T")

MAX_DEPTH = 16  # nested parentheses (search programs, fetch lists)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = {m.upper(): i for i, m in enumerate(MONTHS, 1)}

# ATOM-CHAR: any CHAR except atom-specials: ( ) { SP CTL % * " \ ]
_ATOM = re.compile(rb"[^(){ \x00-\x1f\x7f%*\"\\\]\x80-\xff]+")
_ASTRING_CHARS = re.compile(rb"[^(){ \x00-\x1f\x7f%*\"\\\x80-\xff]+")  # atom + "]"
_LIST_CHARS = re.compile(rb"[^(){ \x00-\x1f\x7f\"\\\x80-\xff]+")  # astring + % *
_TAG = re.compile(rb"[^(){ \x00-\x1f\x7f%*\"\\+\x80-\xff]+")  # astring-char except "+"
_NUMBER = re.compile(rb"[0-9]+")
_LITERAL = re.compile(rb"(~?)\{([0-9]{1,10})(\+?)\}\r\n")
_SEQ_SET = re.compile(rb"(?:[0-9]+|\*)(?::(?:[0-9]+|\*))?(?:,(?:[0-9]+|\*)(?::(?:[0-9]+|\*))?)*")
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) '
    rb'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')


class BadCommand(Exception):
    """A command that does not parse: answered with a tagged BAD and this text."""


# ---------------------------------------------------------------- sequence sets

STAR = 0  # "*" in a sequence set: the largest number in use, resolved late


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A sequence-set (RFC 3501 §9) as ranges; `STAR` stands for "*"."""

    ranges: tuple[tuple[int, int], ...]

    def _bounds(self, largest: int) -> Iterator[tuple[int, int]]:
        for first, last in self.ranges:
            first = largest if first == STAR else first
            last = largest if last == STAR else last
            yield (first, last) if first <= last else (last, first)

    def numbers(self, count: int) -> list[int]:
        """Message sequence numbers 1..count named by the set, ascending and unique.
        BadCommand when the set names one beyond `count` (RFC 3501 §9: invalid)."""
        chosen: set[int] = set()
        for first, last in self._bounds(count):
            if first < 1 or last > count:
                raise BadCommand("invalid message sequence number")
            if len(self.ranges) == 1:
                return list(range(first, last + 1))  # one range (1:*): already in order
            chosen.update(range(first, last + 1))
        return sorted(chosen)

    def pick(self, values: Sequence[int]) -> list[int]:
        """The members of sorted `values` (UIDs in use) that the set names. UIDs that
        do not exist are ignored, and "*" is the largest UID (RFC 3501 §6.4.8)."""
        largest = values[-1] if values else 0
        chosen: set[int] = set()
        for first, last in self._bounds(largest):
            lo = bisect.bisect_left(values, first)
            hi = bisect.bisect_right(values, last)
            if len(self.ranges) == 1:
                return list(values[lo:hi])  # one range (1:*): already in order
            chosen.update(values[lo:hi])
        return sorted(chosen)

    def contains(self, value: int, largest: int) -> bool:
        return any(first <= value <= last for first, last in self._bounds(largest))

    def __str__(self) -> str:
        def one(n: int) -> str:
            return "*" if n == STAR else str(n)

        return ",".join(one(a) if a == b else f"{one(a)}:{one(b)}" for a, b in self.ranges)


def sequence_set_of(numbers: Sequence[int]) -> str:
    """The shortest sequence-set text for ascending unique numbers (for UIDPLUS, ESEARCH)."""
    out: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else f"{numbers[i]}:{numbers[j]}")
        i = j + 1
    return ",".join(out)


# ----------------------------------------------------------------------- reader


class Reader:
    """A cursor over one command's bytes. `utf8` allows 8-bit quoted strings and
    UTF-8 mailbox names (after ENABLE UTF8=ACCEPT, RFC 6855)."""

    def __init__(self, data: bytes, *, utf8: bool = False) -> None:
        self.data = data
        self.pos = 0
        self.utf8 = utf8
        self.depth = 0

    # ------------------------------------------------------------ primitives

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def end(self) -> None:
        if not self.at_end():
            raise BadCommand(f"unexpected text at the end: {self._near()}")

    def peek(self) -> bytes:
        return self.data[self.pos : self.pos + 1]

    def _near(self) -> str:
        return self.data[self.pos : self.pos + 20].decode("ascii", "replace")

    def sp(self) -> None:
        if self.peek() != b" ":
            near = self._near()
            raise BadCommand("expected a space" + (f" before {near!r}" if near else ""))
        self.pos += 1

    def maybe_sp(self) -> bool:
        if self.peek() == b" ":
            self.pos += 1
            return True
        return False

    def maybe(self, word: bytes) -> bool:
        """Consume `word` (case-insensitively) when it is next."""
        end = self.pos + len(word)
        if self.data[self.pos : end].upper() == word.upper():
            self.pos = end
            return True
        return False

    def expect(self, word: bytes) -> None:
        if not self.maybe(word):
            raise BadCommand(f"expected {word.decode()!r}")

    def match(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        found = pattern.match(self.data, self.pos)
        if not found:
            raise BadCommand(f"expected {what}" + (f" at {self._near()!r}" if self._near() else ""))
        self.pos = found.end()
        return found.group(0)

    # ------------------------------------------------------------ tokens

    def tag(self) -> str:
        return self.match(_TAG, "a tag").decode("ascii")

    def atom(self) -> str:
        return self.match(_ATOM, "an atom").decode("ascii")

    def number(self) -> int:
        """number (RFC 3501) / number64 (RFC 9051): digits, bounded to 63 bits."""
        digits = self.match(_NUMBER, "a number")
        if len(digits) > 19 or int(digits) >= 2**63:
            raise BadCommand("number too large")
        return int(digits)

    def nz_number(self) -> int:
        value = self.number()
        if value == 0 or value >= 2**32:
            raise BadCommand("expected a number from 1 to 4294967295")
        return value

    def sequence_set(self) -> SequenceSet:
        text = self.match(_SEQ_SET, "a sequence set")
        ranges = []
        for part in text.split(b","):
            first, _, last = part.partition(b":")
            ranges.append((self._seq_number(first), self._seq_number(last or first)))
        return SequenceSet(tuple(ranges))

    @staticmethod
    def _seq_number(text: bytes) -> int:
        if text == b"*":
            return STAR
        value = int(text)
        if value == 0 or value >= 2**32:
            raise BadCommand("sequence numbers run from 1 to 4294967295")
        return value

    # ------------------------------------------------------------ strings

    def string(self) -> bytes:
        """quoted / literal (and literal8 `~{N}` for BINARY-free APPEND of 8-bit data)."""
        if self.peek() == b'"':
            return self._quoted()
        literal = _LITERAL.match(self.data, self.pos)
        if not literal:
            raise BadCommand("expected a string")
        size = int(literal.group(2))
        start = literal.end()
        if start + size > len(self.data):
            raise BadCommand("literal is shorter than announced")
        self.pos = start + size
        return self.data[start : self.pos]

    def _quoted(self) -> bytes:
        found = _QUOTED.match(self.data, self.pos)
        if not found:
            raise BadCommand("unterminated or invalid quoted string")
        raw = found.group(1)
        if not self.utf8 and any(b > 0x7F for b in raw):
            raise BadCommand("8-bit characters in a quoted string (use a literal)")
        self.pos = found.end()
        return raw.replace(b"\\\\", b"\\").replace(b'\\"', b'"') if b"\\" in raw else raw

    def astring(self) -> bytes:
        head = self.peek()
        if head == b'"' or head == b"{" or head == b"~":
            return self.string()
        return self.match(_ASTRING_CHARS, "a string")

    def nstring(self) -> bytes | None:
        if self.maybe(b"NIL"):
            return None
        return self.string()

    def text(self) -> str:
        """An astring as text (UTF-8; undecodable bytes kept with surrogateescape)."""
        return self.astring().decode("utf-8", "surrogateescape")

    def mailbox(self) -> str:
        """A mailbox name as the store spells it (mUTF-7 decoded unless UTF8=ACCEPT)."""
        return self._mailbox_name(self.astring())

    def list_mailbox(self) -> str:
        """A LIST pattern: an astring that may also contain the wildcards % and *."""
        head = self.peek()
        raw = self.string() if head in (b'"', b"{", b"~") else self.match(_LIST_CHARS, "a pattern")
        return self._mailbox_name(raw, pattern=True)

    def _mailbox_name(self, raw: bytes, pattern: bool = False) -> str:
        try:
            text = raw.decode("utf-8" if self.utf8 else "ascii")
        except UnicodeDecodeError:
            raise BadCommand("mailbox name is not " + ("UTF-8" if self.utf8 else "7-bit")) from None
        if text.upper() == names.INBOX:
            return names.INBOX
        if self.utf8 or "&" not in text:
            return text
        try:
            return names.decode_mutf7(text)
        except ValueError:
            if pattern:
                return text
            raise BadCommand("mailbox name is not valid modified UTF-7") from None

    # ------------------------------------------------------------ structure

    def parenthesized(self, item: Callable[[], T]) -> list[T]:
        """"(" item *(SP item) ")" — an empty list is allowed."""
        self.expect(b"(")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise BadCommand("parentheses nested too deeply")
        items: list[T] = []
        if not self.maybe(b")"):
            items.append(item())
            while not self.maybe(b")"):
                self.sp()
                items.append(item())
        self.depth -= 1
        return items

    def flag(self) -> str:
        """flag: \\Answered … \\Draft, \\* (in PERMANENTFLAGS only), or a keyword atom."""
        if self.maybe(b"\\"):
            return "\\" + self.atom()
        return self.atom()

    def flag_list(self) -> list[str]:
        return self.parenthesized(self.flag)

    def flags(self) -> list[str]:
        """STORE's flags: a parenthesized list or flags separated by spaces."""
        if self.peek() == b"(":
            return self.flag_list()
        found = [self.flag()]
        while self.maybe_sp():
            found.append(self.flag())
        return found

    # ------------------------------------------------------------ dates

    def date(self) -> dt.date:
        """date: d-Mon-yyyy, optionally quoted (SEARCH BEFORE/ON/SINCE …)."""
        quoted = self.maybe(b'"')
        text = self.match(_DATE, "a date like 1-Feb-2024")
        if quoted:
            self.expect(b'"')
        day, month, year = _DATE.match(text).groups()  # type: ignore[union-attr]
        return _make_date(int(year), _month(month), int(day))

    def date_time(self) -> int:
        """date-time: "dd-Mon-yyyy hh:mm:ss +zzzz" (APPEND) as seconds since the epoch."""
        found = _DATE_TIME.match(self.data, self.pos)
        if not found:
            raise BadCommand('expected a date-time like "01-Feb-2024 10:00:00 +0000"')
        self.pos = found.end()
        day, mon, year, hh, mm, ss, sign, zh, zm = found.groups()
        date = _make_date(int(year), _month(mon), int(day.strip()))
        h, m, s = int(hh), int(mm), int(ss)
        if h > 23 or m > 59 or s > 60:
            raise BadCommand("invalid time of day")
        offset = (int(zh) * 60 + int(zm)) * 60 * (-1 if sign == b"-" else 1)
        return calendar.timegm((date.year, date.month, date.day, h, m, min(s, 59))) - offset


def _month(text: bytes) -> int:
    month = _MONTH.get(text.decode("ascii").upper())
    if month is None:
        raise BadCommand("month must be Jan, Feb, … Dec")
    return month


def _make_date(year: int, month: int, day: int) -> dt.date:
    try:
        return dt.date(year, month, day)
    except ValueError:
        raise BadCommand("no such date") from None


# ---------------------------------------------------------------- command head


@dataclass(slots=True)
class Command:
    """A command after its tag and name; `args` is positioned at the arguments."""

    tag: str
    name: str  # upper case; "UID FETCH" etc. for the UID forms
    args: Reader

    @property
    def uid(self) -> bool:
        return self.name.startswith("UID ")


def parse_command(data: bytes, *, utf8: bool = False) -> Command:
    """Split tag and command name; BadCommand (with the tag when known) otherwise."""
    reader = Reader(data, utf8=utf8)
    try:
        tag = reader.tag()
    except BadCommand:
        raise BadCommand("missing or invalid tag") from None
    try:
        reader.sp()
        name = reader.atom().upper()
        if name == "UID":
            reader.sp()
            name = "UID " + reader.atom().upper()
    except BadCommand as exc:
        raise TaggedBad(tag, str(exc)) from None
    if not reader.at_end():
        reader.sp()
    return Command(tag, name, reader)


class TaggedBad(BadCommand):
    """A BAD for a command whose tag was read."""

    def __init__(self, tag: str, text: str) -> None:
        super().__init__(text)
        self.tag = tag
