"""The records mailops derives from a spec: exact values, zones, notes, conflicts."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import dns.rrset
import pytest

from mailops.render import dkim
from mailops.render.dns import (
    DnsError,
    DnsSet,
    Record,
    build_dns,
    compare_rrset,
    group_rrsets,
    quote_txt,
    records_equal,
    split_txt,
    txt_value,
    zone_kinds,
)
from mailops.spec.load import load_spec
from mailops.spec.model import Spec

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "two-domains.yaml"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[DnsSet, dict]:
    folder = tmp_path_factory.mktemp("spec")
    shutil.copy(FIXTURE, folder / FIXTURE.name)
    loaded = load_spec(folder / FIXTURE.name)
    keys, _ = dkim.ensure_keys(loaded.spec, dkim.key_dir_for(folder))
    return build_dns(loaded.spec, dkim.dkim_records(keys)), keys


def values(dnsset: DnsSet, zone: str, name: str, rtype: str) -> list[str]:
    found = dnsset.zone(zone)
    assert found is not None
    return [r.value for r in found.records if r.name == name and r.type == rtype]


def texts(dnsset: DnsSet, zone: str, name: str) -> list[str]:
    found = dnsset.zone(zone)
    assert found is not None
    return [r.text for r in found.records if r.name == name and r.type == "TXT"]


# ---------------------------------------------------------------- the fixture's records


def test_mx_in_priority_order_with_external_name_verbatim(built):
    dnsset, _ = built
    assert values(dnsset, "example.org", "example.org", "MX") == [
        "10 mx1.example.org.",
        "20 mx2.example.org.",
        "30 mx.partner.example.",
    ]
    assert values(dnsset, "example.net", "example.net", "MX") == [
        "10 mx1.example.org.",
        "20 mx2.example.org.",
    ]


def test_spf_lists_sending_hosts_relay_include_domain_includes_then_policy(built):
    dnsset, _ = built
    spf = [t for t in texts(dnsset, "example.org", "example.org") if t.startswith("v=spf1")]
    assert spf == [
        "v=spf1 mx ip4:203.0.113.10 ip6:2001:db8::10 ip4:203.0.113.11 "
        "include:spf.relay.example include:spf.news.example -all"
    ]
    # example.net sends directly (no relay) and has no includes of its own.
    assert texts(dnsset, "example.net", "example.net") == [
        "v=spf1 mx ip4:203.0.113.10 ip6:2001:db8::10 ip4:203.0.113.11 -all"
    ]


def test_dkim_records_carry_each_selectors_public_key(built):
    dnsset, keys = built
    rsa_text = texts(dnsset, "example.org", "s2026._domainkey.example.org")
    ed_text = texts(dnsset, "example.org", "ed2026._domainkey.example.org")
    assert rsa_text == [keys[("example.org", "s2026")].record]
    assert ed_text == [keys[("example.org", "ed2026")].record]
    assert rsa_text[0].startswith("v=DKIM1; k=rsa; p=MIIB")
    assert ed_text[0].startswith("v=DKIM1; k=ed25519; p=")
    assert texts(dnsset, "example.net", "s1._domainkey.example.net") == [
        keys[("example.net", "s1")].record
    ]


def test_rsa_dkim_record_is_split_into_strings_of_at_most_255_bytes(built):
    dnsset, keys = built
    zone = dnsset.zone("example.org")
    record = next(r for r in zone.records if r.name == "s2026._domainkey.example.org")
    text = keys[("example.org", "s2026")].record.encode()
    assert len(text) > 255
    assert record.strings == (text[:255], text[255:])
    assert record.value == f'"{text[:255].decode()}" "{text[255:].decode()}"'


def test_dmarc_omits_pct_100_and_keeps_other_pct(built):
    dnsset, _ = built
    assert texts(dnsset, "example.org", "_dmarc.example.org") == [
        "v=DMARC1; p=quarantine; rua=mailto:dmarc@example.org; pct=50"
    ]
    assert texts(dnsset, "example.net", "_dmarc.example.net") == [
        "v=DMARC1; p=reject; rua=mailto:dmarc@example.org"
    ]


def test_reports_to_another_domain_of_the_spec_are_authorised_there(built):
    dnsset, _ = built
    # example.net sends DMARC reports to example.org (RFC 7489 §7.1).
    assert texts(dnsset, "example.org", "example.net._report._dmarc.example.org") == ["v=DMARC1"]


def test_mta_sts_id_is_a_hash_of_the_policy_file(built):
    dnsset, _ = built
    policy = (
        "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.org\r\nmx: mx2.example.org\r\n"
        "mx: mx.partner.example\r\nmax_age: 604800\r\n"
    )
    files = {f.domain: f for f in dnsset.files}
    assert files["example.org"].mta_sts == policy
    expected_id = hashlib.sha256(policy.encode()).hexdigest()[:20]
    assert texts(dnsset, "example.org", "_mta-sts.example.org") == [f"v=STSv1; id={expected_id}"]


def test_tls_rpt_record(built):
    dnsset, _ = built
    assert texts(dnsset, "example.org", "_smtp._tls.example.org") == [
        "v=TLSRPTv1; rua=mailto:tls-reports@example.org"
    ]


def test_no_mta_sts_or_tls_rpt_unless_the_domain_sets_them(built):
    dnsset, _ = built
    assert texts(dnsset, "example.net", "_mta-sts.example.net") == []
    assert texts(dnsset, "example.net", "_smtp._tls.example.net") == []
    files = {f.domain: f for f in dnsset.files}
    assert files["example.net"].mta_sts is None


def test_srv_for_offered_services_and_null_srv_for_the_rest(built):
    dnsset, _ = built
    srv = {r.name: r.value for r in dnsset.zone("example.org").records if r.type == "SRV"}
    assert srv == {
        "_submissions._tcp.example.org": "0 1 465 mx1.example.org.",
        "_submission._tcp.example.org": "5 1 1587 mx1.example.org.",  # host.ports.submission
        "_imaps._tcp.example.org": "0 1 993 mx1.example.org.",
        "_imap._tcp.example.org": "5 1 143 mx1.example.org.",
        "_pop3s._tcp.example.org": "0 0 0 .",  # mx1 offers no POP3
        "_pop3._tcp.example.org": "0 0 0 .",
    }


def test_autoconfig_cname_points_at_the_mailbox_host(built):
    dnsset, _ = built
    assert values(dnsset, "example.org", "autoconfig.example.org", "CNAME") == ["mx1.example.org."]
    assert values(dnsset, "example.net", "autoconfig.example.net", "CNAME") == ["mx1.example.org."]


def test_host_addresses_go_to_the_zone_holding_the_host(built):
    dnsset, _ = built
    assert values(dnsset, "example.org", "mx1.example.org", "A") == ["203.0.113.10"]
    assert values(dnsset, "example.org", "mx1.example.org", "AAAA") == ["2001:db8::10"]
    assert values(dnsset, "example.org", "mx2.example.org", "A") == ["203.0.113.11"]
    assert not [r for r in dnsset.zone("example.net").records if r.purpose == "address"]


def test_full_zone_has_ns_and_soa_defaults(built):
    dnsset, _ = built
    zone = dnsset.zone("example.org")
    assert values(dnsset, "example.org", "example.org", "NS") == [
        "ns1.example.org.",
        "ns.provider.example.",
    ]
    assert zone.soa.mname == "ns1.example.org"  # the first nameserver
    assert zone.soa.rname == "hostmaster.example.org"
    assert (zone.soa.refresh, zone.soa.minimum) == (7200, 300)
    assert dnsset.zone("example.net").soa is None


def test_extra_records_are_published_with_absolute_names_and_own_ttl(built):
    dnsset, _ = built
    zone = dnsset.zone("example.org")
    extra = {(r.name, r.type): (r.ttl, r.value) for r in zone.records if r.purpose == "extra"}
    assert extra[("ns1.example.org", "A")] == (3600, "203.0.113.53")
    assert extra[("www.example.org", "A")] == (600, "203.0.113.20")
    assert extra[("example.org", "CAA")] == (3600, '0 issue "letsencrypt.org"')
    assert extra[("example.org", "TXT")] == (3600, '"site-verification=abc123"')
    net = dnsset.zone("example.net")
    assert [(r.name, r.type, r.ttl, r.value) for r in net.records if r.purpose == "extra"] == [
        ("www.example.net", "CNAME", 1800, "www.example.org.")
    ]


def test_records_zone_lists_exactly_the_mail_records(built):
    dnsset, _ = built
    zone = dnsset.zone("example.net")
    assert zone.managed == "records" and zone.declared
    listed = [(r.name, r.type, r.ttl, r.value) for r in zone.records if r.purpose != "dkim"]
    assert listed == [
        ("example.net", "MX", 1800, "10 mx1.example.org."),
        ("example.net", "MX", 1800, "20 mx2.example.org."),
        (
            "example.net",
            "TXT",
            1800,
            '"v=spf1 mx ip4:203.0.113.10 ip6:2001:db8::10 ip4:203.0.113.11 -all"',
        ),
        ("_dmarc.example.net", "TXT", 1800, '"v=DMARC1; p=reject; rua=mailto:dmarc@example.org"'),
        ("_imap._tcp.example.net", "SRV", 1800, "5 1 143 mx1.example.org."),
        ("_imaps._tcp.example.net", "SRV", 1800, "0 1 993 mx1.example.org."),
        ("_pop3._tcp.example.net", "SRV", 1800, "0 0 0 ."),
        ("_pop3s._tcp.example.net", "SRV", 1800, "0 0 0 ."),
        ("_submission._tcp.example.net", "SRV", 1800, "5 1 1587 mx1.example.org."),
        ("_submissions._tcp.example.net", "SRV", 1800, "0 1 465 mx1.example.org."),
        ("autoconfig.example.net", "CNAME", 1800, "mx1.example.org."),
        ("www.example.net", "CNAME", 1800, "www.example.org."),
    ]


def test_expected_ptr_for_every_host_address(built):
    dnsset, _ = built
    assert [(r.name, r.value) for r in dnsset.reverse] == [
        ("10.113.0.203.in-addr.arpa", "mx1.example.org."),
        ("0.1.0.0." + "0." * 20 + "8.b.d.0.1.0.0.2.ip6.arpa", "mx1.example.org."),
        ("11.113.0.203.in-addr.arpa", "mx2.example.org."),
    ]
    # No forward zone holds them.
    assert not [r for z in dnsset.zones for r in z.records if r.type == "PTR"]


def test_autoconfig_xml_lists_offered_services_in_preference_order(built):
    dnsset, _ = built
    xml = {f.domain: f for f in dnsset.files}["example.org"].autoconfig
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<clientConfig version="1.1">')
    assert '<emailProvider id="example.org">' in xml
    servers = [
        line.strip() for line in xml.splitlines() if "<port>" in line or "Server type" in line
    ]
    assert servers == [
        '<incomingServer type="imap">', "<port>993</port>",
        '<incomingServer type="imap">', "<port>143</port>",
        '<outgoingServer type="smtp">', "<port>465</port>",
        '<outgoingServer type="smtp">', "<port>1587</port>",
    ]  # fmt: skip
    assert xml.count("<socketType>SSL</socketType>") == 2
    assert xml.count("<socketType>STARTTLS</socketType>") == 2
    assert xml.count("<username>%EMAILADDRESS%</username>") == 4
    assert xml.count("<authentication>password-cleartext</authentication>") == 4


def test_no_notes_for_a_spec_whose_names_all_have_zones(built):
    dnsset, _ = built
    assert dnsset.notes == ()


def test_same_spec_gives_equal_records(built, tmp_path):
    dnsset, keys = built
    loaded = load_spec(FIXTURE)
    again = build_dns(loaded.spec, dkim.dkim_records(keys))
    assert again == dnsset


# ---------------------------------------------------------------- placement and notes


def make_spec(domains: dict, zones: dict | None = None, hosts: dict | None = None) -> Spec:
    hosts = hosts or {
        "mx1": {
            "fqdn": "mx1.example.org",
            "ipv4": "192.0.2.1",
            "tls": {"self_signed": True},
        }
    }
    data = {"version": 1, "hosts": hosts, "domains": domains, "dns": {"zones": zones or {}}}
    return Spec.model_validate(data)


def simple_domain(**extra) -> dict:
    return {"mailbox_host": "mx1", "mx": [{"host": "mx1", "priority": 10}], **extra}


def test_records_go_to_the_longest_suffix_zone():
    spec = make_spec(
        {"example.org": simple_domain(), "lists.example.org": simple_domain()},
        zones={
            "example.org": {"managed": "full", "nameservers": ["ns.provider.example"]},
            "lists.example.org": {"managed": "records", "ttl": 300},
        },
    )
    dnsset = build_dns(spec, {})
    org = {r.name for r in dnsset.zone("example.org").records}
    lists = dnsset.zone("lists.example.org")
    assert "_dmarc.lists.example.org" not in org
    assert "_dmarc.example.org" in org and "mx1.example.org" in org
    assert {r.name for r in lists.records if r.type == "MX"} == {"lists.example.org"}
    assert {r.ttl for r in lists.records} == {300}
    assert lists.domains == ("lists.example.org",)


def test_domain_in_no_zone_is_printed_as_records_with_a_note():
    spec = make_spec({"example.org": simple_domain()})
    dnsset = build_dns(spec, {})
    zone = dnsset.zone("example.org")
    assert (zone.managed, zone.declared, zone.ttl) == ("records", False, 3600)
    # The host lies under the domain, so its address is among the records to enter.
    assert ("mx1.example.org", "A", "192.0.2.1") in {
        (r.name, r.type, r.value) for r in zone.records
    }
    assert [str(n) for n in dnsset.notes] == [
        "note: domain example.org lies in no zone of dns.zones: its records are printed as "
        "records only, to enter at its DNS provider (add dns.zones.example.org to have "
        "mailops write them as a zone)"
    ]
    assert zone_kinds(spec) == {"example.org": "records"}


def test_host_under_no_zone_and_no_domain_gets_a_note_not_records():
    spec = make_spec(
        {"example.org": simple_domain()},
        zones={"example.org": {"managed": "records"}},
        hosts={
            "mx1": {
                "fqdn": "mail.hoster.example",
                "ipv4": "192.0.2.7",
                "tls": {"self_signed": True},
            }
        },
    )
    dnsset = build_dns(spec, {})
    assert not [r for r in dnsset.zone("example.org").records if r.purpose == "address"]
    notes = [n.message for n in dnsset.notes]
    assert len(notes) == 1
    assert "host 'mx1' (mail.hoster.example) lies in no zone" in notes[0]
    assert "mail.hoster.example. A 192.0.2.7" in notes[0]


def test_dmarc_reports_to_a_foreign_domain_ask_for_authorisation_in_a_note():
    spec = make_spec(
        {"example.org": simple_domain(dmarc={"rua": ["mailto:reports@dmarc.example"]})},
        zones={"example.org": {"managed": "records"}},
    )
    dnsset = build_dns(spec, {})
    notes = [n.message for n in dnsset.notes]
    assert any("example.org._report._dmarc.dmarc.example." in n for n in notes)
    assert not [r for z in dnsset.zones for r in z.records if r.purpose == "dmarc-report"]


def test_dmarc_reports_to_a_parent_or_own_domain_need_no_authorisation():
    spec = make_spec(
        {"lists.example.org": simple_domain(dmarc={"rua": ["mailto:d@example.org!10m"]})},
        zones={"example.org": {"managed": "records"}},
    )
    dnsset = build_dns(spec, {})
    assert not [n for n in dnsset.notes if "_report._dmarc" in n.message]


def test_spf_with_too_many_lookups_is_warned():
    includes = [f"spf{i}.example.net" for i in range(10)]
    spec = make_spec(
        {"example.org": simple_domain(spf={"include": includes})},
        zones={"example.org": {"managed": "records"}},
    )
    notes = [n for n in build_dns(spec, {}).notes if n.severity == "warning"]
    assert len(notes) == 1 and "needs 11 DNS lookups" in notes[0].message


def test_relative_extra_names_and_unquoted_txt():
    spec = make_spec(
        {"example.org": simple_domain()},
        zones={
            "example.org": {
                "managed": "records",
                "extra_records": [
                    {"name": "www", "type": "CNAME", "value": "mx1"},
                    {"name": "mail.example.org.", "type": "TXT", "value": 'say "hi"'},
                    {"name": "@", "type": "MX", "value": "10 mx1.example.org."},  # a repeat
                ],
            }
        },
    )
    records = build_dns(spec, {}).zone("example.org").records
    assert ("www.example.org", "CNAME", "mx1.example.org.") in {
        (r.name, r.type, r.value) for r in records
    }
    assert ("mail.example.org", "TXT", '"say \\"hi\\""') in {
        (r.name, r.type, r.value) for r in records
    }
    assert [r.value for r in records if r.type == "MX"] == ["10 mx1.example.org."]


def test_unquoted_txt_extra_record_is_quoted():
    spec = make_spec(
        {"example.org": simple_domain()},
        zones={
            "example.org": {
                "managed": "records",
                "extra_records": [{"name": "note", "type": "TXT", "value": 'say "hi" \\ bye'}],
            }
        },
    )
    record = next(
        r for r in build_dns(spec, {}).zone("example.org").records if r.name == "note.example.org"
    )
    assert record.value == '"say \\"hi\\" \\\\ bye"'
    assert record.text == 'say "hi" \\ bye'


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"name": "autoconfig", "type": "TXT", "value": "x"}, "CNAME and other records (TXT)"),
        (
            {"name": "@", "type": "TXT", "value": "v=spf1 -all"},
            "two TXT records starting with v=spf1",
        ),
        ({"name": "_dmarc", "type": "TXT", "value": "v=DMARC1; p=none"}, "v=DMARC1"),
    ],
)
def test_conflicting_extra_records_are_refused(extra, message):
    spec = make_spec(
        {"example.org": simple_domain()},
        zones={"example.org": {"managed": "records", "extra_records": [extra]}},
    )
    with pytest.raises(DnsError, match=re.escape(message)):
        build_dns(spec, {})


def test_nameserver_inside_its_zone_needs_an_address():
    spec = make_spec(
        {"example.org": simple_domain()},
        zones={"example.org": {"managed": "full", "nameservers": ["ns1.example.org"]}},
    )
    with pytest.raises(DnsError, match=r"nameserver ns1\.example\.org .* has no address"):
        build_dns(spec, {})


# ---------------------------------------------------------------- TXT and comparison


def test_split_txt_at_255_bytes():
    text = "a" * 254 + "é" + "b" * 300  # é is two bytes in UTF-8
    strings = split_txt(text)
    assert [len(s) for s in strings] == [255, 255, 46]
    assert b"".join(strings).decode() == text
    assert split_txt("") == (b"",)
    assert split_txt("x" * 255) == (b"x" * 255,)


def test_quote_txt_escapes_quotes_backslashes_and_bytes():
    assert quote_txt([b'a"b\\c', b"\x00\xff"]) == '"a\\"b\\\\c" "\\000\\255"'
    record = Record("x.example.org", "TXT", 60, txt_value('a"b\\c' + "é"))
    assert record.text == 'a"b\\cé'


def rrset(name: str, rtype: str, *values: str) -> dns.rrset.RRset:
    return dns.rrset.from_text(name, 300, "IN", rtype, *values)


def test_canonical_comparison_ignores_case_split_and_ipv6_spelling():
    expected = [
        Record("example.org", "MX", 3600, "10 mx1.example.org."),
        Record("example.org", "MX", 3600, "20 mx2.example.org."),
    ]
    assert records_equal(
        expected, rrset("EXAMPLE.org.", "MX", "20 MX2.Example.ORG.", "10 mx1.example.org.")
    )
    txt = [Record.txt("_dmarc.example.org", "v=DMARC1; p=reject", 3600, "dmarc")]
    assert records_equal(txt, rrset("_dmarc.example.org.", "TXT", '"v=DMARC1; " "p=reject"'))
    aaaa = [Record("mx1.example.org", "AAAA", 3600, "2001:db8::10")]
    assert records_equal(aaaa, rrset("mx1.example.org.", "AAAA", "2001:DB8:0:0:0:0:0:10"))
    srv = [Record("_imaps._tcp.example.org", "SRV", 3600, "0 1 993 mx1.example.org.")]
    assert records_equal(srv, rrset("_imaps._tcp.example.org.", "SRV", "0 1 993 MX1.example.org."))


def test_canonical_comparison_reports_missing_and_unexpected():
    expected = [
        Record("example.org", "MX", 3600, "10 mx1.example.org."),
        Record("example.org", "MX", 3600, "20 mx2.example.org."),
    ]
    answer = rrset("example.org.", "MX", "10 mx1.example.org.", "30 mx3.example.org.")
    diff = compare_rrset(expected, answer)
    assert not records_equal(expected, answer)
    assert [str(c) for c in diff.missing] == ["example.org. MX 20 mx2.example.org."]
    assert [str(c) for c in diff.unexpected] == ["example.org. MX 30 mx3.example.org."]
    # Wrong TXT text, different priority, no answer at all: all differences.
    txt = [Record.txt("example.org", "v=spf1 mx -all", 3600, "spf")]
    assert not records_equal(txt, rrset("example.org.", "TXT", '"v=spf1 mx ~all"'))
    assert not records_equal(expected[:1], rrset("example.org.", "MX", "11 mx1.example.org."))
    assert not records_equal(expected, None)
    assert records_equal([], None)


def test_group_rrsets_groups_by_name_and_type():
    records = [
        Record("example.org", "MX", 60, "10 a.example."),
        Record("example.org", "TXT", 60, '"x"'),
        Record("example.org", "MX", 60, "20 b.example."),
    ]
    groups = group_rrsets(records)
    assert list(groups) == [("example.org", "MX"), ("example.org", "TXT")]
    assert [r.value for r in groups[("example.org", "MX")]] == ["10 a.example.", "20 b.example."]


def test_no_ptr_to_ask_for_loopback_addresses():
    hosts = {"mx1": {"fqdn": "mx1.example.org", "ipv4": "127.0.0.1", "ipv6": "::1"}}
    hosts["mx1"]["tls"] = {"self_signed": True}
    spec = make_spec({"example.org": simple_domain()}, hosts=hosts)
    assert build_dns(spec, {}).reverse == ()


def test_extra_record_outside_its_zone_is_refused():
    spec = make_spec(
        {"example.org": simple_domain()},
        zones={
            "example.org": {
                "managed": "records",
                "extra_records": [{"name": "www.example.net.", "type": "A", "value": "192.0.2.9"}],
            }
        },
    )
    with pytest.raises(DnsError, match=r"extra record www\.example\.net\. A of zone example\.org"):
        build_dns(spec, {})
