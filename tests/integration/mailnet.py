"""A small mail internet on loopback, for the delivery tests: several `mailops
serve` processes, each owning port 25 (and 587) on its own address 127.0.0.N,
and a real NSD serving the zone `mailops dns` makes from the same spec.

    with mail_net(tmp_path) as net:
        net.submit("a", "alice@alpha.lab.test", "alice-pw", ["bob@beta.lab.test"], msg)
        net.wait_for(lambda: net["b"].messages("bob", "beta.lab.test"))

Hosts (spec below): a = mail.alpha.lab.test 127.0.0.2 (alpha, gamma → relay smart),
b = mx1.beta.lab.test 127.0.0.3 (beta, delta), b2 = mx2.beta.lab.test 127.0.0.4 (backup
MX of beta), smart = smart.relay.lab.test 127.0.0.5 (a smarthost from a second spec:
the relay's owner is somebody else). Nothing listens on 127.0.0.9/10 (dead MX hosts);
127.0.0.6 is kept for a Postfix peer and 127.0.0.8 for the MTA-STS policy server.
Every runtime has a certificate from one test CA, which each trusts (delivery.ca_file).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.resolver
import trustme

from mailops.passwords import hash_password
from mailops.render import dkim, dns_output
from mailops.render.dns import build_dns
from mailops.render.host import render_host
from mailops.spec.load import load_spec
from tests.integration.dnsserver import DnsServer, nsd_server

PASSWORDS = {
    "alice@alpha.lab.test": "alice-pw",
    "carol@gamma.lab.test": "carol-pw",
    "bob@beta.lab.test": "bob-pw",
    "dave@delta.lab.test": "dave-pw",
    "erin@nomx.lab.test": "erin-pw",
}
ADDRESSES = {"a": "127.0.0.2", "b": "127.0.0.3", "b2": "127.0.0.4", "smart": "127.0.0.5"}
POSTFIX_ADDRESS = "127.0.0.6"
STS_ADDRESS = "127.0.0.8"

# Delivery settings that make a test's minutes into seconds.
FAST = """
[queue]
lifetime = {lifetime}
delay_warning = {delay_warning}

[delivery]
retry_base = 0.5
retry_max = 1.0
connect_timeout = 3.0
command_timeout = 20.0
ca_file = "{ca}"
"""


def _hash(address: str) -> str:
    return hash_password(PASSWORDS[address], address.encode()[:16].ljust(16, b"!"))


def _host(hid: str, fqdn: str, services: str) -> str:
    address = ADDRESSES[hid]
    return f"""\
  {hid}:
    fqdn: {fqdn}
    ipv4: {address}
    connection: local
    service: process
    services: {services}
    listen: ["{address}"]
    tls: {{cert: "{{tls}}/{hid}.pem", key: "{{tls}}/{hid}.key"}}
    paths: {{config: {hid}/etc, data: {hid}/data, install: venv}}
    resolver: ["{{resolver}}"]
"""


SPEC = (
    "version: 1\nhosts:\n"
    + _host("a", "mail.alpha.lab.test", "[smtp, submission, imap]")
    + _host("b", "mx1.beta.lab.test", "[smtp, submission, imap]")
    + _host("b2", "mx2.beta.lab.test", "[smtp]")
    + f"""\
relays:
  smart:
    host: smart.relay.lab.test
    port: 587
    tls: starttls
    username: carol@gamma.lab.test
    password: {{file: relay.pw}}
