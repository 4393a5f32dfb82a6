"""Certificates judged against the spec: expiry, names, trust, and the
self-signed certificate mailops made."""

from __future__ import annotations

import datetime as dt
import ssl

import trustme

from mailops.audit.probes.tls import Served, judge
from mailops.render.tls import ensure_self_signed
from tests.audit.specs import small_context

NOW = dt.datetime.now(dt.UTC)
CA = trustme.CA()


def der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def issue(*names: str, days: float = 90) -> bytes:
    return der(CA.issue_cert(*names, not_after=NOW + dt.timedelta(days=days)))


def test_a_good_certificate_passes(tmp_path):
    ctx = small_context(tmp_path)
    finding = judge(ctx, "mx1", "mx1 smtp", "host mx1", Served(issue("mx1.example.test")))
    assert finding.severity == "ok"
    assert finding.text.startswith("mx1.example.test, chain verified, valid until ")


def test_expired_fails_with_the_renewal_fix(tmp_path):
    ctx = small_context(tmp_path)
    cert = der(
        CA.issue_cert(
            "mx1.example.test",
            not_before=NOW - dt.timedelta(days=90),
            not_after=NOW - dt.timedelta(days=2),
        )
    )
    finding = judge(ctx, "mx1", "s", "g", Served(cert, "certificate has expired"))
    assert (finding.check, finding.severity) == ("tls.cert", "fail")
    assert finding.text.startswith("expired on ")
    assert finding.fix == (
        "renew /etc/tls/mx1.pem on the host (with its chain), then "
        f"`mailops service {ctx.loaded.path} reload --host mx1`"
    )


def test_under_two_weeks_left_is_a_warning(tmp_path):
    ctx = small_context(tmp_path)
    finding = judge(ctx, "mx1", "s", "g", Served(issue("mx1.example.test", days=5)))
    assert finding.severity == "warn"
    assert finding.text.startswith("expires soon: valid until ")
    assert "renew /etc/tls/mx1.pem" in finding.fix


def test_a_certificate_for_another_name_fails(tmp_path):
    ctx = small_context(tmp_path)
    finding = judge(ctx, "mx1", "s", "g", Served(issue("www.example.test")))
    assert finding.severity == "fail"
    assert finding.text == "names www.example.test, not mx1.example.test"


def test_a_wildcard_covers_the_host(tmp_path):
    ctx = small_context(tmp_path)
    assert judge(ctx, "mx1", "s", "g", Served(issue("*.example.test"))).severity == "ok"


def test_an_untrusted_chain_fails_unless_the_spec_says_self_signed(tmp_path):
    ctx = small_context(tmp_path)
    served = Served(issue("mx1.example.test"), "unable to get local issuer certificate")
    finding = judge(ctx, "mx1", "s", "g", served)
    assert finding.severity == "fail"
    assert finding.text.startswith("does not verify: unable to get local issuer certificate")
    assert "tls.self_signed: true" in finding.fix


def test_self_signed_must_be_the_one_mailops_made(tmp_path):
    ctx = small_context(tmp_path, tls="{self_signed: true}")
    made, _ = ensure_self_signed(tmp_path / "keys", "mx1", "mx1.example.test", ["192.0.2.10"])
    mine = ssl.PEM_cert_to_DER_cert(made.decode())
    assert judge(ctx, "mx1", "s", "g", Served(mine)).severity == "ok"
    other = judge(ctx, "mx1", "s", "g", Served(issue("mx1.example.test")))
    assert other.severity == "fail"
    assert (
        other.text == f"not the self-signed certificate mailops made ({tmp_path}/keys/tls/mx1.crt)"
    )
    assert other.fix == f"`mailops apply {ctx.loaded.path} --host mx1` installs it"
