"""The SMTP front door, against a real `mailops serve` with real clients
(Python's smtplib, and swaks when installed)."""

from __future__ import annotations

import shutil
import smtplib
import socket
import ssl
import subprocess

import pytest

from mailops.runtime.queue import Queue
from tests.integration.mailserver import mail_server

pytestmark = pytest.mark.integration

MESSAGE = b"From: alice@example.test\r\nSubject: hi\r\n\r\nHello there.\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mail_server(tmp_path_factory.mktemp("smtp"), alice_quota="20KiB") as srv:
        yield srv


def mx(server) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10)
    client.ehlo("client.example")
    return client


def submission(server, user="alice@example.test", password="alice-pw") -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10)
    client.starttls(context=server.client_context())
    client.login(user, password)
    return client


def queued(server):
    return Queue(server.data).list()


def new_messages(server, user):
    return [m for m in server.messages(user) if b"Subject: " in m]


def test_mx_delivers_into_the_maildir_with_trace_headers(server):
    before = len(server.messages("bob"))
    with mx(server) as client:
        refused = client.sendmail("sender@remote.example", ["bob@example.test"], MESSAGE)
    assert refused == {}
    stored = server.messages("bob")
    assert len(stored) == before + 1
    message = stored[-1]
    assert message.startswith(b"Return-Path: <sender@remote.example>\r\n")
    assert b"Delivered-To: bob@example.test\r\n" in message
    assert b"Received: from client.example ([127.0.0.1])" in message
    assert b"by mx1.example.test (mailops) with ESMTP id " in message
    assert b"for <bob@example.test>" in message
    assert message.endswith(MESSAGE)


def test_a_return_path_that_came_with_the_message_is_replaced(server):
    sent = b"Return-Path: <forged@elsewhere.example>\r\nSubject: rp-test\r\n\r\n"
    sent += b"Return-Path: kept\r\n"
    with mx(server) as client:
        client.sendmail("sender@remote.example", ["bob@example.test"], sent)
    (stored,) = [m for m in server.messages("bob") if b"Subject: rp-test" in m]
    assert stored.count(b"Return-Path:") == 2  # ours at the top, and the body line
    assert stored.startswith(b"Return-Path: <sender@remote.example>\r\n")
    assert b"forged@elsewhere.example" not in stored
    assert stored.endswith(b"Subject: rp-test\r\n\r\nReturn-Path: kept\r\n")


def test_250_reply_names_the_message(server):
    with mx(server) as client:
        client.mail("sender@remote.example")
        client.rcpt("bob@example.test")
        code, reply = client.data(MESSAGE)
    assert code == 250
    assert reply.startswith(b"2.0.0 OK queued as ")


def test_alias_list_expands_to_mailboxes_and_queue(server):
    alice, bob, queue = len(server.messages("alice")), len(server.messages("bob")), queued(server)
    with mx(server) as client:
        client.sendmail("x@remote.example", ["team@example.test"], MESSAGE)
    assert len(server.messages("alice")) == alice + 1
    assert len(server.messages("bob")) == bob + 1
    new = [e for e in queued(server) if e.id not in {q.id for q in queue}]
    assert [(e.sender, e.recipients) for e in new] == [
        ("x@remote.example", ("carol@elsewhere.example",))
    ]


def test_one_copy_per_mailbox_however_many_addresses_name_it(server):
    before = len(server.messages("alice"))
    with mx(server) as client:
        client.sendmail(
            "x@remote.example",
            ["alice@example.test", "a.smith@example.test", "postmaster@example.test"],
            MESSAGE,
        )
    assert len(server.messages("alice")) == before + 1


def test_subaddress_delivers_to_the_user(server):
    before = len(server.messages("bob"))
    with mx(server) as client:
        client.sendmail("x@remote.example", ["Bob+Lists@Example.TEST"], MESSAGE)
    assert len(server.messages("bob")) == before + 1


def test_unknown_user_rejected_at_rcpt(server):
    with mx(server) as client:
        client.mail("x@remote.example")
        code, reply = client.rcpt("nobody@example.test")
    assert code == 550
    assert reply.startswith(b"5.1.1 <nobody@example.test>")


def test_relaying_refused_on_port_25(server):
    with mx(server) as client:
        client.mail("alice@example.test")
        code, reply = client.rcpt("victim@elsewhere.example")
    assert (code, reply) == (554, b"5.7.1 Relay access denied")


def test_starttls_offered_on_25_and_mail_flows_over_it(server):
    with mx(server) as client:
        assert client.has_extn("starttls")
        assert client.has_extn("pipelining")
        assert not client.has_extn("auth")
        client.starttls(context=server.client_context())
        client.ehlo("client.example")
        client.sendmail("x@remote.example", ["bob@example.test"], MESSAGE)
    assert b"with ESMTPS id" in server.messages("bob")[-1]


def test_submission_sends_anywhere_and_adds_message_id_and_date(server):
    before = {e.id for e in queued(server)}
    with submission(server) as client:
        client.sendmail("alice@example.test", ["dave@elsewhere.example"], MESSAGE)
    new = [e for e in queued(server) if e.id not in before]
    assert [(e.sender, e.recipients) for e in new] == [
        ("alice@example.test", ("dave@elsewhere.example",))
    ]
    _, data = Queue(server.data).read(new[0].id)
    assert b"with ESMTPSA id" in data
    assert b"\r\nMessage-ID: <" in data and b"@mx1.example.test>\r\n" in data
    assert b"\r\nDate: " in data


