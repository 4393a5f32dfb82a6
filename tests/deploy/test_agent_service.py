"""The agent's systemd control, against a stand-in `systemctl` that records
its calls (this machine runs no systemd); process control is tested for real
by every apply in the integration tests."""

from __future__ import annotations

import os
from pathlib import Path

from mailops.deploy.agent import service

FAKE = """#!/bin/sh
echo "$@" >> {log}
case "$1" in
  show) cat {pid} ;;
  is-active) cat {state} ;;
esac
"""


def fake_systemctl(tmp_path: Path, monkeypatch, pid: str = "0", state: str = "active"):
    log, pid_file, state_file = tmp_path / "calls", tmp_path / "pid", tmp_path / "state"
    pid_file.write_text(pid + "\n")
    state_file.write_text(state + "\n")
    script = tmp_path / "bin" / "systemctl"
    script.parent.mkdir()
    script.write_text(FAKE.format(log=log, pid=pid_file, state=state_file))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    return log, pid_file, state_file


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_handlers_map_to_systemctl(tmp_path, monkeypatch):
    log, pid_file, state = fake_systemctl(tmp_path, monkeypatch)
    control = service.controller({"kind": "systemd", "unit": "mailops.service"})
    assert control.pid() is None
    service.run_handler(control, "reload")  # nothing runs: start it
    assert calls(log)[-2:] == ["enable mailops.service", "start mailops.service"]
    pid_file.write_text(f"{os.getpid()}\n")
    assert control.state() == {"running": True, "pid": os.getpid()}
    service.run_handler(control, "reload")
    assert calls(log)[-1] == "reload mailops.service"
    service.run_handler(control, "restart")
    assert calls(log)[-2:] == ["enable mailops.service", "restart mailops.service"]
    control.daemon_reload()
    assert calls(log)[-1] == "daemon-reload"
    assert not control.gone()
    state.write_text("failed\n")
    assert control.gone()
    service.run_handler(control, None)
    assert calls(log)[-1] == "is-active mailops.service"  # no handler, no call
