"""Search programs: parsing into keys, and evaluating them — through the text index
and by reading the messages, which must agree with each other and with a plain
per-message evaluation written here, for random programs."""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailops.runtime.imap import searchkeys
from mailops.runtime.imap.parse import BadCommand, Reader
from mailops.runtime.imap.searchkeys import (
    And,
    Arrived,
    Body,
    Evaluation,
    Flag,
    Header,
    ModSeq,
    Not,
    Numbers,
    Or,
    Recent,
    Sent,
    Size,
    Text,
    UnknownCharset,
    parse_program,
)
from mailops.runtime.store import Store, opened
from mailops.runtime.store.mailtext import normalize
from mailops.runtime.store.textindex import ScannedText, folder_text
from tests.runtime.search_corpus import CORPUS, DATES, HEADER_NAMES, KEYWORDS, NEEDLES

DOMAIN, USER = "example.test", "alice"


def parse(text: str | bytes) -> searchkeys.Program:
    data = text.encode() if isinstance(text, str) else text
    return parse_program(Reader(data))


def literal(value: str) -> str:
    data = value.encode()
    return f"{{{len(data)}}}\r\n{value}"


# ------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("SEEN", Flag("\\Seen", True)),
        ("unanswered", Flag("\\Answered", False)),
        ("KEYWORD $Label1", Flag("$Label1", True)),
        ("UNKEYWORD Work", Flag("Work", False)),
        ("NEW", And((Recent(True), Flag("\\Seen", False)))),
        ("OLD", Recent(False)),
        ("LARGER 100", Size(True, 100)),
        ("SMALLER 5", Size(False, 5)),
        ("BEFORE 1-Feb-2024", Arrived("BEFORE", dt.date(2024, 2, 1))),
        ('SENTON "7-May-2024"', Sent("ON", dt.date(2024, 5, 7))),
        ("FROM Bob", Header("from", "bob")),
        ('HEADER X-Custom "Alpha  Beta"', Header("x-custom", "alpha beta")),
        ("HEADER Subject {5}\r\nCAFÉ".encode(), Header("subject", "café")),
        ("BODY {0}\r\n", Body("")),
        ("TEXT x", Text("x")),
        ("MODSEQ 12", ModSeq(12)),
        ('MODSEQ "/flags/\\\\seen" all 12', ModSeq(12)),
        ("NOT DELETED", Not(Flag("\\Deleted", True))),
        ("OR SEEN (FLAGGED)", Or(Flag("\\Seen", True), Flag("\\Flagged", True))),
        ("(SEEN DRAFT)", And((Flag("\\Seen", True), Flag("\\Draft", True)))),
        ("SEEN DRAFT", And((Flag("\\Seen", True), Flag("\\Draft", True)))),
    ],
)
def test_keys_parse_into_the_tree(text, key):
    assert parse(text).key == key


def test_sequence_sets_and_uid_sets():
    key = parse("1:3,5 UID 2:*").key
    assert isinstance(key, And)
    numbers, uids = key.keys
    assert isinstance(numbers, Numbers) and not numbers.uid and str(numbers.numbers) == "1:3,5"
    assert isinstance(uids, Numbers) and uids.uid and str(uids.numbers) == "2:*"


@pytest.mark.parametrize("charset", ["UTF-8", "us-ascii", '"UTF-8"'])
def test_charsets_that_are_accepted(charset):
    program = parse(f"CHARSET {charset} SUBJECT x")
    assert program.charset in ("UTF-8", "US-ASCII") and program.key == Header("subject", "x")


def test_other_charsets_are_refused():
    with pytest.raises(UnknownCharset):
        parse("CHARSET KOI8-R SUBJECT x")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "FOO",
        "FROM",
        "SEEN ",
        "(SEEN",
        "()",
        "SEEN)",
        "LARGER x",
        "BEFORE 30-Feb-2024",
        "HEADER Subject",
        "OR SEEN",
        "NOT",
        "UID",
        "0:3",
        'MODSEQ "/flags/x" bogus 3',
        "SUBJECT caf\xc3\xa9",  # 8-bit outside a literal
        "NOT " * 100 + "SEEN",
        "(" * 20 + "SEEN" + ")" * 20,
        " ".join(["SEEN"] * 1001),
    ],
)
def test_programs_that_are_bad(text):
    with pytest.raises(BadCommand):
        parse(text.encode("latin-1"))


