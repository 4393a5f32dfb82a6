"""No trick makes the runtime an open relay: every attempt to get mail for a
foreign destination accepted without authentication is refused, and the queue
(where relayed mail would wait) stays empty."""

from __future__ import annotations

import smtplib
import socket

import pytest

from mailops.runtime.queue import Queue
from tests.integration.mailserver import mail_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mail_server(tmp_path_factory.mktemp("relay")) as srv:
        yield srv


def raw_rcpt(port: int, rcpt: str, sender: str = "x@remote.example") -> int:
    """The reply code to RCPT TO:<rcpt>, sent byte for byte (no client-side quoting)."""
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        reader = sock.makefile("rb")

        def reply() -> int:
            while True:
                line = reader.readline()
                if line[3:4] != b"-":
                    return int(line[:3])

        reply()
        for command in (b"EHLO attacker.example", f"MAIL FROM:<{sender}>".encode()):
            sock.sendall(command + b"\r\n")
            reply()
        sock.sendall(b"RCPT TO:" + rcpt.encode("utf-8", "surrogateescape") + b"\r\n")
        return reply()


TRICKS = [
    ("plain foreign recipient", "<victim@elsewhere.example>"),
    ("foreign recipient in capitals", "<VICTIM@ELSEWHERE.EXAMPLE>"),
    ("percent hack", "<victim%elsewhere.example@example.test>"),
    ("double percent hack", "<victim%elsewhere.example%example.test@example.test>"),
    ("quoted local part with @", '<"victim@elsewhere.example"@example.test>'),
    ("source route", "<@example.test:victim@elsewhere.example>"),
    ("source route with two hops", "<@example.test,@mx1.example.test:victim@elsewhere.example>"),
    ("bang path", "<elsewhere.example!victim@example.test>"),
    ("bang path with percent", "<elsewhere.example!victim%x@example.test>"),
    ("two at signs", "<victim@elsewhere.example@example.test>"),
    ("address literal", "<victim@[192.0.2.1]>"),
    ("localhost", "<victim@localhost>"),
    ("served domain as a prefix", "<victim@example.test.elsewhere.example>"),
    ("served domain as a suffix label", "<victim@notexample.test>"),
    ("no angle brackets", "victim@elsewhere.example"),
    ("NUL inside the address", "<victim@elsewhere.example\x00@example.test>"),
    ("trailing dot on a foreign domain", "<victim@elsewhere.example.>"),
    ("local sender pretending on port 25", "<victim@elsewhere.example>"),
]


@pytest.mark.parametrize(("name", "rcpt"), TRICKS, ids=[t[0] for t in TRICKS])
def test_port_25_refuses(server, name, rcpt):
    sender = "alice@example.test" if "pretending" in name else "x@remote.example"
    code = raw_rcpt(server.ports["smtp"], rcpt, sender)
    assert 500 <= code < 600, f"{name}: RCPT got {code}"


def test_unauthenticated_submission_is_refused(server):
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as client:
        client.starttls(context=server.client_context())
        client.ehlo("attacker.example")
        code, _ = client.mail("alice@example.test")
        assert code == 530
        code, _ = client.rcpt("victim@elsewhere.example")
        assert code >= 500


def test_unauthenticated_implicit_tls_is_refused(server):
    client = smtplib.SMTP_SSL(
        "127.0.0.1", server.ports["submissions"], context=server.client_context(), timeout=10
    )
    client.ehlo("attacker.example")
    code, _ = client.mail("alice@example.test")
    assert code == 530
    client.close()


def test_auth_without_tls_is_refused(server):
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as client:
        client.ehlo("x")
        code, _ = client.docmd("AUTH", "LOGIN")
        assert code == 530


def test_failed_login_then_relay_is_refused(server):
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=15) as client:
        client.starttls(context=server.client_context())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("alice@example.test", "guess")
        code, _ = client.mail("alice@example.test")
        assert code == 530


def test_authenticated_user_cannot_spoof_another_sender(server):
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as client:
        client.starttls(context=server.client_context())
        client.login("bob@example.test", "bob-pw")
        code, _ = client.mail("alice@example.test")
        assert code == 553


def test_nothing_was_queued_for_a_foreign_destination(server):
    # Runs last in this module: every trick above must have left the queue empty.
    entries = Queue(server.data).list()
    assert entries == [], [e.recipients for e in entries]
