"""POP3 against a real `mailops serve`: mail delivered by the MTA over SMTP, fetched by
Python's poplib and by the real clients fetchmail (STLS on 110, and 995) and getmail6
(995; it has no STLS), all with the test CA. Every message must arrive byte for byte
(up to the line-ending convention of the client's local delivery), `keep` must leave
the mailbox alone, delete mode must remove exactly what was fetched, and a second run
must fetch nothing old."""

from __future__ import annotations

import os
import poplib
import re
import shutil
import smtplib
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.mailserver import MailServer, mail_server

pytestmark = pytest.mark.integration

FETCHMAIL = shutil.which("fetchmail")
GETMAIL = shutil.which("getmail")
USER = "bob@example.test"
PASSWORD = "bob-pw"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mail_server(tmp_path_factory.mktemp("pop3")) as srv:
        srv.ca.cert_pem.write_to_path(str(srv.root / "ca.pem"))
        # fetchmail insists on a subject common name, which trustme leaves out by
        # default: serve a certificate that has one (a restart loads it).
        cert = srv.ca.issue_cert("mx1.example.test", "127.0.0.1", common_name="mx1.example.test")
        cert.private_key_and_cert_chain_pem.write_to_path(str(srv.root / "server.pem"))
        cert.private_key_pem.write_to_path(str(srv.root / "server.key"))
        srv.stop()
        srv.start()
        yield srv


def send(server: MailServer, count: int, tag: str) -> list[bytes]:
    """Deliver `count` distinct messages to bob over SMTP; returns what was sent."""
    sent = []
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        for i in range(count):
            body = f"{tag} {i} {uuid.uuid4().hex}\r\n.leading dot\r\n" + "x" * (i * 97 % 3000)
            message = (
                f"From: sender@remote.example\r\nTo: {USER}\r\nSubject: {tag} {i}\r\n"
                f"Message-ID: <{uuid.uuid4().hex}@remote.example>\r\n\r\n{body}\r\n"
            ).encode()
            client.sendmail("sender@remote.example", [USER], message)
            sent.append(message)
    return sent


def stored(server: MailServer) -> dict[bytes, bytes]:
    """Message-ID → the file's bytes, for every message in bob's Maildir."""
    out = {}
    for data in server.messages("bob"):
        match = re.search(rb"^Message-ID: (<[^>]+>)", data, re.MULTILINE)
        if match:
            out[match.group(1)] = data
    return out


def login(server: MailServer) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    client.stls(server.client_context())
    client.user(USER)
    client.pass_(PASSWORD)
    return client


def empty_mailbox(server: MailServer) -> None:
    client = login(server)
    for number in range(1, client.stat()[0] + 1):
        client.dele(number)
    client.quit()


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


# ------------------------------------------------------------------- poplib


def test_listeners_are_up_and_plaintext_login_needs_tls(server):
    assert "service=pop3 " in server.log() and "service=pop3s " in server.log()
    client = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    assert "STLS" in client.capa() and "USER" not in client.capa()
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\].*TLS"):
        client.user(USER)
    client.quit()


def test_poplib_retrieves_exact_bytes_and_deletes_only_what_it_was_told(server):
    empty_mailbox(server)
    sent = send(server, 5, "poplib")
    files = stored(server)
    client = login(server)
    count, size = client.stat()
    assert count == 5
    listing = [int(line.split()[1]) for line in client.list()[1]]
    assert size == sum(listing) == sum(len(data) for data in files.values())
    for number in range(1, 6):
        lines = client.retr(number)[1]
        data = b"\r\n".join(lines) + b"\r\n"
        message_id = re.search(rb"^Message-ID: (<[^>]+>)", data, re.MULTILINE).group(1)
        assert data == files[message_id]  # poplib undoes the dot-stuffing
        assert len(data) == listing[number - 1]
    client.dele(2)
    client.dele(4)
    client.quit()
    left = stored(server)
    assert len(left) == 3
    assert all(message.split(b"\r\n\r\n", 1)[1] in b"".join(left.values()) for message in sent[::2])


def test_mail_delivered_during_a_session_waits_for_the_next_one(server):
    empty_mailbox(server)
    send(server, 1, "before")
    client = login(server)
    assert client.stat()[0] == 1
    send(server, 1, "during")
    assert client.stat()[0] == 1  # the maildrop is a snapshot until QUIT
    client.dele(1)
    client.quit()
    client = login(server)
    assert client.stat()[0] == 1
    assert b"Subject: during 0" in b"\r\n".join(client.retr(1)[1])
    client.quit()


def test_uidl_is_stable_across_sessions_and_restarts(server):
    empty_mailbox(server)
    send(server, 3, "uidl")
    client = login(server)
    first = client.uidl()[1]
    client.quit()
    server.stop()
    server.start()
    client = login(server)
    assert client.uidl()[1] == first
    client.quit()


# ---------------------------------------------------------------- fetchmail


