"""What one audit run works with: the options, the selected hosts and domains,
and the expected state — the very DnsSet `mailops dns` writes, built from the
same spec and key files, so the generator and the checker cannot disagree."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import dns.resolver

from mailops.audit.dnsquery import Server, parse_server
from mailops.audit.findings import Finding, fail
from mailops.audit.net import RetryPolicy
from mailops.errors import UsageError
from mailops.render import dkim as dkimkeys
from mailops.render.dns import DnsSet, build_dns
from mailops.spec.load import LoadedSpec
from mailops.spec.model import Host

KINDS = ("dns", "probes", "drift")
"""The parts of a full audit; `--e2e` adds the end-to-end test."""

MISSING_KEY = "v=DKIM1; k=rsa; p="
"""Stands in for a selector whose key file is missing (its DNS check is skipped)."""


@dataclass
class AuditOptions:
    hosts: list[str] | None = None
    domains: list[str] | None = None
    resolver: str | None = None
    """IP[:PORT] of the resolver; default: the first of /etc/resolv.conf."""
    authoritative: list[str] = field(default_factory=list)
    """Ask these servers as authoritative for every zone instead of the zones' NS
    (a hidden primary, or a lab)."""
    ca_file: Path | None = None
    """Extra CA certificates to trust (a private CA); the system's are trusted too."""
    only: list[str] | None = None
    """Some of KINDS; default: all of them."""
    e2e: bool = False
    e2e_as: list[str] = field(default_factory=list)
    e2e_timeout: float = 30.0
    timeout: float = 5.0
    attempts: int = 3
    now: dt.datetime | None = None
    """The clock for certificate expiry (tests); default: now."""


@dataclass
class AuditContext:
    loaded: LoadedSpec
    options: AuditOptions
    hosts: list[str]
    domains: list[str]
    kinds: frozenset[str]
    dnsset: DnsSet
    dkim_missing: frozenset[tuple[str, str]]
    resolver: Server
    authoritative: list[Server]
    policy: RetryPolicy
    setup: list[Finding] = field(default_factory=list)
    """Findings made while preparing (a missing DKIM key file)."""

    @property
    def spec(self):
        return self.loaded.spec

    def host(self, host_id: str) -> Host:
        return self.spec.hosts[host_id]

    def now(self) -> dt.datetime:
        return self.options.now or dt.datetime.now(dt.UTC)

    def spec_command(self, command: str, host_id: str | None = None, action: str = "") -> str:
        """`mailops <command> SPEC [action] [--host H]`, for fixes the operator can paste."""
        words = ["mailops", command, str(self.loaded.path), action]
        if host_id:
            words += ["--host", host_id]
        return "`" + " ".join(w for w in words if w) + "`"


def host_group(host_id: str) -> str:
    return f"host {host_id}"


def domain_group(domain: str) -> str:
    return f"domain {domain}"


def zone_group(zone: str) -> str:
    return f"zone {zone}"


def prepare(loaded: LoadedSpec, options: AuditOptions) -> AuditContext:
    spec = loaded.spec
    hosts = _select(options.hosts, list(spec.hosts), "host", loaded)
    domains = _select(options.domains, sorted(spec.domains), "domain", loaded)
    kinds = frozenset(options.only or KINDS)
    unknown = kinds - set(KINDS)
    if unknown:
        raise UsageError(
            f"unknown --only {', '.join(sorted(unknown))} (one of: {', '.join(KINDS)})"
        )
    records, missing, setup = _dkim_records(loaded, domains)
    return AuditContext(
        loaded=loaded,
        options=options,
        hosts=hosts,
        domains=domains,
        kinds=kinds,
        dnsset=build_dns(spec, records),
        dkim_missing=frozenset(missing),
        resolver=parse_server(options.resolver) if options.resolver else system_resolver(),
        authoritative=[parse_server(a) for a in options.authoritative],
        policy=RetryPolicy(attempts=max(1, options.attempts), timeout=options.timeout),
        setup=setup,
    )


def _select(wanted: list[str] | None, known: list[str], what: str, loaded: LoadedSpec):
    if not wanted:
        return known
    names = [w.lower().rstrip(".") if what == "domain" else w for w in wanted]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"no {what} {', '.join(repr(n) for n in unknown)} in {loaded.path} "
            f"({what}s: {', '.join(known)})"
        )
    return [k for k in known if k in names]


def system_resolver() -> Server:
    try:
        first = dns.resolver.Resolver().nameservers[0]
    except (dns.resolver.NoResolverConfiguration, IndexError, OSError):
        raise UsageError("no resolver in /etc/resolv.conf: pass --resolver IP[:PORT]") from None
    return parse_server(str(first))


def _dkim_records(loaded: LoadedSpec, domains: list[str]):
    """The TXT text of every selector from its key file, as `mailops dns` makes it —
    but never a new key: an audit only looks. A missing or unreadable key file is
    a finding, and its selector's DNS check is skipped."""
    key_dir = dkimkeys.key_dir_for(loaded.base_dir)
    records: dict[tuple[str, str], str] = {}
    missing: set[tuple[str, str]] = set()
    findings: list[Finding] = []
    for name, domain in sorted(loaded.spec.domains.items()):
        for selector in domain.dkim.selectors:
            ident = (name, selector.name)
            path = dkimkeys.key_path(key_dir, name, selector.name)
            try:
                records[ident] = dkimkeys.dkim_record_text(dkimkeys.load_key(path))
                continue
            except dkimkeys.DkimKeyError as exc:
                problem = str(exc)
            records[ident] = MISSING_KEY
            missing.add(ident)
            if name in domains:
                findings.append(
                    fail(
                        "dkim.keyfile",
                        f"{selector.name}._domainkey.{name}",
                        problem,
                        f"run `mailops dns {loaded.path}` to make the key, publish its "
                        f"record, then `mailops apply {loaded.path}`",
                        domain_group(name),
                    )
                )
    return records, missing, findings
