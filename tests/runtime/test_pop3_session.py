"""The POP3 server in process (tests/runtime/pop3_harness.py) driven by Python's poplib
and raw sockets: RFC 1939 states, RFC 2449 response codes, STLS, SASL PLAIN, locking,
timeouts, and that nothing is deleted except by DELE followed by QUIT."""

from __future__ import annotations

import base64
import contextlib
import poplib
import socket
import ssl
import time

import pytest

from mailops.runtime.store.index import INDEX_FILE
from tests.runtime.pop3_harness import no_login_delay, pop3_server, wait_until

ALICE = "alice@example.test"


@pytest.fixture
def server(tmp_path):
    with pop3_server(tmp_path, tls=True) as srv:
        yield srv


@pytest.fixture
def strict(tmp_path):
    """Plain-text logins only over TLS (the default of a real host)."""
    with pop3_server(tmp_path, tls=True, plaintext_auth_on_loopback=False) as srv:
        yield srv


def login(server, user=ALICE, password="alice-pw") -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    client.user(user)
    client.pass_(password)
    return client


def body(lines: list[bytes]) -> bytes:
    return b"\r\n".join(lines) + b"\r\n"


def raw(server, *lines: bytes, port: str = "pop3") -> bytes:
    """Send lines at once (pipelined) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.ports[port]), 10) as sock:
        sock.sendall(b"".join(lines))
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_stat_list_retr_top_uidl(server):
    server.deliver(b"Subject: one\r\n\r\n.starts with a dot\r\nline\r\n")
    server.deliver(b"Subject: two\n\nbare LF and no final newline")
    client = login(server)
    count, size = client.stat()
    sizes = [int(line.split()[1]) for line in client.list()[1]]
    assert count == 2 and size == sum(sizes)
    first = body(client.retr(1)[1])
    assert first.endswith(b"Subject: one\r\n\r\n.starts with a dot\r\nline\r\n")
    assert len(first) == sizes[0]
    second = body(client.retr(2)[1])
    assert second.endswith(b"Subject: two\r\n\r\nbare LF and no final newline\r\n")
    assert len(second) == sizes[1]
    assert client.top(1, 0)[1][-1] == b""
    assert body(client.top(1, 1)[1]).endswith(b"\r\n\r\n.starts with a dot\r\n")
    uids = [line.split()[1] for line in client.uidl()[1]]
    assert client.uidl(2).split()[2] == uids[1]
    with pytest.raises(poplib.error_proto, match="no message 3"):
        client.retr(3)
    client.quit()


def test_dele_removes_only_at_quit_and_rset_undoes(server):
    for n in range(3):
        server.deliver(b"Subject: %d\r\n\r\nx\r\n" % n)
    client = login(server)
    client.dele(1)
    with pytest.raises(poplib.error_proto, match="deleted"):
        client.retr(1)
    assert client.stat()[0] == 2
    client.rset()
    assert client.stat()[0] == 3
    client.dele(2)
    assert len(server.files()) == 3  # nothing happens before QUIT
    assert client.quit().startswith(b"+OK")
    assert len(server.files()) == 2
    assert not any(b"Subject: 1\r\n" in p.read_bytes() for p in server.files())


def test_a_dropped_connection_deletes_nothing(server):
    server.deliver(b"Subject: keep me\r\n\r\nx\r\n")
    client = login(server)
    client.dele(1)
    client.sock.shutdown(socket.SHUT_RDWR)  # gone, without QUIT
    client.close()
    assert wait_until(lambda: server.store.acquire_lease(ALICE, "pop3"))
    server.store.release_lease(ALICE, "pop3")
    assert len(server.files()) == 1


def test_retrieved_messages_are_marked_seen_at_quit(server):
    server.deliver(b"Subject: a\r\n\r\nx\r\n")
    server.deliver(b"Subject: b\r\n\r\nx\r\n")
    client = login(server)
    client.retr(2)
    client.top(1, 0)  # TOP is not a download
    client.quit()
    names = sorted(p.name for p in server.files())
    assert [n.endswith(":2,S") for n in names] == [False, True]


def test_one_session_per_mailbox(server):
    first = login(server)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        login(server)
    login(server, "bob@example.test", "bob-pw").quit()  # another mailbox is fine
    first.quit()
    login(server).quit()


def test_wrong_password_is_auth_and_three_failures_disconnect(server, monkeypatch):
    no_login_delay(monkeypatch)
    out = raw(
        server,
        b"USER alice@example.test\r\nPASS nope\r\n",
        b"USER alice@example.test\r\nPASS nope\r\n",
        b"USER nobody@example.test\r\nPASS nope\r\n",
        b"NOOP\r\n",
    )
    assert out.count(b"-ERR [AUTH] Authentication failed") == 3
    assert b"closing the connection" in out


def test_plaintext_refused_before_tls_then_stls_allows_it(strict):
    client = poplib.POP3("127.0.0.1", strict.ports["pop3"], timeout=10)
    capa = client.capa()
    assert "STLS" in capa and "USER" not in capa and "SASL" not in capa
    for capability in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"):
        assert capability in capa
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\].*TLS"):
        client.user(ALICE)
    client.stls(strict.client_context())
    capa = client.capa()
    assert "STLS" not in capa and "USER" in capa and capa["SASL"] == ["PLAIN"]
    client.user(ALICE)
    assert client.pass_("alice-pw").startswith(b"+OK")
    client.quit()


def test_implicit_tls_on_995(strict):
    client = poplib.POP3_SSL(
        "127.0.0.1", strict.ports["pop3s"], context=strict.client_context(), timeout=10
    )
    assert "STLS" not in client.capa()
    client.user(ALICE)
    client.pass_("alice-pw")
    client.quit()


def test_commands_pipelined_after_stls_are_refused(strict):
    out = raw(strict, b"STLS\r\nUSER alice@example.test\r\n")
    assert b"pipelined after STLS" in out and b"Begin TLS" not in out


def test_sasl_plain_with_and_without_initial_response(server):
    token = base64.b64encode(b"\x00alice@example.test\x00alice-pw").decode()
    out = raw(server, f"AUTH PLAIN {token}\r\nSTAT\r\nQUIT\r\n".encode())
    assert b"+OK Logged in" in out and b"+OK 0 0" in out
    out = raw(server, f"AUTH PLAIN\r\n{token}\r\nQUIT\r\n".encode())
    assert b"+ \r\n" in out and b"+OK Logged in" in out
    out = raw(server, b"AUTH PLAIN\r\n*\r\nQUIT\r\n")
    assert b"-ERR Authentication cancelled" in out
    out = raw(server, b"AUTH CRAM-MD5\r\nAUTH\r\nQUIT\r\n")
    assert b"-ERR Unsupported" in out and b"PLAIN\r\n.\r\n" in out


def test_commands_out_of_state_and_garbage(server):
    out = raw(server, b"STAT\r\nRETR 1\r\nHELLOWORLD\r\n\x00\xff\r\nQUIT\r\n")
    assert out.count(b"-ERR") == 4 and out.endswith(b"+OK Bye\r\n")


def test_overlong_line_closes_the_connection(server):
    out = raw(server, b"NOOP " + b"x" * 20000 + b"\r\n", b"CAPA\r\n")
    assert b"Line too long" in out and b"Capability" not in out


def test_idle_sessions_time_out(tmp_path):
    with pop3_server(tmp_path, pop3_idle_timeout=0.3) as srv:
        client = login(srv)
        time.sleep(0.8)
        with pytest.raises((poplib.error_proto, OSError, EOFError)):
            client.stat()
        assert wait_until(lambda: srv.store.acquire_lease(ALICE, "pop3"))


def test_mail_delivered_during_a_session_shows_in_the_next(server):
    server.deliver(b"Subject: old\r\n\r\nx\r\n")
    client = login(server)
    server.deliver(b"Subject: new\r\n\r\nx\r\n")
    assert client.stat()[0] == 1  # a snapshot (RFC 1939: the maildrop is locked)
    client.dele(1)
    client.quit()
    client = login(server)
    assert client.stat()[0] == 1
    assert b"Subject: new" in body(client.retr(1)[1])
    client.quit()


def test_uidl_survives_a_lost_index(server):
    for n in range(4):
        server.deliver(b"Subject: %d\r\n\r\nx\r\n" % n)
    client = login(server)
    before = client.uidl()[1]
    client.quit()
    server.store.close()  # drop the cached mailbox, as a restart would
    for suffix in ("", "-wal", "-shm"):
        (server.maildir() / f"{INDEX_FILE}{suffix}").unlink(missing_ok=True)
    client = login(server)
    assert client.uidl()[1] == before
    client.quit()


def test_tls_handshake_failure_is_survived(server):
    with socket.create_connection(("127.0.0.1", server.ports["pop3s"]), 5) as sock:
        sock.sendall(b"this is not TLS\r\n")
        sock.settimeout(5)
        with contextlib.suppress(ConnectionError, TimeoutError, ssl.SSLError):
            sock.recv(100)
    login(server).quit()  # the server still serves
