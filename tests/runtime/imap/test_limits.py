"""Hostile and broken input over a real connection: BAD, never a crash or a hang, and
the session (or at least the server) still answers afterwards."""

from __future__ import annotations

import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailops.runtime.imap import conn
from tests.runtime.imap_harness import RawClient, imap_server, tagged


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap")) as server:
        server.deliver(b"Subject: one\r\n\r\nbody\r\n")
        yield server


def still_alive(server) -> None:
    probe = RawClient(server.ports["imap"])
    assert tagged(probe.call("NOOP")).startswith(b"OK")
    probe.close()


def test_garbage_lines_get_bad_and_the_session_goes_on(server):
    raw = RawClient(server.ports["imap"])
    for line in (b"", b"   ", b"\x00\x01\x02", b"a", b"a FROB", b"a LOGIN", b'a LOGIN "x'):
        raw.send(line + b"\r\n")
        assert b" BAD " in raw.line() or raw.line()
    assert tagged(raw.call("NOOP")).startswith(b"OK")


def test_too_many_bad_commands_end_the_session(server):
    raw = RawClient(server.ports["imap"])
    raw.send(b"x FROB\r\n" * 25)
    lines = []
    with pytest.raises(EOFError):
        while True:
            lines.append(raw.line())
    assert lines[-1].startswith(b"* BYE")
    still_alive(server)


def test_overlong_line_closes_the_connection(server, monkeypatch):
    raw = RawClient(server.ports["imap"])
    raw.send(b"a NOOP " + b"x" * (conn.MAX_LINE + 10) + b"\r\n")
    with pytest.raises((EOFError, ConnectionError)):
        raw.line()
    still_alive(server)


def test_literal_over_the_limit_is_refused_without_reading_it(server):
    raw = RawClient(server.ports["imap"])
    raw.login()
    raw.send(b"a APPEND INBOX {999999999999}\r\n")
    assert raw.line().startswith(b"a NO [TOOBIG]")
    assert tagged(raw.call("NOOP")).startswith(b"OK")


def test_non_synchronising_literal_over_the_limit_is_skipped(tmp_path):
    with imap_server(tmp_path, max_message_size=2048) as server:
        raw = RawClient(server.ports["imap"])
        raw.login()
        raw.send(b"a APPEND INBOX {4000+}\r\n" + b"x" * 4000 + b"\r\n")
        assert raw.line().startswith(b"a NO [TOOBIG]")
        assert tagged(raw.call("NOOP")).startswith(b"OK")


def test_half_a_literal_then_hang_up(server):
    raw = RawClient(server.ports["imap"])
    raw.login()
    raw.send(b"a APPEND INBOX {100}\r\n")
    assert raw.line().startswith(b"+")
    raw.send(b"only part of it")
    raw.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(EOFError):
        raw.line()
    still_alive(server)


def test_deep_nesting_and_huge_numbers(server):
    raw = RawClient(server.ports["imap"])
    raw.login()
    raw.call("SELECT INBOX")
    assert tagged(raw.call("STORE 1 +FLAGS " + "(" * 50)).startswith(b"BAD")
    assert tagged(raw.call("STORE 99999999999999999999 +FLAGS (\\Seen)")).startswith(b"BAD")
    assert tagged(raw.call("UID STORE 1:4294967296 +FLAGS (\\Seen)")).startswith(b"BAD")


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.binary(max_size=120), min_size=1, max_size=4))
def test_arbitrary_bytes_never_break_the_server(server, chunks):
    raw = RawClient(server.ports["imap"])
    raw.login()
    raw.call("SELECT INBOX")
    for chunk in chunks:
        raw.send(chunk.replace(b"{", b"(") + b"\r\n")  # no literal that waits for data
    try:
        status = tagged(raw.call("NOOP"))
        assert status.startswith((b"OK", b"BAD", b"NO"))
    except (EOFError, ConnectionError):
        pass  # the server may end a session that sent nonsense (BYE)
    raw.close()
    still_alive(server)


def test_command_rate_is_paced(server, monkeypatch):
    from mailops.runtime.imap import session

    monkeypatch.setattr(session, "RATE_PER_SECOND", 20)
    raw = RawClient(server.ports["imap"])
    started = time.monotonic()
    raw.send(b"".join(b"n%d NOOP\r\n" % i for i in range(50)))
    raw.until(b"n49")
    assert time.monotonic() - started >= 2.0  # 50 commands at 20 a second
