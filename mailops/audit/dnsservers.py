"""Which servers are authoritative for a zone, and do they all answer for it?

Records are checked at the source: every authoritative server is asked
directly (a resolver's cache may be minutes behind). The servers are the
zone's NS records as the resolver sees them — or, with `--authoritative`, the
servers the operator names (a hidden primary, a lab). A zone that `mailops`
only prints records for may lie inside a bigger zone at a provider; then the
enclosing zone's servers are the ones to ask.
"""

from __future__ import annotations

import asyncio

from mailops.audit.context import AuditContext, zone_group
from mailops.audit.dnsquery import Answer, Querier, QueryFailed, Server
from mailops.audit.findings import Finding, fail, ok, warn
from mailops.render.dns import ZoneRecords

CHECK = "dns.servers"


async def zone_servers(
    ctx: AuditContext, q: Querier, zone: ZoneRecords
) -> tuple[list[Server], list[Finding]]:
    """The servers that answer authoritatively for the zone, and the finding about them."""
    subject, group = f"{zone.name} SOA", zone_group(zone.name)
    if ctx.authoritative:
        candidates, apex = list(ctx.authoritative), zone.name
    else:
        try:
            candidates, apex = await discover(ctx, q, zone.name)
        except QueryFailed as exc:
            return [], [fail(CHECK, subject, f"cannot find its name servers: {exc}", "", group)]
        if not candidates:
            return [], [fail(CHECK, subject, "no name servers found", _delegate_fix(zone), group)]
    results = await asyncio.gather(
        *(q.ask(s, apex, "SOA", recurse=False) for s in candidates), return_exceptions=True
    )
    good: list[Server] = []
    serials: dict[Server, int] = {}
    problems: list[str] = []
    for server, result in zip(candidates, results, strict=True):
        if isinstance(result, QueryFailed):
            problems.append(f"{server} does not answer: {result.reason}")
        elif isinstance(result, BaseException):
            raise result
        elif not (result.authoritative and result.rrset is not None):
            problems.append(f"{server} is not authoritative for {apex} ({_why(result)})")
        else:
            good.append(server)
            serials[server] = result.rrset[0].serial  # type: ignore[attr-defined]
    retried = max((getattr(r, "retried", 0) for r in results), default=0)
    finding = _finding(zone, apex, subject, group, good, serials, problems)
    return good, [finding.with_retries(retried)]


def _finding(zone, apex, subject, group, good, serials, problems) -> Finding:
    if problems:
        return fail(
            CHECK,
            subject,
            "; ".join(problems),
            f"load zone {apex} on every name server listed in its NS records, or remove the "
            "ones that do not serve it",
            group,
        )
    distinct = sorted(set(serials.values()))
    if len(distinct) > 1:
        listed = ", ".join(f"{s} has {n}" for s, n in serials.items())
        return warn(
            CHECK,
            subject,
            f"the servers hold different versions of the zone (serials: {listed})",
            "a secondary has not transferred the latest zone yet: check NOTIFY and zone "
            "transfers from the primary",
            group,
        )
    where = ", ".join(str(s) for s in good)
    return ok(CHECK, subject, f"authoritative: {where} (serial {distinct[0]})", group)


def _why(answer: Answer) -> str:
    if answer.rcode != "NOERROR":
        return f"answered {answer.rcode}"
    if not answer.authoritative:
        return "answer without the authoritative flag"
    return "no SOA in the answer"


def _delegate_fix(zone: ZoneRecords) -> str:
    if zone.nameservers:
        listed = ", ".join(zone.nameservers)
        return f"delegate {zone.name} to {listed} at its registrar (or parent zone)"
    return f"check that {zone.name} is delegated to the name servers of its DNS provider"


async def discover(ctx: AuditContext, q: Querier, name: str) -> tuple[list[Server], str]:
    """(servers, apex): the NS of the zone holding `name`, with their addresses."""
    answer = await q.ask(ctx.resolver, name, "NS", recurse=True)
    apex = name
    if answer.rrset is None and answer.zone_soa and answer.zone_soa != name:
        apex = answer.zone_soa  # `name` lies inside a bigger zone: ask that one's servers
        answer = await q.ask(ctx.resolver, apex, "NS", recurse=True)
    if answer.rrset is None:
        return [], apex
    names = sorted(rd.target.to_text(omit_final_dot=True) for rd in answer.rrset)  # type: ignore[attr-defined]
    lookups = [q.ask(ctx.resolver, ns, t, recurse=True) for ns in names for t in ("A", "AAAA")]
    answers = await asyncio.gather(*lookups, return_exceptions=True)
    servers: list[Server] = []
    for index, result in enumerate(answers):
        if isinstance(result, Answer) and result.rrset is not None:
            ns = names[index // 2]
            servers += [Server(rd.address, 53, ns) for rd in result.rrset]  # type: ignore[attr-defined]
    return servers, apex
