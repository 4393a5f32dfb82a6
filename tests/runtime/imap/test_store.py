"""STORE (±FLAGS, .SILENT, UNCHANGEDSINCE), COPY and MOVE with COPYUID, UID forms."""

from __future__ import annotations

import pytest

from tests.runtime.imap_harness import RawClient, imap_server, tagged


@pytest.fixture
def server(tmp_path):
    with imap_server(tmp_path) as server:
        for n in range(1, 5):
            server.deliver(b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n))
        yield server


@pytest.fixture
def raw(server):
    first = RawClient(server.ports["imap"])
    first.login()
    first.call("SELECT INBOX")  # claims \Recent, so the responses below stay simple
    first.call("LOGOUT")
    client = RawClient(server.ports["imap"])
    client.login()
    client.call("SELECT INBOX")
    return client


def test_store_modes_and_maildir_names(raw, server):
    lines = raw.call("STORE 1 +FLAGS (\\Seen \\Flagged)")
    assert lines[0] == b"* 1 FETCH (FLAGS (\\Flagged \\Seen))"
    assert raw.call("STORE 1 -FLAGS (\\Flagged)")[0] == b"* 1 FETCH (FLAGS (\\Seen))"
    assert raw.call("STORE 1 FLAGS (\\Answered work)")[0] == b"* 1 FETCH (FLAGS (\\Answered work))"
    assert raw.call("UID STORE 2 +FLAGS \\Draft")[0] == b"* 2 FETCH (FLAGS (\\Draft) UID 2)"
    names = sorted(p.name.rsplit(":2,", 1)[-1] for p in server.files())
    assert names == ["", "", "D", "R"]


def test_silent_store_says_nothing(raw):
    assert len(raw.call("STORE 1:* +FLAGS.SILENT (\\Seen)")) == 1
    assert raw.call("STORE 3 -FLAGS (\\Seen)")[0] == b"* 3 FETCH (FLAGS ())"


def test_store_refuses_bad_flags_and_numbers(raw):
    assert tagged(raw.call("STORE 1 +FLAGS (\\Recent)")).startswith(b"BAD")
    assert tagged(raw.call("STORE 1 +FLAGS (\\Bogus)")).startswith(b"BAD")
    assert tagged(raw.call("STORE 9 +FLAGS (\\Seen)")).startswith(b"BAD")
    assert tagged(raw.call("STORE 1 FLAGZ (\\Seen)")).startswith(b"BAD")
    assert len(raw.call("UID STORE 9 +FLAGS (\\Seen)")) == 1  # absent UIDs are skipped


def test_unchangedsince(raw):
    lines = raw.call("STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Seen)")
    assert tagged(lines).startswith(b"OK [MODIFIED 1]")
    raw.call("STORE 2 +FLAGS (\\Seen)")
    modseq = int(raw.call("STORE 2 +FLAGS (\\Flagged)")[0].split(b"MODSEQ (")[1].split(b")")[0])
    lines = raw.call(f"UID STORE 2 (UNCHANGEDSINCE {modseq}) +FLAGS.SILENT (\\Answered)")
    assert lines[0].startswith(b"* 2 FETCH (FLAGS (\\Answered \\Flagged \\Seen) UID 2 MODSEQ (")
    assert tagged(lines).startswith(b"OK")


def test_copy_keeps_flags_and_reports_copyuid(raw, server):
    raw.call("STORE 2 +FLAGS.SILENT (\\Flagged)")
    status = tagged(raw.call("COPY 2:3 Trash"))
    assert status.startswith(b"OK [COPYUID ") and status.split()[3:5] == [b"2:3", b"1:2]"]
    lines = raw.call("UID COPY 4,1 Trash")
    assert tagged(lines).split()[3:5] == [b"1,4", b"3:4]"]
    assert len(server.files()) == 4  # the source keeps its messages
    assert tagged(raw.call("COPY 1 Nowhere")).startswith(b"NO [TRYCREATE]")
    trash = RawClient(server.ports["imap"])
    trash.login()
    assert b"(MESSAGES 4 UNSEEN 4)" in trash.call("STATUS Trash (MESSAGES UNSEEN)")[0]


def test_move_expunges_after_copyuid(raw, server):
    lines = raw.call("MOVE 2:3 Archive")
    assert lines[0].startswith(b"* OK [COPYUID ") and b" 2:3 1:2]" in lines[0]
    assert lines[1:3] == [b"* 2 EXPUNGE", b"* 2 EXPUNGE"]
    assert tagged(lines).startswith(b"OK")
    assert len(server.files()) == 2
    lines = raw.call("UID MOVE 4 Archive")
    assert lines[1] == b"* 2 EXPUNGE"
    assert tagged(raw.call("MOVE 1 INBOX")).startswith(b"NO")


def test_uid_set_with_star_names_the_last(raw):
    lines = raw.call("UID STORE 100:* +FLAGS (\\Seen)")
    assert lines[0] == b"* 4 FETCH (FLAGS (\\Seen) UID 4)"
