"""The DMARC record a receiver would read, checked against RFC 7489 §6.3.

Whether it is the record the spec makes is dns.dmarc's job; this check says
whether a receiver can use what is published at all (a record written by hand,
or by another tool, can be the spec's in spirit and still unusable).
"""

from __future__ import annotations

from mailops.audit.context import AuditContext, domain_group
from mailops.audit.dnsquery import Querier, QueryFailed
from mailops.audit.dnsverdict import tags
from mailops.audit.findings import Finding, fail, ok, warn

POLICIES = ("none", "quarantine", "reject")


def problems(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(";") if p.strip()]
    if not parts or parts[0].replace(" ", "") != "v=DMARC1":
        return ["does not start with v=DMARC1"]
    found = tags(text)
    out = []
    if "p" not in found:
        out.append("has no p= (policy) tag, so receivers ignore it")
    for key in ("p", "sp"):
        if key in found and found[key].lower() not in POLICIES:
            out.append(f"{key}={found[key]} is not one of {', '.join(POLICIES)}")
    for key in ("adkim", "aspf"):
        if key in found and found[key].lower() not in ("r", "s"):
            out.append(f"{key}={found[key]} is not r or s")
    if "pct" in found and not (found["pct"].isdigit() and 0 <= int(found["pct"]) <= 100):
        out.append(f"pct={found['pct']} is not a number from 0 to 100")
    if "ri" in found and not found["ri"].isdigit():
        out.append(f"ri={found['ri']} is not a number of seconds")
    for key in ("rua", "ruf"):
        for uri in filter(None, found.get(key, "").split(",")):
            if not uri.lower().startswith(("mailto:", "https:")) or len(uri.split(":", 1)[1]) < 3:
                out.append(f"{key} entry {uri!r} is not a mailto: or https: URI")
    return out


async def check_domain(ctx: AuditContext, q: Querier, domain: str) -> list[Finding]:
    name = f"_dmarc.{domain}"
    subject, group = f"{name} TXT (DMARC)", domain_group(domain)
    try:
        answer = await q.ask(ctx.resolver, name, "TXT", recurse=True)
    except QueryFailed as exc:
        return [warn("dmarc.syntax", subject, f"could not read it: {exc.reason}", "", group)]
    texts = []
    if answer.rrset is not None:
        texts = [b"".join(rd.strings).decode("utf-8", "replace") for rd in answer.rrset]  # type: ignore[attr-defined]
    records = [t for t in texts if t.replace(" ", "").startswith("v=DMARC1")]
    if not records:
        return []  # dns.dmarc reports the missing record, with the line to publish
    found = [p for text in records for p in problems(text)]
    if len(records) > 1:
        found.insert(0, f"{len(records)} DMARC records: receivers ignore them all")
    if found:
        return [
            fail(
                "dmarc.syntax",
                subject,
                "; ".join(found),
                f"publish the DMARC record {ctx.spec_command('dns')} prints for {domain}",
                group,
            )
        ]
    return [ok("dmarc.syntax", subject, f"valid: {records[0]}", group)]
