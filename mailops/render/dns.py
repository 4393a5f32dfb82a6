"""The DNS records of a spec: one record model shared by `mailops dns`, which
writes them, and `mailops audit`, which checks live DNS against them.

Everything here is pure. The spec and the DKIM public records go in (key files
are dkim.py's business); a `DnsSet` comes out: records grouped by the zone they
belong to, the PTRs to ask the address owners for, the per-domain files
(MTA-STS policy, autoconfig XML) and notes for the operator. The zone-file,
records and JSON formats live in dns_output.py.

Names in `Record.name` are absolute, lowercase, without a trailing dot — like
every name in the spec model. Values are rdata in zone-file syntax with
absolute names (trailing dot), so a value means the same in a zone file, in a
provider's form and to dnspython, whatever the zone's origin.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from mailops.errors import MailopsError
from mailops.render.autoconfig import autoconfig_xml
from mailops.spec.model import Domain, Host, Spec, Zone

DEFAULT_TTL = 3600
"""TTL of records in no zone of `dns.zones` (the spec's own Zone default)."""

TXT_CHUNK = 255
"""A TXT character-string holds at most 255 bytes (RFC 1035 §3.3)."""

# The order records of one owner name appear in: the apex's SOA and NS first
# (zone files conventionally begin so), then mail routing, addresses, policies, services.
TYPE_ORDER = ("SOA", "NS", "MX", "A", "AAAA", "TXT", "SRV", "CNAME", "CAA", "TLSA", "SSHFP", "PTR")
_TYPE_RANK = {t: i for i, t in enumerate(TYPE_ORDER)}

Purpose = Literal[
    "soa", "ns", "mx", "address", "spf", "dkim", "dmarc", "dmarc-report", "mta-sts", "tls-rpt",
    "srv", "autoconfig", "ptr", "extra",
]  # fmt: skip


class DnsError(MailopsError):
    """The spec asks for records that cannot coexist (a zone would not load)."""

    exit_code = 2


# ---------------------------------------------------------------- TXT strings


def split_txt(text: str) -> tuple[bytes, ...]:
    """The character-strings of a TXT value: UTF-8 bytes, at most 255 each.

    Receivers of SPF, DKIM and DMARC join the strings without a separator, so
    the split points carry no meaning and any fixed width is correct."""
    data = text.encode()
    if not data:
        return (b"",)
    return tuple(data[i : i + TXT_CHUNK] for i in range(0, len(data), TXT_CHUNK))


def quote_txt(strings: Iterable[bytes]) -> str:
    """Zone-file syntax for TXT strings: `"…" "…"`, with `"`, `\\` and
    non-printable bytes escaped so that every parser reads the same bytes."""
    return " ".join(f'"{_escape(chunk)}"' for chunk in strings)


def _escape(chunk: bytes) -> str:
    if _PLAIN.fullmatch(chunk):  # the usual case (SPF, DKIM, DMARC): nothing to escape
        return chunk.decode("ascii")
    out = []
    for byte in chunk:
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)


_PLAIN = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]*")
"""Printable ASCII without `"` and `\\`: bytes that zone-file syntax takes as they are."""


def txt_value(text: str) -> str:
    """The zone-file value of a TXT record holding `text`, split at 255 bytes."""
    return quote_txt(split_txt(text))


# ---------------------------------------------------------------- the record model


@dataclass(frozen=True, order=True)
class CanonicalRecord:
    """A record reduced to what DNS means by it, for comparing with an answer:
    the name lowercase with a trailing dot; TXT strings joined (servers and
    providers may split them anywhere); other values with lowercase names and
    normalised addresses (2001:DB8:0::1 → 2001:db8::1). TTLs are not compared."""

    name: str
    type: str
    value: str

    def __str__(self) -> str:
        return f"{self.name} {self.type} {self.value}"


