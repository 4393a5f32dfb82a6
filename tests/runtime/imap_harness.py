"""An in-process IMAP server for the IMAP tests: a real Store in a temp dir, the real
ImapService on loopback ports (143-style with STARTTLS, and 993-style with `tls=True`),
its event loop in a background thread, so tests can drive it with imaplib or
imapclient (blocking) and look at the Maildir directly. Users and the MDA-style
`deliver` come from the POP3 harness."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import trustme

from mailops.runtime.auth import Authenticator
from mailops.runtime.imap import ImapService
from mailops.runtime.store import Store
from tests.runtime.pop3_harness import (
    DOMAIN,
    PASSWORDS,
    Host,
    Pop3Server,
    directory,
    make_config,
)

__all__ = ["DOMAIN", "PASSWORDS", "ImapServer", "imap_server", "login"]


class ImapServer(Pop3Server):
    """ports: "imap" (plain, STARTTLS when tls) and "imaps" (when tls)."""

    def client(self, user: str = "alice") -> imaplib.IMAP4:
        """A logged-in imaplib client over plain text (the harness allows loopback)."""
        return login(imaplib.IMAP4("127.0.0.1", self.ports["imap"]), user)

    def tls_client(self, user: str = "alice") -> imaplib.IMAP4_SSL:
        context = self.client_context()
        client = imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=context)
        return login(client, user)


def login(client, user: str = "alice"):
    client.login(f"{user}@{DOMAIN}", PASSWORDS[user])
    return client


@contextlib.contextmanager
def imap_server(root: Path, *, tls: bool = False, **config) -> Iterator[ImapServer]:
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA() if tls else None
    context = None
    if ca is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("mx.example.test", "127.0.0.1").configure_cert(context)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    the_directory = directory()
    config.setdefault("plaintext_auth_on_loopback", True)
    host = Host(
        make_config(root, **config),
        context,
        Authenticator(lambda: the_directory),
        Store(root, "mx.example.test"),
    )
    service = ImapService(host)
    server = ImapServer(root, host, service, loop, ca=ca)  # type: ignore[arg-type]
    listeners = []

    async def start() -> None:
        for name, implicit in (("imap", False), ("imaps", True)):
            if implicit and context is None:
                continue
            listener = await loop.create_server(
                service.protocol_factory(implicit),
                "127.0.0.1",
                0,
                ssl=context if implicit else None,
            )
            listeners.append(listener)
            server.ports[name] = listener.sockets[0].getsockname()[1]

    async def stop() -> None:
        for listener in listeners:
            listener.close()
        await service.drain(5)

    try:
        server.call(start())
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.call(stop())
        with contextlib.suppress(Exception):
            server.call(asyncio.to_thread(host.store.close))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class RawClient:
    """A line-level IMAP client for exact responses: `call("NOOP")` sends "t1 NOOP"
    and returns every line up to and including the tagged one (CRLF stripped)."""

    def __init__(
        self, port: int, context: ssl.SSLContext | None = None, name: str = "mx.example.test"
    ) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(sock, server_hostname=name) if context else sock
        self.file = self.sock.makefile("rb")
        self.counter = 0
        self.greeting = self.line()

    def line(self) -> bytes:
        data = self.file.readline(1 << 20)
        if not data:
            raise EOFError("server closed the connection")
        return data.rstrip(b"\r\n")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, command: str | bytes) -> list[bytes]:
        self.counter += 1
        tag = b"t%d" % self.counter
        text = command.encode() if isinstance(command, str) else command
        self.send(tag + b" " + text + b"\r\n")
        return self.until(tag)

    def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def login(self, user: str = "alice") -> None:
        status = self.call(f'LOGIN {user}@{DOMAIN} "{PASSWORDS[user]}"')[-1]
        assert b" OK " in status, status

    def close(self) -> None:
        self.sock.close()


def tagged(lines: list[bytes]) -> bytes:
    """The tagged status of a RawClient.call: b"OK ...", b"NO ...", b"BAD ..."."""
    return lines[-1].split(b" ", 1)[1]


def append(mailbox: str, message: bytes, extra: str = "") -> bytes:
    """An APPEND command with a non-synchronising literal, for RawClient.call."""
    head = f"APPEND {mailbox} {extra + ' ' if extra else ''}{{{len(message)}+}}\r\n"
    return head.encode() + message
