"""One audit: every check of every selected host and domain, at once.

DNS questions and port probes are asyncio tasks; drift (deploy's sync SSH and
agent code) runs one thread per host. Each task is guarded: whatever it
raises becomes a finding, so one broken check never hides the others and
never shows the user a traceback.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

from mailops.audit import dmarccheck, e2e, fcrdns, mtasts, spfcheck
from mailops.audit.context import AuditContext, AuditOptions, prepare
from mailops.audit.dnscheck import check_zone
from mailops.audit.dnsquery import Querier, QueryFailed
from mailops.audit.drift import host_drift
from mailops.audit.findings import Finding, counts, fail, ok, sort_key
from mailops.audit.probes import host_probes
from mailops.render.dns import ZoneRecords, is_under
from mailops.spec.load import LoadedSpec, load_spec


@dataclass
class AuditResult:
    findings: list[Finding]
    seconds: float

    @property
    def failed(self) -> bool:
        return any(f.failed for f in self.findings)

    def as_dict(self) -> dict:
        return {
            "ok": not self.failed,
            "summary": counts(self.findings),
            "seconds": round(self.seconds, 3),
            "findings": [f.as_dict() for f in self.findings],
        }


def run_audit(spec: Path | LoadedSpec, options: AuditOptions) -> AuditResult:
    loaded = spec if isinstance(spec, LoadedSpec) else load_spec(spec)
    ctx = prepare(loaded, options)
    started = time.monotonic()
    findings = asyncio.run(audit(ctx))
    return AuditResult(sorted(findings, key=sort_key), time.monotonic() - started)


async def audit(ctx: AuditContext) -> list[Finding]:
    q = Querier(ctx.policy)
    jobs: list[tuple[str, Awaitable[list[Finding]]]] = []
    if "dns" in ctx.kinds:
        jobs.append(("dns", dns_checks(ctx, q)))
    if "probes" in ctx.kinds:
        jobs += [(f"probes of {h}", job) for h in ctx.hosts for job in host_probes(ctx, h)]
    if "drift" in ctx.kinds:
        jobs += [(f"drift of {h}", asyncio.to_thread(host_drift, ctx, h)) for h in ctx.hosts]
    if ctx.options.e2e:
        jobs.append(("end-to-end test", e2e.run(ctx)))
    results = await asyncio.gather(*(_guarded(label, job) for label, job in jobs))
    return ctx.setup + [f for found in results for f in found]


async def _guarded(label: str, job: Awaitable[list[Finding]]) -> list[Finding]:
    try:
        return await job
    except Exception as exc:
        if os.environ.get("MAILOPS_DEBUG"):
            raise
        return [
            fail(
                "audit.error",
                label,
                f"internal error: {type(exc).__name__}: {exc}",
                "please report it; MAILOPS_DEBUG=1 shows the details",
                "audit",
            )
        ]


# ---------------------------------------------------------------- DNS


async def dns_checks(ctx: AuditContext, q: Querier) -> list[Finding]:
    zones = [z for z in ctx.dnsset.zones if _relevant(ctx, z)]
    # The resolver's own check runs alongside the authoritative questions; only
    # what is asked of the resolver waits for it.
    resolver = asyncio.ensure_future(_resolver(ctx, q, zones))

    async def resolver_ok() -> bool:
        return (await resolver)[1]

    jobs = [check_zone(ctx, q, zone, resolver_ok) for zone in zones]
    jobs += [_through_resolver(ctx, q, resolver_ok)]
    results = await asyncio.gather(*jobs)
    return [(await resolver)[0], *(f for found in results for f in found)]


async def _through_resolver(ctx: AuditContext, q: Querier, resolver_ok) -> list[Finding]:
    """The checks that read DNS as a receiver would: all through the resolver."""
    if not await resolver_ok():
        return []
    jobs = []
    for domain in ctx.domains:
        jobs += [
            spfcheck.check_domain(ctx, q, domain),
            dmarccheck.check_domain(ctx, q, domain),
            mtasts.check_domain(ctx, q, domain),
        ]
    jobs += [_fcrdns(ctx, q, h, a) for h in ctx.hosts for a in ctx.host(h).addresses()]
    results = await asyncio.gather(*jobs)
    return [f for found in results for f in found]


async def _fcrdns(ctx: AuditContext, q: Querier, host_id: str, address: str) -> list[Finding]:
    return [await fcrdns.check_address(ctx, q, host_id, address)]


def _relevant(ctx: AuditContext, zone: ZoneRecords) -> bool:
    if not ctx.options.domains and not ctx.options.hosts:
        return True
    if set(zone.domains) & set(ctx.domains):
        return True
    return any(is_under(ctx.host(h).fqdn, zone.name) for h in ctx.hosts)


async def _resolver(ctx: AuditContext, q: Querier, zones: list[ZoneRecords]):
    """Does the resolver answer at all? If not, that is one finding, not one per record."""
    name = zones[0].name if zones else "."
    subject = f"resolver {ctx.resolver}"
    only_authoritative = "records are checked at their authoritative servers only"
    try:
        answer = await q.ask(ctx.resolver, name, "SOA", recurse=True)
    except QueryFailed as exc:
        text = f"does not answer: {exc.reason}; {only_authoritative}"
        fix = "pass --resolver with a resolver that answers"
        return fail("dns.resolver", subject, text, fix, "audit").with_retries(exc.retried), False
    if answer.rcode in ("REFUSED", "SERVFAIL", "NOTIMP"):
        text = f"answers {answer.rcode} for {name}; {only_authoritative}"
        fix = "pass --resolver with one that resolves for you"
        return fail("dns.resolver", subject, text, fix, "audit"), False
    return ok("dns.resolver", subject, f"answers ({name} SOA: {answer.rcode})", "audit"), True
