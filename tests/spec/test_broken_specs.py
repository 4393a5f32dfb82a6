"""Broken specs, table-driven: each case is the base spec below with a few lines
changed, and the exact diagnostics a correct loader gives for it — line, column,
severity and message, pointing at the key or value at fault.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailops.spec.load import check_text
from tests.spec.conftest import run_mailops_many

ALICE_HASH = (
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$QKSllZvDekJeHMsO/vUinw"
    "$SIw/XMHYx7L+bXhh8RaGcIStO9FrJbGHEIqL4PHqOSQ"
)


def _numbered(text: str) -> str:
    """Drop the `NN| ` line-number margin, so that the base below shows its own lines."""
    lines = [re.sub(r"^\s*\d+\| ?", "", line) for line in text.strip().splitlines()]
    return "\n".join(lines).replace("ALICE_HASH", ALICE_HASH) + "\n"


# A valid spec with no findings at all (203.0.113.0/24 is a documentation range,
# so it counts as a lab: no single-MX or DMARC warnings).
BASE = _numbered(
    """
     1| version: 1
     2| hosts:
     3|   mx1:
     4|     fqdn: mx1.example.org
     5|     ipv4: 203.0.113.10
     6|     tls:
     7|       self_signed: true
     8| domains:
     9|   example.org:
    10|     mailbox_host: mx1
    11|     mx:
    12|       - {host: mx1, priority: 10}
    13|     users:
    14|       alice:
    15|         password_hash: "ALICE_HASH"
    16|     aliases:
    17|       postmaster: alice
    """
)

# The same service on a public address (5.1.2.3) with a real certificate: line 7
# becomes two lines (cert, key), so from line 8 on, BASE's line N is PUBLIC's N + 1.
PUBLIC = BASE.replace("203.0.113.10", "5.1.2.3").replace(
    "      self_signed: true\n", "      cert: /etc/ssl/mx1.pem\n      key: /etc/ssl/mx1.key\n"
)


def spec(
    *,
    replace: dict[int, str | list[str]] | None = None,
    after: dict[int, str | list[str]] | None = None,
    drop: tuple[int, ...] = (),
    append: tuple[str, ...] = (),
    base: str = BASE,
) -> str:
    """`base` with lines replaced, inserted after, dropped or appended. Every line
    number names a line of `base` as printed above, whatever else changes."""
    replace, after = replace or {}, after or {}
    out: list[str] = []
    for n, line in enumerate(base.splitlines(), 1):
        if n not in drop:
            new = replace.get(n, line)
            out.extend([new] if isinstance(new, str) else new)
        extra = after.get(n, [])
        out.extend([extra] if isinstance(extra, str) else extra)
    out.extend(append)
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Like:
    """A message that starts with `prefix` and contains each of `parts` (for long
    messages, or wording that is partly another library's)."""

    prefix: str
    parts: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, str)
            and other.startswith(self.prefix)
            and all(part in other for part in self.parts)
        )

    __hash__ = object.__hash__


def case(id: str, text: str | bytes, *expected: tuple, marks=()):
    return pytest.param(text, list(expected), id=id, marks=marks)


E, W = "error", "warning"
VALID_KEYS_HOST = (
    "connection, fqdn, ipv4, ipv6, listen, paths, ports, resolver, service, services, ssh, tls"
)
BAD_TARGET = (
    "alias target '{0}' is not a user or alias of example.org (a bare name means "
    "{0}@example.org; write a full address for another domain)"
)
SINGLE_MX = (
    "domain example.org has a single MX; a second (backup) MX keeps mail flowing "
    "while the first is down"
)
MX2 = [
    "  mx2:",
    "    fqdn: mx2.example.org",
    "    ipv4: 203.0.113.11",
    "    tls: {self_signed: true}",
]


