"""Failure injection over real SSH: a verification that fails, a connection
dropped mid-apply, unknown and changed host keys, a host without a usable
Python, a host already being applied to. Each host ends on its old or its
new files, never between."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from mailops.deploy import wheels
from mailops.deploy.facts import facts_request
from mailops.deploy.session import AgentSession
from mailops.deploy.targets import make_target
from mailops.spec.load import load_spec
from tests.deploy import specs
from tests.deploy.helpers import (
    apply,
    arrived,
    banner,
    by_host,
    contents,
    plan,
    send,
    tmp_files,
)
from tests.deploy.sshd import keygen, ssh_servers

pytestmark = pytest.mark.integration


def one_host_spec(root: Path, install: Path, server, ports=None, passwords=None, known=True):
    known_hosts = root / "known_hosts"
    if known is True:
        known_hosts.write_text(server.known_hosts_line())
    return specs.write_spec(
        root / "spec.yaml",
        specs.host_block("h", root, install, server, ports),
        specs.domain_block("h", passwords),
        known_hosts,
    )


def test_failed_verification_restores_the_old_files_and_runtime(install, tmp_path):
    ports = dict(zip(specs.SERVICES, specs.free_ports(len(specs.SERVICES)), strict=True))
    with ssh_servers(1, tmp_path / "ssh") as (server,):
        spec = one_host_spec(tmp_path, install, server, ports)
        assert apply(spec)[0].status == "applied"
        before = contents(tmp_path / "h" / "etc")
        # The new SMTP port is taken: the restarted runtime cannot listen.
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        try:
            moved = dict(ports, smtp=blocker.getsockname()[1])
            one_host_spec(tmp_path, install, server, moved)
            (outcome,) = apply(spec, verify_timeout=20)
        finally:
            blocker.close()
        assert outcome.status == "rolled back", outcome.message
        assert outcome.plan.handler == "restart"
        assert "previous configuration is serving again" in outcome.message
        assert "Address already in use" in outcome.message
        after = contents(tmp_path / "h" / "etc")
        assert {k: v for k, v in after.items() if "manifest" not in k} == {
            k: v for k, v in before.items() if "manifest" not in k
        }
        assert "h.deploy.test" in banner(ports["smtp"])  # the old runtime answers
        send(ports["smtp"], "bob@h.test", "after rollback")
        assert arrived(tmp_path / "h" / "data", "bob@h.test", "after rollback")
        backups = list((tmp_path / "h" / "data" / "backups").iterdir())
        assert backups and not tmp_files(tmp_path)


def _cut_transaction(monkeypatch, server, fraction: float) -> None:
    """Drop the connection after `fraction` of the transaction request is sent."""
    original = AgentSession._send

    def send(self, data: bytes) -> None:
        if b'"op":"transaction"' not in data:
            return original(self, data)
        cut = int(len(data) * fraction)
        original(self, data[:cut])
        time.sleep(0.3)  # let it reach the host before the network goes
        server.kill_connections()
        original(self, data[cut:])

    monkeypatch.setattr(AgentSession, "_send", send)


@pytest.mark.parametrize("fraction", [0.5, 1.0], ids=["mid-request", "after-request"])
def test_dropped_connection_then_next_apply_converges(install, tmp_path, monkeypatch, fraction):
    """Cut mid-request: the host never acts on half a request. Cut after it: the
    host finishes the transaction alone (a restart here, which takes a while).
    Either way the files are old or new, no temp file stays, the next apply
    converges and mail flows."""
    ports = dict(zip(specs.SERVICES, specs.free_ports(len(specs.SERVICES)), strict=True))
    with ssh_servers(1, tmp_path / "ssh") as (server,):
        spec = one_host_spec(tmp_path, install, server, ports)
        apply(spec)
        old = contents(tmp_path / "h" / "etc")
        moved = dict(ports, pop3=specs.free_ports(1)[0])  # a listener moves: restart
        one_host_spec(tmp_path, install, server, moved, passwords={"carol": "carol-pw"})
        desired = {d.rel: d for d in make_target(load_spec(spec), "h").desired}
        _cut_transaction(monkeypatch, server, fraction)
        (cut,) = apply(spec)
        monkeypatch.undo()
        assert cut.status == "error" and "connection was lost" in cut.message
        etc = tmp_path / "h" / "etc"
        status = tmp_path / "h" / "data" / "runtime-status.json"
        if fraction == 1.0:  # wait for the host to finish on its own
            deadline = time.monotonic() + 30
            while desired["passwd"].sha256 not in status.read_text():
                assert time.monotonic() < deadline
                time.sleep(0.1)
        now = contents(etc)
        for rel in ("passwd", "runtime.toml"):
            path = desired[rel].path
            assert now[path] == (desired[rel].data if fraction == 1.0 else old[path])
        assert not tmp_files(tmp_path / "h")
        server.start()  # the network is back
        (again,) = apply(spec)
        assert again.status == ("in sync" if fraction == 1.0 else "applied"), again.message
        assert plan(spec)[0].plan.empty
        assert contents(etc)[desired["passwd"].path] == desired["passwd"].data
        send(ports["smtp"], "carol@h.test", "converged")
        assert arrived(tmp_path / "h" / "data", "carol@h.test", "converged")


def test_unknown_host_key_is_refused_and_nothing_is_written(install, tmp_path):
    with ssh_servers(1, tmp_path / "ssh") as (server,):
        spec = one_host_spec(tmp_path, install, server, known=False)
        (outcome,) = apply(spec)
        assert outcome.status == "error"
        assert "unknown SSH host key" in outcome.message and "SHA256:" in outcome.message
        assert f"mailops trust {spec} h" in outcome.message
        assert not (tmp_path / "h").exists()
        # Opting in records the key; from then on it is known.
        (planned,) = plan(spec, accept_new_host_keys=True)
        assert planned.status == "changes"
        assert (tmp_path / "known_hosts").read_text() == server.known_hosts_line()
        assert plan(spec)[0].status == "changes"


def test_changed_host_key_is_refused_even_when_accepting_new_keys(install, tmp_path):
    with ssh_servers(1, tmp_path / "ssh") as (server,):
        other = keygen(tmp_path / "other_key")
        kind, key = Path(f"{other}.pub").read_text().split()[:2]
        spec = one_host_spec(tmp_path, install, server, known=False)
        (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{server.port} {kind} {key}\n")
        for accept in (False, True):
            (outcome,) = apply(spec, accept_new_host_keys=accept)
            assert outcome.status == "error"
            assert "HOST KEY CHANGED" in outcome.message
        assert not (tmp_path / "h").exists()
        assert (tmp_path / "known_hosts").read_text().count("\n") == 1


OLD_PYTHON = """#!/bin/sh
# The host's real python3, made to report 3.9 (as an old distribution's would).
exec /usr/bin/python3 -S -c "import sys; sys.version_info = (3, 9, 2, 'final', 0); \\
exec(sys.argv[1])" "$3"
"""


def test_host_without_python_311_fails_alone(install, tmp_path):
    fake = tmp_path / "oldpy"
    fake.mkdir()
    (fake / "python3").write_text(OLD_PYTHON)
    (fake / "python3").chmod(0o755)
    with (
        ssh_servers(1, tmp_path / "ssh-ok") as (good,),
        ssh_servers(1, tmp_path / "ssh-old", env={"PATH": f"{fake}:/bin"}) as (old,),
        ssh_servers(1, tmp_path / "ssh-none", env={"PATH": "/nonexistent"}) as (none,),
    ):
        known = tmp_path / "known_hosts"
        known.write_text("".join(s.known_hosts_line() for s in (good, old, none)))
        hosts = "".join(
            specs.host_block(h, tmp_path, install, s, services=("smtp", "pop3"))
            for h, s in (("good", good), ("old", old), ("none", none))
        )
        domains = "".join(specs.domain_block(h) for h in ("good", "old", "none"))
        spec = specs.write_spec(tmp_path / "spec.yaml", hosts, domains, known)
        outcomes = by_host(apply(spec))
        assert outcomes["good"].status == "applied", outcomes["good"].message
        assert outcomes["old"].status == "error"
        assert "python3 is 3.9.2; mailops needs Python ≥ 3.11" in outcomes["old"].message
        assert outcomes["none"].status == "error"
        assert "python3 not found" in outcomes["none"].message
        assert not (tmp_path / "old").exists() and not (tmp_path / "none").exists()


def test_a_host_being_applied_to_is_refused(install, tmp_path):
    with ssh_servers(1, tmp_path / "ssh") as (server,):
        spec = one_host_spec(tmp_path, install, server)
        target = make_target(load_spec(spec), "h")
        holder = AgentSession(target.connect(), "root", False)
        try:
            holder.call(
                "facts", facts_request(target.layout, target.desired, wheels.build_id(), True)
            )
            (outcome,) = apply(spec)
            assert outcome.status == "error"
            assert "another apply is running on this host (pid" in outcome.message
            assert not (tmp_path / "h" / "etc" / "passwd").exists()
        finally:
            holder.close()
        (outcome,) = apply(spec, check=True)  # the lock went with the session
        assert outcome.status == "changes"
        assert not (tmp_path / "h" / "data" / "mailops.pid").exists()
