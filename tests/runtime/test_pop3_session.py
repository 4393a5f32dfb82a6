"""The POP3 server in process (tests/runtime/pop3_harness.py) driven by Python's poplib
and raw sockets: RFC 1939 states, RFC 2449 response codes, STLS, SASL PLAIN, locking,
timeouts, and that nothing is deleted except by DELE followed by QUIT."""

from __future__ import annotations

import base64
import contextlib
import gc
import poplib
import socket
import ssl
import time
import weakref
from pathlib import Path

import pytest

from mailops.runtime.pop3 import wire
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


# ------------------------------------------------------------------ exact bytes on the wire


def on_the_wire(data: bytes) -> tuple[bytes, int]:
    """RFC 1939 by the book, line by line, written apart from the server's code: what
    RETR must send for a file holding `data`, and the size LIST must announce."""
    *lines, last = data.split(b"\n")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if last:  # no final line break: the server adds one so the terminator starts a line
        lines.append(last)
    size = sum(len(line) + 2 for line in lines)
    stuffed = b"".join((b"." if line.startswith(b".") else b"") + line + b"\r\n" for line in lines)
    return stuffed + b".\r\n", size


class WireClient:
    """A raw POP3 client that returns responses exactly as they came."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), 10)
        self.buffer = b""
        assert self.line().startswith(b"+OK")

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError(self.buffer)
        self.buffer += chunk

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def multiline(self, text: str) -> tuple[bytes, bytes]:
        """(status line, body up to and including the terminator line)."""
        status = self.command(text)
        assert status.startswith(b"+OK"), status
        while True:
            if self.buffer.startswith(b".\r\n"):
                end = 3
                break
            found = self.buffer.find(b"\r\n.\r\n")
            if found >= 0:
                end = found + 5
                break
            self._fill()
        body, self.buffer = self.buffer[:end], self.buffer[end:]
        return status, body

    def login(self) -> None:
        assert self.command(f"USER {ALICE}").startswith(b"+OK")
        assert self.command("PASS alice-pw").startswith(b"+OK")

    def close(self) -> None:
        self.sock.close()


ODD_MESSAGES = [
    b".first line starts with a dot\r\n..and this one with two\r\n.\r\nend\r\n",
    b"Subject: bare LF\n\nbody\n.dot line\n",
    b"Subject: mixed\r\n\r\ncrlf\nbare\r\n.dot\nlast",  # and no final line break
    b"no trailing newline, last line a dot\r\n.",
    b"NUL\x00bytes\r\n.\x00dot\r\n\x00\r\n\x00",
    b"ends with a lone CR\r",
    b"CR CRLF\r\r\nthen LF CR\n\r",
    b"",
    b".",
    b"\n",
    b"\n.\n",
]


def test_retr_sends_exact_bytes_for_odd_messages(server):
    for data in ODD_MESSAGES:
        server.deliver_raw(data)
    client = WireClient(server.ports["pop3"])
    client.login()
    _, listing = client.multiline("LIST")
    sizes = [int(line.split()[1]) for line in listing.split(b"\r\n")[:-2]]
    for number, data in enumerate(ODD_MESSAGES, 1):
        expected, size = on_the_wire(data)
        status, body = client.multiline(f"RETR {number}")
        assert (status, body) == (f"+OK {size} octets".encode(), expected), data
        assert sizes[number - 1] == size
    assert client.command("QUIT").startswith(b"+OK")
    client.close()


def test_top_on_odd_messages(server):
    server.deliver_raw(b"A: 1\n\n.dot body\nline 2\n")
    server.deliver_raw(b"A: 1\r\nB: 2\r\n\r\n.x\r\n\x00\r\nno end")
    server.deliver_raw(b".header only, no blank line\nand no final newline")
    client = WireClient(server.ports["pop3"])
    client.login()
    assert client.multiline("TOP 1 0")[1] == b"A: 1\r\n\r\n.\r\n"
    assert client.multiline("TOP 1 1")[1] == b"A: 1\r\n\r\n..dot body\r\n.\r\n"
    assert client.multiline("TOP 1 9")[1] == on_the_wire(b"A: 1\n\n.dot body\nline 2\n")[0]
    assert client.multiline("TOP 2 2")[1] == b"A: 1\r\nB: 2\r\n\r\n..x\r\n\x00\r\n.\r\n"
    assert client.multiline("TOP 2 3")[1] == b"A: 1\r\nB: 2\r\n\r\n..x\r\n\x00\r\nno end\r\n.\r\n"
    whole = b"..header only, no blank line\r\nand no final newline\r\n.\r\n"
    assert client.multiline("TOP 3 0")[1] == whole
    client.command("QUIT")
    client.close()


def large_messages() -> list[bytes]:
    """Messages over wire.CHUNK, which RETR streams chunk by chunk. Across the
    shifts, the first chunk boundary falls between a line end and a line starting
    with ".", and between the CR and the LF of a CRLF, in a CRLF-only message and in
    one with bare LFs (whose line ends are converted); one has no final newline."""
    line = b"y" * 62 + b"\r\n"
    base = line * (wire.CHUNK // len(line) - 1)
    messages = []
    for shift in range(4):
        head = base + b"z" * (len(line) - 3 + shift) + b"\r\n"  # CHUNK - 1 + shift long
        messages.append(head + b".dot after the boundary\r\n" + base + b"tail\r\n")
        messages.append(head + b".then bare LFs\n" + base + b"bare\nend")
        messages.append(head + base + b".last line, no newline")
    return messages


def test_large_messages_stream_exactly(server):
    messages = large_messages()
    for data in messages:
        server.deliver_raw(data)
    client = WireClient(server.ports["pop3"])
    client.login()
    for number, data in enumerate(messages, 1):
        expected, size = on_the_wire(data)
        status, body = client.multiline(f"RETR {number}")
        assert status == f"+OK {size} octets".encode()
        assert body == expected, number
    client.command("QUIT")
    client.close()


def session_of(server):
    """The server's one POP3 session (in process: its state can be looked at)."""
    [conn] = server.service.sessions
    return conn.session


