"""Valid specs survive load → dump → load unchanged: generated ones (Hypothesis)
and the examples a new user copies."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailops.spec import names
from mailops.spec.diagnostics import errors
from mailops.spec.dump import dump_spec
from mailops.spec.load import check_spec, check_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# One valid hash of each accepted scheme (all of the password "pw", cheap parameters).
HASHES = [
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$QKSllZvDekJeHMsO/vUinw"
    "$SIw/XMHYx7L+bXhh8RaGcIStO9FrJbGHEIqL4PHqOSQ",
    "{ARGON2I}$argon2i$v=19$m=8,t=1,p=1$hbtvx3FC7A8ZS2ldYhUI2w"
    "$+hbBGT4PKADvIOsi0WLabJ3btwB5l5m1F0/FuPaeGYQ",
    "{BLF-CRYPT}$2b$04$Yb9IReZu4FzqhS2bC4BeOOIKgf3.1TtACggDln3SaHZoyjdCGka7a",
    "{SHA512-CRYPT}$6$LwdyxA3EODka3AtC$QarbfqE5WhZKkBKhxBcvq9wnDHem3kr2lXHGjh0C6S7xVaTgXc"
    "cYLIPR0BxSiY5nJSHnlumIG58Knvao1ZK4p0",
    "{SHA256-CRYPT}$5$L.FSeaOhPUzwun8e$/enoPlUIb5kTCW9IFqbaCI/5alD2iUxMCPCaumiyM79",
]
SERVICES = ["smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s"]
OPTIONAL_SERVICES = ["submission", "submissions", "imaps", "pop3", "pop3s"]

# Names start with a letter: a name that YAML 1.2 reads as a number is covered by
# test_names_that_look_like_numbers_survive_a_dump below.
host_ids = st.from_regex(r"[a-z][a-z0-9]{0,5}(-[a-z0-9]{1,3})?", fullmatch=True)
local_parts = st.from_regex(r"[a-z][a-z0-9]{0,5}([._-][a-z0-9]{1,3})?", fullmatch=True)
domain_names = st.one_of(
    st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,3})?\.(org|net|example|test)", fullmatch=True),
    st.sampled_from(["b\u00fccher.example", "M\u00fcnchen.Test", "Example.COM"]),
)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
env_names = st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True)
secret_refs = st.one_of(
    env_names.map(lambda name: {"env": name}),
    local_parts.map(lambda name: {"file": f"secrets/{name}"}),
)


def maybe(draw, into: dict, key: str, strategy) -> None:
    """Sometimes set `into[key]` from `strategy` (keys left out take their defaults)."""
    if draw(st.booleans()):
        into[key] = draw(strategy)


@st.composite
def hosts(draw, hid: str, defaults: dict) -> dict:
    """A host. Where `defaults` sets a key, the host never sets it back to the model's
    default: see test_host_setting_back_to_the_model_default_survives_a_dump."""
    host: dict = {"fqdn": f"{hid}.hosts.example"}
    v4, v6 = draw(st.sampled_from([(True, False), (False, True), (True, True)]))
    if v4:
        host["ipv4"] = draw(ipv4)
    if v6:
        host["ipv6"] = draw(ipv6)
    if "tls" not in defaults or draw(st.booleans()):
        host["tls"] = draw(
            st.sampled_from(
                [
                    {"self_signed": True},
                    {"cert": f"/etc/ssl/{hid}/fullchain.pem", "key": f"/etc/ssl/{hid}/key.pem"},
                ]
            )
        )
    if draw(st.booleans()):  # every host can be an MX and a mailbox host
        extra = draw(st.lists(st.sampled_from(OPTIONAL_SERVICES), unique=True))
        host["services"] = draw(st.permutations(["smtp", "imap", *extra]))
    if draw(st.booleans()):
        chosen = draw(st.lists(st.sampled_from(SERVICES), unique=True, min_size=1))
        ports = draw(st.lists(st.integers(1024, 65535), unique=True, min_size=7, max_size=7))
        host["ports"] = dict(zip(chosen, ports, strict=False))
    maybe(draw, host, "connection", st.sampled_from(["ssh", "local"]))
    kinds = ["process"] if "service" in defaults else ["systemd", "process"]
    maybe(draw, host, "service", st.sampled_from(kinds))
    maybe(
        draw, host, "listen", st.lists(st.one_of(ipv4, ipv6), min_size=1, max_size=3, unique=True)
    )
    resolvers = st.sampled_from(["127.0.0.1:53", "[::1]:5353", "9.9.9.9"])
    maybe(draw, host, "resolver", st.lists(resolvers, min_size=1, unique=True))
    ssh: dict = {}
    ssh_defaulted = "ssh" in defaults
    logins = ["deploy", "admin"] if ssh_defaulted else ["root", "deploy"]
    maybe(draw, ssh, "user", st.sampled_from(logins))
    maybe(draw, ssh, "port", st.integers(1, 65535).filter(lambda p: p != 22 or not ssh_defaulted))
    maybe(draw, ssh, "address", st.one_of(ipv4, st.just(f"{hid}.internal.example")))
    if ssh:
        host["ssh"] = ssh
    maybe(draw, host, "paths", st.just({"config": f"state/{hid}/etc", "data": f"state/{hid}/data"}))
    return host


@st.composite
def users(draw) -> dict:
    user: dict = {}
    kind = draw(st.sampled_from(["hash", "hash-ref", "password"]))
    if kind == "hash":
        user["password_hash"] = draw(st.sampled_from(HASHES))
    elif kind == "hash-ref":
        user["password_hash"] = draw(secret_refs)
    else:
        user["password"] = draw(secret_refs)
    maybe(draw, user, "quota", st.sampled_from(["2GiB", "500MB", "1.5G", 1048576, 0]))
    return user


@st.composite
def domains(draw, name: str, host_ids: list[str], relay_ids: list[str]) -> dict:
    domain: dict = {"mailbox_host": draw(st.sampled_from(host_ids))}
    managed = draw(st.lists(st.sampled_from(host_ids), min_size=1, unique=True))
    external = draw(
        st.lists(st.sampled_from(["mx.partner.example", "backup.mx.example"]), unique=True)
    )
    prios = draw(
        st.lists(st.integers(0, 65535), unique=True, min_size=len(managed) + len(external))
    )
    entries = [{"host": h} for h in managed] + [{"name": n} for n in external]
    domain["mx"] = [
        {**entry, "priority": prio} for entry, prio in zip(entries, prios, strict=False)
    ]

    # distinct local parts, shared out between users, user aliases and aliases
    pool = draw(st.lists(local_parts, min_size=1, max_size=8, unique=True))
    n_users = draw(st.integers(0, len(pool)))
    user_names, rest = pool[:n_users], pool[n_users:]
    domain["users"] = {u: draw(users()) for u in user_names}
    known: list[str] = list(user_names)  # targets that exist, so no alias is dangling
    aliases: dict = {}
    for local in rest:
        if user_names and draw(st.booleans()):
            owner = draw(st.sampled_from(user_names))
            domain["users"][owner].setdefault("aliases", []).append(local)
        else:
            options = [*known, f"{local}@elsewhere.example"]
            if user_names:
                options.append(f"{user_names[0]}@{name}")
            targets = draw(st.lists(st.sampled_from(options), min_size=1, max_size=3, unique=True))
            aliases[local] = targets[0] if len(targets) == 1 and draw(st.booleans()) else targets
        known.append(local)  # only earlier names are targets: no loops
    if aliases:
        domain["aliases"] = aliases
    if user_names:
        maybe(draw, domain, "catch_all", st.sampled_from(user_names))
    maybe(draw, domain, "subaddress", st.sampled_from(["+", "-", "_", "=", None]))
    if relay_ids and draw(st.booleans()):
        domain["outbound"] = {"relay": draw(st.sampled_from(relay_ids))}
    selectors = draw(st.lists(st.sampled_from(["s1", "s2026", "mail", "dkim-b"]), unique=True))
    if selectors:
        algorithms = st.sampled_from(["rsa-2048", "rsa-4096", "ed25519"])
        domain["dkim"] = {
            "selectors": [{"name": s, "algorithm": draw(algorithms)} for s in selectors]
        }
    includes = st.lists(st.sampled_from(["spf.provider.example", "spf.other.example"]), unique=True)
    maybe(
        draw,
        domain,
        "spf",
        st.fixed_dictionaries(
            {"policy": st.sampled_from(["-all", "~all", "?all", "+all"])},
            optional={"include": includes},
        ),
    )
    maybe(
        draw,
        domain,
        "dmarc",
        st.fixed_dictionaries(
            {"policy": st.sampled_from(["none", "quarantine", "reject"])},
            optional={"rua": st.just([f"mailto:dmarc@{name}"]), "pct": st.integers(0, 100)},
        ),
    )
    maybe(
        draw,
        domain,
        "mta_sts",
        st.fixed_dictionaries(
            {"mode": st.sampled_from(["enforce", "testing", "none"])},
            optional={"max_age": st.integers(86400, 31557600)},
        ),
    )
    maybe(
        draw, domain, "tls_rpt", st.just({"rua": [f"mailto:tls@{name}", "https://r.example/tls"]})
    )
    return domain


@st.composite
def zones(draw) -> dict:
    zone: dict = {}
    if draw(st.booleans()):
        zone["managed"] = "full"
        zone["nameservers"] = ["ns1.dns.example", "ns2.dns.example"]
        soa = {
            "mname": st.just("ns1.dns.example"),
            "rname": st.just("hostmaster.dns.example"),
            "refresh": st.integers(1, 86400),
            "minimum": st.integers(1, 86400),
        }
        maybe(draw, zone, "soa", st.fixed_dictionaries({}, optional=soa))
    maybe(draw, zone, "ttl", st.integers(1, 86400))
    records = st.sampled_from(
        [
            {"name": "www", "type": "A", "value": "203.0.113.20"},
            {"name": "@", "type": "AAAA", "value": "2001:db8::20"},
            {"name": "_info", "type": "TXT", "value": "hello world", "ttl": 300},
            {"name": "ftp", "type": "CNAME", "value": "www"},
            {"name": "@", "type": "CAA", "value": '0 issue "letsencrypt.org"'},
        ]
    )
    maybe(draw, zone, "extra_records", st.lists(records, max_size=3))
    return zone


@st.composite
def specs(draw) -> dict:
    spec: dict = {"version": 1}
    defaults: dict = {}
    maybe(draw, defaults, "ssh", st.just({"user": "deploy", "port": 2222}))
    maybe(draw, defaults, "tls", st.just({"self_signed": True}))
    maybe(draw, defaults, "service", st.sampled_from(["systemd", "process"]))
    if defaults:
        spec["defaults"] = defaults
    host_ids_ = draw(st.lists(host_ids, min_size=1, max_size=3, unique=True))
    spec["hosts"] = {h: draw(hosts(h, defaults)) for h in host_ids_}
    relay_ids = draw(st.lists(host_ids, max_size=2, unique=True))
    if relay_ids:
        spec["relays"] = {}
        for i, rid in enumerate(relay_ids):
            relay: dict = {"host": f"smtp.{rid}.relay.example"}
            maybe(draw, relay, "port", st.integers(1, 65535))
            maybe(draw, relay, "tls", st.sampled_from(["starttls", "implicit", "none"]))
            if draw(st.booleans()):
                relay["username"] = f"mailer{i}@example.org"
                relay["password"] = draw(secret_refs)
            maybe(draw, relay, "spf_include", st.just(f"spf.{rid}.relay.example"))
            spec["relays"][rid] = relay
    names_ = draw(
        st.lists(domain_names, min_size=1, max_size=3, unique_by=lambda n: names.domain(n))
    )
    spec["domains"] = {n: draw(domains(n, host_ids_, relay_ids)) for n in names_}
    zoned = draw(st.lists(st.sampled_from(names_), unique=True))
    if zoned:
        spec["dns"] = {"zones": {n: draw(zones()) for n in zoned}}
    return spec


def findings(diagnostics) -> list[tuple[str, str]]:
    return sorted((d.severity, d.message) for d in diagnostics)


@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(specs())
def test_generated_valid_spec_round_trips(data):
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    first, diagnostics = check_text(text, "generated.yaml")
    assert errors(diagnostics) == [], text
    assert first is not None
    spec = first.spec
    assert set(spec.domains) == {names.domain(n) for n in data["domains"]}
    assert set(spec.hosts) == set(data["hosts"])
    for name, domain in data["domains"].items():
        assert set(spec.domains[names.domain(name)].users) == set(domain["users"])

    dumped = dump_spec(spec)
    second, diagnostics_again = check_text(dumped, "dumped.yaml")
    assert errors(diagnostics_again) == [], dumped
    assert second is not None
    assert second.spec == spec
    assert dump_spec(second.spec) == dumped
    assert findings(diagnostics_again) == findings(diagnostics)


def test_dump_leaves_defaults_out_and_keeps_secrets_as_references():
    text = (
        "version: 1\n"
        "hosts:\n"
        "  mx1: {fqdn: mx1.example.org, ipv4: 127.0.0.1, tls: {self_signed: true}}\n"
        "domains:\n"
        "  Example.ORG:\n"
        "    mailbox_host: mx1\n"
        "    mx: [{host: mx1, priority: 10}]\n"
        "    users:\n"
        "      Alice: {password: {env: ALICE_PASSWORD}, quota: 1KiB}\n"
        "    aliases: {postmaster: alice}\n"
    )
    loaded, diagnostics = check_text(text, "spec.yaml")
    assert diagnostics == []
    assert yaml.safe_load(dump_spec(loaded.spec)) == {
        "version": 1,
        "hosts": {
            "mx1": {"fqdn": "mx1.example.org", "ipv4": "127.0.0.1", "tls": {"self_signed": True}}
        },
        "domains": {
            "example.org": {
                "mailbox_host": "mx1",
                "mx": [{"host": "mx1", "priority": 10}],
                "users": {"alice": {"password": {"env": "ALICE_PASSWORD"}, "quota": 1024}},
                "aliases": {"postmaster": ["alice"]},
            }
        },
    }


def test_host_setting_back_to_the_model_default_survives_a_dump():
    text = (
        "version: 1\n"
        "defaults:\n"
        "  ssh: {user: deploy, port: 2222}\n"
        "  service: process\n"
        "hosts:\n"
        "  mx1:\n"
        "    fqdn: mx1.example.org\n"
        "    ipv4: 127.0.0.1\n"
        "    tls: {self_signed: true}\n"
        "    ssh: {user: root}\n"
        "    service: systemd\n"
        "domains:\n"
        "  example.org:\n"
        "    mailbox_host: mx1\n"
        "    mx: [{host: mx1, priority: 10}]\n"
        "    aliases: {postmaster: abuse@example.net}\n"
    )
    loaded, diagnostics = check_text(text, "spec.yaml")
    assert diagnostics == []
    host = loaded.spec.hosts["mx1"]
    assert (host.ssh.user, host.ssh.port, host.service) == ("root", 2222, "systemd")
    again, diagnostics = check_text(dump_spec(loaded.spec), "dumped.yaml")
    assert diagnostics == []
    assert again.spec == loaded.spec


def test_names_that_look_like_numbers_survive_a_dump():
    text = (
        "version: 1\n"
        "hosts:\n"
        '  "0o17": {fqdn: mx1.example.org, ipv4: 127.0.0.1, tls: {self_signed: true}}\n'
        "domains:\n"
        "  example.org:\n"
        '    mailbox_host: "0o17"\n'
        '    mx: [{host: "0o17", priority: 10}]\n'
        "    users:\n"
        '      "1e5": {password: {env: P}}\n'
        '      "1.5e3": {password: {env: P}}\n'
        "    aliases: {postmaster: '1e5'}\n"
    )
    loaded, diagnostics = check_text(text, "spec.yaml")
    assert diagnostics == []
    again, diagnostics = check_text(dump_spec(loaded.spec), "dumped.yaml")
    assert diagnostics == []
    assert again.spec == loaded.spec


EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def test_examples_exist():
    assert EXAMPLES / "local.yaml" in EXAMPLE_FILES


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_example_is_valid_without_warnings_and_round_trips(path):
    loaded, diagnostics = check_spec(path)
    assert [d.format() for d in diagnostics] == []
    assert loaded is not None
    again, diagnostics = check_text(dump_spec(loaded.spec), "dumped.yaml")
    assert [d.format() for d in diagnostics] == []
    assert again.spec == loaded.spec
