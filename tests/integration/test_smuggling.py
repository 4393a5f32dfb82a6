"""SMTP smuggling: an end-of-data that is not exactly <CR><LF>.<CR><LF> must
never end the message early, so a second, forged message cannot ride inside
the first. mailops refuses any bare CR or LF in DATA (as Postfix does)."""

from __future__ import annotations

import socket

import pytest

from tests.integration.mailserver import mail_server

pytestmark = pytest.mark.integration

FAKE_ENDS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CR": b"\r.\r",
    "CRLF.LF": b"\r\n.\n",
    "CRLF.CR": b"\r\n.\r",
    "LF.CR": b"\n.\r",
    "CR.LF": b"\r.\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR-NUL": b"\r\n.\r\x00\n",
}

SMUGGLED = (
    b"MAIL FROM:<ceo@example.test>\r\n"
    b"RCPT TO:<bob@example.test>\r\n"
    b"DATA\r\n"
    b"Subject: smuggled\r\n\r\nforged body\r\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mail_server(tmp_path_factory.mktemp("smuggle")) as srv:
        yield srv


def replies(sock_file, n: int) -> list[int]:
    codes = []
    while len(codes) < n:
        line = sock_file.readline()
        if not line:
            break
        if line[3:4] != b"-":
            codes.append(int(line[:3]))
    return codes


@pytest.mark.parametrize("fake_end", list(FAKE_ENDS.values()), ids=list(FAKE_ENDS))
def test_fake_end_of_data_never_ends_the_message(server, fake_end):
    before = server.messages("bob")
    with socket.create_connection(("127.0.0.1", server.ports["smtp"]), 10) as sock:
        reader = sock.makefile("rb")
        replies(reader, 1)
        sock.sendall(
            b"EHLO attacker.example\r\nMAIL FROM:<x@remote.example>\r\n"
            b"RCPT TO:<bob@example.test>\r\nDATA\r\n"
        )
        assert replies(reader, 4) == [250, 250, 250, 354]
        sock.sendall(b"Subject: first\r\n\r\nfirst body" + fake_end + SMUGGLED + b".\r\nQUIT\r\n")
        codes = replies(reader, 2)
    # One answer for the one message (refused: bare CR/LF), then QUIT's 221.
    # A server fooled by the fake end would answer 250 250 250 354 … instead.
    assert codes == [550, 221]
    after = server.messages("bob")
    assert after == before
    assert not any(b"forged body" in m for m in after)


def test_proper_end_of_data_still_works_with_pipelining(server):
    before = len(server.messages("bob"))
    with socket.create_connection(("127.0.0.1", server.ports["smtp"]), 10) as sock:
        reader = sock.makefile("rb")
        replies(reader, 1)
        sock.sendall(
            b"EHLO client.example\r\nMAIL FROM:<x@remote.example>\r\n"
            b"RCPT TO:<bob@example.test>\r\nDATA\r\n"
        )
        assert replies(reader, 4) == [250, 250, 250, 354]
        sock.sendall(b"Subject: ok\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n")
        assert replies(reader, 2) == [250, 221]
    stored = server.messages("bob")
    assert len(stored) == before + 1
    assert stored[-1].endswith(b"Subject: ok\r\n\r\n.leading dot\r\n")  # dot-unstuffed