def file_of(server, marker: bytes) -> Path:
    [path] = [p for p in server.files() if marker in p.read_bytes()]
    return path


def test_retr_reads_the_next_message_ahead(server):
    """While the client reads one RETR, the next message's reply is made: what comes
    from there must be exactly what RETR makes, for every kind of file."""
    messages = [
        b"Subject: crlf\r\n\r\n.dot line\r\nline\r\n",
        b"Subject: bare\n\n.bare LF\nand no final newline",
        b".first line starts with a dot\r\n\x00NUL\r\n",
        large_messages()[0],  # streamed: not read ahead
        b"Subject: after the large one\r\n\r\nx\r\n",
        b"",
    ]
    for data in messages:
        server.deliver_raw(data)
    client = WireClient(server.ports["pop3"])
    client.login()
    session = session_of(server)
    assert session.ahead is None  # nothing is read before the first RETR
    for number, data in enumerate(messages, 1):
        expected, size = on_the_wire(data)
        status, body = client.multiline(f"RETR {number}")
        assert (status, body) == (f"+OK {size} octets".encode(), expected), number
        assert client.command("NOOP") == b"+OK"  # the server is done with RETR by now
        ahead = session.ahead
        if number in (3, len(messages)):  # the next one is large / there is none
            assert ahead is None, number
        else:
            assert ahead is not None and ahead[0] == number + 1, number
    client.command("QUIT")
    client.close()


def test_retr_out_of_order_reads_nothing_ahead(server):
    """Only a RETR that follows the one before it reads the next message ahead; one
    read ahead and not asked for is dropped, never served for another number."""
    for n in range(1, 5):
        server.deliver(b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n))
    client = WireClient(server.ports["pop3"])
    client.login()
    session = session_of(server)
    # (RETR, what is read ahead after it): 2 is read ahead after 1, and 3 asked for.
    steps = [(1, 2), (3, None), (2, None), (3, 4), (1, None), (2, 3), (2, None)]
    for number, ahead in steps:
        _, body = client.multiline(f"RETR {number}")
        assert body.endswith(b"Subject: m%d\r\n\r\nbody %d\r\n.\r\n" % (number, number))
        assert client.command("NOOP") == b"+OK"
        assert (session.ahead and session.ahead[0]) == ahead, number
    client.command("QUIT")
    client.close()