CASES = [
    # ------------------------------------------------------------ the file itself
    case(
        "yaml-syntax-error",
        spec(replace={5: "    ipv4: 203.0.113.10: x"}),
        (5, 23, E, "YAML syntax: mapping values are not allowed in this context"),
    ),
    case(
        "yaml-unclosed-flow-mapping",
        spec(replace={12: "      - {host: mx1, priority: 10"}),
        (13, 10, E, Like("YAML syntax: did not find expected ',' or '}'", ("line 12",))),
    ),
    case(
        "duplicate-key",
        spec(after={5: "    fqdn: mx2.example.org"}),
        (6, 5, E, "duplicate key 'fqdn' (first defined at line 4)"),
    ),
    case(
        "duplicate-key-nested-in-flow",
        spec(replace={12: "      - {host: mx1, priority: 10, priority: 20}"}),
        (12, 35, E, "duplicate key 'priority' (first defined at line 12)"),
    ),
    case(
        "tab-indentation",
        spec(replace={5: "\tipv4: 203.0.113.10"}),
        (5, 1, E, "tab used for indentation; use spaces"),
    ),
    case(
        "non-utf8-byte",
        spec(replace={4: "    fqdn: mx1.ex\xe4mple.org"}).encode("latin-1"),
        (4, 17, E, "the file is not UTF-8 text (byte 0xe4); save it as UTF-8"),
    ),
    case(
        "non-utf8-byte-column-counts-characters",
        # "# naïve " is 8 characters (9 bytes): the bad byte is the 9th character.
        spec(after={1: "# na\u00efve <BAD>"}).encode().replace(b"<BAD>", b"\xe9"),
        (2, 9, E, "the file is not UTF-8 text (byte 0xe9); save it as UTF-8"),
    ),
    case(
        "nul-character",
        spec(replace={4: "    fqdn: mx1.example.org\x00"}),
        (
            4,
            26,
            E,
            "YAML syntax: unacceptable character #x0000: control characters are not allowed",
        ),
    ),
    case("empty-file", "", (1, 1, E, "the file is empty; a spec starts with 'version: 1'")),
    case(
        "only-comments",
        "# to do: write the spec\n",
        (1, 1, E, "the file is empty; a spec starts with 'version: 1'"),
    ),
    case(
        "file-is-a-list",
        "- version: 1\n- hosts: {}\n",
        (1, 1, E, "a spec must be a mapping of keys (version, hosts, domains, …), got a list"),
    ),
    case(
        "file-is-a-scalar",
        "mail.example.org\n",
        (
            1,
            1,
            E,
            "a spec must be a mapping of keys (version, hosts, domains, …), got 'mail.example.org'",
        ),
    ),
    case(
        "two-documents",
        BASE + "---\nversion: 1\n",
        (18, 1, E, "only one YAML document is allowed in a spec (remove the extra '---')"),
    ),
    case(
        "python-object-tag",
        spec(replace={1: "version: !!python/object/apply:os.system [echo]"}),
        (1, 10, E, "unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    ),
    case(
        "nan-value",
        spec(replace={1: "version: .nan"}),
        (1, 10, E, "version must be one of 1, got nan"),
    ),
    case(
        "null-as-key",
        spec(after={5: "    ~: 1"}),
        (6, 5, E, "a key must be a name, not null, true/false or a fraction"),
    ),
    # ------------------------------------------------------------ keys
    case(
        "unknown-key-with-suggestion",
        spec(replace={4: "    mx_host: mx1.example.org"}),
        (3, 3, E, "missing required key 'fqdn' in host 'mx1'"),
        (4, 5, E, "unknown key 'mx_host' in host 'mx1' (did you mean 'fqdn'?)"),
    ),
    case(
        "unknown-key-lists-valid-keys",
        spec(after={5: "    colour: blue"}),
        (6, 5, E, f"unknown key 'colour' in host 'mx1' (valid keys: {VALID_KEYS_HOST})"),
    ),
    case(
        "unknown-key-misspelt",
        spec(replace={15: f'        pasword_hash: "{ALICE_HASH}"'}),
        (
            15,
            9,
            E,
            "unknown key 'pasword_hash' in user 'alice@example.org' "
            "(did you mean 'password_hash'?)",
        ),
    ),
    case(
        "unknown-top-level-key",
        spec(replace={8: "domain:"}),
        (1, 1, E, "missing required key 'domains' in the spec"),
        (8, 1, E, "unknown key 'domain' in the spec (did you mean 'domains'?)"),
    ),
    case(
        "missing-fqdn",
        spec(drop=(4,)),
        (3, 3, E, "missing required key 'fqdn' in host 'mx1'"),
    ),
    case(
        "missing-mx",
        spec(drop=(11, 12)),
        (9, 3, E, "missing required key 'mx' in domain example.org"),
    ),
    case(
        "missing-priority",
        spec(replace={12: "      - {host: mx1}"}),
        (12, 9, E, "missing required key 'priority' in MX entry 1 of domain example.org"),
    ),
    case(
        "missing-version",
        spec(drop=(1,)),
        (1, 1, E, "missing required key 'version' in the spec"),
    ),
    case(
        "version-2", spec(replace={1: "version: 2"}), (1, 10, E, "version must be one of 1, got 2")
    ),
    # ------------------------------------------------------------ types
    case(
        "port-as-string",
        spec(after={5: ["    ports:", '      smtp: "25"']}),
        (7, 13, E, "smtp must be a whole number, got '25'"),
    ),
    case(
        "priority-as-string",
        spec(replace={12: '      - {host: mx1, priority: "10"}'}),
        (12, 31, E, "priority must be a whole number, got '10'"),
    ),
    case(
        "services-as-string",
        spec(after={5: "    services: smtp"}),
        (6, 15, E, "services must be a list, got 'smtp'"),
    ),
    case(
        "hosts-as-list",
        spec(replace={3: "  - {fqdn: mx1.example.org, ipv4: 203.0.113.10}"}, drop=(4, 5, 6, 7)),
        (3, 3, E, "hosts must be a mapping of keys, got a list"),
    ),
    case(
        "bool-given-a-string",
        spec(replace={7: '      self_signed: "true"'}),
        (7, 20, E, "self_signed must be true or false, got 'true'"),
    ),
    case(
        "bool-given-yaml11-yes",
        spec(replace={7: "      self_signed: yes"}),
        (7, 20, E, "self_signed must be true or false, got 'yes'"),
    ),
    case(
        "unknown-service",
        spec(after={5: "    services: [smtp, imap4]"}),
        (
            6,
            22,
            E,
            "services entry 2 must be one of smtp, submission, submissions, imap, imaps, "
            "pop3, pop3s, got 'imap4'",
        ),
    ),
    case(
        "service-listed-twice",
        spec(after={5: "    services: [smtp, imap, smtp]"}),
        (6, 28, E, "services must not list service 'smtp' twice"),
    ),
    # ------------------------------------------------------------ ranges and values
    case(
        "priority-too-big",
        spec(replace={12: "      - {host: mx1, priority: 70000}"}),
        (12, 31, E, "priority must be 0–65535, got 70000"),
    ),
    case(
        "port-zero",
        spec(after={5: ["    ports:", "      smtp: 0"]}),
        (7, 13, E, "smtp must be 1–65535, got 0"),
    ),
    case(
        "invalid-ipv4",
        spec(replace={5: "    ipv4: 203.0.113.999"}),
        (5, 11, E, "ipv4 must be an IPv4 address like 203.0.113.10, got '203.0.113.999'"),
    ),
    case(
        "invalid-ipv6",
        spec(after={5: "    ipv6: 2001:db8::zz"}),
        (6, 11, E, "ipv6 must be an IPv6 address like 2001:db8::10, got '2001:db8::zz'"),
    ),
    case(
        "invalid-listen-address",
        spec(after={5: "    listen: [localhost]"}),
        (6, 14, E, "listen entry 1 must be an IP address like 0.0.0.0 or ::, got 'localhost'"),
    ),
    case(
        "host-without-address",
        spec(drop=(5,)),
        (3, 3, E, "host 'mx1' needs ipv4 or ipv6 (the address published in DNS)"),
    ),
    case(
        "invalid-host-id",
        spec(replace={3: "  MX_1:"}),
        (
            3,
            3,
            E,
            "host id 'MX_1' must be lowercase letters, digits and '-' (not at the start or "
            "end), at most 63 characters",
        ),
    ),
    case(
        "invalid-quota",
        spec(after={15: "        quota: 2 gigs"}),
        (
            16,
            16,
            E,
            "quota must be a size like 2GiB, 500MB or 1073741824 (units B, KiB, MiB, GiB, "
            "TiB, KB, MB, GB, TB), got '2 gigs'",
        ),
    ),
    case(
        "dmarc-pct-101",
        spec(after={12: "    dmarc: {policy: reject, pct: 101}"}),
        (13, 34, E, "pct must be 0–100, got 101"),
    ),
    case(
        "mta-sts-max-age-too-small",
        spec(after={12: "    mta_sts: {mode: enforce, max_age: 3600}"}),
        (13, 39, E, "max_age must be 86400–31557600, got 3600"),
    ),
    case(
        "subaddress-invalid",
        spec(after={12: "    subaddress: '#'"}),
        (13, 17, E, "subaddress must be one of + - _ = (or null to turn it off), got '#'"),
    ),
    case(
        "dkim-selector-listed-twice",
        spec(
            after={
                12: [
                    "    dkim:",
                    "      selectors:",
                    "        - {name: s1}",
                    "        - {name: s1}",
                ]
            }
        ),
        (16, 11, E, "selectors must not list selector 's1' twice"),
    ),
    # ------------------------------------------------------------ names
    case(
        "invalid-domain-name",
        spec(replace={9: "  exa_mple.org:"}),
        (
            9,
            3,
            E,
            "domain name 'exa_mple.org' has an invalid label 'exa_mple': labels are 1–63 "
            "letters, digits or '-', not starting or ending with '-'",
        ),
    ),
    case(
        "domain-name-one-label",
        spec(replace={9: "  example:"}),
        (
            9,
            3,
            E,
            "domain name 'example' must be a fully qualified name with at least two labels, "
            "like example.org",
        ),
    ),
    case(
        "invalid-local-part",
        spec(replace={14: "      al ice:"}),
        (
            14,
            7,
            E,
            "local part 'al ice' is not a valid dot-atom: use letters, digits and "
            "!#$%&'*+/=?^_`{|}~- separated by single dots",
        ),
    ),
    case(
        "duplicate-user-by-case",
        spec(
            replace={
                14: ["      Alice:", "        password: {env: ALICE_PASSWORD}", "      alice:"]
            }
        ),
        (
            16,
            7,
            E,
            "user 'alice' of example.org is defined twice (names are case-insensitive; "
            "first defined at line 14)",
        ),
    ),
    case(
        "duplicate-domain-by-case",
        spec(
            append=(
                "  Example.org:",
                "    mailbox_host: mx1",
                "    mx:",
                "      - {host: mx1, priority: 10}",
            )
        ),
        (
            18,
            3,
            E,
            "domain 'Example.org' is defined twice (names are case-insensitive; "
            "first defined at line 9)",
        ),
    ),
    # ------------------------------------------------------------ cross-references
    case(
        "mx-unknown-host",
        spec(replace={12: "      - {host: mx9, priority: 10}"}),
        (12, 16, E, "unknown host 'mx9' (known hosts: mx1)"),
    ),
    case(
        "mx-host-without-smtp",
        spec(after={5: "    services: [submission, imap, imaps]"}),
        (13, 16, E, "MX host 'mx1' does not offer the smtp service"),
    ),
    case(
        "mx-host-and-name",
        spec(replace={12: "      - {host: mx1, name: mx.example.net, priority: 10}"}),
        (
            12,
            9,
            E,
            "MX entry 1 of domain example.org needs exactly one of 'host' (a host id) or "
            "'name' (an external MX)",
        ),
    ),
    case(
        "same-mx-host-twice",
        spec(after={12: "      - {host: mx1, priority: 20}"}),
        (
            13,
            9,
            E,
            "MX mx1.example.org is listed twice for domain example.org (one entry per host, "
            "each with its own priority) (first defined at line 12)",
        ),
    ),
    case(
        "mailbox-host-unknown",
        spec(replace={10: "    mailbox_host: mx2"}),
        (10, 19, E, "unknown host 'mx2' (known hosts: mx1)"),
    ),
    case(
        "mailbox-host-without-imap-or-pop3",
        spec(after={5: "    services: [smtp, submission]"}),
        (
            11,
            19,
            E,
            "mailbox host 'mx1' offers none of imap, imaps, pop3, pop3s, so nobody could "
            "read the mail",
        ),
    ),
    case(
        "relay-unknown",
        spec(after={10: ["    outbound:", "      relay: provider"]}),
        (12, 14, E, "unknown relay 'provider' (known relays: none are defined)"),
    ),
    case(
        "alias-target-unknown",
        spec(after={17: "      abuse: bob"}),
        (18, 14, E, BAD_TARGET.format("bob")),
    ),
    case(
        "alias-target-unknown-in-list",
        spec(after={17: "      team: [alice, bob]"}),
        (18, 21, E, BAD_TARGET.format("bob")),
    ),
    case(
        "catch-all-target-unknown",
        spec(after={12: "    catch_all: nobody"}),
        (13, 16, E, BAD_TARGET.format("nobody")),
    ),
    case(
        "alias-loop",
        spec(after={17: ["      a: b", "      b: a"]}),
        (18, 7, E, "alias loop: a@example.org → b@example.org → a@example.org"),
        (19, 7, E, "alias loop: b@example.org → a@example.org → b@example.org"),
    ),
    case(
        "address-is-user-and-alias",
        spec(after={17: "      alice: abuse@example.net"}),
        (
            18,
            7,
            E,
            "address alice@example.org is defined twice (here as an alias) "
            "(first defined at line 14)",
        ),
    ),
    case(
        "user-alias-collides-with-alias",
        spec(after={14: "        aliases: [postmaster]"}),
        (
            18,
            7,
            E,
            "address postmaster@example.org is defined twice (here as an alias) "
            "(first defined at line 15)",
        ),
    ),
    case(
        "user-alias-collides-with-user",
        spec(after={14: "        aliases: [Alice]"}),
        (
            15,
            19,
            E,
            "address alice@example.org is defined twice (here as a user alias) "
            "(first defined at line 14)",
        ),
    ),
    case(
        "two-services-on-one-port",
        spec(after={5: ["    ports:", "      imap: 25"]}),
        (7, 13, E, "port 25 is used by both smtp and imap on host 'mx1'"),
    ),
    case(
        "two-hosts-with-one-fqdn",
        spec(after={7: [*MX2[:1], "    fqdn: mx1.example.org", *MX2[2:]]}),
        (9, 11, E, "fqdn mx1.example.org is already used by host 'mx1' (first defined at line 4)"),
    ),
    # ------------------------------------------------------------ passwords and secrets
    case(
        "plain-password-scheme",
        spec(replace={15: '        password_hash: "{PLAIN}hunter2"'}),
        (
            15,
            24,
            E,
            "scheme {PLAIN} stores the password in clear text and is refused; "
            "use 'mailops hash-password' for an {ARGON2ID} hash",
        ),
    ),
    case(
        "unknown-password-scheme",
        spec(replace={15: '        password_hash: "{MD5}1a1dc91c907325c69271ddf0c944bc72"'}),
        (
            15,
            24,
            E,
            "unknown password scheme {MD5}; accepted: {ARGON2ID}, {ARGON2I}, {BLF-CRYPT}, "
            "{SHA512-CRYPT}, {SHA256-CRYPT}",
        ),
    ),
    case(
        "password-hash-without-scheme",
        spec(replace={15: "        password_hash: $argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"}),
        (
            15,
            24,
            E,
            "password_hash must start with a scheme such as {ARGON2ID} "
            "(make one with 'mailops hash-password')",
        ),
    ),
    case(
        "argon2-scheme-on-a-bcrypt-hash",
        spec(replace={15: '        password_hash: "{ARGON2ID}$2b$12$R9h/cIPz0gi.URNNX3kh2O"'}),
        (15, 24, E, "password_hash is not a {ARGON2ID} hash: it should start with $argon2id$"),
    ),
    case(
        "malformed-argon2-hash",
        spec(replace={15: '        password_hash: "{ARGON2ID}$argon2id$v=19$m=65536"'}),
        (15, 24, E, Like("password_hash is not a {ARGON2ID} hash")),
    ),
    case(
        "relay-password-literal",
        spec(
            after={
                7: [
                    "relays:",
                    "  provider:",
                    "    host: smtp.relay.example",
                    "    username: mailer@example.org",
                    "    password: hunter2",
                ]
            }
        ),
        (
            12,
            15,
            E,
            "password must be a secret reference like {env: NAME} or {file: path}, "
            "not a literal: secrets do not belong in the spec",
        ),
    ),
    case(
        "relay-username-without-password",
        spec(
            after={7: ["relays:", "  provider:", "    host: smtp.relay.example", "    username: m"]}
        ),
        (9, 3, E, "relay 'provider' needs both username and password, or neither"),
    ),
    case(
        "user-with-password-and-hash",
        spec(after={14: "        password: {env: ALICE_PASSWORD}"}),
        (14, 7, E, "user 'alice@example.org' needs exactly one of password_hash or password"),
    ),
    case(
        "user-without-password",
        spec(replace={15: "        quota: 1GiB"}),
        (14, 7, E, "user 'alice@example.org' needs exactly one of password_hash or password"),
    ),
    case(
        "secret-ref-with-env-and-file",
        spec(replace={15: "        password: {env: ALICE_PASSWORD, file: secrets/alice}"}),
        (15, 9, E, "password needs exactly one of 'env' or 'file'"),
    ),
    # ------------------------------------------------------------ TLS
    case(
        "tls-cert-without-key",
        spec(replace={6: "    tls: {cert: /etc/ssl/mx1.pem}"}, drop=(7,)),
        (6, 5, E, "tls needs both cert and key (or self_signed: true)"),
    ),
    case(
        "tls-cert-without-key-block-style",
        spec(replace={7: "      cert: /etc/ssl/mx1.pem"}),
        (6, 5, E, "tls needs both cert and key (or self_signed: true)"),
    ),
    case(
        "tls-both-self-signed-and-cert",
        spec(replace={6: "    tls: {self_signed: true, cert: /x.pem, key: /x.key}"}, drop=(7,)),
        (6, 5, E, "tls must give either cert and key, or self_signed: true, not both"),
    ),
    case(
        "tls-missing-on-host-offering-imap",
        spec(replace={5: ["    ipv4: 203.0.113.10", "    services: [smtp, imap]"]}, drop=(6, 7)),
        (
            3,
            3,
            E,
            "host 'mx1' offers imap but has no tls: passwords need TLS "
            "(give tls.cert and tls.key, or tls.self_signed: true)",
        ),
    ),
    # ------------------------------------------------------------ DNS
    case(
        "zone-full-without-nameservers",
        spec(append=("dns:", "  zones:", "    example.org:", "      managed: full")),
        (20, 5, E, "zone example.org needs nameservers when managed: full"),
    ),
    case(
        "extra-record-bad-a-value",
        spec(
            append=(
                "dns:",
                "  zones:",
                "    example.org:",
                "      extra_records:",
                "        - {name: www, type: A, value: 203.0.113.300}",
            )
        ),
        # the rest of the message is dnspython's
        (22, 39, E, Like("value is not a valid A record value: ")),
    ),
    # ------------------------------------------------------------ defaults
    case(
        "defaults-ssh-address",
        spec(after={1: ["defaults:", "  ssh:", "    address: 203.0.113.10"]}),
        (4, 14, E, "address is set per host (hosts.<id>.ssh.address), not in defaults"),
    ),
    case(
        "defaults-fqdn",
        spec(after={1: ["defaults:", "  fqdn: mail.example.org"]}),
        (
            3,
            3,
            E,
            "unknown key 'fqdn' in defaults (valid keys: connection, listen, paths, ports, "
            "resolver, service, services, ssh, tls)",
        ),
    ),
    case(
        "defaults-error-reported-once-not-per-host",
        spec(after={1: ["defaults:", "  ports:", "    smtp: 0"], 7: MX2}),
        (4, 11, E, "smtp must be 1–65535, got 0"),
    ),
    case(
        "broken-defaults-tls-gives-no-follow-on-error-per-host",
        spec(after={1: ["defaults:", "  tls: {cert: /etc/ssl/mail.pem}"], 7: MX2[:3]}, drop=(6, 7)),
        (3, 3, E, "tls needs both cert and key (or self_signed: true)"),
    ),
    # ------------------------------------------------------------ many errors in one file
    case(
        "errors-in-one-domain-all-reported",
        spec(
            replace={10: "    mailbox_host: mx7", 12: "      - {host: mx1, priority: 70000}"},
            after={17: "      abuse: bob"},
        ),
        (10, 19, E, "unknown host 'mx7' (known hosts: mx1)"),
        (12, 31, E, "priority must be 0–65535, got 70000"),
        (18, 14, E, BAD_TARGET.format("bob")),
    ),
    case(
        "cross-checks-run-when-the-only-host-is-broken",
        spec(replace={5: "    ipv4: 203.0.113.999", 12: "      - {host: mx9, priority: 10}"}),
        (5, 11, E, "ipv4 must be an IPv4 address like 203.0.113.10, got '203.0.113.999'"),
        (12, 16, E, Like("unknown host 'mx9' (known hosts: ")),
    ),
    # ------------------------------------------------------------ warnings
    case(
        "warning-no-postmaster",
        spec(drop=(16, 17)),
        (
            9,
            3,
            W,
            "domain example.org has no postmaster address; RFC 5321 requires one "
            "(add an alias such as 'postmaster: alice')",
        ),
    ),
    case("warning-single-mx-on-public-address", PUBLIC, (12, 5, W, SINGLE_MX)),
    case(
        "warning-dmarc-none-on-public-address",
        spec(after={13: "    dmarc: {policy: none}"}, base=PUBLIC),
        (12, 5, W, SINGLE_MX),
        (
            14,
            21,
            W,
            "DMARC policy none does not protect example.org from spoofing; "
            "move to quarantine once reports look clean",
        ),
    ),
    case(
        "warning-spf-plus-all",
        spec(after={12: "    spf: {policy: +all}"}),
        (13, 19, W, "SPF policy +all lets anyone send as example.org; use -all or ~all"),
    ),
    case(
        "warning-self-signed-on-public-address",
        spec(replace={5: "    ipv4: 5.1.2.3"}),
        (
            7,
            20,
            W,
            "host 'mx1' has a public address but a self-signed certificate; "
            "clients will refuse it (use a real certificate)",
        ),
        (11, 5, W, SINGLE_MX),
    ),
    case(
        "warning-unused-zone",
        spec(append=("dns:", "  zones:", "    example.net: {}")),
        (20, 5, W, "zone example.net holds no domain or host of this spec"),
    ),
    # ------------------------------------------------------------ no findings at all
    case("base-is-clean", BASE),
    case("lab-on-loopback-has-no-single-mx-warning", spec(replace={5: "    ipv4: 127.0.0.1"})),
    case(
        "lab-dmarc-none-is-fine",
        spec(replace={5: "    ipv4: 10.0.0.5"}, after={12: "    dmarc: {policy: none}"}),
    ),
    case(
        "public-with-backup-mx-is-clean",
        spec(after={13: "      - {name: mx.backup.example, priority: 20}"}, base=PUBLIC),
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_broken_spec(text, expected):
    loaded, diagnostics = check_text(text, "spec.yaml")
    got = [(d.line, d.col, d.severity, d.message) for d in diagnostics]
    assert got == expected
    assert {d.file for d in diagnostics} <= {"spec.yaml"}
    assert (loaded is None) == any(severity == E for _, _, severity, _ in expected)


def test_table_is_big_enough():
    broken = [c for c in CASES if c.values[1]]
    assert len(broken) >= 45


def test_every_problem_in_one_run():
    """Errors in different places (the version, a host, a domain's values, another
    domain's references) all come out of one run, each at its own place."""
    text = _numbered(
        """
         1| version: 2
         2| hosts:
         3|   mx1:
         4|     fqdn: mx1.example.org
         5|     ipv4: 203.0.113.300
         6|     tls: {self_signed: true}
         7|   mx2:
         8|     fqdn: mx2.example.org
         9|     ipv4: 203.0.113.11
        10|     tls: {self_signed: true}
        11| domains:
        12|   example.org:
        13|     mailbox_host: mx2
        14|     mx:
        15|       - {host: mx2, priority: 70000}
        16|     aliases:
        17|       postmaster: alice@example.net
        18|   example.net:
        19|     mailbox_host: mx3
        20|     mx:
        21|       - {host: mx2, priority: 10}
        22|     users:
        23|       alice: {password: {env: ALICE_PASSWORD}}
        24|     aliases:
        25|       postmaster: alice
        26|       abuse: nobody
        """
    )
    loaded, diagnostics = check_text(text, "spec.yaml")
    assert loaded is None
    got = [(d.line, d.col, d.severity, d.message) for d in diagnostics]
    assert got == [
        (1, 10, E, "version must be one of 1, got 2"),
        (5, 11, E, "ipv4 must be an IPv4 address like 203.0.113.10, got '203.0.113.300'"),
        (15, 31, E, "priority must be 0–65535, got 70000"),
        (19, 19, E, Like("unknown host 'mx3' (known hosts: ", ("mx2",))),
        (
            26,
            14,
            E,
            "alias target 'nobody' is not a user or alias of example.net (a bare name means "
            "nobody@example.net; write a full address for another domain)",
        ),
    ]
    assert len({d.message for d in diagnostics}) >= 3


def test_diagnostic_format():
    _, diagnostics = check_text(spec(replace={5: "    ipv4: 203.0.113.999"}), "dir/spec.yaml")
    assert [d.format() for d in diagnostics] == [
        "dir/spec.yaml:5:11: error: ipv4 must be an IPv4 address like 203.0.113.10, "
        "got '203.0.113.999'"
    ]


def test_secret_values_never_appear_in_messages():
    text = spec(
        replace={15: '        password_hash: "{PLAIN}hunter2-plain"'},
        after={
            7: [
                "relays:",
                "  provider:",
                "    host: smtp.relay.example",
                "    username: mailer@example.org",
                "    password: hunter2-relay",
            ]
        },
    )
    _, diagnostics = check_text(text, "spec.yaml")
    assert len(diagnostics) == 2
    assert not [d for d in diagnostics if "hunter2" in d.message]


# ---------------------------------------------------------------- hostile input, no traceback


def _nested_lists(depth: int) -> str:
    return "version: 1\nhosts: " + "[" * depth + "]" * depth + "\n"


def _laughs(levels: int) -> str:
    """The "billion laughs": each anchor is a list of nine aliases of the previous one."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "version: 1\n" + "\n".join(lines) + "\nhosts: *" + chr(ord("a") + levels - 1) + "\n"


HOSTILE = {
    "binary-garbage": bytes(range(256)) * 16,
    "utf8-garbage": b"}{][:::&&**!!%%@@``|>\n  - ? - : ]\n" * 50,
    "nested-lists-1000": _nested_lists(1000).encode(),
    "block-lists-1000": "".join("  " * i + "-\n" for i in range(1000)).encode(),
    "10mb-line": b"version: 1\nhosts: " + b"a" * 10_000_000 + b"\n",
    "10mb-key": b"x" * 10_000_000 + b": 1\n",
    "python-tag": b"version: !!python/object/apply:os.system ['echo pwned']\n",
    "python-tag-mapping": b"version: 1\nhosts: !!python/object:os.system {}\n",
    "laughs-small": _laughs(5).encode(),
    "laughs-billion": _laughs(9).encode(),
    "unknown-alias": b"version: 1\nhosts: *nowhere\n",
    "nul-bytes": b"version: 1\x00\x00\n",
    "nan": b"version: .nan\n",
}


@pytest.fixture(scope="module")
def hostile_runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """`mailops validate` on every hostile file, all started at once."""
    folder = tmp_path_factory.mktemp("hostile")
    paths = {name: folder / f"{name}.yaml" for name in HOSTILE}
    for name, path in paths.items():
        path.write_bytes(HOSTILE[name])
    results = run_mailops_many({name: ["validate", path] for name, path in paths.items()}, folder)
    return {name: (paths[name], results[name]) for name in HOSTILE}


@pytest.mark.parametrize(
    "name",
    list(HOSTILE),
)
def test_hostile_input_is_refused_without_traceback(name, hostile_runs):
    path, result = hostile_runs[name]
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr[-2000:]
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: error: ", result.stderr)
    assert "pwned" not in result.stdout


def test_huge_value_is_not_echoed_whole(hostile_runs):
    _, result = hostile_runs["10mb-line"]
    assert result.returncode == 2
    assert len(result.stderr) < 10_000
