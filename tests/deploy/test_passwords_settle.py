"""`password:` secrets in plan: hashed in the background, settled against the
host's passwd (kept when the host's hash is as strong and matches), never shown."""

from __future__ import annotations

import hashlib
from pathlib import Path

import bcrypt
import pytest

from mailops.deploy.facts import facts_request
from mailops.deploy.plan import make_plan
from mailops.deploy.targets import UNSETTLED, make_target
from mailops.passwords import hash_password, verify_password
from mailops.render.host import render_host, user_salt
from mailops.spec.load import load_spec
from tests.deploy import specs
from tests.deploy.helpers import apply, login_works, mtimes
from tests.deploy.sshd import stop_runtime
from tests.deploy.test_plan import BUILD, VERSION, facts_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def secret_spec(tmp_path, monkeypatch):
    """examples/local.yaml with alice's password as `{env: ALICE_PW}`."""
    text = (EXAMPLES / "local.yaml").read_text()
    start = text.index("        # password: alice-secret")
    end = text.index("        aliases: [a.smith]")
    text = text[:start] + "        password: {env: ALICE_PW}\n" + text[end:]
    (tmp_path / "local.yaml").write_text(text)
    monkeypatch.setenv("ALICE_PW", "alice-secret")
    return load_spec(tmp_path / "local.yaml")


def passwd_with(target, alice_hash: str) -> bytes:
    """The host's passwd as mailops wrote it, with alice's hash replaced."""
    data = next(d for d in target.settle({}) if d.rel == "passwd").data.decode()
    lines = [
        f"alice@example.test:{alice_hash}::::::" if line.startswith("alice@") else line
        for line in data.splitlines()
    ]
    return ("\n".join(lines) + "\n").encode()


def plan_against(target, host_passwd: bytes):
    """The plan for a host that has everything as rendered but this passwd."""
    desired = target.settle({target.layout.config_dir + "/passwd": host_passwd})
    facts = facts_for(desired)
    path = target.layout.config_dir + "/passwd"
    facts.files[path] = dict(facts.files[path], sha256=hashlib.sha256(host_passwd).hexdigest())
    facts.contents = {path: host_passwd}
    return desired, make_plan(target.layout, desired, facts, BUILD, VERSION)


def test_passwd_waits_for_the_facts_and_asks_for_the_hosts_copy(secret_spec):
    target = make_target(secret_spec, "local")
    passwd = next(d for d in target.desired if d.rel == "passwd")
    assert passwd.sha256 == UNSETTLED and target.passwd is not None
    request = facts_request(target.layout, target.desired, BUILD, lock=False)
    wanted = next(f for f in request["files"] if f["path"] == passwd.path)
    assert wanted["content"] and wanted["expect"] == UNSETTLED  # the host sends its copy
    assert "alice-secret" not in repr(target) and "ARGON2" not in repr(target)


def test_without_a_host_copy_the_hash_is_the_fixed_salt_one(secret_spec):
    target = make_target(secret_spec, "local")
    (passwd,) = [d for d in target.settle({}) if d.rel == "passwd"]
    fixed = hash_password("alice-secret", user_salt("alice@example.test"))
    assert f"alice@example.test:{fixed}::::::".encode() in passwd.data
    # the same bytes as `mailops render` writes
    assert passwd.data == render_host(secret_spec, "local").files["passwd"].data


def test_the_same_password_hashed_with_another_salt_is_kept(secret_spec):
    target = make_target(secret_spec, "local")
    own = hash_password("alice-secret")  # random salt, as `mailops hash-password` makes
    host = passwd_with(target, own)
    desired, plan = plan_against(target, host)
    assert plan.empty
    assert next(d for d in desired if d.rel == "passwd").data == host


@pytest.mark.parametrize(
    "host_hash",
    [
        pytest.param(lambda: hash_password("another-secret"), id="other password"),
        pytest.param(
            lambda: "{BLF-CRYPT}" + bcrypt.hashpw(b"alice-secret", bcrypt.gensalt(4)).decode(),
            id="weaker scheme",
        ),
        pytest.param(
            lambda: hash_password("alice-secret").replace("m=65536,t=3,p=4", "m=8,t=1,p=1"),
            id="weaker parameters",
        ),
    ],
)
def test_other_hashes_are_replaced_by_the_fixed_salt_one(secret_spec, host_hash):
    target = make_target(secret_spec, "local")
    desired, plan = plan_against(target, passwd_with(target, host_hash()))
    assert [c.rel for c in plan.changes] == ["passwd"]
    assert plan.changes[0].summary == ["alice@example.test: password changed"]
    data = next(d for d in desired if d.rel == "passwd").data.decode()
    alice = next(line for line in data.splitlines() if line.startswith("alice@"))
    assert verify_password(alice.split(":")[1], "alice-secret")
    assert alice.split(":")[1] == hash_password("alice-secret", user_salt("alice@example.test"))


def test_a_host_with_the_rendered_passwd_gets_an_empty_plan(secret_spec):
    target = make_target(secret_spec, "local")
    (rendered,) = [d for d in target.settle({}) if d.rel == "passwd"]
    _, plan = plan_against(target, rendered.data)
    assert plan.empty


@pytest.mark.integration
def test_a_second_apply_with_password_secrets_changes_nothing(install, tmp_path, monkeypatch):
    """Applied once with `password: {env: …}`, a second apply finds the host in
    sync: passwd is byte for byte the same file, untouched."""
    ports = dict(zip(specs.SERVICES, specs.free_ports(len(specs.SERVICES)), strict=True))
    domain = specs.domain_block("pw").replace(
        next(line for line in specs.domain_block("pw").splitlines() if "alice:" in line),
        "      alice: {password: {env: PW_ALICE}}",
    )
    spec = specs.write_spec(
        tmp_path / "spec.yaml",
        specs.host_block("pw", tmp_path, install, None, ports),
        domain,
        None,
    )
    monkeypatch.setenv("PW_ALICE", "alice-secret")
    try:
        (first,) = apply(spec)
        assert first.status == "applied", first.message
        passwd = tmp_path / "pw" / "etc" / "passwd"
        written, before = passwd.read_bytes(), mtimes(tmp_path / "pw")
        assert b"alice-secret" not in written
        assert login_works(ports["submission"], "alice@pw.test", "alice-secret")

        (second,) = apply(spec)
        assert second.status == "in sync" and second.plan.empty, second.message
        assert passwd.read_bytes() == written and mtimes(tmp_path / "pw") == before
    finally:
        stop_runtime(tmp_path / "pw" / "data" / "mailops.pid")
