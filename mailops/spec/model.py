"""The spec model (version 1). Key names are the public interface: see SPEC.md.

Field docstrings become the descriptions in `schemas/mailops.schema.json`, which
editors with a YAML language server show while a user types (spec/schema.py
reads them from this source when it makes the schema, not at import).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from mailops.passwords import check_hash
from mailops.spec import names
from mailops.spec.secrets import SecretRef
from mailops.spec.types import (
    TTL,
    AliasTarget,
    ByteSize,
    DnsName,
    DomainName,
    Hostname,
    Id,
    IntRange,
    IPAddr,
    IPv4,
    IPv6,
    LocalPart,
    Port,
    Priority,
    RecordName,
    ResolverAddress,
)

Service = Literal["smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s"]
ALL_SERVICES: tuple[Service, ...] = (
    "smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s",
)  # fmt: skip
MAILBOX_SERVICES = frozenset({"imap", "imaps", "pop3", "pop3s"})


class Model(BaseModel):
    """Every spec object: unknown keys are errors, docstrings document fields."""

    model_config = ConfigDict(extra="forbid")


def _secret_ref_only(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError(
            "must be a secret reference like {env: NAME} or {file: path}, not a literal: "
            "secrets do not belong in the spec"
        )
    return value


SecretOnly = Annotated[SecretRef, BeforeValidator(_secret_ref_only)]
# A hash may be written in the spec or kept in a file / variable like any secret.
PasswordHash = Annotated[
    Annotated[str, BeforeValidator(check_hash), Tag("literal")] | Annotated[SecretRef, Tag("ref")],
    Discriminator(lambda v: "ref" if isinstance(v, dict | SecretRef) else "literal"),
]
# Tags that pydantic puts into error locations for the union above.
UNION_TAGS = frozenset({"literal", "ref"})


# ---------------------------------------------------------------- hosts


class SSH(Model):
    """How mailops reaches a host over SSH."""

    user: str = "root"
    """Remote user to log in as."""
    port: Port = 22
    """SSH port."""
    identity_file: str | None = None
    """Private key file; default: the SSH agent and ~/.ssh's usual keys."""
    known_hosts: str | None = None
    """known_hosts file used to verify host keys (relative to the spec file);
    default ~/.ssh/known_hosts."""
    address: str | None = None
    """Where to connect (name or IP); default: the host's fqdn."""


class DefaultSSH(SSH):
    """SSH settings shared by every host; `address` is per host."""

    @field_validator("address", mode="before")
    @classmethod
    def _per_host(cls, value: Any) -> Any:
        raise ValueError("is set per host (hosts.<id>.ssh.address), not in defaults")


class Ports(Model):
    """The port of each service."""

    smtp: Port = 25
    """SMTP for incoming mail (MX)."""
    submission: Port = 587
    """Message submission with STARTTLS."""
    submissions: Port = 465
    """Message submission over implicit TLS."""
    imap: Port = 143
    """IMAP with STARTTLS."""
    imaps: Port = 993
    """IMAP over implicit TLS."""
    pop3: Port = 110
    """POP3 with STLS."""
    pop3s: Port = 995
    """POP3 over implicit TLS."""


class TLS(Model):
    """The certificate the host presents: files on the host, or a self-signed one."""

    cert: str | None = None
    """Path of the certificate chain (PEM) on the host."""
    key: str | None = None
    """Path of the private key (PEM) on the host."""
    self_signed: StrictBool = False
    """Let mailops make a self-signed certificate (for tests and labs only)."""

    @model_validator(mode="after")
    def _one_source(self) -> TLS:
        if self.self_signed and (self.cert or self.key):
            raise ValueError("must give either cert and key, or self_signed: true, not both")
        if not self.self_signed and not (self.cert and self.key):
            raise ValueError("needs both cert and key (or self_signed: true)")
        return self