def test_read_ahead_keeps_to_dele_rset_and_vanished_files(server):
    for n in range(1, 5):
        server.deliver(b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n))
    client = WireClient(server.ports["pop3"])
    client.login()
    session = session_of(server)
    client.multiline("RETR 1")
    assert client.command("NOOP") == b"+OK"
    assert session.ahead is not None and session.ahead[0] == 2
    assert client.command("DELE 2") == b"+OK Message 2 deleted"
    assert client.command("RETR 2") == b"-ERR Message 2 is deleted"
    assert client.command("RSET").startswith(b"+OK")
    _, body = client.multiline("RETR 2")
    assert body.endswith(b"Subject: m2\r\n\r\nbody 2\r\n.\r\n")
    # Gone before it could be read ahead: reading ahead fails quietly, RETR says so.
    file_of(server, b"Subject: m4").unlink()
    client.multiline("RETR 3")
    assert client.command("NOOP") == b"+OK"
    assert session.ahead is None
    assert client.command("RETR 4").startswith(b"-ERR [SYS/PERM]")
    assert client.command("STAT") == b"+OK 4 %d" % session.live_size
    assert client.command("QUIT").startswith(b"+OK")
    client.close()


def test_read_ahead_behind_a_reply_the_client_is_slow_to_take(server):
    """A reply larger than the socket takes at once: the rest waits in the transport
    while the next message is read ahead; both arrive whole and in order."""
    messages = [b"Subject: %d\r\n\r\n" % n + (b"w" * 98 + b"\r\n") * 2000 for n in range(3)]
    for data in messages:
        server.deliver_raw(data)
    client = WireClient(server.ports["pop3"])
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.login()
    session = session_of(server)
    server_socket = session.conn.transport.get_extra_info("socket")
    server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.sock.sendall(b"RETR 1\r\n")
    assert wait_until(lambda: session.ahead is not None)  # before the client read RETR 1
    assert session.conn.transport.get_write_buffer_size() > 0  # still behind
    for number, data in enumerate(messages, 1):
        status = client.line() if number == 1 else client.command(f"RETR {number}")
        expected, size = on_the_wire(data)
        assert status == f"+OK {size} octets".encode()
        while len(client.buffer) < len(expected):
            client._fill()
        assert client.buffer[: len(expected)] == expected, number
        client.buffer = client.buffer[len(expected) :]
    client.command("QUIT")
    client.close()


def test_pipelined_retrs_to_a_slow_reader(server):
    """Far more than the write buffer holds, asked for at once and read late: the
    server must stop taking commands while the client is behind, then go on."""
    small = [b"Subject: %d\r\n\r\n" % n + (b"." + b"p" * 98 + b"\r\n") * 2000 for n in range(12)]
    big = large_messages()[:2]
    messages = small[:6] + big + small[6:]
    for data in messages:
        server.deliver_raw(data)
    commands = [f"USER {ALICE}", "PASS alice-pw"]  # login runs as a task: the rest waits
    commands += [f"RETR {n}" for n in range(1, len(messages) + 1)] + ["QUIT"]
    with socket.create_connection(("127.0.0.1", server.ports["pop3"]), 10) as sock:
        sock.sendall("".join(f"{c}\r\n" for c in commands).encode())
        time.sleep(0.5)  # the server fills its buffers and must wait
        out = b""
        while chunk := sock.recv(1 << 20):
            out += chunk
    expected = b"+OK mailops POP3 ready\r\n"
    parts = [on_the_wire(data) for data in messages]
    assert out.count(b"+OK Logged in") == 1
    body = out[out.index(b"\r\n", out.index(b"+OK Logged in")) + 2 :]
    for stuffed, size in parts:
        expected = f"+OK {size} octets\r\n".encode() + stuffed
        assert body.startswith(expected)
        body = body[len(expected) :]
    assert body.startswith(b"+OK Bye")


