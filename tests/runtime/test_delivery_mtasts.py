"""MTA-STS (RFC 8461): the TXT record, the policy file, host matching, caching."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from mailops.runtime.delivery.mtasts import MtaSts, Policy, PolicyError, parse_policy, parse_txt
from mailops.runtime.delivery.resolver import DnsError
from tests.runtime.delivery_fakes import FakeDns

POLICY = (
    "version: STSv1\r\nmode: enforce\r\nmx: mx1.far.test\r\nmx: *.mx.far.test\r\nmax_age: 86400\r\n"
)


def test_txt_record_gives_the_policy_id():
    assert parse_txt(["v=STSv1; id=20240101T000000;"]) == "20240101T000000"
    assert parse_txt(["v=spf1 -all", "v=STSv1; id=abc"]) == "abc"
    assert parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # two: none is valid
    assert parse_txt(["v=STSv1; id=not-alnum!"]) is None
    assert parse_txt(None) is None


def test_policy_file_is_parsed_and_checked():
    policy = parse_policy(POLICY)
    assert policy == Policy("enforce", ("mx1.far.test", "*.mx.far.test"), 86400)
    with pytest.raises(PolicyError):
        parse_policy(POLICY.replace("STSv1", "STSv2"))
    with pytest.raises(PolicyError):
        parse_policy("version: STSv1\nmode: enforce\nmax_age: 10\n")  # no mx
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 99999999999\n").max_age == 31557600


def test_mx_patterns_match_exactly_or_one_wildcard_label():
    policy = parse_policy(POLICY)
    assert policy.matches("MX1.far.test.")
    assert policy.matches("a.mx.far.test")
    assert not policy.matches("a.b.mx.far.test")
    assert not policy.matches("mx.far.test")
    assert not policy.matches("mx2.far.test")


class Counting(MtaSts):
    def __init__(self, *args, body=POLICY, **kwargs):
        super().__init__(*args, **kwargs)
        self.fetches = 0
        self.body = body

    async def fetch(self, domain: str) -> str:
        self.fetches += 1
        if isinstance(self.body, Exception):
            raise self.body
        return self.body


def test_policy_is_cached_until_the_id_changes_and_kept_when_dns_fails(tmp_path):
    dns = FakeDns(txt={"_mta-sts.far.test": ["v=STSv1; id=one"]})
    now = [1000.0]
    sts = Counting(dns, tmp_path, ssl.create_default_context(), clock=lambda: now[0])
    assert asyncio.run(sts.policy("far.test")).mode == "enforce"
    assert asyncio.run(sts.policy("far.test")).mode == "enforce"
    assert sts.fetches == 1
    dns.txt_answers["_mta-sts.far.test"] = ["v=STSv1; id=two"]
    asyncio.run(sts.policy("far.test"))
    assert sts.fetches == 2
    # An attacker who blocks DNS or HTTPS does not turn the policy off.
    dns.txt_answers["_mta-sts.far.test"] = DnsError("timed out", permanent=False)
    assert asyncio.run(sts.policy("far.test")).mode == "enforce"
    dns.txt_answers["_mta-sts.far.test"] = ["v=STSv1; id=three"]
    sts.body = OSError("connection refused")
    assert asyncio.run(sts.policy("far.test")).mode == "enforce"
    # A new process reads the cache from disk.
    fresh = Counting(dns, tmp_path, ssl.create_default_context(), clock=lambda: now[0])
    dns.txt_answers["_mta-sts.far.test"] = DnsError("timed out", permanent=False)
    assert asyncio.run(fresh.policy("far.test")).mx == ("mx1.far.test", "*.mx.far.test")
    # Expired: gone.
    now[0] += 86401
    assert asyncio.run(fresh.policy("far.test")) is None


def test_no_record_no_policy(tmp_path):
    sts = Counting(FakeDns(txt={"_mta-sts.far.test": None}), tmp_path, ssl.create_default_context())
    assert asyncio.run(sts.policy("far.test")) is None
    assert sts.fetches == 0