class Paths(Model):
    """Where the runtime keeps its files on the host (relative paths: beside the spec)."""

    config: str = "/etc/mailops"
    """Rendered configuration: runtime.toml, passwd, aliases, keys."""
    data: str = "/var/lib/mailops"
    """Mailboxes and the queue."""
    install: str = "/opt/mailops"
    """The runtime's virtual environment."""


Services = Annotated[list[Service], Field(json_schema_extra={"uniqueItems": True})]


class HostSettings(Model):
    """Host settings that `defaults` may also give."""

    connection: Literal["ssh", "local"] = "ssh"
    """ssh: configure the host over SSH; local: this machine, without SSH."""
    ssh: SSH = Field(default_factory=SSH)
    """SSH connection settings."""
    services: Services = Field(default_factory=lambda: list(ALL_SERVICES))
    """Services this host runs; smtp is the MX role on port 25."""
    ports: Ports = Field(default_factory=Ports)
    """Port of each service."""
    listen: list[IPAddr] = Field(default_factory=lambda: ["0.0.0.0", "::"])
    """Addresses the runtime binds."""
    tls: TLS | None = None
    """TLS certificate; required when the host offers any service with passwords."""
    paths: Paths = Field(default_factory=Paths)
    """Folders on the host."""
    service: Literal["systemd", "process"] = "systemd"
    """systemd: a unit; process: mailops starts and signals the runtime by pid file."""
    resolver: list[ResolverAddress] | None = None
    """DNS servers the runtime asks (IP or IP:PORT); default: the host's resolv.conf."""


class Defaults(HostSettings):
    """Settings merged under every host (a host's own settings win)."""

    ssh: DefaultSSH = Field(default_factory=DefaultSSH)  # type: ignore[assignment]
    """SSH connection settings shared by every host."""


class HostIdentity(Model):
    """What names and addresses a host has (never defaulted)."""

    fqdn: Hostname
    """Fully qualified name: EHLO and banner name, MX target, TLS name."""
    ipv4: IPv4 | None = None
    """Public IPv4 address (published as A)."""
    ipv6: IPv6 | None = None
    """Public IPv6 address (published as AAAA)."""


class Host(HostSettings, HostIdentity):
    """A machine that runs the mailops runtime."""

    @model_validator(mode="after")
    def _has_address(self) -> Host:
        if self.ipv4 is None and self.ipv6 is None:
            raise ValueError("needs ipv4 or ipv6 (the address published in DNS)")
        return self

    def addresses(self) -> list[str]:
        return [a for a in (self.ipv4, self.ipv6) if a]


# ---------------------------------------------------------------- relays


class Relay(Model):
    """A smarthost that outbound mail may go through."""

    host: Hostname
    """The relay's host name."""
    port: Port = 587
    """The relay's port."""
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    """starttls (port 587), implicit (port 465) or none (only on a trusted network)."""
    username: str | None = None
    """Login name at the relay."""
    password: SecretOnly | None = None
    """Password at the relay: a secret reference, never a literal."""
    spf_include: DnsName | None = None
    """Domain to `include:` in the SPF record of domains that send through this relay."""

    @model_validator(mode="after")
    def _login_pair(self) -> Relay:
        if (self.username is None) != (self.password is None):
            raise ValueError("needs both username and password, or neither")
        return self


# ---------------------------------------------------------------- domains


class MX(Model):
    """One MX record: a managed host (`host`) or a name mailops does not manage."""

    host: str | None = None
    """Id of a host in `hosts`."""
    name: Hostname | None = None
    """Host name of an MX that mailops does not manage."""
    priority: Priority
    """Preference: the lowest number is tried first."""

    @model_validator(mode="after")
    def _host_or_name(self) -> MX:
        if (self.host is None) == (self.name is None):
            raise ValueError("needs exactly one of 'host' (a host id) or 'name' (an external MX)")
        return self


class Outbound(Model):
    """How mail from this domain leaves."""

    relay: str | None = None
    """Id of a relay in `relays`; omit to deliver directly by MX lookup."""


