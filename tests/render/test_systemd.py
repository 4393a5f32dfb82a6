"""The systemd unit of a `service: systemd` host."""

import shutil
from pathlib import Path

import pytest

from mailops.render.host import render_host
from mailops.render.systemd import UNIT_PATH
from mailops.spec.load import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def single(tmp_path, monkeypatch):
    shutil.copy(EXAMPLES / "single-host.yaml", tmp_path / "spec.yaml")
    monkeypatch.setenv("ALICE_PASSWORD", "alice-pw")
    return load_spec(tmp_path / "spec.yaml")


def unit_lines(loaded, host="mx1") -> dict[str, str]:
    item = render_host(loaded, host).files["systemd/mailops.service"]
    assert item.target == UNIT_PATH and not item.secret and item.mode == 0o644
    pairs = (line.split("=", 1) for line in item.data.decode().splitlines() if "=" in line)
    return {k: v for k, v in pairs if not k.startswith("#")}


def test_unit_runs_unprivileged_and_sandboxed(single):
    unit = unit_lines(single)
    assert unit["User"] == "mailops" and unit["Group"] == "mailops"
    assert unit["ExecStart"] == (
        "/opt/mailops/current/bin/mailops serve --config /etc/mailops/runtime.toml"
    )
    assert unit["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert unit["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert unit["NoNewPrivileges"] == "yes"
    assert unit["ProtectSystem"] == "strict"
    assert unit["ReadWritePaths"] == "/var/lib/mailops"
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # Longer than the runtime's 30 s drain, so systemd never kills a draining runtime.
    assert int(unit["TimeoutStopSec"].rstrip("s")) > 30


def test_unit_follows_the_paths_and_is_deterministic(single, tmp_path):
    text = (tmp_path / "spec.yaml").read_text()
    text = text.replace(
        "      key: /etc/letsencrypt/live/mail.example.com/privkey.pem\n",
        "      key: /etc/letsencrypt/live/mail.example.com/privkey.pem\n"
        "    paths: {config: /srv/mail/etc, data: /srv/mail/data, "
        "install: /srv/mail/opt}\n",
    )
    (tmp_path / "spec.yaml").write_text(text)
    loaded = load_spec(tmp_path / "spec.yaml")
    unit = unit_lines(loaded)
    assert unit["ExecStart"].startswith("/srv/mail/opt/current/bin/mailops serve")
    assert unit["ExecStart"].endswith("--config /srv/mail/etc/runtime.toml")
    assert unit["ReadWritePaths"] == "/srv/mail/data"
    first = render_host(loaded, "mx1").files["systemd/mailops.service"].data
    assert first == render_host(loaded, "mx1").files["systemd/mailops.service"].data


def test_process_hosts_have_no_unit_and_render_out_keeps_it_inside(single, tmp_path):
    local = shutil.copy(EXAMPLES / "local.yaml", tmp_path / "local.yaml")
    assert not any(p.startswith("systemd/") for p in render_host(load_spec(local), "local").files)
    written = render_host(single, "mx1").write(tmp_path / "out")
    assert tmp_path / "out" / "systemd" / "mailops.service" in written