domains:
  alpha.lab.test:
    mailbox_host: a
    mx: [{{host: a, priority: 10}}]
    users: {{alice: {{password_hash: "{_hash("alice@alpha.lab.test")}"}}}}
    aliases: {{postmaster: alice}}
    dkim: {{selectors: [{{name: s1, algorithm: rsa-2048}}]}}
  gamma.lab.test:
    mailbox_host: a
    mx: [{{host: a, priority: 10}}]
    outbound: {{relay: smart}}
    users: {{carol: {{password_hash: "{_hash("carol@gamma.lab.test")}"}}}}
    aliases: {{postmaster: carol}}
  beta.lab.test:
    mailbox_host: b
    mx: [{{host: b, priority: 10}}, {{host: b2, priority: 20}}]
    users: {{bob: {{password_hash: "{_hash("bob@beta.lab.test")}"}}}}
    aliases: {{postmaster: bob}}
    mta_sts: {{mode: enforce, max_age: 86400}}
  delta.lab.test:
    mailbox_host: b
    mx: [{{name: dead.delta.lab.test, priority: 10}}, {{host: b, priority: 20}}]
    users: {{dave: {{password_hash: "{_hash("dave@delta.lab.test")}"}}}}
    aliases: {{postmaster: dave}}
dns:
  zones:
    lab.test:
      managed: full
      ttl: 60
      nameservers: [ns.lab.test]
      soa: {{minimum: 60}}
      extra_records:
        - {{name: ns, type: A, value: 127.0.0.1}}
        - {{name: "null", type: MX, value: "0 ."}}
        - {{name: down, type: MX, value: "10 dead1.down.lab.test."}}
        - {{name: down, type: MX, value: "20 dead2.down.lab.test."}}
        - {{name: dead1.down, type: A, value: 127.0.0.9}}
        - {{name: dead2.down, type: A, value: 127.0.0.10}}
        - {{name: dead.delta, type: A, value: 127.0.0.9}}
        - {{name: nomx, type: A, value: {ADDRESSES["smart"]}}}
        - {{name: smart.relay, type: A, value: {ADDRESSES["smart"]}}}
        - {{name: mta-sts.beta, type: A, value: {STS_ADDRESS}}}
        - {{name: pf, type: A, value: {POSTFIX_ADDRESS}}}
"""
)

# The smarthost belongs to someone else: its own spec. carol@gamma.lab.test is the
# account mail.alpha.lab.test logs in as; erin@nomx.lab.test a user of a domain with
# no MX (its A record points here).
SMART_SPEC = (
    "version: 1\nhosts:\n"
    + _host("smart", "smart.relay.lab.test", "[smtp, submission, imap]")
    + f"""\
domains:
  gamma.lab.test:
    mailbox_host: smart
    mx: [{{host: smart, priority: 10}}]
    users: {{carol: {{password_hash: "{_hash("carol@gamma.lab.test")}"}}}}
    aliases: {{postmaster: carol}}
  nomx.lab.test:
    mailbox_host: smart
    mx: [{{host: smart, priority: 10}}]
    users: {{erin: {{password_hash: "{_hash("erin@nomx.lab.test")}"}}}}
    aliases: {{postmaster: erin}}
"""
)


@dataclass
class Runtime:
    hid: str
    address: str
    root: Path
    proc: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.root / self.hid / "etc" / "runtime.toml"

    @property
    def data(self) -> Path:
        return self.root / self.hid / "data"

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.hid}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def messages(self, user: str, domain: str) -> list[bytes]:
        box = self.data / "mail" / domain / user
        files = sorted((box / "new").glob("*")) + sorted((box / "cur").glob("*"))
        return [f.read_bytes() for f in files]

    def start(self) -> None:
        handle = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailops", "serve", "--config", str(self.config)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        handle.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.hid} exited early:\n{self.log()}")
            if "event=delivery.started" in self.log():
                with contextlib.suppress(OSError), socket.create_connection((self.address, 25), 1):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.hid} did not start:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "mailops", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=30,
        )


@dataclass
class MailNet:
    root: Path
    ca: trustme.CA
    dns: DnsServer
    runtimes: dict[str, Runtime] = field(default_factory=dict)
    policy: str = ""

    def __getitem__(self, hid: str) -> Runtime:
        return self.runtimes[hid]

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def submit(self, hid: str, user: str, to: list[str], message: bytes) -> None:
        """Send as `user` through host `hid`'s submission port (STARTTLS, AUTH)."""
        with smtplib.SMTP(self.runtimes[hid].address, 587, timeout=20) as client:
            client.starttls(context=self.client_context())
            client.login(user, PASSWORDS[user])
            assert client.sendmail(user, to, message) == {}

    def resolver(self) -> dns.resolver.Resolver:
        return self.dns.resolver()


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def _zones(root: Path) -> tuple[dict[str, str], str]:
    """Zone files as `mailops dns` writes them, and beta's MTA-STS policy file."""
    loaded = load_spec(root / "spec.yaml")
    keys, _ = dkim.ensure_keys(loaded.spec, dkim.key_dir_for(root))
    dnsset = build_dns(loaded.spec, dkim.dkim_records(keys))
    serial = dns_output.next_serial(None, dt.date(2026, 1, 1))
    zones = {z.name: dns_output.zone_text(z, serial) for z in dnsset.zones}
    policy = next(f.mta_sts for f in dnsset.files if f.domain == "beta.lab.test")
    return zones, policy or ""