class User(Model):
    """A mailbox."""

    password_hash: PasswordHash | None = None
    """A Dovecot-style hash such as {ARGON2ID}$argon2id$… (see 'mailops hash-password'),
    or a secret reference to one."""
    password: SecretOnly | None = None
    """The password as a secret reference; hashed (argon2id) when rendering."""
    quota: ByteSize | None = None
    """Mailbox size limit, like 2GiB; default: none."""
    aliases: list[LocalPart] = Field(default_factory=list)
    """More local parts in this domain that deliver to this user."""

    @model_validator(mode="after")
    def _one_password(self) -> User:
        if (self.password_hash is None) == (self.password is None):
            raise ValueError("needs exactly one of password_hash or password")
        return self


AliasTargets = Annotated[
    list[AliasTarget],
    BeforeValidator(lambda v: [v] if isinstance(v, str) else v),
    Field(min_length=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
            ]
        }
    ),
]


class Selector(Model):
    """A DKIM selector and its key type."""

    name: RecordName
    """The selector, published at <name>._domainkey.<domain>."""
    algorithm: Literal["rsa-2048", "rsa-4096", "ed25519"] = "rsa-2048"
    """Key type."""


class DKIM(Model):
    """DKIM signing for the domain. The first selector signs; the rest stay published."""

    selectors: list[Selector] = Field(default_factory=list)
    """Selectors, active first."""


class SPF(Model):
    """The domain's SPF record."""

    policy: Literal["-all", "~all", "?all", "+all"] = "-all"
    """What receivers do with mail from other senders."""
    include: list[DnsName] = Field(default_factory=list)
    """Further domains to include (for example a newsletter service)."""


def _report_uris(value: list[str]) -> list[str]:
    for uri in value:
        if not isinstance(uri, str) or not uri.startswith(("mailto:", "https:")):
            raise ValueError(f"must list mailto: or https: URIs, got {uri!r}")
        if uri.startswith("mailto:"):
            names.address(uri[len("mailto:") :].split("!")[0])
    return value


ReportURIs = Annotated[list[str], BeforeValidator(_report_uris)]


class DMARC(Model):
    """The domain's DMARC policy."""

    policy: Literal["none", "quarantine", "reject"] = "quarantine"
    """p= : what receivers do with mail that fails DMARC."""
    rua: ReportURIs = Field(default_factory=list)
    """Where aggregate reports go (mailto: URIs)."""
    pct: IntRange(0, 100) = 100  # type: ignore[valid-type]
    """Percentage of failing mail the policy applies to."""


class MTASTS(Model):
    """MTA-STS (RFC 8461): senders require TLS to the listed MX hosts."""

    mode: Literal["enforce", "testing", "none"] = "testing"
    """enforce, testing (report only) or none (withdraw the policy)."""
    max_age: IntRange(86400, 31557600) = 604800  # type: ignore[valid-type]
    """How long senders cache the policy, in seconds."""


class TLSRPT(Model):
    """SMTP TLS reporting (RFC 8460)."""

    rua: ReportURIs
    """Where reports go (mailto: or https: URIs)."""


class Domain(Model):
    """A mail domain that mailops serves."""

    mailbox_host: str
    """Id of the host that keeps the mailboxes (it needs imap or pop3)."""
    mx: list[MX]
    """MX records; the lowest priority number is tried first."""
    outbound: Outbound = Field(default_factory=Outbound)
    """How outgoing mail leaves."""
    users: dict[LocalPart, User] = Field(default_factory=dict)
    """Mailboxes by local part."""
    aliases: dict[LocalPart, AliasTargets] = Field(default_factory=dict)
    """Local part → a user or alias of this domain, a full address, or a list of them."""
    catch_all: AliasTarget | None = None
    """Where mail for unknown local parts goes; default: rejected."""
    subaddress: Annotated[str, Field(pattern=r"^[+\-_=]$")] | None = "+"
    """Separator for subaddresses (alice+tag@ → alice@); null turns it off."""
    dkim: DKIM = Field(default_factory=DKIM)
    """DKIM selectors."""
    spf: SPF = Field(default_factory=SPF)
    """SPF record."""
    dmarc: DMARC = Field(default_factory=DMARC)
    """DMARC record."""
    mta_sts: MTASTS | None = None
    """MTA-STS policy; default: none published."""
    tls_rpt: TLSRPT | None = None
    """TLS-RPT record; default: none published."""