@dataclass(frozen=True)
class Record:
    """One resource record as mailops expects it to be published."""

    name: str
    """Owner: absolute, lowercase, no trailing dot (`_dmarc.example.org`)."""
    type: str
    """Record type in capitals (`MX`, `TXT`, …)."""
    ttl: int
    """Seconds."""
    value: str
    """Rdata in zone-file syntax; names absolute with a trailing dot; TXT quoted and split."""
    purpose: Purpose = field(default="extra", compare=False)
    """Why the record exists; audit names it in its findings."""
    domain: str = field(default="", compare=False)
    """The mail domain the record serves ("" for hosts, NS and extra records)."""

    @classmethod
    def txt(cls, name: str, text: str, ttl: int, purpose: Purpose, domain: str = "") -> Record:
        strings = split_txt(text)
        record = cls(name, "TXT", ttl, quote_txt(strings), purpose, domain)
        # Seed the cache: parsing the value back would give the same strings, at a
        # cost that hundreds of DKIM keys make noticeable.
        record.__dict__["strings"] = strings
        return record

    @property
    def fqdn(self) -> str:
        """The owner with its trailing dot, as DNS writes absolute names."""
        return self.name + "."

    def rdata(self) -> dns.rdata.Rdata:
        return self._rdata

    @cached_property
    def _rdata(self) -> dns.rdata.Rdata:
        return dns.rdata.from_text(
            dns.rdataclass.IN,
            dns.rdatatype.from_text(self.type),
            self.value,
            dns.name.root,
            relativize=False,
        )

    @cached_property
    def strings(self) -> tuple[bytes, ...]:
        """A TXT record's character-strings."""
        return tuple(self.rdata().strings)  # type: ignore[attr-defined]

    @property
    def text(self) -> str:
        """A TXT record's strings joined: the text that SPF/DKIM/DMARC parsers read."""
        return b"".join(self.strings).decode("utf-8", "backslashreplace")

    def relative_name(self, zone: str) -> str:
        """The owner relative to `zone` (`@` for the apex), as zone files and providers write it."""
        if self.name == zone:
            return "@"
        if self.name.endswith("." + zone):
            return self.name[: -len(zone) - 1]
        return self.fqdn

    def canonical(self) -> CanonicalRecord:
        return self._canonical

    @cached_property
    def _canonical(self) -> CanonicalRecord:
        if self.type == "TXT":
            value = b"".join(self.strings).decode("utf-8", "backslashreplace")
        else:
            value = canonical_value(self.rdata())
        return CanonicalRecord(canonical_name(self.name), self.type, value)


def canonical_name(name: str | dns.name.Name) -> str:
    """`Mx1.Example.ORG` → `mx1.example.org.`"""
    if isinstance(name, str):
        if _SIMPLE_NAME.fullmatch(name):  # what dnspython would print for it, only faster
            return name.lower().rstrip(".") + "."
        name = dns.name.from_text(name, dns.name.root)
    return name.canonicalize().to_text()


# Letters, digits, '-', '_' and '*' in non-empty labels: no escaping in presentation form.
_SIMPLE_NAME = re.compile(r"[A-Za-z0-9_*-]+(\.[A-Za-z0-9_*-]+)*\.?")


def canonical_value(rdata: dns.rdata.Rdata) -> str:
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode("utf-8", "backslashreplace")  # type: ignore[attr-defined]
    # The DNSSEC canonical wire form (RFC 4034 §6.2) lowercases the names inside
    # MX, SRV, CNAME, NS, PTR and SOA; reading it back gives a comparable text.
    wire = rdata.to_digestable(dns.name.root)
    back = dns.rdata.from_wire(rdata.rdclass, rdata.rdtype, wire, 0, len(wire))
    return back.to_text()


def canonical_rrset(rrset: dns.rrset.RRset) -> frozenset[CanonicalRecord]:
    name = canonical_name(rrset.name)
    rtype = dns.rdatatype.to_text(rrset.rdtype)
    return frozenset(CanonicalRecord(name, rtype, canonical_value(rd)) for rd in rrset)


@dataclass(frozen=True)
class RRsetDiff:
    """What an answer lacks and what it has on top, compared with the expected records."""

    missing: tuple[CanonicalRecord, ...]
    unexpected: tuple[CanonicalRecord, ...]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected


def compare_rrset(expected: Iterable[Record], rrset: dns.rrset.RRset | None) -> RRsetDiff:
    """Expected records of one name and type against a DNS answer (None: no answer)."""
    want = frozenset(r.canonical() for r in expected)
    have = canonical_rrset(rrset) if rrset is not None else frozenset()
    return RRsetDiff(tuple(sorted(want - have)), tuple(sorted(have - want)))


