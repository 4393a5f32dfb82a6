"""apply over real SSH (private sshd processes on loopback): install, serve,
no-op, a password change, several hosts in parallel."""

from __future__ import annotations

import json
import subprocess

import pytest

from mailops.deploy import wheels
from tests.deploy import specs
from tests.deploy.helpers import (
    apply,
    arrived,
    by_host,
    login_works,
    mtimes,
    plan,
    runtime_pid,
    send,
)
from tests.deploy.sshd import ssh_servers

pytestmark = pytest.mark.integration


def test_first_apply_installs_the_runtime_and_serves_mail(first_apply):
    outcome = first_apply.outcome
    assert outcome.status == "applied", outcome.message
    assert outcome.plan.install is not None and outcome.plan.handler == "start"
    release = first_apply.install / "releases" / wheels.build_id()
    assert json.loads((release / "mailops-build.json").read_text())["build"] == wheels.build_id()
    assert (first_apply.install / "current").resolve() == release.resolve()
    version = subprocess.run(
        [first_apply.install / "current" / "bin" / "mailops", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.startswith("mailops ")
    data = first_apply.root / "seed" / "data"
    status = json.loads((data / "runtime-status.json").read_text())
    assert status["prefix"].endswith(wheels.build_id())
    assert len(status["listening"]) == len(specs.SERVICES)
    smtp = outcome.plan.layout.listeners[0][2]
    send(smtp, "bob@seed.test", "first")
    assert arrived(data, "bob@seed.test", "first")
    # Secrets keep the bundle's modes on the host; nobody else reads them.
    etc = first_apply.root / "seed" / "etc"
    assert (etc / "passwd").stat().st_mode & 0o777 == 0o640
    assert (etc / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600


def test_three_hosts_in_parallel_then_noop_then_one_password(install, tmp_path):
    with ssh_servers(3, tmp_path / "ssh") as servers:
        known = tmp_path / "known_hosts"
        known.write_text("".join(s.known_hosts_line() for s in servers))
        ids = ["h0", "h1", "h2"]
        hosts = "".join(
            specs.host_block(h, tmp_path, install, s) for h, s in zip(ids, servers, strict=True)
        )
        domains = "".join(specs.domain_block(h) for h in ids)
        spec = specs.write_spec(tmp_path / "spec.yaml", hosts, domains, known)

        outcomes = by_host(apply(spec))
        assert {h: o.status for h, o in outcomes.items()} == dict.fromkeys(ids, "applied"), [
            o.message for o in outcomes.values()
        ]
        assert all(o.plan.install is None for o in outcomes.values())  # shared, current
        smtp = {h: o.plan.layout.listeners[0][2] for h, o in outcomes.items()}
        for h in ids:
            send(smtp[h], f"bob@{h}.test", f"to {h}")
        for h in ids:
            assert arrived(tmp_path / h / "data", f"bob@{h}.test", f"to {h}")

        # Again: nothing to do, nothing touched, no handler.
        before = {h: mtimes(tmp_path / h) for h in ids}
        pids = {h: runtime_pid(tmp_path / h / "data") for h in ids}
        again = by_host(apply(spec))
        assert {h: o.status for h, o in again.items()} == dict.fromkeys(ids, "in sync")
        assert all(o.plan.empty and o.plan.handler is None for o in again.values())
        assert {h: mtimes(tmp_path / h) for h in ids} == before
        assert {h: runtime_pid(tmp_path / h / "data") for h in ids} == pids

        # One password changes: only h1's passwd, and only a reload.
        domains = "".join(
            specs.domain_block(h, {"alice": "new-pw"} if h == "h1" else None) for h in ids
        )
        specs.write_spec(tmp_path / "spec.yaml", hosts, domains, known)
        planned = by_host(plan(spec))
        h1 = planned["h1"].plan
        assert [(c.action, c.rel) for c in h1.changes] == [("update", "passwd")]
        assert h1.changes[0].summary == ["alice@h1.test: password changed"]
        assert "ARGON2" not in json.dumps(h1.as_dict())  # no hash in the plan
        assert planned["h0"].plan.empty and planned["h2"].plan.empty

        changed = by_host(apply(spec))
        assert changed["h1"].status == "applied" and changed["h1"].plan.handler == "reload"
        assert changed["h0"].status == changed["h2"].status == "in sync"
        after = {h: mtimes(tmp_path / h) for h in ids}
        assert after["h0"] == before["h0"] and after["h2"] == before["h2"]
        differ = {p for p in after["h1"] if after["h1"][p] != before["h1"].get(p)}
        passwd = str(tmp_path / "h1" / "etc" / "passwd")
        status = str(tmp_path / "h1" / "data" / "runtime-status.json")
        assert differ == {passwd, status}  # status: the runtime's report of its reload
        assert runtime_pid(tmp_path / "h1" / "data") == pids["h1"]  # reloaded, not restarted
        submission = changed["h1"].plan.layout.listeners[1][2]
        assert login_works(submission, "alice@h1.test", "new-pw")
        assert not login_works(submission, "alice@h1.test", "alice-pw")
