"""The CLI of plan, apply, service and trust: output, exit codes, refusals.
Run in-process (mailops.cli.main), on a local host and an sshd host."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from tests.deploy import specs
from tests.deploy.helpers import arrived, mtimes, send
from tests.deploy.helpers import run_cli as run
from tests.deploy.sshd import ssh_servers, stop_runtime

pytestmark = pytest.mark.integration


@pytest.fixture
def local_spec(install, tmp_path):
    ports = dict(zip(specs.SERVICES, specs.free_ports(len(specs.SERVICES)), strict=True))
    spec = specs.write_spec(
        tmp_path / "spec.yaml",
        specs.host_block("here", tmp_path, install, None, ports),
        specs.domain_block("here"),
        None,
    )
    try:
        yield spec, ports
    finally:
        stop_runtime(tmp_path / "here" / "data" / "mailops.pid")


def test_local_apply_serves_and_says_how_to_use_it(local_spec, capsys, monkeypatch):
    spec, ports = local_spec
    code, out, _ = run(capsys, monkeypatch, "apply", str(spec), "--yes")
    assert code == 0, out
    assert "applied" in out and "send a first message" in out
    assert f"swaks --server 127.0.0.1:{ports['smtp']} --to bob@here.test" in out
    send(ports["smtp"], "bob@here.test", "cli")
    assert arrived(spec.parent / "here" / "data", "bob@here.test", "cli")

    before = mtimes(spec.parent / "here")
    code, out, _ = run(capsys, monkeypatch, "apply", str(spec), "--yes")
    assert (code, out.strip()) == (0, "1 host(s) in sync; nothing to do")
    assert mtimes(spec.parent / "here") == before
    assert run(capsys, monkeypatch, "plan", str(spec), "--detailed-exitcode")[0] == 0

    code, out, _ = run(capsys, monkeypatch, "service", str(spec), "status")
    assert code == 0 and out.startswith("here: running (pid ")
    code, out, _ = run(capsys, monkeypatch, "service", str(spec), "stop")
    assert (code, out.strip()) == (0, "here: stopped")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ports["smtp"]), 1).close()
    # apply notices and starts it again
    code, out, _ = run(capsys, monkeypatch, "plan", str(spec), "--json")
    assert json.loads(out)["hosts"][0]["plan"]["handler"] == "start"
    code, out, _ = run(capsys, monkeypatch, "service", str(spec), "start")
    assert (code, out.strip()) == (0, "here: running")
    assert run(capsys, monkeypatch, "plan", str(spec), "--detailed-exitcode")[0] == 0


def test_a_noop_apply_to_a_pipe_loads_neither_rich_nor_paramiko(local_spec, capsys, monkeypatch):
    spec, _ = local_spec
    assert run(capsys, monkeypatch, "apply", str(spec), "--yes")[0] == 0
    probe = (
        "import sys\n"
        "from mailops import cli\n"
        f"sys.argv = ['mailops', 'apply', {str(spec)!r}, '--yes']\n"
        "try:\n"
        "    cli.main()\n"
        "finally:\n"
        "    print([m for m in ('rich', 'paramiko') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["1 host(s) in sync; nothing to do", "[]"]


def test_changes_need_yes_without_a_terminal(local_spec, capsys, monkeypatch):
    spec, _ = local_spec
    code, out, err = run(capsys, monkeypatch, "plan", str(spec), "--detailed-exitcode")
    assert code == 2 and "bob@here.test: added" in out and "ARGON2" not in out
    code, out, err = run(capsys, monkeypatch, "apply", str(spec))
    assert code == 1
    assert err.strip().endswith("pass --yes to apply; nothing was changed")
    assert not (spec.parent / "here" / "etc" / "passwd").exists()
    code, out, err = run(capsys, monkeypatch, "apply", str(spec), "--check")
    assert code == 0 and "+ " in out and not (spec.parent / "here" / "etc").exists()


def test_usage_errors_are_one_line(local_spec, capsys, monkeypatch):
    spec, _ = local_spec
    code, _, err = run(capsys, monkeypatch, "service", str(spec), "explode")
    assert code == 2 and err.count("\n") == 1 and "unknown action 'explode'" in err
    code, _, err = run(capsys, monkeypatch, "plan", str(spec), "--host", "nope")
    assert code == 2 and err.count("\n") == 1 and "no host 'nope'" in err
    code, _, err = run(capsys, monkeypatch, "trust", str(spec), "here", "--yes")
    assert code == 2 and "connection: local" in err


def test_trust_adds_the_key_once(install, tmp_path, capsys, monkeypatch):
    with ssh_servers(1, tmp_path / "ssh") as (server,):
        known = tmp_path / "known_hosts"
        spec = specs.write_spec(
            tmp_path / "spec.yaml",
            specs.host_block("h", tmp_path, install, server),
            specs.domain_block("h"),
            known,
        )
        code, out, _ = run(capsys, monkeypatch, "plan", str(spec))
        assert code == 1 and "unknown SSH host key" in out
        code, out, err = run(capsys, monkeypatch, "trust", str(spec), "h")
        assert code == 2 and "pass --yes" in err and not known.exists()
        code, out, _ = run(capsys, monkeypatch, "trust", str(spec), "h", "--yes")
        assert code == 0 and "trusted" in out and "SHA256:" in out
        assert known.read_text() == server.known_hosts_line()
        code, out, _ = run(capsys, monkeypatch, "trust", str(spec), "h", "--yes")
        assert code == 0 and "already trusted" in out
        code, out, _ = run(capsys, monkeypatch, "plan", str(spec), "--detailed-exitcode")
        assert code == 2
