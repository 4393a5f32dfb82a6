"""Spec → one host's runtime files."""

import shutil
import stat
import tomllib
from pathlib import Path

import pytest

from mailops.passwords import verify_password
from mailops.render.host import domain_roles, render_host, toml_text
from mailops.runtime.config import load_config
from mailops.runtime.directory import load_directory
from mailops.spec.load import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def multi(tmp_path, monkeypatch):
    shutil.copy(EXAMPLES / "multi-host.yaml", tmp_path / "spec.yaml")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "bob.password").write_text("bob-pw\n")
    for name, value in [
        ("ALICE_PASSWORD", "alice-pw"),
        ("CAROL_PASSWORD", "carol-pw"),
        ("RELAY_PASSWORD", "relay-pw"),
    ]:
        monkeypatch.setenv(name, value)
    return load_spec(tmp_path / "spec.yaml")


def test_roles(multi):
    assert domain_roles(multi.spec, "mx1") == {"example.org": "mailbox", "example.net": "mailbox"}
    assert domain_roles(multi.spec, "mx2") == {"example.org": "backup", "example.net": "backup"}


def test_mailbox_host_bundle(multi, tmp_path):
    bundle = render_host(multi, "mx1")
    assert sorted(bundle.files) == [
        "aliases",
        "dkim/example.net.s2026.key",
        "dkim/example.org.s2026.key",
        "passwd",
        "relays/provider.password",
        "runtime.toml",
        "systemd/mailops.service",
    ]
    assert bundle.files["relays/provider.password"].data == b"relay-pw"
    assert bundle.files["relays/provider.password"].mode == 0o600
    assert bundle.files["passwd"].secret and not bundle.files["aliases"].secret
    out = tmp_path / "etc"
    bundle.write(out)
    config = load_config(out / "runtime.toml")
    assert config.hostname == "mx1.example.org"
    assert config.domains["example.net"].relay == "provider"
    assert config.relays["provider"].password_file == out / "relays" / "provider.password"
    assert config.domains["example.org"].dkim_key == out / "dkim" / "example.org.s2026.key"
    assert stat.S_IMODE((out / "dkim" / "example.org.s2026.key").stat().st_mode) == 0o600
    directory = load_directory(config)
    alice = directory.account("alice@example.org")
    assert verify_password(alice.password_hash, "alice-pw")
    assert alice.quota == 2 * 1024**3
    assert verify_password(directory.account("bob@example.org").password_hash, "bob-pw")
    team = directory.route("team@example.org")
    assert sorted(a.address for a in team.mailboxes) == ["alice@example.org", "bob@example.org"]
    assert team.remote == ("carol@partner.example",)
    # catch-all of example.net
    assert [a.address for a in directory.route("whoever@example.net").mailboxes] == [
        "carol@example.net"
    ]


def test_secrets_never_in_plain_files(multi):
    bundle = render_host(multi, "mx1")
    for item in bundle.files.values():
        if not item.secret:
            for secret in (b"alice-pw", b"bob-pw", b"relay-pw", b"carol-pw"):
                assert secret not in item.data, item.path


def test_backup_host_holds_no_hashes_and_forwards(multi, tmp_path):
    bundle = render_host(multi, "mx2")
    assert b"{ARGON2ID}" not in bundle.files["passwd"].data
    assert not any(p.startswith(("dkim/", "relays/")) for p in bundle.files)
    bundle.write(tmp_path / "etc")
    config = load_config(tmp_path / "etc" / "runtime.toml")
    assert config.domains["example.org"].role == "backup"
    assert config.domains["example.org"].primary_mx == ["mx1.example.org"]
    assert [x.service for x in config.listeners] == ["smtp", "smtp"]
    directory = load_directory(config)
    assert directory.route("alice@example.org").forward
    assert directory.route("nobody@example.org") is None  # no backscatter
    assert not directory.account("alice@example.org").can_login


def test_render_is_deterministic(multi):
    first = {p: f.data for p, f in render_host(multi, "mx1").files.items()}
    second = {p: f.data for p, f in render_host(multi, "mx1").files.items()}
    assert first == second


def test_self_signed_certificate_is_made_once(tmp_path):
    shutil.copy(EXAMPLES / "local.yaml", tmp_path / "local.yaml")
    loaded = load_spec(tmp_path / "local.yaml")
    first = render_host(loaded, "local")
    second = render_host(loaded, "local")
    assert first.files["tls/cert.pem"].data == second.files["tls/cert.pem"].data
    assert first.files["tls/key.pem"].mode == 0o600
    assert (tmp_path / "keys" / "tls" / "local.crt").exists()
    config = toml_text({"a": 1})
    assert config == "a = 1\n"


def test_local_paths_resolve_beside_the_spec(tmp_path):
    shutil.copy(EXAMPLES / "local.yaml", tmp_path / "local.yaml")
    bundle = render_host(load_spec(tmp_path / "local.yaml"), "local")
    data = tomllib.loads(bundle.files["runtime.toml"].data.decode())
    assert data["data_dir"] == str(tmp_path / "local-state" / "data")
    assert data["pid_file"] == str(tmp_path / "local-state" / "data" / "mailops.pid")
    assert "user" not in data
    assert {(x["service"], x["port"]) for x in data["listeners"]} >= {("smtp", 2525)}


def test_unknown_host(multi):
    from mailops.render.host import RenderError

    with pytest.raises(RenderError, match=r"no host 'mx9' in .* \(hosts: mx1, mx2\)"):
        render_host(multi, "mx9")


def test_missing_secret_is_one_clear_error(multi, monkeypatch):
    from mailops.errors import SecretError

    monkeypatch.delenv("ALICE_PASSWORD")
    with pytest.raises(
        SecretError, match=r"^secret environment variable ALICE_PASSWORD is not set$"
    ):
        render_host(multi, "mx1")
