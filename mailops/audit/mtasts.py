"""The MTA-STS policy a sender would fetch (RFC 8461 §3.3): from
https://mta-sts.<domain>/.well-known/mta-sts.txt, over verified TLS, and it
must say what the spec says (the id in DNS is derived from exactly that text,
so a policy that differs makes the id a lie).
"""

from __future__ import annotations

import asyncio
import ssl

from mailops.audit.context import AuditContext, domain_group
from mailops.audit.dnsquery import Querier, QueryFailed
from mailops.audit.findings import Finding, fail, ok
from mailops.audit.net import Exhausted, ProtocolError, describe, with_retries
from mailops.audit.probes.tls import verifying_context
from mailops.audit.probes.wire import Wire

CHECK = "mta-sts.policy"
PATH = "/.well-known/mta-sts.txt"
MAX_POLICY = 64 * 1024  # RFC 8461 §3.3: senders may refuse larger policies


def parse_policy(text: str) -> dict[str, object]:
    fields: dict[str, object] = {"mx": []}
    for line in text.replace("\r\n", "\n").split("\n"):
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "mx":
            fields["mx"].append(value.lower())  # type: ignore[union-attr]
        else:
            fields[key] = value
    fields["mx"] = sorted(fields["mx"])  # type: ignore[arg-type]
    return fields


async def check_domain(ctx: AuditContext, q: Querier, domain: str) -> list[Finding]:
    files = next((f for f in ctx.dnsset.files if f.domain == domain), None)
    if files is None or files.mta_sts is None:
        return []
    host = f"mta-sts.{domain}"
    subject, group = f"https://{host}{PATH}", domain_group(domain)
    serve = (
        f"serve {domain}/mta-sts.txt, as `mailops dns {ctx.loaded.path} --out DIR` writes it, "
        f"at https://{host}{PATH} with a certificate for {host}"
    )
    addresses = await _addresses(ctx, q, host)
    if not addresses:
        text = f"{host} has no address: senders cannot fetch the policy and ignore MTA-STS"
        return [fail(CHECK, subject, text, f"publish an A/AAAA record for {host}; {serve}", group)]
    try:
        (status, body), retried = await with_retries(
            lambda: _get(ctx, addresses[0], host), ctx.policy
        )
    except (Exhausted, ProtocolError, ssl.SSLError) as exc:
        text = f"cannot fetch it from {addresses[0]}: {describe(exc)}; senders ignore MTA-STS"
        return [fail(CHECK, subject, text, serve, group)]
    if status != 200:
        return [fail(CHECK, subject, f"answered HTTP {status}", serve, group)]
    want, have = parse_policy(files.mta_sts), parse_policy(body)
    if want != have:
        differences = [
            f"{key}: {have.get(key, '(none)')} (spec: {want.get(key, '(none)')})"
            for key in sorted(want.keys() | have.keys())
            if want.get(key) != have.get(key)
        ]
        text = "the served policy is not the spec's: " + "; ".join(differences)
        return [fail(CHECK, subject, text, serve, group).with_retries(retried)]
    summary = f"mode {have.get('mode')}, {len(have['mx'])} mx, max_age {have.get('max_age')}"  # type: ignore[arg-type]
    return [ok(CHECK, subject, f"served as the spec says ({summary})", group).with_retries(retried)]


async def _addresses(ctx: AuditContext, q: Querier, host: str) -> list[str]:
    out = []
    for rtype in ("A", "AAAA"):
        try:
            answer = await q.ask(ctx.resolver, host, rtype, recurse=True)
        except QueryFailed:
            continue
        out += [rd.address for rd in answer.rrset or []]  # type: ignore[attr-defined]
    return out


async def _get(ctx: AuditContext, address: str, host: str) -> tuple[int, str]:
    """A plain HTTP/1.0 GET (no chunked bodies to undo), as senders fetch policies."""
    context = verifying_context(ctx.options.ca_file)
    wire = await Wire.open(address, 443, ctx.policy.timeout, context, host)
    try:
        request = f"GET {PATH} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: mailops-audit\r\n\r\n"
        await wire.send(request.encode())
        data = await asyncio.wait_for(wire.reader.read(MAX_POLICY + 4096), ctx.policy.timeout)
        while chunk := await asyncio.wait_for(wire.reader.read(4096), ctx.policy.timeout):
            data += chunk
            if len(data) > MAX_POLICY + 4096:
                break
    finally:
        await wire.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split(" ")
    if len(parts) < 2 or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP answer: {status_line[:60]!r}")
    return int(parts[1]), body.decode("utf-8", "replace")
