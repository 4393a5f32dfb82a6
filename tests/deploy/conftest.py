"""The runtime is installed once per test session, by a real first apply over
SSH (test_first_apply checks it); every other test's hosts share that install
folder, so they find the runtime current and skip the install."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailops.deploy.executor import Outcome
from tests.deploy import specs
from tests.deploy.helpers import apply
from tests.deploy.sshd import SshServer, ssh_servers, sshd_available


@dataclass
class FirstApply:
    root: Path
    install: Path
    spec: Path
    server: SshServer
    outcome: Outcome
    seconds: float


@pytest.fixture(scope="session")
def first_apply(tmp_path_factory) -> FirstApply:
    if not sshd_available():
        pytest.skip("needs OpenSSH's sshd and root (scripts/test.sh installs openssh-server)")
    root = tmp_path_factory.mktemp("deploy-seed")
    install = root / "opt"
    with ssh_servers(1, root / "ssh") as (server,):
        known = root / "known_hosts"
        known.write_text(server.known_hosts_line())
        spec = specs.write_spec(
            root / "spec.yaml",
            specs.host_block("seed", root, install, server),
            specs.domain_block("seed"),
            known,
        )
        started = time.monotonic()
        (outcome,) = apply(spec, verify_timeout=120)
        yield FirstApply(root, install, spec, server, outcome, time.monotonic() - started)


@pytest.fixture
def install(first_apply) -> Path:
    assert first_apply.outcome.status == "applied", first_apply.outcome.message
    return first_apply.install