def test_uses_modseq_looks_inside():
    assert parse("OR SEEN NOT MODSEQ 3").uses_modseq
    assert not parse("OR SEEN NOT DELETED").uses_modseq


# ---------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The corpus in an INBOX, with \\Recent claimed by the view used here."""
    with opened(Store(tmp_path_factory.mktemp("corpus"), "mx.test"), DOMAIN, USER) as mailbox:
        for sample in CORPUS:
            mailbox.append("INBOX", sample.data, sample.flags, sample.internal_date)
        view = mailbox.select("INBOX")
        view.store_flags([2, 4], ["$Tagged"], "+")  # later MODSEQs for these two
        view.refresh()
        yield view


def run(view, text: str | bytes, content=None) -> list[int]:
    """Sequence numbers that match, as SEARCH would say them."""
    content = content if content is not None else folder_text(view)
    evaluation = Evaluation(view.messages, view.recent, content)
    return [i + 1 for i in evaluation.run(parse(text).key)]


def test_flags_sizes_dates_and_numbers(folder):
    assert run(folder, "SEEN") == [1, 2, 7, 9, 11]
    assert run(folder, "KEYWORD work") == [5, 7, 12]  # keywords ignore case
    assert run(folder, "UNKEYWORD $Label1 DELETED") == [5]
    assert run(folder, "NEW") == [3, 4, 5, 6, 8, 10, 12, 13]  # all recent to this view
    assert run(folder, "OLD") == []
    assert run(folder, "ON 12-May-2024") == [7, 8]  # UTC days: 12:00 and 23:00
    assert run(folder, "BEFORE 7-May-2024") == [2, 10]
    assert run(folder, "SINCE 16-May-2024") == [12, 13]
    assert run(folder, "SENTON 31-Dec-2023") == [2]  # as written, zone ignored
    assert run(folder, "SENTBEFORE 8-May-2024") == [1, 2]  # no Date: matches none
    assert run(folder, "LARGER 5000") == [11]
    assert run(folder, "2:4,*") == [2, 3, 4, 13]
    assert run(folder, "UID 12:*") == [12, 13]
    assert run(folder, "UID 99:*") == [13]  # "*" is the highest UID in use
    top = max(m.modseq for m in folder.messages)
    assert run(folder, f"MODSEQ {top}") == [2, 4]


def test_text_keys(folder):
    assert run(folder, "FROM " + literal("JÜRGEN")) == [2]
    assert run(folder, "OR BODY zeppelin TEXT widget") == [3, 5]
    assert run(folder, "NOT HEADER Subject {0}\r\n") == []
    assert run(folder, "NOT FROM {0}\r\n") == [10]
    assert run(folder, "HEADER X-Custom beta") == [7]
    assert run(folder, "BCC secret") == [7]


def test_a_bad_sequence_number_is_bad_even_where_nothing_needs_it(folder):
    with pytest.raises(BadCommand):
        run(folder, "OR ALL 14")
    with pytest.raises(BadCommand):
        run(folder, "NOT SEEN UNSEEN 20:*")


def test_an_empty_folder_matches_nothing(tmp_path):
    with opened(Store(tmp_path, "mx.test"), DOMAIN, USER) as mailbox:
        view = mailbox.select("INBOX")
        assert run(view, "1:*") == run(view, "UID 1:*") == run(view, "TEXT x") == []


class Recording:
    """A FolderText that records the candidates it is asked about."""

    def __init__(self) -> None:
        self.asked: list[set[int]] = []

    def body(self, needle, uids):
        self.asked.append(set(uids))
        return set(uids)


