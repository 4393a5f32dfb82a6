import pytest

from mailops.runtime.config import DomainConfig
from mailops.runtime.directory import (
    Directory,
    DirectoryError,
    parse_aliases,
    parse_passwd,
)

PASSWD = """\
# comment
alice@example.org:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA::::::userdb_quota_rule=*:bytes=1000
bob@example.org:{BLF-CRYPT}$2b$12$abc::::::
carol@example.net:!::::::nologin
"""
ALIASES = """\
a.smith@example.org  alice@example.org
team@example.org  alice@example.org, bob@example.org, dave@partner.example
postmaster@example.org  alice@example.org
loop1@example.org  loop2@example.org
loop2@example.org  loop1@example.org, bob@example.org
nested@example.org  team@example.org
@example.net  carol@example.net
"""


@pytest.fixture
def directory():
    return Directory(
        domains={
            "example.org": DomainConfig(role="mailbox"),
            "example.net": DomainConfig(role="backup", subaddress=""),
        },
        accounts=parse_passwd(PASSWD),
        aliases=parse_aliases(ALIASES),
    )


def boxes(route):
    return sorted(a.address for a in route.mailboxes)


def test_passwd_fields(directory):
    alice = directory.account("ALICE@example.org")
    assert alice.quota == 1000
    assert alice.password_hash.startswith("{ARGON2ID}$argon2id$")
    assert directory.account("bob@example.org").quota is None
    assert not directory.account("carol@example.net").can_login


def test_user_and_subaddress(directory):
    assert boxes(directory.route("alice@example.org")) == ["alice@example.org"]
    assert boxes(directory.route("Alice+lists@Example.ORG")) == ["alice@example.org"]
    assert directory.route("alice-lists@example.org") is None


def test_alias_list_with_external_target(directory):
    route = directory.route("team@example.org")
    assert boxes(route) == ["alice@example.org", "bob@example.org"]
    assert route.remote == ("dave@partner.example",)


def test_nested_alias_expands_once_per_mailbox(directory):
    assert boxes(directory.route("nested@example.org")) == ["alice@example.org", "bob@example.org"]


def test_alias_loop_terminates(directory):
    assert boxes(directory.route("loop1@example.org")) == ["bob@example.org"]


def test_unknown_user_and_foreign_domain(directory):
    assert directory.route("nobody@example.org") is None
    assert directory.route("alice@elsewhere.example") is None
    assert not directory.serves("elsewhere.example")


def test_backup_domain_forwards_only_known_addresses(directory):
    assert directory.route("carol@example.net").forward
    # the catch-all makes every local part known
    assert directory.route("anything@example.net").forward


def test_backup_domain_without_catch_all_rejects_unknown():
    d = Directory(
        domains={"example.net": DomainConfig(role="backup")},
        accounts=parse_passwd("carol@example.net:!::::::nologin\n"),
    )
    assert d.route("carol@example.net").forward
    assert d.route("mallory@example.net") is None


def test_sender_ownership(directory):
    alice = directory.account("alice@example.org")
    assert directory.may_send_as(alice, "alice@example.org")
    assert directory.may_send_as(alice, "a.smith@example.org")
    assert directory.may_send_as(alice, "postmaster@example.org")
    assert directory.may_send_as(alice, "alice+news@example.org")
    assert not directory.may_send_as(alice, "bob@example.org")
    assert not directory.may_send_as(alice, "team@example.org")  # shared with bob
    assert not directory.may_send_as(alice, "alice@evil.example")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nobody-without-domain:{X}x\n", "passwd:1: expected 'user@domain:{SCHEME}hash:…'"),
    ],
)
def test_bad_passwd(text, message):
    with pytest.raises(DirectoryError) as info:
        parse_passwd(text)
    assert str(info.value) == message


def test_bad_aliases():
    with pytest.raises(DirectoryError) as info:
        parse_aliases("ok@example.org  a@example.org\nbroken-line\n")
    assert str(info.value) == "aliases:2: expected 'alias@domain  target[, target…]'"
