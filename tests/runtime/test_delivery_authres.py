"""The Authentication-Results header of inbound mail: what it says, and the forged
ones (naming this host) that are removed from a message (RFC 8601 §5)."""

from __future__ import annotations

import asyncio

import pytest

from mailops.runtime.delivery.authres import header, strip_forged
from tests.runtime.delivery_fakes import FakeDns

BODY = b"From: a@far.test\r\nSubject: x\r\n\r\nAuthentication-Results: mx.here.test; body\r\n"


def test_the_header_holds_spf_then_dkim():
    dns = FakeDns(txt={"far.test": ["v=spf1 ip4:192.0.2.0/24 -all"]})
    line = asyncio.run(header(BODY, "mx.here.test", dns, client_ip="192.0.2.9",
                              helo="out.far.test", sender="a@far.test"))  # fmt: skip
    assert line == (
        b"Authentication-Results: mx.here.test;\r\n"
        b"\tspf=pass smtp.mailfrom=a@far.test;\r\n"
        b"\tdkim=none\r\n"
    )
    bounce = asyncio.run(header(BODY, "mx.here.test", dns, client_ip="192.0.2.9",
                                helo="out.far.test", sender=""))  # fmt: skip
    assert b"\tspf=none smtp.helo=out.far.test;\r\n" in bounce


def test_a_sender_cannot_break_the_header_with_its_address():
    line = asyncio.run(header(BODY, "mx.here.test", FakeDns(), client_ip="192.0.2.9",
                              helo="h", sender='a;b (c)"@far.test'))  # fmt: skip
    assert b"\tspf=none smtp.mailfrom=abc@far.test;\r\n" in line


@pytest.mark.parametrize(
    "forged",
    [
        b"Authentication-Results: mx.here.test; spf=pass smtp.mailfrom=a@far.test\r\n",
        b"authentication-results:MX.HERE.TEST.;dkim=pass\r\n",
        b"Authentication-Results: (made (up)) mx.here.test;\r\n\tdkim=pass\r\n header.d=x\r\n",
        b"Authentication-Results: mx.here.test 1; none\r\n",  # with a version
    ],
)
def test_forged_results_naming_this_host_are_removed(forged):
    others = b"Authentication-Results: mx.far.test; spf=pass smtp.mailfrom=a@far.test\r\n"
    message = b"Received: from x\r\n" + forged + others + BODY
    assert strip_forged(message, "mx.here.test") == b"Received: from x\r\n" + others + BODY
    # Last in the header too: the blank line after it stays where it was.
    assert strip_forged(b"Subject: y\r\n" + forged + b"\r\nbody\r\n", "mx.here.test") == (
        b"Subject: y\r\n\r\nbody\r\n"
    )


@pytest.mark.parametrize(
    "kept",
    [
        b"Authentication-Results: mx.here.test.evil.example; spf=pass\r\n",
        b"Authentication-Results: other.here.test; spf=pass\r\n",
        b"X-Authentication-Results: mx.here.test; spf=pass\r\n",
    ],
)
def test_other_hosts_results_and_the_body_are_untouched(kept):
    message = kept + BODY
    assert strip_forged(message, "mx.here.test") is message


def test_mail_from_localhost_has_no_spf_verdict():
    line = asyncio.run(header(BODY, "mx.here.test", FakeDns(), client_ip="127.0.0.1",
                              helo="localhost", sender="root@far.test"))  # fmt: skip
    assert line == b"Authentication-Results: mx.here.test;\r\n\tdkim=none\r\n"