def test_cheap_keys_narrow_the_candidates_before_text(folder):
    content = Recording()
    assert run(folder, "BODY x FLAGGED", content) == [3, 9]
    assert content.asked == [{3, 9}]


def test_text_keys_are_not_asked_about_nothing(folder):
    content = Recording()
    assert run(folder, "DRAFT FLAGGED BODY x", content) == []
    assert content.asked == []


# ------------------------------------------------- random programs, three ways


def reference(view, docs, key, uid: int, seq: int) -> bool:
    """The program evaluated for one message, directly from the RFC's words."""
    kind, *args = key
    message = next(m for m in view.messages if m.uid == uid)
    doc = docs.get(uid)  # None: expunged, no content
    flags = {f.lower() for f in message.flags}
    if kind == "ALL":
        return True
    if kind == "FLAG":
        return (args[0].lower() in flags) == args[1]
    if kind == "RECENT":
        return uid in view.recent
    if kind == "LARGER":
        return message.vsize > args[0]
    if kind == "SMALLER":
        return message.vsize < args[0]
    if kind in ("BEFORE", "ON", "SINCE"):
        got = dt.datetime.fromtimestamp(message.internal_date, dt.UTC).date()
        return _compare(kind, got, args[0])
    if kind in ("SENTBEFORE", "SENTON", "SENTSINCE"):
        if doc is None or doc.head.sent is None:
            return False
        return _compare(kind[4:], dt.date.fromordinal(doc.head.sent), args[0])
    if kind == "SEQ":
        return seq in args[0]
    if kind == "UID":
        return uid in args[0]
    if kind == "MODSEQ":
        return message.modseq >= args[0]
    if kind == "HEADER":
        return doc is not None and doc.head.has(args[0].lower(), normalize(args[1]))
    if kind == "BODY":
        return doc is not None and normalize(args[0]) in doc.body
    if kind == "TEXT":
        return doc is not None and doc.has_text(normalize(args[0]))
    if kind == "NOT":
        return not reference(view, docs, args[0], uid, seq)
    if kind == "OR":
        return any(reference(view, docs, a, uid, seq) for a in args)
    return all(reference(view, docs, a, uid, seq) for a in args[0])  # AND


def _compare(op: str, got: dt.date, day: dt.date) -> bool:
    return got < day if op == "BEFORE" else got == day if op == "ON" else got >= day


def render(key) -> str:
    kind, *args = key
    if kind == "FLAG":
        name = args[0].lstrip("\\").upper()
        if args[0].startswith("\\"):
            return name if args[1] else "UN" + name
        return ("KEYWORD " if args[1] else "UNKEYWORD ") + args[0]
    if kind in ("LARGER", "SMALLER", "MODSEQ"):
        return f"{kind} {args[0]}"
    if kind in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
        return f"{kind} {args[0].strftime('%d-%b-%Y')}"
    if kind == "SEQ":
        return ",".join(map(str, sorted(args[0])))
    if kind == "UID":
        return "UID " + ",".join(map(str, sorted(args[0])))
    if kind == "HEADER":
        field = args[0].upper() if args[0] in ("from", "to", "cc", "bcc", "subject") else None
        if field is not None:
            return f"{field} {literal(args[1])}"
        return f"HEADER {args[0]} {literal(args[1])}"
    if kind in ("BODY", "TEXT"):
        return f"{kind} {literal(args[0])}"
    if kind == "NOT":
        return "NOT " + render(args[0])
    if kind == "OR":
        return f"OR {render(args[0])} {render(args[1])}"
    if kind == "AND":
        return "(" + " ".join(render(k) for k in args[0]) + ")"
    return kind


