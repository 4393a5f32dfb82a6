"""SPF syntax and lookup counting (RFC 7208 §4.6.4), with DNS faked by a dict."""

from __future__ import annotations

import asyncio

from mailops.audit.dnsquery import QueryFailed, Server
from mailops.audit.net import Exhausted
from mailops.audit.spfcheck import count_lookups, parse


def test_a_record_mailops_writes_parses_clean():
    parsed = parse("v=spf1 mx ip4:192.0.2.10 ip6:2001:db8::10 include:spf.relay.example -all")
    assert parsed.errors == []
    assert [name for name, _ in parsed.mechanisms] == ["mx", "ip4", "ip6", "include", "all"]


def test_syntax_errors_are_named():
    parsed = parse("v=spf1 ip4:192.0.2.300 include: mx:/24 foo:bar -all a")
    assert parsed.errors == [
        "'ip4:192.0.2.300': not an ip4 address or network",
        "'include:': include needs a domain",
        "'mx:/24': not a domain",
        "unknown term 'foo:bar'",
        "'a' comes after 'all' and is never evaluated",
    ]


def test_ip4_in_ip6_and_version_are_errors():
    assert parse("v=spf2 -all").errors == ["does not start with v=spf1"]
    assert parse("v=spf1 ip6:192.0.2.1 -all").errors == ["'ip6:192.0.2.1': not an ip6 address"]


def fetcher(records: dict[str, list[str]], broken: set[str] = frozenset()):
    async def fetch(name: str) -> list[str]:
        if name in broken:
            raise QueryFailed(Server("127.0.0.1"), name, "TXT", Exhausted(TimeoutError(), 2))
        return records.get(name, [])

    return fetch


def test_includes_are_followed_and_counted():
    records = {f"i{n}.example": [f"v=spf1 include:j{n}.example a mx -all"] for n in range(4)}
    records |= {f"j{n}.example": ["v=spf1 ip4:192.0.2.1 -all"] for n in range(4)}
    top = "v=spf1 mx " + " ".join(f"include:i{n}.example" for n in range(4)) + " -all"
    count = asyncio.run(count_lookups(top, fetcher(records)))
    # mx + 4 includes + 4 × (include + a + mx) = 17: over the limit of 10
    assert count.lookups == 17
    assert count.problems == []


def test_an_include_without_spf_record_is_a_permerror():
    count = asyncio.run(count_lookups("v=spf1 include:gone.example -all", fetcher({})))
    assert count.lookups == 1
    assert count.problems == [
        "gone.example has no SPF record: receivers fail the check (permerror)"
    ]


def test_an_unreachable_include_is_not_a_missing_one():
    fetch = fetcher({}, broken={"slow.example"})
    count = asyncio.run(count_lookups("v=spf1 include:slow.example -all", fetch))
    assert count.problems == []
    assert count.unreachable == ["slow.example (timed out (2 attempts))"]


def test_include_loops_end():
    records = {
        "a.example": ["v=spf1 include:b.example -all"],
        "b.example": ["v=spf1 include:a.example -all"],
    }
    count = asyncio.run(count_lookups("v=spf1 include:a.example -all", fetcher(records)))
    assert count.lookups == 3  # a, b, and b's include of a (counted, not followed again)
