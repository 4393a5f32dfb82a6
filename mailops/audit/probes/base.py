"""The frame every port probe runs in: one target (host, address, service,
port), the findings it collects, TLS set up the same way for every protocol,
and retries for a flaky network.

A probe runs whole or not at all: when the network fails in the middle (a
reset, a timeout), its findings are dropped and it starts again, up to the
retry limit. What is left failing after that is charged to the step under way
— `net.port` while connecting, `smtp.ehlo` while waiting for EHLO — so a
stopped service is one red `net.port` per port, not a cascade.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailops.audit.context import AuditContext, host_group
from mailops.audit.findings import Finding, fail, ok, warn
from mailops.audit.net import Exhausted, ProtocolError, describe, transient
from mailops.audit.probes import tls
from mailops.audit.probes.wire import Wire

IMPLICIT_TLS = ("submissions", "imaps", "pop3s")


@dataclass(frozen=True)
class Target:
    host_id: str
    fqdn: str
    address: str
    service: str
    port: int

    @property
    def subject(self) -> str:
        where = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.host_id} {self.service} {where}:{self.port}"

    @property
    def implicit_tls(self) -> bool:
        return self.service in IMPLICIT_TLS


Reopen = Callable[[ssl.SSLContext], Awaitable[Wire]]
"""Connect again and get to the TLS handshake with this context (after a
certificate failed verification, to read what it is)."""


class Probe:
    def __init__(self, ctx: AuditContext, target: Target):
        self.ctx, self.target = ctx, target
        self.step = "net.port"
        self.findings: list[Finding] = []

    # ------------------------------------------------------------ findings

    @property
    def host(self):
        return self.ctx.host(self.target.host_id)

    def ok(self, check: str, text: str, subject: str = "") -> None:
        self.add(ok(check, subject or self.target.subject, text, self.group))

    def warn(self, check: str, text: str, fix: str = "", subject: str = "") -> None:
        self.add(warn(check, subject or self.target.subject, text, fix, self.group))

    def fail(self, check: str, text: str, fix: str = "", subject: str = "") -> None:
        self.add(fail(check, subject or self.target.subject, text, fix, self.group))

    @property
    def group(self) -> str:
        return host_group(self.target.host_id)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def command(self, what: str, action: str = "") -> str:
        return self.ctx.spec_command(what, self.target.host_id, action)

    # ------------------------------------------------------------ connecting

    @property
    def wants_tls(self) -> bool:
        return self.host.tls is not None

    def tls_context(self) -> ssl.SSLContext:
        if tls.self_signed(self.ctx, self.target.host_id):
            return tls.unverified_context()
        return tls.verifying_context(self.ctx.options.ca_file)

    async def open(self, context: ssl.SSLContext | None = None) -> Wire:
        t = self.target
        timeout = self.ctx.policy.timeout
        return await Wire.open(t.address, t.port, timeout, context, t.fqdn if context else None)

    async def connect(self) -> Wire:
        """Connect (with TLS from the first byte on implicit-TLS ports) and say so."""
        self.step = "net.port"
        if not self.target.implicit_tls:
            wire = await self.open()
            self.ok("net.port", "open")
            return wire
        try:
            wire = await self.open(self.tls_context())
            error = None
        except ssl.SSLCertVerificationError as exc:
            error = exc.verify_message or str(exc.reason)
            wire = await self.open(tls.unverified_context())
        except ssl.SSLError as exc:
            self.ok("net.port", "open")
            self.step = "tls.handshake"
            raise ProtocolError(f"no TLS from the first byte: {exc.reason or exc}") from None
        self.ok("net.port", "open")
        self.secured(wire, error, "TLS from the first byte")
        return wire

    async def start_tls(self, wire: Wire, reopen: Reopen) -> Wire:
        """The handshake after STARTTLS/STLS was accepted."""
        self.step = "tls.handshake"
        try:
            await wire.start_tls(self.tls_context(), self.target.fqdn)
            error = None
        except ssl.SSLCertVerificationError as exc:
            error = exc.verify_message or str(exc.reason)
            await wire.close()
            wire = await reopen(tls.unverified_context())
        except ssl.SSLError as exc:
            raise ProtocolError(f"STARTTLS handshake failed: {exc.reason or exc}") from None
        self.secured(wire, error, "STARTTLS")
        return wire

    def secured(self, wire: Wire, error: str | None, how: str) -> None:
        self.ok("tls.handshake", f"{how}: {wire.tls_version()}")
        served = tls.Served(wire.peer_certificate(), error)
        t = self.target
        self.add(tls.judge(self.ctx, t.host_id, t.subject, host_group(t.host_id), served))

    def no_starttls(self, what: str) -> None:
        """The port does not offer to upgrade: fine when the spec has no TLS."""
        if self.wants_tls:
            self.fail(
                "tls.handshake",
                f"{what} not offered: passwords and mail would cross in clear",
                f"check [tls] in the host's runtime.toml; {self.command('apply')} restores it",
            )


Body = Callable[[Probe], Awaitable[None]]


async def run_probe(ctx: AuditContext, target: Target, body: Body) -> list[Finding]:
    """Run `body` until it completes without a network failure, or attempts run out."""
    policy = ctx.policy
    probe = Probe(ctx, target)
    for attempt in range(policy.attempts):
        if attempt:
            await asyncio.sleep(policy.delay(attempt - 1))
        probe = Probe(ctx, target)
        try:
            await body(probe)
            return [f.with_retries(attempt) for f in probe.findings]
        except (ProtocolError, ssl.SSLError) as exc:
            probe.fail(probe.step, describe(exc))
            return [f.with_retries(attempt) for f in probe.findings]
        except Exhausted as exc:
            last: BaseException = exc.cause
        except Exception as exc:
            if not transient(exc):
                raise
            last = exc
    tries = f" ({policy.attempts} attempts)" if policy.attempts > 1 else ""
    probe.fail(probe.step, describe(last) + tries, _network_fix(probe))
    return [f.with_retries(policy.attempts - 1) for f in probe.findings]


def _network_fix(probe: Probe) -> str:
    if probe.step != "net.port":
        return ""
    return (
        f"start the runtime ({probe.command('service', 'start')}) and check that "
        f"{probe.target.service} listens on {probe.target.address} port {probe.target.port} "
        "and that no firewall blocks it"
    )
