"""Network probes: every service of every selected host, on every address the
spec publishes for it, talked to like any client would (DESIGN.md §2: the ops
side never imports the runtime's servers)."""

from __future__ import annotations

from collections.abc import Awaitable

from mailops.audit.context import AuditContext
from mailops.audit.findings import Finding
from mailops.audit.probes import imap, pop3, smtp
from mailops.audit.probes.base import Body, Target, run_probe

BODIES: dict[str, Body] = {
    "smtp": smtp.probe,
    "submission": smtp.probe,
    "submissions": smtp.probe,
    "imap": imap.probe,
    "imaps": imap.probe,
    "pop3": pop3.probe,
    "pop3s": pop3.probe,
}


def targets(ctx: AuditContext, host_id: str) -> list[Target]:
    host = ctx.host(host_id)
    return [
        Target(host_id, host.fqdn, address, service, getattr(host.ports, service))
        for address in host.addresses()
        for service in host.services
    ]


def host_probes(ctx: AuditContext, host_id: str) -> list[Awaitable[list[Finding]]]:
    return [run_probe(ctx, t, BODIES[t.service]) for t in targets(ctx, host_id)]
