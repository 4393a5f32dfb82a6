"""DKIM: signing with the domain's key file (as render writes it), verification
round trips, and the dkim= verdicts of the Authentication-Results header."""

from __future__ import annotations

import asyncio
import re

import dkim as dkimpy
import pytest

from mailops.render import dkim as render_dkim
from mailops.runtime.delivery.dkim import Signer, load_signing_key, sign, verdicts
from tests.runtime.delivery_fakes import FakeDns, config

MESSAGE = (
    b"From: Alice <alice@here.test>\r\nTo: bob@far.test\r\nSubject: signed\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <s1@here.test>\r\n\r\n"
    b"Body line.\r\n"
)


@pytest.fixture(scope="module", params=["rsa-2048", "ed25519"])
def key(request, tmp_path_factory):
    """A key file exactly as render writes it (PKCS#8 PEM), and its DNS TXT text."""
    path = tmp_path_factory.mktemp("keys") / "here.test.s1.key"
    private = render_dkim.generate_key(request.param)
    render_dkim.create_key_file(path, private)
    return path, render_dkim.dkim_record_text(private)


def dns_for(record: str) -> FakeDns:
    return FakeDns(txt={"s1._domainkey.here.test": [record]})


def test_sign_then_verify_with_dkimpy(key):
    path, record = key
    signed = sign(MESSAGE, "here.test", "s1", load_signing_key(path))
    assert signed.startswith(b"DKIM-Signature: v=1; a=")
    assert b"d=here.test" in signed and b"s=s1" in signed

    def txt(name: bytes, timeout: float = 5) -> bytes:
        assert name == b"s1._domainkey.here.test."
        return record.encode()

    assert dkimpy.verify(signed, dnsfunc=txt)
    assert not dkimpy.verify(signed.replace(b"Body line.", b"Body lime."), dnsfunc=txt)


def test_signer_uses_the_served_from_domain_and_its_key(key, tmp_path):
    path, _ = key
    conf = config(tmp_path, domains={"here.test": {"role": "mailbox", "dkim_selector": "s1",
                                                   "dkim_key": str(path)}})  # fmt: skip
    signer = Signer()
    assert signer.sign(MESSAGE, "alice@here.test", conf).startswith(b"DKIM-Signature:")
    # Mail of other domains (a forward, a bounce) is passed on untouched.
    other = MESSAGE.replace(b"alice@here.test", b"x@far.test")
    assert signer.sign(other, "x@far.test", conf) == other


def test_an_unusable_key_sends_the_message_unsigned(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    conf = config(tmp_path, domains={"here.test": {"role": "mailbox", "dkim_selector": "s1",
                                                   "dkim_key": str(bad)}})  # fmt: skip
    assert Signer().sign(MESSAGE, "alice@here.test", conf) == MESSAGE


def test_verdicts_pass_fail_none(key):
    path, record = key
    signed = sign(MESSAGE, "here.test", "s1", load_signing_key(path))
    [verdict] = asyncio.run(verdicts(signed, dns_for(record)))
    assert re.fullmatch(r"dkim=pass header\.d=here\.test header\.s=s1 header\.b=\S{8}", verdict)
    tampered = signed.replace(b"Body line.", b"Body lime.")
    [verdict] = asyncio.run(verdicts(tampered, dns_for(record)))
    assert verdict.startswith("dkim=fail ")
    assert asyncio.run(verdicts(MESSAGE, dns_for(record))) == ["dkim=none"]


def test_missing_key_is_permerror_and_dns_trouble_temperror(key):
    from mailops.runtime.delivery.resolver import DnsError

    path, _ = key
    signed = sign(MESSAGE, "here.test", "s1", load_signing_key(path))
    [verdict] = asyncio.run(verdicts(signed, FakeDns()))
    assert verdict.startswith("dkim=permerror ")
    broken = FakeDns(txt={"s1._domainkey.here.test": DnsError("timed out", permanent=False)})
    [verdict] = asyncio.run(verdicts(signed, broken))
    assert verdict.startswith("dkim=temperror ")


def test_the_from_domain_is_matched_whole_and_in_any_case(key, tmp_path):
    path, _ = key
    conf = config(tmp_path, domains={"here.test": {"role": "mailbox", "dkim_selector": "s1",
                                                   "dkim_key": str(path)}})  # fmt: skip
    signer = Signer()
    # From names the served domain in capitals; the envelope is a list's: signed as here.test.
    shouted = MESSAGE.replace(b"alice@here.test", b"ALICE@HERE.TEST")
    signed = signer.sign(shouted, "list-bounces@far.test", conf)
    assert b" d=here.test;" in signed.split(b"\r\n\r\n")[0].replace(b"\r\n\t", b" ")
    # A From domain that merely ends in a served one is not it: the sender's counts.
    sub = MESSAGE.replace(b"alice@here.test", b"alice@sub.here.test")
    assert signer.sign(sub, "alice@here.test", conf).startswith(b"DKIM-Signature:")
    assert signer.sign(sub, "x@far.test", conf) == sub
