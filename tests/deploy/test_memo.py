"""The in-sync memo (deploy/memo.py) against a real sshd host: a second no-op
apply takes it, and every change that a plan would see makes it miss."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailops import entry, inputs
from mailops.deploy import memo, wheels
from tests.deploy import specs
from tests.deploy.helpers import mtimes
from tests.deploy.helpers import run_cli as run
from tests.deploy.sshd import SshServer, ssh_servers

pytestmark = pytest.mark.integration

IN_SYNC = "1 host(s) in sync; nothing to do"
REPO = Path(__file__).resolve().parents[2]
ALICE_PASSWORD = "alice-secret-one"
RELAY_PASSWORD = "relay-secret-one"


@dataclass
class Lab:
    spec: Path
    root: Path
    install: Path
    server: SshServer


def _spec_text(root: Path, install: Path, server: SshServer, relay_password: str) -> str:
    """One host whose render reads two secret files (a user's password and a relay's)."""
    host = specs.host_block("m", root, install, server)
    domain = (
        "  m.test:\n"
        "    mailbox_host: m\n"
        "    mx: [{host: m, priority: 10}]\n"
        "    outbound: {relay: provider}\n"
        "    users:\n"
        "      alice: {password: {file: alice.pw}}\n"
        f'      bob: {{password_hash: "{specs.password_hash("bob-pw")}"}}\n'
    )
    relays = (
        "relays:\n"
        "  provider: {host: relay.invalid, port: 587, tls: starttls, username: u,\n"
        f"             password: {relay_password}}}\n"
    )
    return (
        f"version: 1\ndefaults:\n  ssh: {{known_hosts: {root / 'known_hosts'}}}\n"
        f"hosts:\n{host}{relays}domains:\n{domain}"
    )


@pytest.fixture
def lab(install, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # The files here are written a moment before they are read: let them count
    # at once (test_a_file_changed_just_now_makes_no_memo tests the rule).
    monkeypatch.setattr(inputs, "RACY_NS", 0)
    with ssh_servers(1, tmp_path / "ssh") as (server,):
        (tmp_path / "known_hosts").write_text(server.known_hosts_line())
        (tmp_path / "alice.pw").write_text(ALICE_PASSWORD + "\n")
        (tmp_path / "relay.pw").write_text(RELAY_PASSWORD + "\n")
        spec = tmp_path / "spec.yaml"
        spec.write_text(_spec_text(tmp_path, install, server, "{file: relay.pw}"))
        yield Lab(spec, tmp_path, install, server)


def _env(lab: Lab) -> dict[str, str]:
    """For a mailops subprocess: this tree's code, the lab's cache."""
    return {
        "XDG_CACHE_HOME": str(lab.root / "cache"),
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
    }


def _in_sync_twice(capsys, monkeypatch, lab: Lab) -> None:
    """Apply, then apply again: the second finds the host in sync and notes it."""
    code, out, err = run(capsys, monkeypatch, "apply", str(lab.spec), "--yes")
    assert code == 0 and "applied" in out, out + err
    assert run(capsys, monkeypatch, "apply", str(lab.spec), "--yes")[:2] == (0, IN_SYNC + "\n")
    assert memo.memo_path(lab.spec, None).exists()


def test_a_second_noop_takes_the_memo_without_the_spec_model(lab, capsys, monkeypatch):
    _in_sync_twice(capsys, monkeypatch, lab)
    before = mtimes(lab.root / "m")
    probe = (
        "import sys\n"
        "from mailops import cli\n"
        f"sys.argv = ['mailops', 'apply', {str(lab.spec)!r}, '--yes']\n"
        "try:\n"
        "    cli.main()\n"
        "finally:\n"
        "    print(sorted(m for m in ('mailops.spec.model', 'pydantic') if m in sys.modules))\n"
    )
    env = _env(lab)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [IN_SYNC, "[]"]
    # The spec's warning shows as on the full path (the spec has no postmaster).
    assert "warning: domain m.test has no postmaster address" in result.stderr
    assert mtimes(lab.root / "m") == before
    # --full renders and plans all the same, and agrees.
    code, out, _ = run(capsys, monkeypatch, "apply", str(lab.spec), "--yes", "--full")
    assert (code, out.strip()) == (0, IN_SYNC)


def test_the_memo_keeps_no_secret(lab, capsys, monkeypatch):
    _in_sync_twice(capsys, monkeypatch, lab)
    text = memo.memo_path(lab.spec, None).read_bytes()
    assert memo.memo_path(lab.spec, None).stat().st_mode & 0o777 == 0o600
    for secret in (ALICE_PASSWORD, RELAY_PASSWORD):
        for form in (secret, secret + "\n"):
            assert form.encode() not in text
            assert hashlib.sha256(form.encode()).hexdigest().encode() not in text
    relay_file = (lab.root / "m" / "etc" / "relays" / "provider.password").read_bytes()
    assert hashlib.sha256(relay_file).hexdigest().encode() not in text
    passwd = (lab.root / "m" / "etc" / "passwd").read_bytes()
    assert hashlib.sha256(passwd).hexdigest().encode() not in text


def test_a_changed_secret_file_misses_and_is_applied(lab, capsys, monkeypatch):
    _in_sync_twice(capsys, monkeypatch, lab)
    # Same length, so only the file's times and inode tell: what stat signatures are for.
    (lab.root / "alice.pw").write_text(ALICE_PASSWORD.replace("one", "two") + "\n")
    assert memo.replay(lab.spec, None) is None
    code, out, _ = run(capsys, monkeypatch, "apply", str(lab.spec), "--yes")
    assert code == 0 and "alice@m.test: password changed" in out


def test_a_changed_spec_misses(lab, capsys, monkeypatch):
    _in_sync_twice(capsys, monkeypatch, lab)
    with lab.spec.open("a") as handle:
        handle.write("    aliases: {postmaster: bob}\n")
    assert memo.replay(lab.spec, None) is None
    code, out, _ = run(capsys, monkeypatch, "apply", str(lab.spec), "--yes")
    assert code == 0 and "aliases" in out


def test_drift_on_the_host_misses_and_is_repaired(lab, capsys, monkeypatch):
    _in_sync_twice(capsys, monkeypatch, lab)
    aliases = lab.root / "m" / "etc" / "aliases"
    good = aliases.read_bytes()
    aliases.write_bytes(good + b"# edited by hand\n")
    assert memo.replay(lab.spec, None) is None
    code, out, _ = run(capsys, monkeypatch, "apply", str(lab.spec), "--yes")
    assert code == 0 and "applied" in out
    assert aliases.read_bytes() == good


def test_another_build_misses(lab, capsys, monkeypatch):
    _in_sync_twice(capsys, monkeypatch, lab)
    assert memo.replay(lab.spec, None).hosts == 1
    monkeypatch.setattr(wheels, "build_id", lambda: "0123456789abcdef")
    assert memo.replay(lab.spec, None) is None


def test_a_host_key_no_longer_trusted_misses_and_the_full_path_refuses(lab, capsys, monkeypatch):
    _in_sync_twice(capsys, monkeypatch, lab)
    (lab.root / "known_hosts").write_text("")
    before = mtimes(lab.root / "m")
    assert memo.replay(lab.spec, None) is None
    code, out, err = run(capsys, monkeypatch, "apply", str(lab.spec), "--yes")
    assert code == 1 and "unknown SSH host key" in out + err
    assert mtimes(lab.root / "m") == before


def test_a_spec_that_reads_a_variable_makes_no_memo(lab, capsys, monkeypatch):
    monkeypatch.setenv("MEMO_TEST_RELAY", RELAY_PASSWORD)
    lab.spec.write_text(_spec_text(lab.root, lab.install, lab.server, "{env: MEMO_TEST_RELAY}"))
    code, out, err = run(capsys, monkeypatch, "apply", str(lab.spec), "--yes")
    assert code == 0, out + err
    assert run(capsys, monkeypatch, "apply", str(lab.spec), "--yes")[:2] == (0, IN_SYNC + "\n")
    assert not memo.memo_path(lab.spec, None).exists()
    # The variable changes: the full path sees it (there was no memo to miss).
    monkeypatch.setenv("MEMO_TEST_RELAY", "relay-secret-two")
    code, out, _ = run(capsys, monkeypatch, "apply", str(lab.spec), "--yes")
    assert code == 0 and "provider.password" in out


def test_a_file_changed_just_now_makes_no_memo(lab, capsys, monkeypatch):
    monkeypatch.setattr(inputs, "RACY_NS", 3_600 * 10**9)  # everything is "just now"
    code, _out, _ = run(capsys, monkeypatch, "apply", str(lab.spec), "--yes")
    assert code == 0
    assert run(capsys, monkeypatch, "apply", str(lab.spec), "--yes")[:2] == (0, IN_SYNC + "\n")
    assert not memo.memo_path(lab.spec, None).exists()


# ---------------------------------------------------------------- asked ahead (entry.py)


def test_only_plain_applies_are_asked_ahead():
    assert entry.plain_apply(["apply", "s.yaml"]) == "s.yaml"
    assert entry.plain_apply(["apply", "--yes", "s.yaml"]) == "s.yaml"
    assert entry.plain_apply(["apply", "s.yaml", "-y"]) == "s.yaml"
    for argv in (
        [],
        ["plan", "s.yaml"],
        ["apply"],
        ["apply", "s.yaml", "--full"],
        ["apply", "s.yaml", "--host", "mx1"],
        ["apply", "s.yaml", "--check"],
        ["apply", "a.yaml", "b.yaml"],
        ["apply", "--help"],
    ):
        assert entry.plain_apply(argv) is None, argv


def _mailops(lab: Lab, *args: str) -> subprocess.CompletedProcess:
    env = _env(lab)
    command = [sys.executable, "-m", "mailops", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=lab.root)


def _early(lab: Lab, asked_for: Path) -> str:
    """A child started for lab.spec; what the parent gets when it wants `asked_for`."""
    probe = (
        "from mailops import entry\n"
        f"entry._start({str(lab.spec)!r})\n"
        f"started, noted = entry.early_replay({str(asked_for)!r}, None)\n"
        "print(started, noted and noted.hosts)\n"
    )
    env = _env(lab)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_command_takes_the_answer_asked_ahead(lab, capsys, monkeypatch):
    _in_sync_twice(capsys, monkeypatch, lab)
    assert _early(lab, lab.spec) == "True 1"
    result = _mailops(lab, "apply", "spec.yaml", "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout == IN_SYNC + "\n"  # the child wrote nothing of its own
    assert result.stderr.count("no postmaster address") == 1


def test_an_answer_asked_ahead_for_another_spec_is_not_taken(lab, capsys, monkeypatch):
    _in_sync_twice(capsys, monkeypatch, lab)
    assert _early(lab, lab.root / "other.yaml") == "False None"


def test_drift_found_ahead_leaves_the_host_to_the_full_path(lab, capsys, monkeypatch):
    _in_sync_twice(capsys, monkeypatch, lab)
    aliases = lab.root / "m" / "etc" / "aliases"
    good = aliases.read_bytes()
    aliases.write_bytes(b"# edited by hand\n")
    assert _early(lab, lab.spec) == "True None"
    # The child closed its session (and the lock) before it answered: the full path repairs.
    result = _mailops(lab, "apply", "spec.yaml", "--yes")
    assert result.returncode == 0 and "applied" in result.stdout, result.stdout + result.stderr
    assert aliases.read_bytes() == good
