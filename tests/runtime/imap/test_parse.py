"""The command parser: grammar elements, and properties — arbitrary bytes only ever
raise BadCommand, and sequence sets, literals and quoted strings round-trip."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailops.runtime.imap import pack
from mailops.runtime.imap.parse import (
    STAR,
    BadCommand,
    Reader,
    SequenceSet,
    TaggedBad,
    parse_command,
    sequence_set_of,
)


def test_command_head():
    cmd = parse_command(b"a1 uid fetch 1:* FLAGS")
    assert (cmd.tag, cmd.name, cmd.uid) == ("a1", "UID FETCH", True)
    assert cmd.args.sequence_set() == SequenceSet(((1, STAR),))
    with pytest.raises(TaggedBad) as bad:
        parse_command(b"a1 ")
    assert bad.value.tag == "a1"
    with pytest.raises(BadCommand):
        parse_command(b"+tag NOOP")


def test_strings():
    reader = Reader(b'"a \\"q\\" \\\\" {3}\r\nx\ny atom NIL')
    assert reader.astring() == b'a "q" \\'
    reader.sp()
    assert reader.string() == b"x\ny"
    reader.sp()
    assert reader.astring() == b"atom"
    reader.sp()
    assert reader.nstring() is None
    reader.end()


def test_literal_shorter_than_announced_and_8bit_quoted():
    with pytest.raises(BadCommand):
        Reader(b"{10}\r\nabc").string()
    with pytest.raises(BadCommand):
        Reader('"caf\u00e9"'.encode()).string()
    assert Reader('"caf\u00e9"'.encode(), utf8=True).string() == "café".encode()


def test_mailbox_names():
    assert Reader(b"inbox").mailbox() == "INBOX"
    assert Reader(b"&ZeVnLIqe-").mailbox() == "日本語"
    assert Reader('"日本語"'.encode(), utf8=True).mailbox() == "日本語"
    with pytest.raises(BadCommand):
        Reader(b"&Jjo").mailbox()
    assert Reader(b"Lists.%").list_mailbox() == "Lists.%"


def test_dates():
    assert Reader(b"1-Feb-2024").date() == dt.date(2024, 2, 1)
    assert Reader(b'"01-feb-2024"').date() == dt.date(2024, 2, 1)
    assert Reader(b'" 5-Feb-2024 10:20:30 +0100"').date_time() == 1707124830
    for bad in (b"30-Feb-2024", b"1-Foo-2024", b"2024-02-01"):
        with pytest.raises(BadCommand):
            Reader(bad).date()


def test_sequence_sets():
    numbers = Reader(b"3:1,5,*").sequence_set()
    assert numbers.numbers(6) == [1, 2, 3, 5, 6]
    with pytest.raises(BadCommand):
        numbers.numbers(4)  # 5 does not exist
    assert Reader(b"2:*").sequence_set().pick([1, 4, 9]) == [4, 9]
    assert Reader(b"100:*").sequence_set().pick([1, 4, 9]) == [9]
    assert Reader(b"*").sequence_set().pick([]) == []
    for bad in (b"0", b"1:", b",1", b"4294967296"):
        with pytest.raises(BadCommand):
            reader = Reader(bad)
            reader.sequence_set().numbers(10)
            reader.end()


def test_nesting_is_bounded():
    reader = Reader(b"(" * 100 + b")" * 100)

    def item():
        return reader.parenthesized(item)

    with pytest.raises(BadCommand):
        item()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_bad_command(data):
    try:
        cmd = parse_command(data)
    except BadCommand:
        return
    reader = cmd.args
    for method in (
        reader.astring, reader.sequence_set, reader.date, reader.date_time, reader.flag_list,
        reader.mailbox, reader.list_mailbox, reader.nstring, reader.number, reader.atom,
    ):
        with contextlib.suppress(BadCommand):
            method()


@given(st.lists(st.integers(1, 5000), min_size=1, max_size=50, unique=True).map(sorted))
def test_sequence_set_round_trip(numbers):
    text = sequence_set_of(numbers).encode()
    assert Reader(text).sequence_set().pick(list(range(1, 5001))) == numbers


@given(st.binary(max_size=300))
def test_string_round_trip(data):
    encoded = pack.string(data)
    reader = Reader(encoded)
    assert reader.string() == data
    assert reader.at_end()


@given(st.text(max_size=40).filter(lambda t: "\x00" not in t))
def test_mailbox_name_round_trip(name):
    encoded = pack.mailbox(name)
    decoded = Reader(encoded).mailbox()
    assert decoded == ("INBOX" if name.upper() == "INBOX" else name)
