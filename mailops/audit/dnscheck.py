"""Every expected record of a zone, asked of each authoritative server and of the
resolver.

- An authoritative server that lacks a record, or has a conflicting one, is a
  failure, with the exact zone-file line to publish or remove.
- All authoritative servers right but the resolver still answering the old
  data is propagation: a warning that says how long caches may keep it (TTL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailops.audit.context import AuditContext, domain_group, host_group, zone_group
from mailops.audit.dnsquery import Answer, Querier, QueryFailed, Server
from mailops.audit.dnsservers import zone_servers
from mailops.audit.dnsverdict import Verdict, judge, summary
from mailops.audit.findings import Finding, fail, ok, warn
from mailops.render import dkim as dkimkeys
from mailops.render.dns import Record, ZoneRecords, group_rrsets, is_under


@dataclass(frozen=True)
class Wanted:
    """What the spec expects at one name and type (possibly nothing at all)."""

    name: str
    rtype: str
    purpose: str
    records: tuple[Record, ...]
    group: str
    key_file: str = ""

    @property
    def subject(self) -> str:
        return f"{self.name} {self.rtype}"

    @property
    def check(self) -> str:
        return f"dns.{self.purpose}"


ResolverOk = Callable[[], Awaitable[bool]]
"""Does the resolver answer at all? (Asked once per audit, awaited where needed.)"""


async def check_zone(
    ctx: AuditContext, q: Querier, zone: ZoneRecords, resolver_ok: ResolverOk
) -> list[Finding]:
    servers, findings = await zone_servers(ctx, q, zone)
    if not servers:
        return findings
    checks = [
        check_rrset(ctx, q, zone, servers, wanted, resolver_ok)
        for wanted in wanted_rrsets(ctx, zone)
    ]
    results = await asyncio.gather(*checks)
    return findings + [f for f in results if f is not None]


def wanted_rrsets(ctx: AuditContext, zone: ZoneRecords) -> list[Wanted]:
    """The zone's expected RRsets among the selected domains and hosts; plus, for
    each host, the address family it does not have, which must then be absent (a
    stray AAAA sends IPv6 clients to some other machine)."""
    domains = set(ctx.domains)
    fqdns = {ctx.host(h).fqdn: h for h in ctx.hosts}
    whole_zone = not ctx.options.domains or bool(domains & set(zone.domains))
    out = []
    for (name, rtype), records in group_rrsets(zone.records).items():
        first = records[0]
        if first.domain and first.purpose != "dmarc-report":
            if first.domain not in domains:
                continue
            group = domain_group(first.domain)
        elif first.purpose == "address":
            if name not in fqdns:
                continue
            group = host_group(fqdns[name])
        elif not whole_zone:
            continue
        else:
            group = zone_group(zone.name)
        if first.purpose == "dkim":
            if _dkim_ident(first) in ctx.dkim_missing:
                continue  # the missing key file is the finding (dkim.keyfile)
            key_file = str(_dkim_path(ctx, first))
        else:
            key_file = ""
        out.append(Wanted(name, rtype, first.purpose, records, group, key_file))
    out += _absent_families(ctx, zone, fqdns)
    return out


def _absent_families(ctx: AuditContext, zone: ZoneRecords, fqdns: dict[str, str]):
    have = {(r.name, r.type) for r in zone.records if r.purpose == "address"}
    out = []
    for fqdn, host_id in fqdns.items():
        if not is_under(fqdn, zone.name) or not {(fqdn, "A"), (fqdn, "AAAA")} & have:
            continue
        for rtype in ("A", "AAAA"):
            if (fqdn, rtype) not in have:
                out.append(Wanted(fqdn, rtype, "address", (), host_group(host_id)))
    return out


def _dkim_ident(record: Record) -> tuple[str, str]:
    return record.domain, record.name.split(".", 1)[0]


def _dkim_path(ctx: AuditContext, record: Record):
    domain, selector = _dkim_ident(record)
    return dkimkeys.key_path(dkimkeys.key_dir_for(ctx.loaded.base_dir), domain, selector)


async def check_rrset(
    ctx: AuditContext,
    q: Querier,
    zone: ZoneRecords,
    servers: list[Server],
    wanted: Wanted,
    resolver_ok: ResolverOk,
) -> Finding | None:
    asked = await asyncio.gather(
        *(q.ask(s, wanted.name, wanted.rtype, recurse=False) for s in servers),
        return_exceptions=True,
    )
    verdicts: list[tuple[Server, Verdict, Answer | None]] = []
    for server, result in zip(servers, asked, strict=True):
        if isinstance(result, QueryFailed):
            verdicts.append((server, Verdict([f"no answer ({result.reason})"]), None))
        elif isinstance(result, BaseException):
            raise result
        else:
            verdict = judge(
                wanted.purpose, wanted.rtype, wanted.records, result.rrset, wanted.key_file
            )
            if not verdict.good and result.rrset is None and wanted.records:
                verdict.problems.insert(0, result.describe_empty())
            verdicts.append((server, verdict, result))
    retried = max((a.retried for _, _, a in verdicts if a is not None), default=0)
    bad = [(s, v) for s, v, _ in verdicts if not v.good]
    if bad:
        return _authoritative_failure(ctx, zone, wanted, bad, len(servers)).with_retries(retried)
    answer = next(a for _, _, a in verdicts if a is not None)
    if not wanted.records and answer.rrset is None:
        return None  # nothing expected, nothing there: not worth a line
    finding = await _against_resolver(ctx, q, zone, wanted, answer, verdicts, resolver_ok)
    return finding.with_retries(retried)


def _authoritative_failure(ctx, zone, wanted: Wanted, bad, total: int) -> Finding:
    first = bad[0][1]
    if len(bad) == total and all(v.problems == first.problems for _, v in bad):
        text = "; ".join(first.problems)
        if total > 1:
            text += f" (all {total} authoritative servers)"
    else:
        text = "; ".join(f"{s}: {', '.join(v.problems)}" for s, v in bad)
    lines = []
    for _, verdict in bad:
        lines += [line for line in verdict.fix_lines() if line not in lines]
    if lines:
        fix = _where(ctx, zone) + "\n".join(lines)
    else:
        fix = f"make every authoritative server of {zone.name} answer for it"
    return fail(wanted.check, wanted.subject, text, fix, wanted.group)


def _where(ctx: AuditContext, zone: ZoneRecords) -> str:
    if zone.managed == "full":
        return (
            f"in zone {zone.name} (the zone file {ctx.spec_command('dns')} writes has it "
            "right; load it on the primary):\n"
        )
    return f"at the DNS provider of {zone.name}:\n"


async def _against_resolver(ctx, q, zone, wanted: Wanted, answer: Answer, verdicts, resolver_ok):
    where = f"{len(verdicts)} authoritative server" + ("s" if len(verdicts) > 1 else "")
    verdict = verdicts[0][1]
    shown = verdict.note or summary(wanted.rtype, answer.rrset)
    if not await resolver_ok():
        return ok(wanted.check, wanted.subject, f"{shown} ({where})", wanted.group)
    try:
        seen = await q.ask(ctx.resolver, wanted.name, wanted.rtype, recurse=True)
    except QueryFailed as exc:
        return warn(
            wanted.check,
            wanted.subject,
            f"{shown} on {where}; the resolver did not answer ({exc.reason})",
            "",
            wanted.group,
        )
    there = judge(wanted.purpose, wanted.rtype, wanted.records, seen.rrset, wanted.key_file)
    if there.good:
        return ok(wanted.check, wanted.subject, f"{shown} ({where} and the resolver)", wanted.group)
    ttl = seen.ttl if seen.ttl is not None else _negative_ttl(zone, wanted)
    return warn(
        wanted.check,
        wanted.subject,
        f"published on {where}, but not yet seen through the resolver {ctx.resolver}, which "
        f"still answers {summary(wanted.rtype, seen.rrset)} (propagation; cached up to {ttl} s)",
        f"nothing to change: caches pick it up within {ttl} s (the TTL)",
        wanted.group,
    )


def _negative_ttl(zone: ZoneRecords, wanted: Wanted) -> int:
    """How long a resolver may remember that a name had no record: the SOA minimum."""
    if zone.soa is not None:
        return zone.soa.minimum
    return wanted.records[0].ttl if wanted.records else zone.ttl