def _certificates(root: Path, ca: trustme.CA) -> None:
    (root / "tls").mkdir()
    names = {
        "a": ["mail.alpha.lab.test"],
        "b": ["mx1.beta.lab.test"],
        "b2": ["mx2.beta.lab.test"],
        "smart": ["smart.relay.lab.test"],
    }
    for hid, hostnames in names.items():
        cert = ca.issue_cert(*hostnames, ADDRESSES[hid])
        cert.private_key_and_cert_chain_pem.write_to_path(str(root / "tls" / f"{hid}.pem"))
        cert.private_key_pem.write_to_path(str(root / "tls" / f"{hid}.key"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))


def _render(root: Path, spec_text: str, hosts: list[str], fast: str) -> dict[str, Runtime]:
    (root / "spec.yaml").write_text(spec_text.replace("{tls}", str(root / "tls")))
    loaded = load_spec(root / "spec.yaml")
    runtimes = {}
    for hid in hosts:
        render_host(loaded, hid).write(root / hid / "etc")
        config = root / hid / "etc" / "runtime.toml"
        config.write_text(config.read_text() + fast)
        runtimes[hid] = Runtime(hid, ADDRESSES[hid], root)
    return runtimes


@contextlib.contextmanager
def policy_server(root: Path, ca: trustme.CA, policy: str) -> Iterator[None]:
    """https://mta-sts.beta.lab.test/.well-known/mta-sts.txt on 127.0.0.8:443."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server calls
            found = self.path == "/.well-known/mta-sts.txt"
            body = policy.encode() if found else b"not found\n"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    cert = ca.issue_cert("mta-sts.beta.lab.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server = http.server.ThreadingHTTPServer((STS_ADDRESS, 443), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def mail_net(root: Path, *, lifetime: int = 6, delay_warning: int = 2) -> Iterator[MailNet]:
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    _certificates(root, ca)
    (root / "relay.pw").write_text(PASSWORDS["carol@gamma.lab.test"] + "\n")
    fast = FAST.format(lifetime=lifetime, delay_warning=delay_warning, ca=root / "ca.pem")
    (root / "spec.yaml").write_text(
        SPEC.replace("{resolver}", "127.0.0.1:1").replace("{tls}", str(root / "tls"))
    )
    zones, policy = _zones(root)
    with nsd_server(zones, root / "nsd") as server:
        resolver = server.address
        runtimes = _render(root, SPEC.replace("{resolver}", resolver), ["a", "b", "b2"], fast)
        smart_root = root / "smart-spec"
        smart_root.mkdir()
        for name in ("tls",):
            (smart_root / name).symlink_to(root / name)
        smart = _render(smart_root, SMART_SPEC.replace("{resolver}", resolver), ["smart"], fast)
        runtimes |= smart
        net = MailNet(root, ca, server, runtimes, policy)
        with policy_server(root, ca, policy):
            try:
                for runtime in runtimes.values():
                    runtime.start()
                yield net
            finally:
                for runtime in runtimes.values():
                    runtime.stop()
