"""SELECT, EXAMINE, CLOSE, UNSELECT, CHECK, EXPUNGE and UID EXPUNGE, and the untagged
updates two sessions on one folder see (RFC 3501 §7)."""

from __future__ import annotations

import re

import pytest

from tests.runtime.imap_harness import RawClient, append, imap_server, tagged


def message(n: int) -> bytes:
    return b"From: a@example.org\r\nSubject: number %d\r\n\r\nbody %d\r\n" % (n, n)


@pytest.fixture
def server(tmp_path):
    with imap_server(tmp_path) as server:
        for n in range(1, 4):
            server.deliver(message(n))
        yield server


def client(server) -> RawClient:
    raw = RawClient(server.ports["imap"])
    raw.login()
    return raw


def values(lines: list[bytes]) -> dict[str, bytes]:
    found = {}
    for line in lines:
        if m := re.match(rb"\* (\d+) (EXISTS|RECENT)$", line):
            found[m[2].decode()] = m[1]
        elif m := re.match(rb"\* OK \[(UNSEEN|UIDVALIDITY|UIDNEXT|HIGHESTMODSEQ) (\d+)\]", line):
            found[m[1].decode()] = m[2]
        elif m := re.match(rb"\* OK \[PERMANENTFLAGS \(([^)]*)\)\]", line):
            found["PERMANENTFLAGS"] = m[1]
        elif m := re.match(rb"\* FLAGS \(([^)]*)\)", line):
            found["FLAGS"] = m[1]
    return found


def test_select_reports_the_folder(server):
    raw = client(server)
    lines = raw.call("SELECT INBOX")
    got = values(lines)
    assert got["EXISTS"] == b"3" and got["RECENT"] == b"3" and got["UNSEEN"] == b"1"
    assert got["UIDNEXT"] == b"4" and int(got["UIDVALIDITY"]) > 0
    assert b"\\*" in got["PERMANENTFLAGS"] and b"\\Seen" in got["FLAGS"]
    assert tagged(lines).startswith(b"OK [READ-WRITE]")
    # \Recent belongs to the first session that saw the messages.
    assert values(client(server).call("SELECT INBOX"))["RECENT"] == b"0"


def test_select_is_case_insensitive_for_inbox_and_keeps_uidvalidity(server):
    raw = client(server)
    first = values(raw.call("SELECT inbox"))["UIDVALIDITY"]
    assert values(raw.call('SELECT "InBoX"'))["UIDVALIDITY"] == first


def test_examine_is_read_only(server):
    raw = client(server)
    lines = raw.call("EXAMINE INBOX")
    assert tagged(lines).startswith(b"OK [READ-ONLY]")
    assert values(lines)["PERMANENTFLAGS"] == b""
    assert tagged(raw.call("STORE 1 +FLAGS (\\Seen)")).startswith(b"NO [READ-ONLY]")
    assert tagged(raw.call("EXPUNGE")).startswith(b"NO [READ-ONLY]")


def test_failed_select_leaves_nothing_selected(server):
    raw = client(server)
    raw.call("SELECT INBOX")
    lines = raw.call("SELECT Nowhere")
    assert tagged(lines).startswith(b"NO [NONEXISTENT]")
    assert b"* OK [CLOSED] Previous mailbox closed" in lines
    assert tagged(raw.call("CHECK")).startswith(b"BAD")


def test_close_expunges_silently_unselect_does_not(server):
    raw = client(server)
    raw.call("SELECT INBOX")
    raw.call("STORE 1 +FLAGS.SILENT (\\Deleted)")
    lines = raw.call("UNSELECT")
    assert tagged(lines).startswith(b"OK") and not any(b"EXPUNGE" in x for x in lines)
    assert values(raw.call("SELECT INBOX"))["EXISTS"] == b"3"
    lines = raw.call("CLOSE")
    assert len(lines) == 1 and tagged(lines).startswith(b"OK")
    assert values(raw.call("SELECT INBOX"))["EXISTS"] == b"2"
    assert len(server.files()) == 2


def test_expunge_reports_sequence_numbers_in_order(server):
    raw = client(server)
    raw.call("SELECT INBOX")
    raw.call("STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    lines = raw.call("EXPUNGE")
    # 1 goes first; the old 3 is then number 2.
    assert lines[:-1] == [b"* 1 EXPUNGE", b"* 2 EXPUNGE"]
    assert values(raw.call("SELECT INBOX"))["EXISTS"] == b"1"


def test_uid_expunge_removes_only_the_named(server):
    raw = client(server)
    raw.call("SELECT INBOX")
    raw.call("STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    lines = raw.call("UID EXPUNGE 2")
    assert lines[:-1] == [b"* 2 EXPUNGE"]
    assert values(raw.call("SELECT INBOX"))["EXISTS"] == b"2"


def test_other_sessions_changes_arrive_at_the_next_command(server):
    one, two = client(server), client(server)
    one.call("SELECT INBOX")
    two.call("SELECT INBOX")
    two.call("STORE 2 +FLAGS.SILENT (\\Flagged)")
    lines = one.call("NOOP")
    assert lines[0] == b"* 2 FETCH (FLAGS (\\Flagged \\Recent) UID 2)"
    assert len(one.call("NOOP")) == 1  # reported once only
    two.call(append("INBOX", message(9)))
    lines = one.call("NOOP")
    # The appending session saw it first: it is \\Recent there, not here.
    assert lines[:2] == [b"* 4 EXISTS", b"* 3 RECENT"]


def test_no_expunge_during_store_but_at_noop(server):
    one, two = client(server), client(server)
    one.call("SELECT INBOX")
    two.call("SELECT INBOX")
    two.call("STORE 1 +FLAGS.SILENT (\\Deleted)")
    two.call("EXPUNGE")
    lines = one.call("STORE 2 +FLAGS (\\Seen)")
    assert not any(b"EXPUNGE" in x for x in lines)
    assert b"* 2 FETCH (FLAGS (\\Recent \\Seen))" in lines  # still numbered as before
    lines = one.call("NOOP")
    assert b"* 1 EXPUNGE" in lines
    # The UID form may report expunges at once.
    two.call("STORE 1 +FLAGS.SILENT (\\Deleted)")
    two.call("EXPUNGE")
    assert b"* 1 EXPUNGE" in one.call("UID STORE 3 +FLAGS (\\Seen)")


def test_selecting_another_folder_reports_closed(server):
    raw = client(server)
    raw.call("CREATE Other")
    raw.call("SELECT INBOX")
    lines = raw.call("SELECT Other")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed"
    assert values(lines)["EXISTS"] == b"0"
