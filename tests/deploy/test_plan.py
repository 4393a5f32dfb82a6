"""Bundle × facts → plan, without a host: what changes, how it is shown, which handler."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mailops.deploy import handlers, redact
from mailops.deploy.desired import desired_dirs, desired_files
from mailops.deploy.facts import HostFacts
from mailops.deploy.layout import host_layout
from mailops.deploy.plan import make_plan
from mailops.render.host import render_host
from mailops.spec.load import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUILD, VERSION = "b" * 16, "0.1.0+b" + "b" * 16


@pytest.fixture
def local(tmp_path):
    shutil.copy(EXAMPLES / "local.yaml", tmp_path / "local.yaml")
    loaded = load_spec(tmp_path / "local.yaml")
    layout = host_layout(loaded, "local")
    return layout, desired_files(render_host(loaded, "local"), layout)


def facts_for(desired, running=True, status_files=None, **changes) -> HostFacts:
    files = {
        d.path: {
            "sha256": d.sha256,
            "mode": d.mode,
            "owner": "root",
            "group": "root",
            "size": len(d.data),
        }
        for d in desired
    }
    loaded = status_files if status_files is not None else {d.path: d.sha256 for d in desired}
    facts = HostFacts(
        system={"python": "3.11.2"},
        files=files,
        contents={},
        manifest={"files": list(files)},
        install={"current": BUILD, "has_wanted": True},
        service={"running": running, "pid": 42 if running else None},
        status={"files": loaded, "prefix": f"/opt/releases/{BUILD}"},
    )
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def test_a_host_that_matches_gets_an_empty_plan(local):
    layout, desired = local
    plan = make_plan(layout, desired, facts_for(desired), BUILD, VERSION)
    assert plan.empty and plan.handler is None and plan.install is None


def test_a_password_change_is_one_update_a_reload_and_no_hash(local):
    layout, desired = local
    facts = facts_for(desired)
    passwd = next(d for d in desired if d.rel == "passwd")
    old = passwd.data.replace(b"alice@example.test:{ARGON2ID}", b"alice@example.test:{ARGON2ID}x")
    old += b"carol@example.test:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA::::::\n"
    facts.files[passwd.path]["sha256"] = "0" * 64
    facts.contents[passwd.path] = old
    plan = make_plan(layout, desired, facts, BUILD, VERSION)
    assert [(c.action, c.rel) for c in plan.changes] == [("update", "passwd")]
    assert plan.changes[0].summary == [
        "alice@example.test: password changed",
        "carol@example.test: removed",
    ]
    assert plan.handler == "reload"
    assert "argon2" not in repr(plan.as_dict()).lower()
    assert any("carol@example.test loses login" in n and "stays" in n for n in plan.notes)


def test_listener_changes_restart_and_plain_files_show_diffs(local):
    layout, desired = local
    facts = facts_for(desired)
    toml = next(d for d in desired if d.rel == "runtime.toml")
    facts.files[toml.path]["sha256"] = "0" * 64
    facts.contents[toml.path] = toml.data.replace(b"port = 2525", b"port = 25")
    plan = make_plan(layout, desired, facts, BUILD, VERSION)
    assert plan.handler == "restart"
    assert "-port = 25\n" in plan.changes[0].diff and "+port = 2525\n" in plan.changes[0].diff


def test_modes_deletions_stale_runtime_install_and_stopped_service(local):
    layout, desired = local
    key = next(d for d in desired if d.rel == "tls/key.pem")
    facts = facts_for(desired)
    facts.files[key.path]["mode"] = 0o644
    facts.manifest["files"].append("/old/etc/relays/gone.password")
    facts.files["/old/etc/relays/gone.password"] = {"sha256": "1" * 64, "mode": 0o600}
    plan = make_plan(layout, desired, facts, BUILD, VERSION)
    assert [(c.action, c.rel, c.reasons) for c in plan.changes] == [
        ("update", "tls/key.pem", ["mode 0644 → 0600"]),
        ("delete", "gone.password", []),
    ]
    assert plan.handler == "restart"  # TLS material changed

    stale = facts_for(desired, status_files={key.path: "2" * 64})
    assert make_plan(layout, desired, stale, BUILD, VERSION).handler == "reload"

    upgrade = facts_for(desired, install={"current": "a" * 16, "has_wanted": False})
    plan = make_plan(layout, desired, upgrade, BUILD, VERSION)
    assert plan.install.upload and plan.install.describe().startswith("upgrade runtime")
    assert plan.handler == "restart"

    stopped = make_plan(layout, desired, facts_for(desired, running=False), BUILD, VERSION)
    assert stopped.handler == "start" and not stopped.changes


def test_systemd_hosts_give_secrets_to_the_runtime_group(tmp_path, monkeypatch):
    shutil.copy(EXAMPLES / "single-host.yaml", tmp_path / "spec.yaml")
    monkeypatch.setenv("ALICE_PASSWORD", "pw")
    loaded = load_spec(tmp_path / "spec.yaml")
    layout = host_layout(loaded, "mx1")
    desired = {d.rel: d for d in desired_files(render_host(loaded, "mx1"), layout)}
    key = desired["dkim/example.com.s2026.key"]
    assert (key.path, key.mode, key.owner, key.group) == (
        "/etc/mailops/dkim/example.com.s2026.key",
        0o640,
        "root",
        "mailops",
    )
    assert (desired["aliases"].group, desired["aliases"].mode) == ("root", 0o644)
    unit = desired["systemd/mailops.service"]
    assert unit.path == "/etc/systemd/system/mailops.service" and not unit.runtime_reads
    dirs = {d["path"]: d for d in desired_dirs(list(desired.values()), layout)}
    assert dirs["/var/lib/mailops"]["owner"] == "mailops"
    assert dirs["/etc/mailops"] == {
        "path": "/etc/mailops",
        "mode": 0o750,
        "owner": "root",
        "group": "mailops",
    }
    assert "/etc/systemd/system" not in dirs


def test_secret_files_never_show_contents():
    summary, diff = redact.describe("dkim/x.key", b"OLD-SECRET", b"NEW-SECRET", True)
    assert summary == [redact.HIDDEN] and diff == ""
    assert redact.passwd_summary(None, b"a@x:{X}h::::::\n") == ["a@x: added"]
    quota = redact.passwd_summary(b"a@x:h::::::\n", b"a@x:h::::::userdb_quota_rule=*:bytes=5\n")
    assert quota == ["a@x: settings changed (- → userdb_quota_rule=*:bytes=5)"]


def test_handler_choice():
    assert handlers.choose([], False, False, True, False) is None
    assert handlers.choose(["aliases"], False, False, True, False) == "reload"
    assert handlers.choose(["systemd/mailops.service"], False, False, True, False) == "restart"
    assert handlers.choose(["passwd"], False, False, False, False) == "start"
    new = b'hostname = "b"\nlisteners = []\n'
    assert not handlers.toml_needs_restart(b'hostname = "a"\nlisteners = []\n', new)
    assert handlers.toml_needs_restart(b'hostname = "b"\nlisteners = [1]\n', new)
    assert handlers.toml_needs_restart(None, new)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze (systemd)")
def test_systemd_accepts_the_rendered_unit(tmp_path, monkeypatch):
    """systemd's own parser reads the unit: every directive known, every value
    valid (this machine runs no systemd; `systemd-analyze verify` needs none)."""
    install = tmp_path / "opt"
    (install / "current" / "bin").mkdir(parents=True)
    runtime = install / "current" / "bin" / "mailops"
    runtime.write_text("#!/bin/sh\n")
    runtime.chmod(0o755)
    text = (EXAMPLES / "single-host.yaml").read_text()
    text = text.replace("  mx1:\n", f"  mx1:\n    paths: {{install: {install}}}\n", 1)
    (tmp_path / "spec.yaml").write_text(text)
    monkeypatch.setenv("ALICE_PASSWORD", "pw")
    bundle = render_host(load_spec(tmp_path / "spec.yaml"), "mx1")
    unit = tmp_path / "mailops.service"
    unit.write_bytes(bundle.files["systemd/mailops.service"].data)
    assert f"ExecStart={runtime} serve" in unit.read_text()
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