def records_equal(expected: Iterable[Record], rrset: dns.rrset.RRset | None) -> bool:
    """Does the answer hold exactly the expected records (compared canonically)?"""
    return compare_rrset(expected, rrset).ok


def group_rrsets(records: Iterable[Record]) -> dict[tuple[str, str], tuple[Record, ...]]:
    """Records by (owner, type): what one DNS query returns."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        groups.setdefault((record.name, record.type), []).append(record)
    return {key: tuple(group) for key, group in groups.items()}


# ---------------------------------------------------------------- containers


@dataclass(frozen=True)
class SoaFields:
    """The SOA of a full zone, except the serial (dns_output.py manages it)."""

    mname: str
    rname: str
    refresh: int
    retry: int
    expire: int
    minimum: int


@dataclass(frozen=True)
class ZoneRecords:
    """The records that belong to one zone, sorted.

    `declared` is False for a mail domain that lies in no zone of `dns.zones`:
    mailops still derives its records, for the operator to enter by hand."""

    name: str
    managed: Literal["full", "records"]
    declared: bool
    ttl: int
    records: tuple[Record, ...]
    """Sorted; NS included for full zones; no SOA (its serial is not the spec's)."""
    nameservers: tuple[str, ...] = ()
    soa: SoaFields | None = None
    domains: tuple[str, ...] = ()
    """The mail domains whose records are here."""

    def mail_records(self) -> tuple[Record, ...]:
        """What an operator enters at a provider: everything but the zone's own NS."""
        return tuple(r for r in self.records if r.purpose != "ns")


@dataclass(frozen=True)
class DomainFiles:
    """Files that a mail domain publishes over HTTPS rather than in DNS."""

    domain: str
    mta_sts: str | None
    """Content of https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461)."""
    autoconfig: str
    """Content of http://autoconfig.<domain>/mail/config-v1.1.xml (Thunderbird)."""


@dataclass(frozen=True)
class Notice:
    severity: Literal["note", "warning"]
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


@dataclass(frozen=True)
class DnsSet:
    """Every record, file and note that the spec's DNS consists of."""

    zones: tuple[ZoneRecords, ...]
    reverse: tuple[Record, ...]
    """PTR records to ask each address's owner for; no forward zone holds them."""
    files: tuple[DomainFiles, ...]
    notes: tuple[Notice, ...]

    def zone(self, name: str) -> ZoneRecords | None:
        return next((z for z in self.zones if z.name == name), None)

    def reverse_for(self, zone: ZoneRecords) -> tuple[Record, ...]:
        """The PTRs of the hosts whose address records are in `zone`."""
        targets = {r.fqdn for r in zone.records if r.purpose == "address"}
        return tuple(r for r in self.reverse if r.value in targets)

    def files_for(self, zone: ZoneRecords) -> tuple[DomainFiles, ...]:
        return tuple(f for f in self.files if f.domain in zone.domains)


# ---------------------------------------------------------------- placement


@dataclass(frozen=True)
class Placement:
    """Which zone a name belongs to: the longest suffix among `dns.zones`; else,
    for names under a mail domain that lies in no zone, that domain (records only)."""

    zones: Mapping[str, Zone]
    unzoned: frozenset[str]

    @classmethod
    def of(cls, spec: Spec) -> Placement:
        zones = spec.dns.zones
        unzoned = frozenset(d for d in spec.domains if _longest_suffix(d, zones) is None)
        return cls(zones, unzoned)

    def zone_of(self, name: str) -> str | None:
        return _longest_suffix(name, self.zones) or _longest_suffix(name, self.unzoned)

    def ttl(self, name: str) -> int:
        zone = _longest_suffix(name, self.zones)
        return self.zones[zone].ttl if zone else DEFAULT_TTL


def zone_kinds(spec: Spec) -> dict[str, Literal["full", "records"]]:
    """Every zone `build_dns` will return, with its kind: the zones of `dns.zones`,
    and the mail domains in none of them (records only)."""
    kinds: dict[str, Literal["full", "records"]] = {
        name: zone.managed for name, zone in spec.dns.zones.items()
    }
    for name in Placement.of(spec).unzoned:
        kinds[name] = "records"
    return kinds


def _longest_suffix(name: str, candidates: Mapping[str, object] | frozenset[str]) -> str | None:
    """Walk up from the full name, so the first hit is the longest: O(labels), not O(zones)."""
    labels = name.split(".")
    for i in range(len(labels)):
        suffix = ".".join(labels[i:])
        if suffix in candidates:
            return suffix
    return None


def is_under(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


# ---------------------------------------------------------------- mail records of a domain


# (owner label, spec service, SRV priority). Priorities matter across the four
# mailbox services (RFC 6186 §3.4) and between the two submission ones: implicit
# TLS first (RFC 8314 §5.1), and IMAP before POP3, since IMAP keeps every
# client's view in sync.
SRV_SERVICES = (
    ("_submissions._tcp", "submissions", 0),
    ("_submission._tcp", "submission", 5),
    ("_imaps._tcp", "imaps", 0),
    ("_imap._tcp", "imap", 5),
    ("_pop3s._tcp", "pop3s", 10),
    ("_pop3._tcp", "pop3", 15),
)
NULL_SRV = "0 0 0 ."
"""RFC 2782: "the service is decidedly not available at this domain"."""


def mx_targets(spec: Spec, domain: Domain) -> list[tuple[int, str]]:
    """(priority, host name) of each MX, lowest priority first (ties keep spec order)."""
    targets = [
        (mx.priority, spec.hosts[mx.host].fqdn if mx.host else mx.name or "") for mx in domain.mx
    ]
    return sorted(targets, key=lambda t: t[0])


def sending_hosts(spec: Spec, domain: Domain) -> list[Host]:
    """Managed hosts that send as the domain: its MX hosts, then its mailbox host."""
    ids = [mx.host for mx in sorted(domain.mx, key=lambda m: m.priority) if mx.host]
    ids.append(domain.mailbox_host)
    return [spec.hosts[hid] for hid in dict.fromkeys(ids)]


def spf_text(spec: Spec, domain: Domain) -> str:
    terms = ["v=spf1", "mx"]
    for host in sending_hosts(spec, domain):
        terms += [f"ip4:{host.ipv4}"] if host.ipv4 else []
        terms += [f"ip6:{host.ipv6}"] if host.ipv6 else []
    includes = []
    relay = spec.relays.get(domain.outbound.relay or "")
    if relay is not None and relay.spf_include:
        includes.append(relay.spf_include)
    includes += domain.spf.include
    terms += [f"include:{name}" for name in dict.fromkeys(includes)]
    terms.append(domain.spf.policy)
    return " ".join(terms)


def spf_lookups(text: str) -> int:
    """DNS lookups that an SPF check of `text` starts with (RFC 7208 §4.6.4 allows 10)."""
    return sum(
        term == "mx" or term.startswith(("include:", "a:", "exists:")) for term in text.split()
    )


def dmarc_text(domain: Domain) -> str:
    tags = ["v=DMARC1", f"p={domain.dmarc.policy}"]
    if domain.dmarc.rua:
        tags.append("rua=" + ",".join(domain.dmarc.rua))
    if domain.dmarc.pct != 100:  # 100 is the default (RFC 7489 §6.3)
        tags.append(f"pct={domain.dmarc.pct}")
    return "; ".join(tags)


def mta_sts_policy(mode: str, mx_names: Iterable[str], max_age: int) -> str:
    """The policy file (RFC 8461 §3.2): key: value lines ending in CRLF."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {n}" for n in mx_names)]
    lines.append(f"max_age: {max_age}")
    return "".join(line + "\r\n" for line in lines)


def mta_sts_id(policy: str) -> str:
    """The TXT id: senders refetch the policy when it changes, so derive it from
    the policy itself — it changes exactly when the policy does. RFC 8461 allows
    1–32 letters and digits; 80 bits of SHA-256 leave collisions out of reach."""
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


def tls_rpt_text(rua: Iterable[str]) -> str:
    return "v=TLSRPTv1; rua=" + ",".join(rua)


def srv_records(name: str, host: Host, ttl: int) -> list[Record]:
    """RFC 6186/8314 SRV for each mail service; null SRV for those the host lacks,
    so clients do not go probing ports that will not answer."""
    records = []
    for label, service, priority in SRV_SERVICES:
        if service in host.services:
            port = getattr(host.ports, service)
            value = f"{priority} 1 {port} {host.fqdn}."
        else:
            value = NULL_SRV
        records.append(Record(f"{label}.{name}", "SRV", ttl, value, "srv", name))
    return records


def domain_records(
    spec: Spec, name: str, domain: Domain, dkim: Mapping[tuple[str, str], str], ttl: int
) -> list[Record]:
    """Every record the mail domain `name` publishes under its own name."""
    targets = mx_targets(spec, domain)
    records = [Record(name, "MX", ttl, f"{prio} {target}.", "mx", name) for prio, target in targets]
    records.append(Record.txt(name, spf_text(spec, domain), ttl, "spf", name))
    for selector in domain.dkim.selectors:
        owner = f"{selector.name}._domainkey.{name}"
        records.append(Record.txt(owner, dkim[(name, selector.name)], ttl, "dkim", name))
    records.append(Record.txt(f"_dmarc.{name}", dmarc_text(domain), ttl, "dmarc", name))
    if domain.mta_sts is not None:
        policy = mta_sts_policy(
            domain.mta_sts.mode, [t for _, t in targets], domain.mta_sts.max_age
        )
        text = f"v=STSv1; id={mta_sts_id(policy)}"
        records.append(Record.txt(f"_mta-sts.{name}", text, ttl, "mta-sts", name))
    if domain.tls_rpt is not None:
        text = tls_rpt_text(domain.tls_rpt.rua)
        records.append(Record.txt(f"_smtp._tls.{name}", text, ttl, "tls-rpt", name))
    box = spec.hosts[domain.mailbox_host]
    records += srv_records(name, box, ttl)
    records.append(Record(f"autoconfig.{name}", "CNAME", ttl, box.fqdn + ".", "autoconfig", name))
    return records


def domain_files(spec: Spec, name: str, domain: Domain) -> DomainFiles:
    policy = None
    if domain.mta_sts is not None:
        names = [t for _, t in mx_targets(spec, domain)]
        policy = mta_sts_policy(domain.mta_sts.mode, names, domain.mta_sts.max_age)
    return DomainFiles(name, policy, autoconfig_xml(name, spec.hosts[domain.mailbox_host]))


def report_domains(domain: Domain) -> list[str]:
    """Domains that receive the domain's DMARC aggregate reports by mail."""
    out = []
    for uri in domain.dmarc.rua:
        if uri.startswith("mailto:"):
            address = uri[len("mailto:") :].split("!")[0]  # `!10m` is a size limit
            out.append(address.rpartition("@")[2].lower())
    return list(dict.fromkeys(out))


def needs_report_authorization(domain: str, receiver: str) -> bool:
    """RFC 7489 §7.1: reports may go to another organisation only if it agrees.
    Without the public suffix list, a parent or child of the domain counts as the
    same organisation and anything else as another; so siblings (a.example.org,
    b.example.org) get an authorisation they did not need, which does no harm."""
    return not (is_under(domain, receiver) or is_under(receiver, domain))


# ---------------------------------------------------------------- the whole spec


def build_dns(spec: Spec, dkim: Mapping[tuple[str, str], str]) -> DnsSet:
    """All of the spec's DNS. `dkim` maps (domain, selector) to the selector's
    TXT text (`v=DKIM1; k=…; p=…`), as dkim.py reads it from the key files."""
    place = Placement.of(spec)
    notes: list[Notice] = []
    records: list[Record] = []
    for name in sorted(spec.domains):
        domain = spec.domains[name]
        records += domain_records(spec, name, domain, dkim, place.ttl(name))
        records += _report_authorizations(place, name, domain, notes)
        if name in place.unzoned:
            notes.append(
                Notice(
                    "note",
                    f"domain {name} lies in no zone of dns.zones: its records are printed as "
                    f"records only, to enter at its DNS provider (add dns.zones.{name} to "
                    "have mailops write them as a zone)",
                )
            )
        _check_spf_lookups(name, spf_text(spec, domain), notes)
    records += _host_records(spec, place, notes)
    records += _zone_records(spec.dns.zones)
    zones = _assemble(spec, place, records)
    for zone in zones:
        _check_zone(zone, notes)
    reverse = tuple(_reverse_records(spec))
    files = tuple(domain_files(spec, name, spec.domains[name]) for name in sorted(spec.domains))
    return DnsSet(zones, reverse, files, tuple(notes))


def _report_authorizations(
    place: Placement, name: str, domain: Domain, notes: list[Notice]
) -> list[Record]:
    out = []
    for receiver in report_domains(domain):
        if not needs_report_authorization(name, receiver):
            continue
        owner = f"{name}._report._dmarc.{receiver}"
        if place.zone_of(owner) is not None:
            ttl = place.ttl(owner)
            out.append(Record.txt(owner, "v=DMARC1", ttl, "dmarc-report", receiver))
        else:
            notes.append(
                Notice(
                    "note",
                    f"DMARC reports of {name} go to {receiver}, which must agree to receive "
                    f'them: ask its owner to publish {owner}. TXT "v=DMARC1" (RFC 7489 §7.1)',
                )
            )
    return out


def _check_spf_lookups(name: str, spf: str, notes: list[Notice]) -> None:
    count = spf_lookups(spf)
    if count > 10:
        notes.append(
            Notice(
                "warning",
                f"the SPF record of {name} needs {count} DNS lookups before includes nest "
                "further; receivers give up after 10 (RFC 7208 §4.6.4): drop some spf.include",
            )
        )


def _host_records(spec: Spec, place: Placement, notes: list[Notice]) -> list[Record]:
    records = []
    for hid in sorted(spec.hosts):
        host = spec.hosts[hid]
        pairs = [("A", host.ipv4), ("AAAA", host.ipv6)]
        if place.zone_of(host.fqdn) is None:
            listed = ", ".join(f"{host.fqdn}. {t} {a}" for t, a in pairs if a)
            notes.append(
                Notice(
                    "note",
                    f"host '{hid}' ({host.fqdn}) lies in no zone of dns.zones and under no "
                    f"domain of the spec: publish its address yourself ({listed}) and ask the "
                    f"address owner for the PTR back to {host.fqdn}",
                )
            )
            continue
        ttl = place.ttl(host.fqdn)
        records += [Record(host.fqdn, t, ttl, a, "address") for t, a in pairs if a]
    return records


def _zone_records(zones: Mapping[str, Zone]) -> list[Record]:
    """NS of full zones and every zone's extra records."""
    records = []
    for name in sorted(zones):
        zone = zones[name]
        if zone.managed == "full":
            records += [Record(name, "NS", zone.ttl, ns + ".", "ns") for ns in zone.nameservers]
        for extra in zone.extra_records:
            records.append(
                _extra_record(name, zone.ttl, extra.name, extra.type, extra.value, extra.ttl)
            )
    return records


def _extra_record(
    zone: str, zone_ttl: int, name: str, rtype: str, value: str, ttl: int | None
) -> Record:
    """An extra record as given, with its names made absolute against the zone.
    TXT may be written unquoted in the spec; then the whole value is the text."""
    owner = _absolute(name, zone)
    if not is_under(owner, zone):
        raise DnsError(
            f"extra record {name} {rtype} of zone {zone} lies outside the zone; write the name "
            f"relative to {zone} (like 'www' or '@'), or list it under the zone it belongs to"
        )
    origin = dns.name.from_text(zone, dns.name.root)
    if rtype == "TXT" and not value.lstrip().startswith('"'):
        text = txt_value(value)
    else:
        rdata = dns.rdata.from_text(
            dns.rdataclass.IN, dns.rdatatype.from_text(rtype), value, origin, relativize=False
        )
        text = rdata.to_text(origin=dns.name.root, relativize=False)
    return Record(owner, rtype, ttl or zone_ttl, text, "extra")


def _absolute(name: str, zone: str) -> str:
    if name == "@":
        return zone
    if name.endswith("."):
        return name[:-1]
    return f"{name}.{zone}"


def _reverse_records(spec: Spec) -> list[Record]:
    """The PTR each host address should have; sorted by host then address family.
    Loopback and link-local addresses (labs, tests) have no owner to ask."""
    records = []
    for hid in sorted(spec.hosts):
        host = spec.hosts[hid]
        for address in host.addresses():
            ip = ipaddress.ip_address(address)
            if ip.is_loopback or ip.is_link_local:
                continue
            owner = dns.reversename.from_address(address).to_text(omit_final_dot=True)
            records.append(Record(owner, "PTR", DEFAULT_TTL, host.fqdn + ".", "ptr"))
    return records


# ---------------------------------------------------------------- zones


def _sort_key(zone: str):
    def key(record: Record) -> tuple:
        relative = record.name[: -len(zone)].rstrip(".") if record.name != zone else ""
        labels = tuple(reversed(relative.split("."))) if relative else ()
        rank = _TYPE_RANK.get(record.type, len(TYPE_ORDER))
        return (labels, rank, record.type, _natural(record.value))

    return key


def _natural(value: str) -> tuple:
    """Numbers compared as numbers, so MX 5 sorts before MX 10. The split
    alternates text and digits from the start, so equal positions hold equal types."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(value))


_DIGITS = re.compile(r"(\d+)")


def _assemble(spec: Spec, place: Placement, records: list[Record]) -> tuple[ZoneRecords, ...]:
    by_zone: dict[str, list[Record]] = {}
    for record in records:
        zone = place.zone_of(record.name)
        if zone is not None:  # _host_records already noted the names that fit nowhere
            by_zone.setdefault(zone, []).append(record)
    zone_of_domain = {d: place.zone_of(d) for d in spec.domains}
    zones = []
    for name in sorted(set(spec.dns.zones) | place.unzoned):
        unique = _dedupe(by_zone.get(name, []))
        ordered = tuple(sorted(unique, key=_sort_key(name)))
        domains = tuple(d for d in sorted(spec.domains) if zone_of_domain[d] == name)
        declared = spec.dns.zones.get(name)
        if declared is None:
            zones.append(ZoneRecords(name, "records", False, DEFAULT_TTL, ordered, domains=domains))
            continue
        soa = None
        if declared.managed == "full":
            soa = SoaFields(
                mname=declared.soa.mname or declared.nameservers[0],
                rname=declared.soa.rname or f"hostmaster.{name}",
                refresh=declared.soa.refresh,
                retry=declared.soa.retry,
                expire=declared.soa.expire,
                minimum=declared.soa.minimum,
            )
        zones.append(
            ZoneRecords(
                name,
                declared.managed,
                True,
                declared.ttl,
                ordered,
                tuple(declared.nameservers),
                soa,
                domains,
            )
        )
    return tuple(zones)


def _dedupe(records: list[Record]) -> list[Record]:
    """One copy of each record: an extra record may repeat a derived one. Within
    one name and type all records take the lowest TTL, since DNS serves an RRset
    with one TTL and servers would otherwise each pick their own."""
    seen: dict[CanonicalRecord, Record] = {}
    for record in records:
        seen.setdefault(record.canonical(), record)
    unique = list(seen.values())
    lowest: dict[tuple[str, str], int] = {}
    for record in unique:
        key = (record.name, record.type)
        lowest[key] = min(lowest.get(key, record.ttl), record.ttl)
    return [
        r if r.ttl == lowest[(r.name, r.type)] else replace(r, ttl=lowest[(r.name, r.type)])
        for r in unique
    ]


def _check_zone(zone: ZoneRecords, notes: list[Notice]) -> None:
    """Refuse what no server would load, and what breaks mail silently."""
    groups = group_rrsets(zone.records)
    names = {name for name, _ in groups}
    for name in sorted(names):
        types = {t for n, t in groups if n == name}
        if "CNAME" in types and len(types) > 1:
            others = ", ".join(sorted(types - {"CNAME"}))
            raise DnsError(
                f"{name} would have a CNAME and other records ({others}) in zone {zone.name}; "
                "DNS allows nothing beside a CNAME (RFC 1034 §3.6.2): change the extra_records"
            )
        if len(groups.get((name, "CNAME"), ())) > 1:
            raise DnsError(f"{name} would have more than one CNAME in zone {zone.name}")
        txt = groups.get((name, "TXT"), ())
        for tag in ("v=spf1", "v=DMARC1", "v=STSv1", "v=TLSRPTv1"):
            if sum(_txt_tag(r) == tag for r in txt) > 1:
                raise DnsError(
                    f"{name} would have two TXT records starting with {tag} in zone "
                    f"{zone.name}; receivers then ignore both: remove the one in extra_records"
                )
    for ns in zone.nameservers:
        if is_under(ns, zone.name) and not ({(ns, "A"), (ns, "AAAA")} & groups.keys()):
            raise DnsError(
                f"nameserver {ns} of zone {zone.name} lies inside the zone but has no address: "
                f"add an A or AAAA record for it under dns.zones.{zone.name}.extra_records"
            )


def _txt_tag(record: Record) -> str:
    return record.text.split(";")[0].split(" ")[0].strip()