# ---------------------------------------------------------------- DNS


class SOA(Model):
    """The zone's SOA fields (the serial is managed by mailops)."""

    mname: Hostname | None = None
    """Primary name server; default: the first of `nameservers`."""
    rname: Hostname | None = None
    """Zone contact as a name (hostmaster.example.org); default: hostmaster.<zone>."""
    refresh: TTL = 7200
    """Seconds between secondary checks."""
    retry: TTL = 3600
    """Seconds before a failed refresh is retried."""
    expire: TTL = 1209600
    """Seconds after which a secondary stops answering without refresh."""
    minimum: TTL = 3600
    """Negative-caching TTL."""


RECORD_TYPES = ("A", "AAAA", "CAA", "CNAME", "MX", "NS", "PTR", "SRV", "SSHFP", "TLSA", "TXT")


class ExtraRecord(Model):
    """A record mailops does not derive, published as given."""

    name: RecordName
    """Owner name relative to the zone ('@', 'www'), or absolute with a trailing dot."""
    type: Literal[RECORD_TYPES]  # type: ignore[valid-type]
    """Record type."""
    value: str
    """Record data in zone-file syntax (TXT: the text, quoted or not)."""
    ttl: TTL | None = None
    """TTL; default: the zone's."""

    @field_validator("value", mode="after")
    @classmethod
    def _parses(cls, value: str, info) -> str:
        rtype = info.data.get("type")
        if rtype is None:
            return value
        text = value if rtype != "TXT" or value.startswith('"') else _quote_txt(value)
        import dns.rdata  # only for specs with extra records: dnspython is slow to import
        import dns.rdataclass
        import dns.rdatatype

        try:
            dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text)
        except Exception as exc:  # dnspython raises many types; all mean "bad value"
            raise ValueError(f"is not a valid {rtype} record value: {exc}") from None
        return value


def _quote_txt(text: str) -> str:
    """Unquoted TXT text as zone-file strings of at most 255 bytes each (RFC 1035)."""
    data = text.encode()
    chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    return " ".join(
        '"' + c.decode(errors="replace").replace("\\", "\\\\").replace('"', '\\"') + '"'
        for c in chunks
    )


class Zone(Model):
    """A DNS zone that mailops writes records for."""

    managed: Literal["full", "records"] = "records"
    """full: mailops writes the whole zone file; records: only the mail records."""
    ttl: TTL = 3600
    """Default TTL of the zone's records."""
    nameservers: list[Hostname] = Field(default_factory=list)
    """NS records (full zones only)."""
    soa: SOA = Field(default_factory=SOA)
    """SOA fields (full zones only)."""
    extra_records: list[ExtraRecord] = Field(default_factory=list)
    """Records mailops does not derive."""

    @model_validator(mode="after")
    def _full_needs_ns(self) -> Zone:
        if self.managed == "full" and not self.nameservers:
            raise ValueError("needs nameservers when managed: full")
        return self


class DNS(Model):
    """DNS zones that mailops writes."""

    zones: dict[DomainName, Zone] = Field(default_factory=dict)
    """Zones by name."""


# ---------------------------------------------------------------- spec


class Spec(Model):
    """A mailops spec: hosts, relays, domains and DNS zones of one mail service."""

    version: Literal[1]
    """Spec format version; 1 is the only one so far."""
    defaults: Defaults | None = None
    """Settings merged under every host."""
    hosts: dict[Id, Host]
    """Machines that run the runtime, by id."""
    relays: dict[Id, Relay] = Field(default_factory=dict)
    """Smarthosts, by id."""
    domains: dict[DomainName, Domain]
    """Mail domains, by name."""
    dns: DNS = Field(default_factory=DNS)
    """DNS zones."""