def test_submission_keeps_existing_message_id(server):
    before = len(server.messages("bob"))
    body = b"Message-ID: <keep@me>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n" + MESSAGE
    with submission(server) as client:
        client.sendmail("alice@example.test", ["bob@example.test"], body)
    stored = server.messages("bob")[before]
    assert stored.count(b"Message-ID:") == 1 and b"<keep@me>" in stored
    assert stored.count(b"\r\nDate:") == 1


def test_submission_alias_sender_allowed(server):
    with submission(server) as client:
        assert client.sendmail("a.smith@example.test", ["bob@example.test"], MESSAGE) == {}


@pytest.mark.parametrize(
    "sender", ["bob@example.test", "team@example.test", "ceo@bank.example", ""]
)
def test_submission_refuses_senders_the_user_does_not_own(server, sender):
    with submission(server) as client:
        code, reply = client.mail(sender)
    assert code == 553
    assert b"not owned by alice@example.test" in reply


def test_wrong_password_is_refused(server):
    client = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=15)
    client.starttls(context=server.client_context())
    with pytest.raises(smtplib.SMTPAuthenticationError) as info:
        client.login("alice@example.test", "wrong")
    assert info.value.smtp_code == 535
    client.close()


def test_auth_not_offered_before_starttls_on_587(server):
    client = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10)
    client.ehlo("client.example")
    assert not client.has_extn("auth")
    code, _ = client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wdw==")
    assert code == 530
    code, _ = client.mail("alice@example.test")
    assert code == 530
    client.close()


def test_implicit_tls_on_465(server):
    client = smtplib.SMTP_SSL(
        "127.0.0.1", server.ports["submissions"], context=server.client_context(), timeout=10
    )
    client.login("bob@example.test", "bob-pw")
    assert client.sendmail("bob@example.test", ["alice@example.test"], MESSAGE) == {}
    client.quit()


def test_implicit_tls_refuses_plaintext(server):
    with socket.create_connection(("127.0.0.1", server.ports["submissions"]), 5) as sock:
        sock.sendall(b"EHLO x\r\n")
        sock.settimeout(5)
        try:
            data = sock.recv(100)
        except (ConnectionResetError, TimeoutError):
            data = b""
    assert not data.startswith(b"220")


def test_bare_lf_is_refused_and_nothing_delivered(server):
    before = len(server.messages("bob"))
    with mx(server) as client:
        client.mail("x@remote.example")
        client.rcpt("bob@example.test")
        code, reply = client.data(b"Subject: x\r\n\r\nline one\nline two\r\n")
    assert code == 550 and reply.startswith(b"5.6.0")
    assert len(server.messages("bob")) == before


def test_oversized_message_is_refused(server):
    with mx(server) as client:
        max_size = int(client.esmtp_features["size"])
        client.mail("x@remote.example")
        client.rcpt("bob@example.test")
        code, _ = client.data(
            b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (max_size // 1000 + 2)
        )
    assert code == 552


def test_size_parameter_over_the_limit_refused_at_mail(server):
    with mx(server) as client:
        max_size = int(client.esmtp_features["size"])
        code, _ = client.mail("x@remote.example", [f"SIZE={max_size + 1}"])
    assert code == 552


def test_quota_exceeded_is_a_temporary_failure(server):
    with mx(server) as client:
        client.mail("x@remote.example")
        client.rcpt("alice@example.test")
        code, reply = client.data(b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 31)
    assert code == 452 and reply.startswith(b"4.2.2")


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_swaks_submission_over_starttls(server, tmp_path):
    ca = tmp_path / "ca.pem"
    server.ca.cert_pem.write_to_path(str(ca))
    before = len(server.messages("bob"))
    result = subprocess.run(
        [
            "swaks",
            "--server",
            "127.0.0.1",
            "--port",
            str(server.ports["submission"]),
            "--tls",
            "--tls-ca-path",
            str(ca),
            "--tls-verify",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.test",
            "--auth-password",
            "alice-pw",
            "--from",
            "alice@example.test",
            "--to",
            "bob@example.test",
            "--header",
            "Subject: swaks test",
            "--body",
            "from swaks",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 OK queued as" in result.stdout
    stored = server.messages("bob")
    assert len(stored) == before + 1 and b"from swaks" in stored[-1]


def test_log_lines_are_key_value_and_hold_no_password(server):
    log = server.log()
    assert "event=smtp.accepted" in log
    for line in log.splitlines():
        assert line.startswith("ts="), line
    assert "alice-pw" not in log and "bob-pw" not in log


def test_ssl_context_for_clients_is_verified(server):
    bad = ssl.create_default_context()  # does not trust the test CA
    client = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10)
    with pytest.raises(ssl.SSLError):
        client.starttls(context=bad)
    client.close()


def test_backup_mx_queues_known_recipients_for_the_primary(server):
    before = {e.id for e in queued(server)}
    with mx(server) as client:
        assert client.sendmail("x@remote.example", ["dora@backup.test"], MESSAGE) == {}
        client.mail("x@remote.example")
        code, _ = client.rcpt("nobody@backup.test")
    assert code == 550  # no backscatter: unknown users are refused here too
    new = [e for e in queued(server) if e.id not in before]
    assert [(e.sender, e.recipients) for e in new] == [("x@remote.example", ("dora@backup.test",))]
    assert not server.maildir("dora", "backup.test").exists()


@pytest.mark.parametrize("initial_response", [True, False])
def test_auth_login_mechanism(server, initial_response):
    client = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10)
    client.starttls(context=server.client_context())
    client.ehlo("client.example")
    client.user, client.password = "bob@example.test", "bob-pw"
    code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=initial_response)
    assert code == 235
    client.quit()
