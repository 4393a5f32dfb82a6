"""Logging in: LOGINDISABLED before TLS, STARTTLS, LOGIN, AUTHENTICATE PLAIN with and
without SASL-IR, failures, and the commands of any state (CAPABILITY, ID, ENABLE,
NAMESPACE, COMPRESS, LOGOUT)."""

from __future__ import annotations

import base64
import imaplib
import zlib

import pytest

from tests.runtime.imap_harness import PASSWORDS, RawClient, imap_server, tagged
from tests.runtime.pop3_harness import no_login_delay


def plain(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


@pytest.fixture
def strict(tmp_path):
    """A server that refuses passwords without TLS, even from loopback."""
    with imap_server(tmp_path, tls=True, plaintext_auth_on_loopback=False) as server:
        yield server


@pytest.fixture
def lab(tmp_path):
    with imap_server(tmp_path, tls=True) as server:
        yield server


def test_before_tls_logins_are_disabled_and_refused(strict):
    client = RawClient(strict.ports["imap"])
    caps = client.greeting
    assert b"STARTTLS" in caps and b"LOGINDISABLED" in caps and b"AUTH=PLAIN" not in caps
    assert tagged(client.call('LOGIN alice@example.test "alice-pw"')).startswith(
        b"NO [PRIVACYREQUIRED]"
    )
    assert tagged(client.call("AUTHENTICATE PLAIN " + plain("alice@example.test", "x"))).startswith(
        b"NO [PRIVACYREQUIRED]"
    )
    assert tagged(client.call("SELECT INBOX")).startswith(b"BAD")


def test_starttls_then_login(strict):
    client = imaplib.IMAP4("127.0.0.1", strict.ports["imap"])
    client.starttls(strict.client_context())
    assert "AUTH=PLAIN" in client.capabilities and "LOGINDISABLED" not in client.capabilities
    assert "STARTTLS" not in client.capabilities
    typ, _ = client.login("alice@example.test", PASSWORDS["alice"])
    assert typ == "OK"
    assert "UIDPLUS" in client.capabilities or "UIDPLUS" in client.capability()[1][0].decode()
    client.logout()


def test_implicit_tls_login_and_capabilities_after(lab):
    client = RawClient(lab.ports["imaps"], lab.client_context())
    assert b"STARTTLS" not in client.greeting
    status = tagged(client.call('LOGIN alice@example.test "alice-pw"'))
    assert status.startswith(b"OK [CAPABILITY IMAP4rev1")
    for cap in (b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"APPENDLIMIT=", b"IDLE", b"NAMESPACE"):
        assert cap in status


def test_starttls_refuses_pipelined_commands(lab):
    client = RawClient(lab.ports["imap"])
    client.send(b"a STARTTLS\r\nb LOGIN alice@example.test alice-pw\r\n")
    lines = [client.line(), client.line()]
    assert lines[0].startswith(b"a BAD")
    assert lines[1].startswith(b"* BYE")
    with pytest.raises(EOFError):
        client.line()


def test_authenticate_plain_with_initial_response(lab):
    client = RawClient(lab.ports["imap"])
    status = tagged(client.call("AUTHENTICATE PLAIN " + plain("bob@example.test", "bob-pw")))
    assert status.startswith(b"OK")
    assert tagged(client.call("SELECT INBOX")).startswith(b"OK [READ-WRITE]")


def test_authenticate_plain_with_continuation_and_cancel(lab):
    client = RawClient(lab.ports["imap"])
    client.send(b"a AUTHENTICATE PLAIN\r\n")
    assert client.line() == b"+ "
    client.send(plain("alice@example.test", "alice-pw").encode() + b"\r\n")
    assert client.line().startswith(b"a OK")
    other = RawClient(lab.ports["imap"])
    other.send(b"b AUTHENTICATE PLAIN\r\n")
    assert other.line() == b"+ "
    other.send(b"*\r\n")
    assert other.line().startswith(b"b BAD")


def test_authzid_of_another_user_is_refused(lab):
    client = RawClient(lab.ports["imap"])
    response = plain("alice@example.test", "alice-pw", authzid="bob@example.test")
    assert tagged(client.call("AUTHENTICATE PLAIN " + response)).startswith(
        b"NO [AUTHORIZATIONFAILED]"
    )


def test_wrong_password_then_bye_after_three(lab, monkeypatch):
    no_login_delay(monkeypatch)
    client = RawClient(lab.ports["imap"])
    for _ in range(2):
        assert tagged(client.call('LOGIN alice@example.test "wrong"')).startswith(
            b"NO [AUTHENTICATIONFAILED]"
        )
    lines = client.call('LOGIN alice@example.test "wrong"')
    assert tagged(lines).startswith(b"NO [AUTHENTICATIONFAILED]")
    assert client.line().startswith(b"* BYE")


def test_unknown_mechanism_and_bad_base64(lab):
    client = RawClient(lab.ports["imap"])
    assert tagged(client.call("AUTHENTICATE CRAM-MD5")).startswith(b"NO [CANNOT]")
    assert tagged(client.call("AUTHENTICATE PLAIN %%%")).startswith(b"BAD")


def test_id_enable_namespace(lab):
    client = RawClient(lab.ports["imap"])
    lines = client.call('ID ("name" "test client" "version" "1")')
    assert lines[0] == b'* ID ("name" "mailops")'
    assert tagged(client.call("ENABLE CONDSTORE")).startswith(b"BAD")  # not yet logged in
    client.login()
    assert client.call("ENABLE CONDSTORE UTF8=ACCEPT X-UNKNOWN")[0] == (
        b"* ENABLED CONDSTORE UTF8=ACCEPT"
    )
    assert client.call("ENABLE CONDSTORE")[0] == b"* ENABLED"  # already on: not repeated
    assert client.call("NAMESPACE")[0] == b'* NAMESPACE (("" ".")) NIL NIL'


def test_logout_says_bye_then_ok(lab):
    client = RawClient(lab.ports["imap"])
    lines = client.call("LOGOUT")
    assert lines[0].startswith(b"* BYE") and tagged(lines).startswith(b"OK")
    with pytest.raises(EOFError):
        client.line()


def test_compress_deflate(lab):
    client = RawClient(lab.ports["imap"])
    client.login()
    assert tagged(client.call("COMPRESS DEFLATE")).startswith(b"OK")
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    inflate = zlib.decompressobj(-15)
    commands = b"c1 NOOP\r\nc2 CAPABILITY\r\n"
    client.send(deflate.compress(commands) + deflate.flush(zlib.Z_SYNC_FLUSH))
    received = b""
    while b"c2 OK" not in received:
        received += inflate.decompress(client.sock.recv(65536))
    assert b"c1 OK" in received
    capability = next(x for x in received.split(b"\r\n") if x.startswith(b"* CAPABILITY"))
    assert b"COMPRESS=DEFLATE" not in capability  # already active
