"""QRESYNC (RFC 7162 §3.2): a client that knew UIDVALIDITY and a MODSEQ learns, at
SELECT, exactly which messages vanished and which changed flags since; and once
enabled, expunges arrive as VANISHED."""

from __future__ import annotations

import re

import pytest

from tests.runtime.imap_harness import RawClient, imap_server, tagged


@pytest.fixture
def server(tmp_path):
    with imap_server(tmp_path) as server:
        for n in range(1, 6):
            server.deliver(b"Subject: %d\r\n\r\nbody\r\n" % n)
        yield server


def client(server, qresync: bool = True) -> RawClient:
    raw = RawClient(server.ports["imap"])
    raw.login()
    if qresync:
        assert raw.call("ENABLE QRESYNC")[0] == b"* ENABLED QRESYNC"
    return raw


def number(lines: list[bytes], code: bytes) -> int:
    for line in lines:
        if m := re.match(rb"\* OK \[%s (\d+)\]" % code, line):
            return int(m[1])
    raise AssertionError(f"no {code!r} in {lines}")


def test_select_qresync_reports_vanished_and_changed(server):
    first = client(server)
    lines = first.call("SELECT INBOX")
    validity, modseq = number(lines, b"UIDVALIDITY"), number(lines, b"HIGHESTMODSEQ")
    first.call("LOGOUT")

    other = client(server, qresync=False)
    other.call("SELECT INBOX")
    other.call("STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    other.call("EXPUNGE")
    other.call("STORE 1 +FLAGS.SILENT (\\Flagged)")

    again = client(server)
    lines = again.call(f"SELECT INBOX (QRESYNC ({validity} {modseq} 1:5))")
    assert b"* VANISHED (EARLIER) 2,4" in lines
    changed = [x for x in lines if b"FETCH" in x]
    assert changed == [b"* 1 FETCH (FLAGS (\\Flagged) UID 1 MODSEQ (%d))" % _modseq(changed[0])]
    assert tagged(lines).startswith(b"OK [READ-WRITE]")
    # Known UIDs narrow VANISHED to what the client still has.
    lines = again.call(f"SELECT INBOX (QRESYNC ({validity} {modseq} 3:5))")
    assert b"* VANISHED (EARLIER) 4" in lines
    # Another UIDVALIDITY: the client must start over, nothing incremental is said.
    lines = again.call(f"SELECT INBOX (QRESYNC ({validity + 1} {modseq}))")
    assert not any(b"VANISHED" in x or b"FETCH" in x for x in lines)


def _modseq(line: bytes) -> int:
    return int(line.split(b"MODSEQ (")[1].split(b")")[0])


def test_qresync_needs_enable_and_expunges_become_vanished(server):
    plain = client(server, qresync=False)
    assert tagged(plain.call("SELECT INBOX (QRESYNC (1 1))")).startswith(b"BAD")
    raw = client(server)
    raw.call("SELECT INBOX")
    raw.call("STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    lines = raw.call("EXPUNGE")
    assert lines[:-1] == [b"* VANISHED 1,3"]