def test_auth_continuation_in_a_later_packet(server):
    token = base64.b64encode(b"\x00alice@example.test\x00alice-pw")
    with socket.create_connection(("127.0.0.1", server.ports["pop3"]), 10) as sock:
        sock.recv(100)
        sock.sendall(b"AUTH PLAIN\r\n")
        assert sock.recv(100) == b"+ \r\n"
        time.sleep(0.1)
        sock.sendall(token[:5])
        time.sleep(0.1)
        sock.sendall(token[5:] + b"\r\nSTAT\r\nQUIT\r\n")
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    assert out.startswith(b"+OK Logged in") and b"+OK 0 0\r\n+OK Bye" in out


def test_a_client_that_stops_reading_times_out(tmp_path):
    with pop3_server(tmp_path, pop3_idle_timeout=0.5) as srv:
        for n in range(3):  # large: the server stops in the middle of one, for the client
            srv.deliver_raw(b"Subject: %d\r\n\r\n" % n + b"x" * 3_000_000 + b"\r\n")
        sock = socket.create_connection(("127.0.0.1", srv.ports["pop3"]), 10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        commands = [f"USER {ALICE}", "PASS alice-pw", "DELE 1", "RETR 2", "RETR 3"]
        sock.sendall("".join(f"{c}\r\n" for c in commands).encode())
        assert wait_until(lambda: any(c.session.account for c in srv.service.sessions), 5)
        # It never reads: the session ends on its own and frees the mailbox.
        assert wait_until(lambda: not srv.service.sessions, 10)
        assert srv.store.acquire_lease(ALICE, "pop3")
        assert len(srv.files()) == 3  # a session that did not QUIT deletes nothing
        sock.close()


def test_a_message_removed_meanwhile(server):
    server.deliver(b"Subject: a\r\n\r\nx\r\n")
    server.deliver(b"Subject: b\r\n\r\nx\r\n")
    client = login(server)
    server.files()[0].unlink()  # another program (or an IMAP expunge) took it
    with pytest.raises(poplib.error_proto, match=r"\[SYS/PERM\]"):
        client.retr(1)
    assert b"Subject: b" in body(client.retr(2)[1])
    assert client.quit().startswith(b"+OK")


def test_shutdown_closes_idle_sessions_and_deletes_nothing(server):
    server.deliver(b"Subject: a\r\n\r\nx\r\n")
    client = login(server)
    client.dele(1)
    server.call(server.service.drain(5))
    assert not server.service.sessions
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        client.stat()
    assert server.store.acquire_lease(ALICE, "pop3")
    assert len(server.files()) == 1


def test_a_long_pipeline_behind_a_login(server):
    """More input than the connection buffers arrives while the login runs: reading
    pauses, and must resume once the commands are taken."""
    noops = 40_000  # 240 kB of commands: more than is read before the pause
    commands = f"USER {ALICE}\r\nPASS alice-pw\r\n" + "NOOP\r\n" * noops + "QUIT\r\n"
    with socket.create_connection(("127.0.0.1", server.ports["pop3"]), 10) as sock:
        sock.sendall(commands.encode())
        out = b""
        while not out.endswith(b"deleted\r\n"):
            chunk = sock.recv(1 << 20)
            assert chunk, out[-200:]
            out += chunk
    assert out.count(b"+OK\r\n") == noops and b"+OK Logged in" in out


def test_a_finished_session_is_freed_at_once(server):
    """Freed by reference counting, not whenever the cyclic collector runs: a session
    holds its INBOX listing, and a busy server should not pile up old ones."""
    server.deliver(b"Subject: a\r\n\r\nx\r\n")
    gc.disable()
    try:
        client = login(server)
        client.uidl()
        session = weakref.ref(next(iter(server.service.sessions)).session)
        client.quit()
        assert wait_until(lambda: session() is None)
    finally:
        gc.enable()
