"""IDLE (RFC 2177): changes by other sessions arrive while idling, DONE ends it, a
client that never says DONE is let go after the idle timeout."""

from __future__ import annotations

import time

import pytest

from tests.runtime.imap_harness import RawClient, imap_server

MESSAGE = b"Subject: new\r\n\r\nbody\r\n"


@pytest.fixture
def server(tmp_path):
    with imap_server(tmp_path) as server:
        yield server


def logged_in(server) -> RawClient:
    client = RawClient(server.ports["imap"])
    client.login()
    return client


def test_idle_wakes_for_an_append_and_done_ends_it(server):
    idler, other = logged_in(server), logged_in(server)
    idler.call("SELECT INBOX")
    idler.send(b"i1 IDLE\r\n")
    assert idler.line() == b"+ idling"
    started = time.monotonic()
    other.call(b"APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)
    assert idler.line() == b"* 1 EXISTS"
    assert idler.line() == b"* 1 RECENT"
    assert time.monotonic() - started < 1.0
    other.call("SELECT INBOX")
    other.call("STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.call("EXPUNGE")
    lines = [idler.line(), idler.line()]  # the \Deleted flag, then the expunge itself
    assert lines == [b"* 1 FETCH (FLAGS (\\Deleted \\Recent) UID 1)", b"* 1 EXPUNGE"]
    idler.send(b"DONE\r\n")
    assert idler.line().startswith(b"i1 OK")
    assert idler.call("NOOP")[-1].endswith(b"NOOP completed")


def test_idle_without_selection_and_a_wrong_terminator(server):
    idler = logged_in(server)
    idler.send(b"i1 IDLE\r\n")
    assert idler.line() == b"+ idling"
    idler.send(b"NOPE\r\n")
    assert idler.line().startswith(b"i1 BAD")


def test_idle_times_out(tmp_path):
    with imap_server(tmp_path, imap_idle_timeout=0.5) as server:
        idler = logged_in(server)
        idler.send(b"i1 IDLE\r\n")
        assert idler.line() == b"+ idling"
        assert idler.line().startswith(b"i1 OK")
        assert idler.line().startswith(b"* BYE")


def test_silent_session_times_out(tmp_path):
    with imap_server(tmp_path, imap_idle_timeout=0.3) as server:
        client = RawClient(server.ports["imap"])
        assert client.line() == b"* BYE Disconnected for inactivity"