_dates = st.sampled_from(DATES).map(lambda d: dt.datetime.strptime(d, "%d-%b-%Y").date())
_numbers = st.sets(st.integers(1, len(CORPUS)), min_size=1, max_size=5)
_leaves = st.one_of(
    st.just(("ALL",)),
    st.just(("RECENT",)),
    st.tuples(
        st.just("FLAG"),
        st.sampled_from(["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", *KEYWORDS]),
        st.booleans(),
    ),
    st.tuples(st.sampled_from(["LARGER", "SMALLER"]), st.integers(0, 6000)),
    st.tuples(st.sampled_from(["BEFORE", "ON", "SINCE"]), _dates),
    st.tuples(st.sampled_from(["SENTBEFORE", "SENTON", "SENTSINCE"]), _dates),
    st.tuples(st.sampled_from(["SEQ", "UID"]), _numbers),
    st.tuples(st.just("HEADER"), st.sampled_from(HEADER_NAMES), st.sampled_from(NEEDLES)),
    st.tuples(st.sampled_from(["BODY", "TEXT"]), st.sampled_from(NEEDLES)),
)
_programs = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.tuples(st.just("NOT"), inner),
        st.tuples(st.just("OR"), inner, inner),
        st.tuples(st.just("AND"), st.lists(inner, min_size=1, max_size=3)),
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=_programs, modseq_offset=st.integers(-2, 1))
def test_index_scan_and_reference_agree(folder, program, modseq_offset):
    top = max(m.modseq for m in folder.messages)
    keys = [program, ("MODSEQ", top + modseq_offset)] if modseq_offset > -2 else [program]
    text = " ".join(render(k) for k in keys)
    scan = ScannedText(folder)
    docs = dict(scan._each({m.uid for m in folder.messages}))
    expected = [
        seq
        for seq, m in enumerate(folder.messages, 1)
        if all(reference(folder, docs, k, m.uid, seq) for k in keys)
    ]
    assert run(folder, text) == expected, text
    assert run(folder, text, ScannedText(folder)) == expected, text


def test_the_three_agree_after_an_expunge_by_another_session(tmp_path):
    with opened(Store(tmp_path, "mx.test"), DOMAIN, USER) as mailbox:
        for sample in CORPUS:
            mailbox.append("INBOX", sample.data, sample.flags, sample.internal_date)
        mine = mailbox.select("INBOX")
        run(mine, "TEXT zeppelin")  # the index has message 3
        mailbox.select("INBOX").expunge([3, 5])
        for text in ("TEXT zeppelin", "NOT TEXT zeppelin", "ALL", "SEEN", "BODY widget"):
            assert run(mine, text) == run(mine, text, ScannedText(mine)), text
        assert run(mine, "3:5") == [3, 4, 5]  # still numbered: no EXPUNGE sent yet
        assert run(mine, "NOT TEXT {0}\r\n") == [3, 5]  # no content at all


def test_dates_are_utc_days():
    day = calendar.timegm((2024, 5, 12, 23, 59, 59))
    assert dt.datetime.fromtimestamp(day, dt.UTC).date() == dt.date(2024, 5, 12)


_TOKENS = st.sampled_from(
    [
        *("ALL", "NOT", "OR", "(", ")", " ", "SEEN", "UID", "HEADER", "FROM", "TEXT", "BODY"),
        *("SENTON", "ON", "LARGER", "MODSEQ", "KEYWORD", "CHARSET", "UTF-8", "RETURN"),
        *("1", "*", "1:*", "3,5", "0", "4294967296", "9" * 25, "7-May-2024", "x", '"', '""'),
        *('"a b"', "{3}\r\nabc", "{9}\r\nab", "\\Seen", "\x00", "\xff", "é", "\r\n"),
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TOKENS, max_size=30).map("".join))
def test_any_input_is_a_program_or_bad(folder, text):
    """Nothing a client sends makes the parser or the evaluation fail otherwise."""
    try:
        program = parse(text.encode("utf-8", "surrogateescape"))
    except (BadCommand, UnknownCharset):
        return
    with contextlib.suppress(BadCommand):  # a sequence number beyond the last message
        Evaluation(folder.messages, folder.recent, folder_text(folder)).run(program.key)


@given(st.binary(max_size=200))
def test_any_bytes_are_a_program_or_bad(data):
    with contextlib.suppress(BadCommand, UnknownCharset):
        parse(data)
