"""SPF (RFC 7208) evaluation against a fixed DNS: the mechanisms, qualifiers,
include and redirect, macros (the RFC's own examples), and the limits."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from mailops.runtime.delivery import spf
from mailops.runtime.delivery.resolver import DnsError, MxRecord
from tests.runtime.delivery_fakes import FakeDns


def check(records: dict, ip="192.0.2.3", sender="alice@far.test", helo="mx.far.test", **dns):
    fake = FakeDns(txt={name: [text] for name, text in records.items()}, **dns)
    return asyncio.run(spf.check(fake, ip, sender, helo))[0]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("v=spf1 ip4:192.0.2.0/24 -all", "pass"),
        ("v=spf1 ip4:198.51.100.1 -all", "fail"),
        ("v=spf1 ip4:198.51.100.1 ~all", "softfail"),
        ("v=spf1 ip4:198.51.100.1 ?all", "neutral"),
        ("v=spf1 ip4:198.51.100.1", "neutral"),  # nothing matched, no all
        ("v=spf1 -ip4:192.0.2.3 +all", "fail"),  # the first match decides
        ("V=SPF1 IP4:192.0.2.3 -ALL", "pass"),  # names are case-insensitive
        ("v=spf1 ip6:2001:db8::/32 -all", "fail"),  # an IPv4 client is not in it
        ("v=spf1 ip4:192.0.2.3 foo:bar -all", "permerror"),  # unknown mechanism anywhere
        ("v=spf1 ip4:192.0.2.3 ip4:300.1.1.1 -all", "permerror"),  # bad network anywhere
        ("v=spf1 redirect=a.test redirect=b.test", "permerror"),
        ("v=spf1 ip4:192.0.2.3 unknown-modifier=whatever -all", "pass"),
        ("spf2.0/pra ip4:192.0.2.3", "none"),  # not an SPF version 1 record
    ],
)
def test_mechanisms_and_qualifiers(record, expected):
    assert check({"far.test": record}) == expected


def test_no_record_no_domain_two_records_and_dns_trouble():
    assert check({}) == "none"  # far.test does not exist
    assert check({"far.test": "just some text"}) == "none"
    two = FakeDns(txt={"far.test": ["v=spf1 -all", "v=spf1 +all"]})
    assert asyncio.run(spf.check(two, "192.0.2.3", "a@far.test", "h.far.test"))[0] == "permerror"
    down = FakeDns(txt={"far.test": DnsError("timed out", permanent=False)})
    assert asyncio.run(spf.check(down, "192.0.2.3", "a@far.test", "h.far.test"))[0] == "temperror"


def test_a_and_mx_with_prefix_lengths_for_both_families():
    addresses = {"far.test": ["192.0.2.10", "2001:db8::10"], "mx.far.test": ["198.51.100.7"]}
    mx = {"far.test": [MxRecord(10, "mx.far.test")]}
    assert check({"far.test": "v=spf1 a -all"}, ip="192.0.2.10", addresses=addresses) == "pass"
    assert check({"far.test": "v=spf1 a -all"}, addresses=addresses) == "fail"
    assert check({"far.test": "v=spf1 a/24 -all"}, addresses=addresses) == "pass"
    assert (
        check({"far.test": "v=spf1 a//64 -all"}, ip="2001:db8::99", addresses=addresses) == "pass"
    )
    assert check({"far.test": "v=spf1 a/24 -all"}, ip="2001:db8::99", addresses=addresses) == "fail"
    record = {"far.test": "v=spf1 mx -all"}
    assert check(record, ip="198.51.100.7", addresses=addresses, mx=mx) == "pass"
    assert check(record, ip="198.51.100.8", addresses=addresses, mx=mx) == "fail"
    other = {"far.test": "v=spf1 a:mx.far.test mx:far.test/24 -all"}
    assert check(other, ip="198.51.100.200", addresses=addresses, mx=mx) == "pass"


def test_include_matches_only_on_pass_and_redirect_only_when_nothing_matched():
    records = {
        "far.test": "v=spf1 include:strict.test include:_spf.far.test -all",
        "strict.test": "v=spf1 -all",  # its fail is just "no match" for far.test
        "_spf.far.test": "v=spf1 ip4:192.0.2.0/28 -all",
    }
    assert check(records) == "pass"
    assert check(records, ip="192.0.2.200") == "fail"
    assert check({"far.test": "v=spf1 include:nowhere.test -all"}) == "permerror"
    down = {"far.test": "v=spf1 include:down.test -all"}
    fake = FakeDns(txt={"far.test": [down["far.test"]],
                        "down.test": DnsError("timed out", permanent=False)})  # fmt: skip
    assert asyncio.run(spf.check(fake, "192.0.2.3", "a@far.test", "h"))[0] == "temperror"
    redirect = {"far.test": "v=spf1 ip4:203.0.113.1 redirect=_spf.far.test",
                "_spf.far.test": "v=spf1 ip4:192.0.2.3 -all"}  # fmt: skip
    assert check(redirect) == "pass"
    # With an `all` anywhere the redirect never applies.
    assert check({**redirect, "far.test": "v=spf1 redirect=_spf.far.test ?all"}) == "neutral"
    assert check({"far.test": "v=spf1 redirect=nowhere.test"}) == "permerror"


def test_ten_lookups_at_most_and_two_void_ones():
    chain = {f"d{n}.test": f"v=spf1 include:d{n + 1}.test -all" for n in range(12)}
    chain["d12.test"] = "v=spf1 +all"
    assert check({**chain, "far.test": "v=spf1 include:d3.test -all"}) == "pass"  # 10 lookups
    assert check({**chain, "far.test": "v=spf1 include:d2.test -all"}) == "permerror"  # 11
    voids = "v=spf1 a:n1.far.test a:n2.far.test a:n3.far.test +all"
    assert check({"far.test": voids}) == "permerror"
    assert check({"far.test": "v=spf1 a:n1.far.test a:n2.far.test +all"}) == "pass"


def test_exists_with_macros_and_ptr():
    record = {"far.test": "v=spf1 exists:%{ir}.%{l1r+}._spf.%{d} -all"}
    addresses = {"3.2.0.192.alice._spf.far.test": ["127.0.0.2"]}
    assert check(record, addresses=addresses) == "pass"
    assert check(record, sender="bob@far.test", addresses=addresses) == "fail"
    ptr = {"192.0.2.3": ["mail.far.test", "x.elsewhere.test"]}
    forward = {"mail.far.test": ["192.0.2.3"]}
    assert check({"far.test": "v=spf1 ptr -all"}, ptr=ptr, addresses=forward) == "pass"
    # The name must lead back to the address: a PTR alone proves nothing.
    assert check({"far.test": "v=spf1 ptr -all"}, ptr=ptr, addresses={}) == "fail"


def test_the_null_sender_is_checked_by_helo_and_mapped_ipv4_as_ipv4():
    fake = FakeDns(txt={"mx.far.test": ["v=spf1 ip4:192.0.2.3 -all"]})
    result = asyncio.run(spf.check(fake, "192.0.2.3", "", "mx.far.test"))
    assert result == ("pass", "smtp.helo=mx.far.test")
    assert check({"far.test": "v=spf1 ip4:192.0.2.3 -all"}, ip="::ffff:192.0.2.3") == "pass"
    assert check({}, sender="x@[192.0.2.1]") == "none"  # not a domain name


RFC_EXAMPLES = {  # RFC 7208 §7.4, for strong-bad@email.example.com from 192.0.2.3
    "%{s}": "strong-bad@email.example.com",
    "%{o}": "email.example.com",
    "%{d}": "email.example.com",
    "%{d4}": "email.example.com",
    "%{d3}": "email.example.com",
    "%{d2}": "example.com",
    "%{d1}": "com",
    "%{dr}": "com.example.email",
    "%{d2r}": "example.email",
    "%{l}": "strong-bad",
    "%{l-}": "strong.bad",
    "%{lr}": "strong-bad",
    "%{lr-}": "bad.strong",
    "%{l1r-}": "strong",
    "%{ir}.%{v}._spf.%{d2}": "3.2.0.192.in-addr._spf.example.com",
    "%{lr-}.lp._spf.%{d2}": "bad.strong.lp._spf.example.com",
    "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}": "bad.strong.lp.3.2.0.192.in-addr._spf.example.com",
    "%{d2}.trusted-domains.example.net": "example.com.trusted-domains.example.net",
    "%%%_%-": "% %20",
}


def macros(ip: str) -> dict[str, str]:
    address = ipaddress.ip_address(ip)
    return spf._Check(FakeDns(), address, "strong-bad@email.example.com", "h")._macros(
        "email.example.com"
    )


@pytest.mark.parametrize(("spec", "expected"), list(RFC_EXAMPLES.items()))
def test_macro_expansion_follows_the_rfc_examples(spec, expected):
    assert spf.expand(spec, macros("192.0.2.3")) == expected


def test_macro_expansion_of_ipv6_and_bad_macros():
    expanded = spf.expand("%{ir}.%{v}._spf.%{d2}", macros("2001:db8::cb01"))
    assert expanded == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    )
    for bad in ("%{x}", "%{c}", "%a", "trailing%", "%{d0}"):
        with pytest.raises(spf.PermError):
            spf.expand(bad, macros("192.0.2.3"))


def test_mail_from_this_machine_itself_is_not_checked():
    for local in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        fake = FakeDns(txt={"far.test": ["v=spf1 -all"]})
        assert asyncio.run(spf.check(fake, local, "a@far.test", "h.far.test")) is None
        assert fake.asked == []
    # Other loopback addresses are hosts of a lab: checked like any other.
    assert check({"far.test": "v=spf1 ip4:127.0.0.2 -all"}, ip="127.0.0.2") == "pass"
