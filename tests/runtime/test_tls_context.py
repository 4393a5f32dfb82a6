"""The runtime's server TLS: TLS 1.2 at least, and no TLS 1.3 session tickets
(their arrival after the handshake races with the first command of clients
that read and write from two threads: offlineimap's STARTTLS hung 1 in 4)."""

from __future__ import annotations

import socket
import ssl
import threading
from types import SimpleNamespace

import pytest
import trustme

from mailops.runtime.server import tls_context


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def _server_context(ca: trustme.CA, tmp_path) -> ssl.SSLContext:
    cert = ca.issue_cert("mx.example.test")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    context = tls_context(SimpleNamespace(tls=SimpleNamespace(cert=cert_file, key=key_file)))
    assert context is not None
    return context


def _session_after_a_line(server_context: ssl.SSLContext, ca: trustme.CA) -> ssl.SSLSession:
    """A TLS 1.3 client's session once it has read the server's first line."""
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    client_context.minimum_version = ssl.TLSVersion.TLSv1_3
    left, right = socket.socketpair()

    def serve() -> None:
        with server_context.wrap_socket(right, server_side=True) as tls:
            tls.sendall(b"* OK ready\r\n")
            tls.recv(100)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_context.wrap_socket(left, server_hostname="mx.example.test") as tls:
            assert tls.recv(100) == b"* OK ready\r\n"
            assert tls.version() == "TLSv1.3"
            session = tls.session
            tls.sendall(b"a LOGOUT\r\n")
    finally:
        thread.join(10)
    return session


def test_the_runtime_sends_no_tls13_session_tickets(ca, tmp_path):
    context = _server_context(ca, tmp_path)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert not _session_after_a_line(context, ca).has_ticket
    # The check can tell: with OpenSSL's default the same exchange brings a ticket.
    context.num_tickets = 2
    assert _session_after_a_line(context, ca).has_ticket
