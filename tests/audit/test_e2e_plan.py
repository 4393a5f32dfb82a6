"""Who the end-to-end test logs in as and sends to (no network)."""

from __future__ import annotations

from mailops.audit.context import AuditOptions, prepare
from mailops.audit.e2e import PASSWORD_ENV, flows, logins
from mailops.spec.load import load_spec

TWO_HOSTS = """\
version: 1
hosts:
  mx1: {fqdn: mx1.a.test, ipv4: 192.0.2.10, tls: {self_signed: true}}
  mx2: {fqdn: mx2.b.test, ipv4: 192.0.2.11, tls: {self_signed: true}}
domains:
  a.test:
    mailbox_host: mx1
    mx: [{host: mx1, priority: 10}]
    users:
      alice: {password: {file: alice.pw}}
      hashed:
        password_hash: "{BLF-CRYPT}$2b$05$abcdefghijklmnopqrstuu5s2v8.iMN4Ob5xq7bF0J8w0z5r8dE2i"
    aliases: {postmaster: alice}
  b.test:
    mailbox_host: mx2
    mx: [{host: mx2, priority: 10}]
    users: {bob: {password: {env: AUDIT_TEST_BOB}}}
    aliases: {postmaster: bob}
  c.test:
    mailbox_host: mx1
    mx: [{host: mx1, priority: 10}]
    users: {carol: {password: {file: carol.pw}}}
    aliases: {postmaster: carol}
"""


def context(tmp_path, **options):
    (tmp_path / "spec.yaml").write_text(TWO_HOSTS)
    (tmp_path / "alice.pw").write_text("alice-pw\n")
    (tmp_path / "carol.pw").write_text("carol-pw\n")
    options.setdefault("resolver", "127.0.0.1:1")
    return prepare(load_spec(tmp_path / "spec.yaml"), AuditOptions(**options))


def test_secret_references_give_logins_and_mail_goes_to_another_host(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_TEST_BOB", "bob-pw")
    ctx = context(tmp_path)
    found, problems = logins(ctx)
    assert problems == []
    assert [(x.address, x.password) for x in found] == [
        ("alice@a.test", "alice-pw"),
        ("bob@b.test", "bob-pw"),
        ("carol@c.test", "carol-pw"),
    ]
    pairs = {(f.sender.address, f.recipient.address) for f in flows(ctx, found)}
    # a.test and c.test live on mx1: their mail goes to b.test on mx2, and b's to mx1
    assert pairs == {
        ("alice@a.test", "bob@b.test"),
        ("bob@b.test", "alice@a.test"),
        ("carol@c.test", "bob@b.test"),
    }


def test_as_a_user_known_only_by_hash_needs_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    ctx = context(tmp_path, e2e_as=["hashed@a.test"])
    found, problems = logins(ctx)
    assert found == []
    assert [(p.check, p.text, p.fix) for p in problems] == [
        (
            "e2e.credentials",
            "no password for hashed@a.test: the spec has only its hash",
            f"set {PASSWORD_ENV} to its password",
        )
    ]
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    found, problems = logins(ctx)
    assert [(x.address, x.password) for x in found] == [("hashed@a.test", "from-env")]
    # alone, it sends to itself
    assert [(f.sender.address, f.recipient.address) for f in flows(ctx, found)] == [
        ("hashed@a.test", "hashed@a.test")
    ]
