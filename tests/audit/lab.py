"""A small mail service deployed for real, to audit: two hosts, two domains.

- mx1.alpha.test: `connection: local`, certificate from a test CA (trustme);
  mailboxes of alpha.test.
- mx2.beta.test: over SSH to a private sshd (tests/deploy/sshd.py),
  `tls: self_signed`; mailboxes of beta.test and backup MX of alpha.test.
- NSD serves alpha.test and beta.test as `mailops dns` writes them; the
  runtimes resolve through it too.

Both are deployed by deploy's own `apply` (files, service start, verification).
The one shortcut: the runtime's release folder is made beforehand as a venv
that sees this interpreter's packages, marked with the current build — so apply
finds the runtime installed and skips the wheel upload and pip install, which
take a minute. Each host listens on its own random address 127.X.Y.2/3 with
the standard ports, so parallel test runs do not collide.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import trustme

from mailops.audit.context import AuditOptions
from mailops.audit.run import AuditResult, run_audit
from mailops.deploy import wheels
from mailops.deploy.agent.install import MARKER
from mailops.passwords import hash_password
from mailops.render import dkim, dns_output
from mailops.render.dns import DnsSet, Record, ZoneRecords, build_dns
from mailops.spec.load import LoadedSpec, load_spec
from tests.deploy.helpers import apply
from tests.deploy.sshd import SshServer, ssh_servers
from tests.integration.dnsserver import DnsServer, nsd_server

PASSWORDS = {"alice@alpha.test": "alice-pw", "bob@beta.test": "bob-pw"}
SERIAL = dns_output.next_serial(None, dt.date(2026, 1, 1))

SPEC = """\
version: 1
defaults:
  ssh: {{known_hosts: known_hosts}}
hosts:
  mx1:
    fqdn: mx1.alpha.test
    ipv4: {a1}
    connection: local
    service: process
    listen: ["{a1}"]
    tls: {{cert: {root}/tls/mx1.pem, key: {root}/tls/mx1.key}}
    paths: {{config: mx1/etc, data: mx1/data, install: {root}/install}}
    resolver: ["{resolver}"]
  mx2:
    fqdn: mx2.beta.test
    ipv4: {a2}
    ssh: {{address: 127.0.0.1, port: {ssh_port}, user: root, identity_file: {ssh_key}}}
    service: process
    listen: ["{a2}"]
    tls: {{self_signed: true}}
    paths: {{config: {root}/mx2/etc, data: {root}/mx2/data, install: {root}/install}}
    resolver: ["{resolver}"]
domains:
  alpha.test:
    mailbox_host: mx1
    mx: [{{host: mx1, priority: 10}}, {{host: mx2, priority: 20}}]
    users: {{alice: {alice}}}
    aliases: {{postmaster: alice}}
    dkim: {{selectors: [{{name: s1, algorithm: rsa-2048}}]}}
    dmarc: {{policy: reject, rua: ["mailto:postmaster@alpha.test"]}}
  beta.test:
    mailbox_host: mx2
    mx: [{{host: mx2, priority: 10}}]
    users: {{bob: {bob}}}
    aliases: {{postmaster: bob}}
    dkim: {{selectors: [{{name: b1, algorithm: ed25519}}]}}
dns:
  zones:
    alpha.test:
      managed: full
      ttl: 60
      nameservers: [ns.alpha.test]
      soa: {{minimum: 60}}
      extra_records:
        - {{name: ns, type: A, value: 127.0.0.1}}
    beta.test:
      managed: full
      ttl: 60
      nameservers: [ns.alpha.test]
      soa: {{minimum: 60}}
"""


def random_addresses() -> tuple[str, str]:
    """Two loopback addresses nobody else's test uses, with ports 25… free on them."""
    for _ in range(20):
        prefix = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
        pair = (f"{prefix}.2", f"{prefix}.3")
        if all(_free(a, 25) for a in pair):
            return pair
    raise RuntimeError("no free loopback address pair")