def fetchmail(server: MailServer, work: Path, *, implicit: bool, keep: bool) -> list[bytes]:
    """Run fetchmail once; returns the messages its MDA received (in the order given)."""
    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    save = work / "save.sh"
    save.write_text('#!/bin/sh\nexec cat > "$1/$(date +%s%N).$$"\n')
    save.chmod(0o700)
    port = server.ports["pop3s" if implicit else "pop3"]
    rc = work / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll 127.0.0.1 service {port} proto pop3 uidl auth password\n"
        f'  user "{USER}" there with password "{PASSWORD}" is "bob" here\n'
        f"  {'ssl ' if implicit else ''}sslproto 'tls1.2+' sslcertck"
        f' sslcertfile "{server.root / "ca.pem"}" sslcommonname "mx1.example.test"\n'
        f"  {'keep' if keep else 'no keep'}\n"
        f'  mda "{save} {out}"\n'
    )
    rc.chmod(0o600)
    env = {**os.environ, "FETCHMAILHOME": str(work), "HOME": str(work)}
    result = subprocess.run(
        [FETCHMAIL, "-f", str(rc), "--idfile", str(work / "ids"), "--nodetach", "-v"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    # 0: mail fetched; 1: no mail. Anything else is a failure worth reading.
    assert result.returncode in (0, 1), result.stdout.decode() + result.stderr.decode()
    if not implicit:
        assert b"STLS" in result.stdout + result.stderr
    new = sorted(set(out.iterdir()) - before)
    return [path.read_bytes() for path in new]


def strip_fetchmail_received(data: bytes) -> bytes:
    """fetchmail adds one Received: header naming itself; the rest is the message."""
    pattern = rb"^Received: [^\n]*\n[ \t]+by [^\n]*\(fetchmail-[^\n]*\n(?:[ \t][^\n]*\n)*"
    stripped, count = re.subn(pattern, b"", data, count=1, flags=re.MULTILINE)
    assert count == 1
    return stripped


def assert_same_messages(received: list[bytes], expected: dict[bytes, bytes], strip) -> None:
    got = {}
    for data in received:
        data = strip(data)
        message_id = re.search(rb"^Message-ID: (<[^>]+>)", data, re.MULTILINE).group(1)
        assert message_id not in got, "fetched twice"
        got[message_id] = data
    assert set(got) == set(expected)
    for message_id, data in got.items():
        assert lf(data) == lf(expected[message_id])


@pytest.mark.skipif(FETCHMAIL is None, reason="fetchmail not installed")
@pytest.mark.parametrize("implicit", [False, True], ids=["stls-110", "tls-995"])
def test_fetchmail_keep_then_delete(server, tmp_path, implicit):
    empty_mailbox(server)
    send(server, 6, "fetchmail")
    expected = stored(server)
    # keep: everything arrives, the mailbox is untouched, a second run fetches nothing.
    got = fetchmail(server, tmp_path, implicit=implicit, keep=True)
    assert_same_messages(got, expected, strip_fetchmail_received)
    assert stored(server) == expected
    assert fetchmail(server, tmp_path, implicit=implicit, keep=True) == []
    # New mail: only it is fetched; then delete mode removes exactly what was fetched.
    send(server, 2, "later")
    later = {k: v for k, v in stored(server).items() if k not in expected}
    assert len(later) == 2
    got = fetchmail(server, tmp_path, implicit=implicit, keep=False)
    assert_same_messages(got, later, strip_fetchmail_received)
    assert stored(server) == expected  # the ones fetched before (and kept) stay


# ------------------------------------------------------------------ getmail


def getmail(server: MailServer, work: Path, *, delete: bool) -> list[bytes]:
    """Run getmail once; returns the messages its MDA received."""
    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    save = work / "save.sh"
    save.write_text('#!/bin/sh\nexec cat > "$1/$(date +%s%N).$$"\n')
    save.chmod(0o700)
    rc = work / "getmailrc"
    # An external MDA: getmail's own Maildir writer refuses to run as root (CI is root).
    rc.write_text(
        "[retriever]\n"
        "type = SimplePOP3SSLRetriever\n"
        "server = 127.0.0.1\n"
        f"port = {server.ports['pop3s']}\n"
        f"username = {USER}\n"
        f"password = {PASSWORD}\n"
        f"ca_certs = {server.root / 'ca.pem'}\n"
        "[destination]\n"
        "type = MDA_external\n"
        f"path = {save}\n"
        f'arguments = ("{out}",)\n'
        "allow_root_commands = true\n"
        "[options]\n"
        "verbose = 0\n"
        "read_all = false\n"
        f"delete = {'true' if delete else 'false'}\n"
        "delivered_to = false\n"
        "received = false\n"
    )
    result = subprocess.run(
        [GETMAIL, f"--getmaildir={work}", f"--rcfile={rc}"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    new = sorted(set(out.iterdir()) - before)
    return [path.read_bytes() for path in new]


@pytest.mark.skipif(GETMAIL is None, reason="getmail6 not installed")
def test_getmail_keep_then_delete(server, tmp_path):
    empty_mailbox(server)
    send(server, 5, "getmail")
    expected = stored(server)
    got = getmail(server, tmp_path, delete=False)
    assert_same_messages(got, expected, lambda data: data)
    assert stored(server) == expected
    assert getmail(server, tmp_path, delete=False) == []  # remembered by UIDL
    send(server, 2, "later")
    later = {k: v for k, v in stored(server).items() if k not in expected}
    got = getmail(server, tmp_path, delete=True)
    assert_same_messages(got, later, lambda data: data)
    # getmail's delete mode removes every message it ever retrieved, the kept ones too.
    assert stored(server) == {}
    # A message it never saw is never touched.
    send(server, 1, "unseen")
    assert len(stored(server)) == 1
