"""What port 25 accepts: mail for the real addresses of the domains the host
serves, and nothing else.

- Open relay: a message from an outside address to an outside address must be
  refused at RCPT, and so must the old tricks that hide a second destination
  in the local part (`user%other@served`, `"user@other"@served`, source routes).
- Unknown recipients: an address that does not exist in a served domain must
  be refused at RCPT (accepting and bouncing later sends backscatter to forged
  senders), unless the spec gives the domain a catch-all.

No message is ever sent: the probes stop after RCPT and reset the session.
"""

from __future__ import annotations

import secrets

from mailops.audit.probes.base import Probe
from mailops.audit.probes.wire import Reply, Wire
from mailops.render.host import domain_roles
from mailops.spec.model import Spec

# Reserved names (RFC 2606, RFC 6761) that look like any other domain to an MTA,
# and that no mail can ever really go to.
OUTSIDE_CANDIDATES = (
    "example.com",
    "example.net",
    "example.org",
    "relay-probe.example",
    "relay-probe.invalid",
)


def outside_domains(spec: Spec) -> tuple[str, str]:
    """(sender domain, recipient domain): reserved domains the spec does not serve."""
    served = set(spec.domains)
    free = [d for d in OUTSIDE_CANDIDATES if not any(d == s or d.endswith("." + s) for s in served)]
    return free[0], free[1]


def relay_forms(outside: str, served: str | None) -> list[str]:
    """RCPT arguments that must all be refused."""
    target = f"relay-probe@{outside}"
    forms = [f"<{target}>"]
    if served:
        forms += [
            f"<relay-probe%{outside}@{served}>",
            f'<"{target}"@{served}>',
            f"<@{served}:{target}>",
        ]
    return forms


async def probe(p: Probe, wire: Wire) -> None:
    """Both probes, in the session smtp.py opened (before STARTTLS, as a spammer would)."""
    sender_domain, outside = outside_domains(p.ctx.spec)
    sender = f"mailops-audit@{sender_domain}"
    served = sorted(d for d in domain_roles(p.ctx.spec, p.target.host_id) if d in p.ctx.domains)
    p.step = "smtp.relay"
    await _relay(p, wire, sender, outside, served[0] if served else None)
    for domain in served:
        p.step = "smtp.unknown-recipient"
        await _unknown(p, wire, sender, domain)


async def _relay(p: Probe, wire: Wire, sender: str, outside: str, served: str | None) -> None:
    mail = await wire.command(f"MAIL FROM:<{sender}>")
    if not 200 <= mail.code < 300:
        p.ok("smtp.relay", f"refuses mail from outside already at MAIL FROM ({mail})")
        return
    accepted: list[tuple[str, Reply]] = []
    refusal = None
    for form in relay_forms(outside, served):
        reply = await wire.command(f"RCPT TO:{form}")
        if 200 <= reply.code < 300:
            accepted.append((form, reply))
        refusal = refusal or (reply if reply.code >= 400 else None)
    await wire.command("RSET")
    if not accepted:
        p.ok(
            "smtp.relay",
            f"refuses outside → outside ({refusal}), and the %, quoted and source-route forms",
        )
        return
    listed = "; ".join(f"RCPT TO:{form} → {reply}" for form, reply in accepted)
    p.fail(
        "smtp.relay",
        f"OPEN RELAY: accepts mail from {sender} to outside addresses: {listed}",
        f"the host accepts mail for {outside}, which the spec does not serve: find what "
        "makes it (a hand-edited [domains] in runtime.toml, or aliases?), and "
        f"{p.command('apply')} to restore the rendered configuration; meanwhile it can be "
        "abused to send spam",
    )


async def _unknown(p: Probe, wire: Wire, sender: str, domain: str) -> None:
    subject = f"{p.target.subject} {domain}"
    catch_all = p.ctx.spec.domains[domain].catch_all
    if catch_all:
        text = f"{domain} has a catch-all ({catch_all}): every address is accepted, by the spec"
        p.ok("smtp.unknown-recipient", text, subject)
        return
    nobody = f"mailops-audit-nobody-{secrets.token_hex(4)}@{domain}"
    mail = await wire.command(f"MAIL FROM:<{sender}>")
    reply = await wire.command(f"RCPT TO:<{nobody}>") if 200 <= mail.code < 300 else mail
    await wire.command("RSET")
    if reply.code >= 500:
        p.ok("smtp.unknown-recipient", f"{nobody} refused at RCPT ({reply})", subject)
    elif reply.code >= 400:
        p.warn(
            "smtp.unknown-recipient",
            f"{nobody} deferred ({reply}) rather than refused: senders retry for days",
            "",
            subject,
        )
    else:
        p.fail(
            "smtp.unknown-recipient",
            f"accepts mail for {nobody}, an address that does not exist ({reply}): bounces "
            "of spam go to forged senders (backscatter)",
            f"the spec has no catch-all for {domain}: look for one in the host's aliases "
            f"file (@{domain}); {p.command('apply')} restores the rendered file",
            subject,
        )
