"""Forward-confirmed reverse DNS of every host address: the address's PTR names
the host's fqdn, and that name's A/AAAA leads back to the address. Receivers
use it to judge a sending MTA; many refuse mail from an address without it.

Loopback and link-local addresses (labs, tests) have no reverse owner to ask;
`mailops dns` lists no PTR for them, and neither is one checked here.
"""

from __future__ import annotations

import ipaddress

import dns.reversename

from mailops.audit.context import AuditContext, host_group
from mailops.audit.dnsquery import Querier, QueryFailed
from mailops.audit.findings import Finding, fail, ok, warn

CHECK = "dns.fcrdns"


async def check_address(ctx: AuditContext, q: Querier, host_id: str, address: str) -> Finding:
    host = ctx.host(host_id)
    fqdn = host.fqdn
    subject, group = f"{host_id} {address} PTR", host_group(host_id)
    ip = ipaddress.ip_address(address)
    if ip.is_loopback or ip.is_link_local:
        return ok(CHECK, subject, "loopback/link-local address: no reverse DNS to check", group)
    reverse = dns.reversename.from_address(address).to_text(omit_final_dot=True)
    try:
        ptr = await q.ask(ctx.resolver, reverse, "PTR", recurse=True)
        family = "A" if ip.version == 4 else "AAAA"
        forward = await q.ask(ctx.resolver, fqdn, family, recurse=True)
    except QueryFailed as exc:
        return warn(CHECK, subject, f"could not check: {exc.reason}", "", group).with_retries(
            exc.retried
        )
    names = sorted(rd.target.to_text(omit_final_dot=True).lower() for rd in ptr.rrset or [])  # type: ignore[attr-defined]
    ask = (
        f"ask the owner of {address} (usually the hosting provider) to set its reverse DNS: "
        f"{reverse}. PTR {fqdn}."
    )
    if not names:
        return fail(
            CHECK, subject, f"{address} has no PTR record ({ptr.describe_empty()})", ask, group
        )
    if fqdn not in names:
        return fail(
            CHECK, subject, f"{address} points back to {', '.join(names)}, not {fqdn}", ask, group
        )
    addresses = {ipaddress.ip_address(rd.address) for rd in forward.rrset or []}  # type: ignore[attr-defined]
    if ip not in addresses:
        return fail(
            CHECK,
            subject,
            f"{address} points back to {fqdn}, but {fqdn} has no {family} record for {address}",
            f"publish: {fqdn}. IN {family} {address}",
            group,
        )
    return ok(CHECK, subject, f"{address} ⇄ {fqdn}", group)
