"""TLS for the probes: the contexts, and the certificate a port serves judged
against the spec.

With `tls.cert` in the spec the certificate must verify like any client would
verify it (chain to a trusted CA, name = the host's fqdn); with
`tls.self_signed: true` it cannot chain anywhere, so it must instead be the very
certificate mailops made (keys/tls/<host>.crt beside the spec). Either way it
must be valid now: under 14 days left is a warning, expired a failure.

Python's ssl module stops at the first verification error and then hides the
certificate, so a port that fails verification is connected to again without
verification, only to read the certificate and say precisely what is wrong.
"""

from __future__ import annotations

import datetime as dt
import functools
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mailops.audit.context import AuditContext
from mailops.audit.findings import Finding, fail, ok, warn
from mailops.render.tls import self_signed_paths

WARN_DAYS = 14
CHECK = "tls.cert"


@functools.cache
def verifying_context(ca_file: Path | None) -> ssl.SSLContext:
    """One per audit and CA file: loading the system's CAs costs tens of
    milliseconds, and a context serves any number of connections."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


@functools.cache
def unverified_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class CertInfo:
    names: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    issuer: str
    fingerprint: str

    @classmethod
    def read(cls, der: bytes) -> CertInfo:
        cert = x509.load_der_x509_certificate(der)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            names = ()
        return cls(
            names=names,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            issuer=cert.issuer.rfc4514_string(),
            fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        )

    def names_host(self, fqdn: str) -> bool:
        fqdn = fqdn.lower()
        parent = fqdn.split(".", 1)[1] if "." in fqdn else ""
        return fqdn in self.names or (bool(parent) and f"*.{parent}" in self.names)


@dataclass(frozen=True)
class Served:
    """What a TLS handshake showed: the certificate, and why verification failed."""

    der: bytes | None
    error: str | None = None
    """The verification error; None when it verified (or was not asked to)."""


def self_signed(ctx: AuditContext, host_id: str) -> bool:
    tls = ctx.host(host_id).tls
    return bool(tls and tls.self_signed)


def judge(ctx: AuditContext, host_id: str, subject: str, group: str, served: Served) -> Finding:
    host = ctx.host(host_id)
    if served.der is None:
        return fail(CHECK, subject, "no certificate was shown", _renew_fix(ctx, host_id), group)
    info = CertInfo.read(served.der)
    now = ctx.now()
    if info.not_after <= now:
        text = f"expired on {info.not_after:%Y-%m-%d %H:%M} UTC"
        return fail(CHECK, subject, text, _renew_fix(ctx, host_id), group)
    if info.not_before > now:
        text = f"not valid before {info.not_before:%Y-%m-%d %H:%M} UTC (a clock problem?)"
        return fail(CHECK, subject, text, _renew_fix(ctx, host_id), group)
    if not info.names_host(host.fqdn):
        text = f"names {', '.join(info.names) or 'no DNS name'}, not {host.fqdn}"
        fix = f"serve a certificate for {host.fqdn}"
        return fail(CHECK, subject, text, fix, group)
    problem = _trust_problem(ctx, host_id, info, served.error)
    if problem:
        return fail(CHECK, subject, problem[0], problem[1], group)
    left = info.not_after - now
    until = f"valid until {info.not_after:%Y-%m-%d} ({left.days} days)"
    if left < dt.timedelta(days=WARN_DAYS):
        return warn(CHECK, subject, f"expires soon: {until}", _renew_fix(ctx, host_id), group)
    how = "the certificate mailops made" if self_signed(ctx, host_id) else "chain verified"
    return ok(CHECK, subject, f"{host.fqdn}, {how}, {until}", group)


def _trust_problem(
    ctx: AuditContext, host_id: str, info: CertInfo, error: str | None
) -> tuple[str, str] | None:
    """(text, fix) when the certificate is not the one to trust."""
    apply = ctx.spec_command("apply", host_id)
    if self_signed(ctx, host_id):
        cert_path, _ = self_signed_paths(ctx.loaded.base_dir / "keys", host_id)
        try:
            made = CertInfo.read(ssl.PEM_cert_to_DER_cert(cert_path.read_text()))
        except (OSError, ValueError):
            text = f"the spec says self_signed, but {cert_path} is missing or unreadable"
            return text, f"{apply} makes and installs one"
        if made.fingerprint != info.fingerprint:
            return (
                f"not the self-signed certificate mailops made ({cert_path})",
                f"{apply} installs it",
            )
        return None
    if error is None:
        return None
    return (
        f"does not verify: {error} (issuer {info.issuer})",
        "serve a certificate from a CA that clients trust, with its intermediates "
        "(fullchain.pem); for a lab, set tls.self_signed: true in the spec",
    )


def _renew_fix(ctx: AuditContext, host_id: str) -> str:
    tls = ctx.host(host_id).tls
    reload = ctx.spec_command("service", host_id, "reload")
    if tls is not None and tls.self_signed:
        cert, key = self_signed_paths(ctx.loaded.base_dir / "keys", host_id)
        return (
            f"delete {cert} and {key}, then {ctx.spec_command('apply', host_id)} makes and "
            "installs a new one"
        )
    where = tls.cert if tls is not None else "the certificate file"
    return f"renew {where} on the host (with its chain), then {reload}"
