"""A real `mailops serve` for integration tests: rendered from a spec, started
as a subprocess on free loopback ports, with a test CA (trustme) for TLS, and
always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from mailops.passwords import hash_password
from mailops.render.host import render_host
from mailops.spec.load import load_spec

SERVICES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s")

SPEC = """\
version: 1
hosts:
  mx1:
    fqdn: mx1.example.test
    ipv4: 127.0.0.1
    connection: local
    service: process
    listen: ["127.0.0.1"]
    ports: {ports}
    tls: {{cert: {cert}, key: {key}}}
    paths: {{config: etc, data: data, install: venv}}
    resolver: ["{resolver}"]
  mx9:
    fqdn: mx9.example.test
    ipv4: 127.0.0.9
    services: [smtp, imaps]
    tls: {{self_signed: true}}
domains:
  backup.test:
    mailbox_host: mx9
    mx: [{{host: mx9, priority: 10}}, {{host: mx1, priority: 20}}]
    users:
      dora: {{password_hash: "{bob_hash}"}}
    aliases: {{postmaster: dora}}
  example.test:
    mailbox_host: mx1
    mx: [{{host: mx1, priority: 10}}]
    users:
      alice:
        password_hash: "{alice_hash}"
        aliases: [a.smith]
        quota: {alice_quota}
      bob:
        password_hash: "{bob_hash}"
    aliases:
      postmaster: alice
      team: [alice, bob, carol@elsewhere.example]
    catch_all: null
{extra}
"""


def free_ports(n: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


@dataclass
class MailServer:
    root: Path
    ports: dict[str, int]
    ca: trustme.CA
    proc: subprocess.Popen | None = None
    log_path: Path = field(default_factory=Path)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "etc" / "runtime.toml"

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def maildir(self, user: str, domain: str = "example.test") -> Path:
        return self.data / "mail" / domain / user

    def messages(self, user: str, domain: str = "example.test") -> list[bytes]:
        """Every message, in the order it was delivered (file names sort by it only to
        the second: their microseconds are not zero-padded)."""
        box = self.maildir(user, domain)
        files = [*(box / "new").glob("*"), *(box / "cur").glob("*")]
        files.sort(key=lambda f: (f.stat().st_mtime_ns, f.name))
        return [f.read_bytes() for f in files]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        handle = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailops", "serve", "--config", str(self.config)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mailops serve exited early:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.ports["submission"]), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mailops serve did not start:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@contextlib.contextmanager
def mail_server(
    root: Path, *, alice_quota: str = "null", extra: str = "", resolver: str | None = None
) -> Iterator[MailServer]:
    """`resolver` is the DNS server delivery asks; by default a loopback port where
    nothing answers, so queued mail stays queued (deferred) and no test ever asks
    the machine's own resolver about its made-up domains."""
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("mx1.example.test", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(root / "server.pem"))
    cert.private_key_pem.write_to_path(str(root / "server.key"))
    *service_ports, dead_port = free_ports(len(SERVICES) + 1)
    ports = dict(zip(SERVICES, service_ports, strict=True))
    port_text = "{" + ", ".join(f"{k}: {v}" for k, v in ports.items()) + "}"
    # Fixed salts: the same hash every run (the runtime verifies; render keeps it as is).
    spec = SPEC.format(
        ports=port_text,
        cert=root / "server.pem",
        key=root / "server.key",
        alice_hash=hash_password("alice-pw", b"alicesaltalicesa"),
        bob_hash=hash_password("bob-pw", b"bobsaltbobsalt!!"),
        alice_quota=alice_quota,
        extra=extra,
        resolver=resolver or f"127.0.0.1:{dead_port}",
    )
    (root / "spec.yaml").write_text(spec)
    loaded = load_spec(root / "spec.yaml")
    render_host(loaded, "mx1").write(root / "etc")
    server = MailServer(root, ports, ca, log_path=root / "serve.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