def _free(address: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


@dataclasses.dataclass
class Lab:
    root: Path
    spec_path: Path
    ca: trustme.CA
    dns: DnsServer
    ssh: SshServer
    addresses: dict[str, str]

    @property
    def loaded(self) -> LoadedSpec:
        return load_spec(self.spec_path)

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    def options(self, dns: DnsServer | None = None, resolver: DnsServer | None = None, **kw):
        """Audit options aimed at this lab: its NSD (or another one) as the
        authoritative server and the resolver, its CA trusted, short timeouts."""
        auth = dns or self.dns
        kw.setdefault("timeout", 3.0)
        kw.setdefault("attempts", 2)
        return AuditOptions(
            resolver=(resolver or auth).address,
            authoritative=[auth.address],
            ca_file=self.ca_file,
            **kw,
        )

    def audit(self, **kw) -> AuditResult:
        return run_audit(self.loaded, self.options(**kw))

    # ------------------------------------------------------------ DNS

    def dnsset(self) -> DnsSet:
        loaded = self.loaded
        keys, _ = dkim.ensure_keys(loaded.spec, dkim.key_dir_for(loaded.base_dir))
        return build_dns(loaded.spec, dkim.dkim_records(keys))

    def zones(self) -> dict[str, ZoneRecords]:
        return {z.name: z for z in self.dnsset().zones}

    # ------------------------------------------------------------ hosts

    def data(self, host_id: str) -> Path:
        return self.root / host_id / "data"

    def etc(self, host_id: str) -> Path:
        return self.root / host_id / "etc"

    def pid(self, host_id: str) -> int:
        return int((self.data(host_id) / "mailops.pid").read_text().split()[0])

    def reload(self, host_id: str) -> None:
        """SIGHUP, then wait for the runtime to say it reloaded (its status file)."""
        status = self.data(host_id) / "runtime-status.json"
        before = json.loads(status.read_text())["at"]
        os.kill(self.pid(host_id), signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = json.loads(status.read_text())
            if data.get("at", 0) > before or data.get("refused_at", 0) > before:
                assert "refused" not in data or data["refused_at"] < before, data["refused"]
                return
            time.sleep(0.02)
        raise AssertionError(f"{host_id} did not reload")

    def stop(self, host_id: str) -> None:
        stop_runtime(self.data(host_id) / "mailops.pid")

    def redeploy(self) -> None:
        """apply again: restores hand-edited files and starts stopped runtimes."""
        outcomes = apply(self.spec_path, verify_timeout=30)
        bad = [o for o in outcomes if o.status not in ("applied", "in sync")]
        assert not bad, [o.as_dict() for o in bad]


def zone_texts(zones: dict[str, ZoneRecords], serial: int = SERIAL) -> dict[str, str]:
    return {name: dns_output.zone_text(zone, serial) for name, zone in zones.items()}


def with_records(
    zones: dict[str, ZoneRecords], zone: str, drop=lambda r: False, add: tuple[Record, ...] = ()
) -> dict[str, ZoneRecords]:
    """A copy of the zones with one zone's records changed (a deliberate fault)."""
    changed = dict(zones)
    records = tuple(r for r in zones[zone].records if not drop(r)) + tuple(add)
    changed[zone] = dataclasses.replace(zones[zone], records=records)
    return changed


def stop_runtime(pid_file: Path, timeout: float = 20.0) -> None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            if _zombie(pid):
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def fake_release(install: Path) -> None:
    """The current build's release folder, as if apply had installed it: a venv
    over this interpreter's packages (mailops included) with a `mailops` script."""
    release = install / "releases" / wheels.build_id()
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(release)],
        check=True,
    )
    script = release / "bin" / "mailops"
    script.write_text(
        f"#!{release}/bin/python\nimport sys\nfrom mailops.cli import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    (release / MARKER).write_text(json.dumps({"build": wheels.build_id()}) + "\n")


def _certificates(root: Path, ca: trustme.CA) -> None:
    (root / "tls").mkdir()
    cert = ca.issue_cert("mx1.alpha.test")
    cert.private_key_and_cert_chain_pem.write_to_path(str(root / "tls" / "mx1.pem"))
    cert.private_key_pem.write_to_path(str(root / "tls" / "mx1.key"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))


def expired_certificate(lab: Lab) -> tuple[bytes, bytes]:
    """(cert chain PEM, key PEM) for mx1 from the lab's CA, expired yesterday."""
    now = dt.datetime.now(dt.UTC)
    cert = lab.ca.issue_cert(
        "mx1.alpha.test",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    return cert.private_key_and_cert_chain_pem.bytes(), cert.private_key_pem.bytes()


def _user(name: str, address: str, hashed: bool) -> str:
    """A user's password as a secret reference (the end-to-end test can log in), or
    as a hash (cheaper to render: a reference is hashed with argon2 on every render)."""
    if hashed:
        stored = hash_password(PASSWORDS[address], address.encode()[:16].ljust(16, b"!"))
        return '{password_hash: "' + stored + '"}'
    return "{password: {file: secrets/" + name + "}}"


@contextlib.contextmanager
def lab(root: Path, hashed: bool = False) -> Iterator[Lab]:
    """`hashed`: users with password_hash instead of secret references."""
    a1, a2 = random_addresses()
    ca = trustme.CA()
    _certificates(root, ca)
    (root / "secrets").mkdir()
    (root / "secrets" / "alice").write_text(PASSWORDS["alice@alpha.test"] + "\n")
    (root / "secrets" / "bob").write_text(PASSWORDS["bob@beta.test"] + "\n")
    fake_release(root / "install")
    spec_path = root / "spec.yaml"
    with contextlib.ExitStack() as stack:
        (server,) = stack.enter_context(ssh_servers(1, root / "ssh"))
        (root / "known_hosts").write_text(server.known_hosts_line())
        fields = dict(
            a1=a1,
            a2=a2,
            root=root,
            ssh_port=server.port,
            ssh_key=server.user_key,
            alice=_user("alice", "alice@alpha.test", hashed),
            bob=_user("bob", "bob@beta.test", hashed),
        )
        spec_path.write_text(SPEC.format(resolver="127.0.0.1:1", **fields))
        placeholder = Lab(root, spec_path, ca, None, server, {"mx1": a1, "mx2": a2})  # type: ignore[arg-type]
        zones = placeholder.zones()
        dns = stack.enter_context(nsd_server(zone_texts(zones), root / "nsd"))
        spec_path.write_text(SPEC.format(resolver=dns.address, **fields))
        the_lab = dataclasses.replace(placeholder, dns=dns)
        stack.callback(_stop_all, root)
        the_lab.redeploy()
        yield the_lab


def _stop_all(root: Path) -> None:
    for pid_file in root.glob("*/data/mailops.pid"):
        stop_runtime(pid_file)
