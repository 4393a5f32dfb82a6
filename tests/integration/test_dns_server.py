"""The generated zones served by a real DNS server (NSD), every expected record
queried back over the wire and compared canonically — as `audit` will."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import pytest

from mailops.render import dkim, dns_output
from mailops.render.dns import (
    DnsSet,
    Record,
    SoaFields,
    ZoneRecords,
    build_dns,
    compare_rrset,
    group_rrsets,
    records_equal,
)
from mailops.spec.load import load_spec
from tests.integration.dnsserver import DnsServer, DnsServerError, nsd_server, requires_nsd

pytestmark = [pytest.mark.integration, requires_nsd]

FIXTURE = Path(__file__).parent.parent / "render" / "data" / "two-domains.yaml"
SERIAL = dns_output.next_serial(None, dt.date(2026, 3, 14))
TEST_SOA = SoaFields("ns.test", "hostmaster.test", 7200, 3600, 1209600, 300)


def servable(zone: ZoneRecords) -> ZoneRecords:
    """A records-only zone as a provider would serve it once the operator has
    entered the records: the same records under the provider's SOA and NS."""
    if zone.soa is not None:
        return zone
    ns = Record(zone.name, "NS", zone.ttl, "ns.test.", "ns")
    return dataclasses.replace(zone, records=(ns, *zone.records), soa=TEST_SOA)


def reverse_zone(dnsset: DnsSet) -> ZoneRecords:
    """The IPv4 PTRs in a reverse zone, as the address owner would publish them."""
    ptrs = tuple(r for r in dnsset.reverse if r.name.endswith(".113.0.203.in-addr.arpa"))
    ns = Record("113.0.203.in-addr.arpa", "NS", 3600, "ns.test.", "ns")
    return ZoneRecords(
        "113.0.203.in-addr.arpa", "full", True, 3600, (ns, *ptrs), ("ns.test",), TEST_SOA
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[DnsSet, list[ZoneRecords], DnsServer]:
    folder = tmp_path_factory.mktemp("spec")
    shutil.copy(FIXTURE, folder / FIXTURE.name)
    loaded = load_spec(folder / FIXTURE.name)
    keys, _ = dkim.ensure_keys(loaded.spec, dkim.key_dir_for(folder))
    dnsset = build_dns(loaded.spec, dkim.dkim_records(keys))
    zones = [servable(z) for z in dnsset.zones] + [reverse_zone(dnsset)]
    texts = {z.name: dns_output.zone_text(z, SERIAL) for z in zones}
    with nsd_server(texts, tmp_path_factory.mktemp("nsd")) as server:
        yield dnsset, zones, server


def test_every_expected_record_is_served(served):
    _, zones, server = served
    checked = 0
    for zone in zones:
        for (name, rtype), expected in group_rrsets(zone.records).items():
            answer = server.rrset(name, rtype)
            diff = compare_rrset(expected, answer)
            assert diff.ok, f"{name} {rtype}: missing {diff.missing}, unexpected {diff.unexpected}"
            assert answer.ttl == expected[0].ttl
            checked += 1
    assert checked == 39  # (name, type) groups of both zones and the reverse zone


def test_soa_serial_and_defaults_are_served(served):
    _, _, server = served
    soa = server.rrset("example.org", "SOA")[0]
    assert soa.serial == SERIAL
    assert (soa.mname.to_text(), soa.rname.to_text()) == (
        "ns1.example.org.",
        "hostmaster.example.org.",
    )


def test_long_dkim_record_arrives_whole_over_udp_and_tcp(served):
    dnsset, _, server = served
    zone = dnsset.zone("example.org")
    expected = [r for r in zone.records if r.name == "s2026._domainkey.example.org"]
    for tcp in (False, True):
        answer = server.rrset("s2026._domainkey.example.org", "TXT", tcp=tcp)
        assert len(answer[0].strings) == 2
        assert records_equal(expected, answer)


def test_names_compare_case_insensitively(served):
    _, _, server = served
    expected = [Record("mx1.example.org", "AAAA", 3600, "2001:db8::10")]
    assert records_equal(expected, server.rrset("MX1.Example.ORG", "AAAA"))


def test_comparer_notices_a_wrong_or_missing_record(served):
    _, _, server = served
    wrong_spf = [Record.txt("example.net", "v=spf1 mx ~all", 1800, "spf")]
    assert not records_equal(wrong_spf, server.rrset("example.net", "TXT"))
    one_mx_short = [Record("example.net", "MX", 1800, "10 mx1.example.org.")]
    diff = compare_rrset(one_mx_short, server.rrset("example.net", "MX"))
    assert [str(c) for c in diff.unexpected] == ["example.net. MX 20 mx2.example.org."]
    assert server.rrset("nothing.example.org", "A") is None
    assert not records_equal([Record("nothing.example.org", "A", 60, "192.0.2.1")], None)


def test_resolver_helper_reaches_the_server(served):
    _, _, server = served
    answer = server.resolver().resolve("_imaps._tcp.example.net", "SRV")
    assert [rd.to_text() for rd in answer] == ["0 1 993 mx1.example.org."]
    assert server.address == f"127.0.0.1:{server.port}"


def test_server_that_cannot_load_its_zone_is_reported_with_its_log(tmp_path):
    broken = (
        "$ORIGIN broken.test.\n@ IN SOA ns. h. 1 2 3 4 5\nwww IN CNAME a.\nwww IN A 192.0.2.1\n"
    )
    with (
        pytest.raises(DnsServerError, match="NSD did not start; its log"),
        nsd_server({"broken.test": broken}, tmp_path, timeout=2),
    ):
        pass
    assert not list(tmp_path.glob("nsd.pid"))  # stopped, and it removed its pid file
