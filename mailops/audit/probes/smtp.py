"""SMTP ports as a client sees them: 25 (MX), 587 (submission, STARTTLS) and
465 (submission, TLS from the first byte).

Every port: the 220 banner names the host's fqdn, EHLO is answered, TLS works
and shows a good certificate. Port 25 also gets the open-relay and
unknown-recipient probes (relay.py). On the submission ports, AUTH must not
be offered before TLS, must be offered after it, and a message without AUTH
must be refused.
"""

from __future__ import annotations

from mailops.audit import relay
from mailops.audit.net import ProtocolError
from mailops.audit.probes.base import Probe
from mailops.audit.probes.wire import Reply, Wire

HELO_NAME = "mailops-audit.invalid"
"""Our EHLO name: a name that can never be a real host."""


def extensions(reply: Reply) -> dict[str, str]:
    """EHLO keywords (upper case) → their parameters; the greeting line is skipped."""
    out = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.partition(" ")
        out[keyword.upper()] = params
    return out


def shown(exts: dict[str, str]) -> str:
    return " ".join(k if not v or k in ("SIZE",) else f"{k} {v}" for k, v in exts.items())


async def start(wire: Wire) -> Reply:
    """Banner and EHLO; a ProtocolError when the server does not let us go on."""
    banner = await wire.reply()
    if banner.code != 220:
        raise ProtocolError(f"the server greets with {banner}, not 220")
    ehlo = await wire.command(f"EHLO {HELO_NAME}")
    if ehlo.code != 250:
        raise ProtocolError(f"EHLO refused: {ehlo}")
    return ehlo


async def starttls(wire: Wire) -> None:
    reply = await wire.command("STARTTLS")
    if reply.code != 220:
        raise ProtocolError(f"STARTTLS refused: {reply}")


async def probe(p: Probe) -> None:
    wire = await p.connect()
    try:
        await _session(p, wire)
    finally:
        await wire.close()


async def _session(p: Probe, wire: Wire) -> None:
    service = p.target.service
    p.step = "smtp.banner"
    banner = await wire.reply()
    _check_banner(p, banner)
    if banner.code != 220:
        return
    p.step = "smtp.ehlo"
    ehlo = await wire.command(f"EHLO {HELO_NAME}")
    if ehlo.code != 250:
        p.fail("smtp.ehlo", f"EHLO refused: {ehlo}")
        return
    exts = extensions(ehlo)
    if p.target.implicit_tls:
        _check_submission_ehlo(p, exts, "")
        await _auth_required(p, wire)
        await _quit(wire)
        return
    if service == "smtp":
        p.step = "smtp.relay"
        await relay.probe(p, wire)
    if service == "submission":
        _check_no_auth_before_tls(p, exts)
    if "STARTTLS" not in exts:
        p.ok("smtp.ehlo", shown(exts))
        p.no_starttls("STARTTLS")
        await _quit(wire)
        return
    p.step = "tls.handshake"
    await starttls(wire)
    wire = await p.start_tls(wire, lambda context: _reopen(p, context))
    p.step = "smtp.ehlo"
    after = await wire.command(f"EHLO {HELO_NAME}")
    if service == "submission":
        _check_submission_ehlo(p, extensions(after), " after STARTTLS")
        await _auth_required(p, wire)
    else:
        p.ok("smtp.ehlo", shown(exts))
    await _quit(wire)


async def _reopen(p: Probe, context) -> Wire:
    wire = await p.open()
    await start(wire)
    await starttls(wire)
    await wire.start_tls(context, p.target.fqdn)
    return wire


def _check_banner(p: Probe, banner: Reply) -> None:
    fqdn = p.host.fqdn
    first = banner.lines[0] if banner.lines else ""
    if banner.code != 220:
        p.fail("smtp.banner", f"greets with {banner}, not 220")
    elif first.split(" ")[0].lower() != fqdn.lower():
        p.fail(
            "smtp.banner",
            f"the banner names {first.split(' ')[0] or 'nothing'}, not {fqdn}: {banner}",
            f"hostname in the host's runtime.toml should be {fqdn}; {p.command('apply')} "
            "restores it",
        )
    else:
        p.ok("smtp.banner", str(banner))


def _check_no_auth_before_tls(p: Probe, exts: dict[str, str]) -> None:
    if "AUTH" in exts:
        p.fail(
            "auth.before-tls",
            f"AUTH {exts['AUTH']} is offered before TLS: passwords can cross in clear",
            "the runtime offers AUTH in clear only with plaintext_auth_on_loopback in "
            f"runtime.toml (for labs); {p.command('apply')} restores the rendered file",
        )
    else:
        p.ok("auth.before-tls", "AUTH is offered only after STARTTLS")


def _check_submission_ehlo(p: Probe, exts: dict[str, str], when: str) -> None:
    if "AUTH" not in exts:
        p.fail(
            "smtp.ehlo",
            f"AUTH is not offered{when}: users cannot log in to send",
            f"{p.command('apply')} restores the runtime's configuration",
        )
    else:
        p.ok("smtp.ehlo", shown(exts))


async def _auth_required(p: Probe, wire: Wire) -> None:
    p.step = "smtp.auth-required"
    domain = sorted(p.ctx.spec.domains)[0]
    reply = await wire.command(f"MAIL FROM:<mailops-audit@{domain}>")
    if 200 <= reply.code < 300:
        p.fail(
            "smtp.auth-required",
            f"a message without AUTH is accepted ({reply}): anyone may send through it",
            f"{p.command('apply')} restores the runtime's configuration",
        )
        await wire.command("RSET")
    else:
        p.ok("smtp.auth-required", f"sending without AUTH is refused ({reply})")


async def _quit(wire: Wire) -> None:
    await wire.send("QUIT")
