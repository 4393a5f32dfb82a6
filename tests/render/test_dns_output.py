"""Zone files, records to paste, JSON and the SOA serial."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest

from mailops.errors import UsageError
from mailops.render import dkim, dns_output
from mailops.render.dns import DnsSet, Record, build_dns, compare_rrset, group_rrsets, zone_kinds
from mailops.spec.load import load_spec

FIXTURE = Path(__file__).parent / "data" / "two-domains.yaml"
TODAY = dt.date(2026, 3, 14)
NAMED_CHECKZONE = shutil.which("named-checkzone") or "/usr/bin/named-checkzone"
NSD_CHECKZONE = shutil.which("nsd-checkzone") or "/usr/sbin/nsd-checkzone"


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("spec")
    shutil.copy(FIXTURE, folder / FIXTURE.name)
    return folder


def build(spec_dir: Path) -> DnsSet:
    loaded = load_spec(spec_dir / FIXTURE.name)
    keys, _ = dkim.ensure_keys(loaded.spec, dkim.key_dir_for(spec_dir))
    return build_dns(loaded.spec, dkim.dkim_records(keys))


@pytest.fixture(scope="module")
def dnsset(spec_dir) -> DnsSet:
    return build(spec_dir)


@pytest.fixture(scope="module")
def org_zone_text(dnsset) -> str:
    return dns_output.zone_text(dnsset.zone("example.org"), 2026031400)


# ---------------------------------------------------------------- zone file


def test_zone_file_starts_with_origin_ttl_soa_and_ns(org_zone_text):
    lines = org_zone_text.splitlines()
    assert lines[0].startswith("; example.org: written by mailops")
    assert lines[1:3] == ["$ORIGIN example.org.", "$TTL 3600"]
    assert lines[3].split() == [
        "@",
        "IN",
        "SOA",
        "ns1.example.org.",
        "hostmaster.example.org.",
        "(",
    ]
    assert [line.split()[0] for line in lines[4:9]] == [
        "2026031400", "7200", "3600", "1209600", "300",
    ]  # fmt: skip
    assert lines[9].split() == ["@", "IN", "NS", "ns1.example.org."]
    assert lines[10].split() == ["@", "IN", "NS", "ns.provider.example."]


def test_zone_file_holds_exactly_the_zone_records(dnsset, org_zone_text):
    zone = dnsset.zone("example.org")
    parsed = dns.zone.from_text(org_zone_text, origin="example.org.", relativize=False)
    soa = parsed.find_rdataset("example.org.", "SOA")[0]
    assert (soa.serial, soa.minimum, str(soa.mname), str(soa.rname)) == (
        2026031400, 300, "ns1.example.org.", "hostmaster.example.org.",
    )  # fmt: skip
    expected = group_rrsets(zone.records)
    served = {}
    for name, rdataset in parsed.iterate_rdatasets():
        if rdataset.rdtype != dns.rdatatype.SOA:
            key = (name.to_text(omit_final_dot=True), dns.rdatatype.to_text(rdataset.rdtype))
            served[key] = rdataset
    assert set(served) == set(expected)
    for key, records in expected.items():
        rrset = dns.rrset.RRset(dns.name.from_text(key[0]), dns.rdataclass.IN, served[key].rdtype)
        rrset.update(served[key])
        assert compare_rrset(records, rrset).ok, key
        assert served[key].ttl == records[0].ttl, key


def test_zone_file_omits_ttl_equal_to_default_and_writes_others(org_zone_text):
    www = [line for line in org_zone_text.splitlines() if line.startswith("www ")]
    assert [line.split() for line in www] == [["www", "600", "IN", "A", "203.0.113.20"]]
    mx = [line.split() for line in org_zone_text.splitlines() if " MX " in line]
    assert mx[0] == ["@", "IN", "MX", "10", "mx1.example.org."]


def test_long_txt_is_written_as_parenthesised_strings(dnsset, org_zone_text):
    record = next(
        r for r in dnsset.zone("example.org").records if r.name == "s2026._domainkey.example.org"
    )
    first, second = record.strings
    lines = org_zone_text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("s2026._domainkey "))
    assert lines[at].endswith(f'IN TXT    ( "{first.decode()}"')
    assert lines[at + 1].strip() == f'"{second.decode()}" )'


def test_zone_file_passes_named_checkzone(tmp_path, org_zone_text):
    if not Path(NAMED_CHECKZONE).exists():
        pytest.skip("named-checkzone (bind9-utils) is absent")
    path = tmp_path / "example.org.zone"
    path.write_text(org_zone_text)
    result = subprocess.run(
        [NAMED_CHECKZONE, "-i", "full", "example.org", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded serial 2026031400" in result.stdout


def test_zone_file_passes_nsd_checkzone(tmp_path, org_zone_text):
    if not Path(NSD_CHECKZONE).exists():
        pytest.skip("nsd-checkzone (nsd) is absent")
    path = tmp_path / "example.org.zone"
    path.write_text(org_zone_text)
    result = subprocess.run(
        [NSD_CHECKZONE, "example.org", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_same_spec_twice_gives_byte_identical_output(spec_dir, dnsset):
    again = build(spec_dir)
    zones = list(dnsset.zones)
    first = dns_output.render_output(dnsset, zones, None, {"example.org": 2026031400})
    second = dns_output.render_output(again, list(again.zones), None, {"example.org": 2026031400})
    assert first.stdout == second.stdout
    assert first.files == second.files


# ---------------------------------------------------------------- serial


def test_next_serial():
    assert dns_output.next_serial(None, TODAY) == 2026031400
    assert dns_output.next_serial(2026031400, TODAY) == 2026031401  # second change today
    assert dns_output.next_serial(2026031099, TODAY) == 2026031400
    assert dns_output.next_serial(2026031599, TODAY) == 2026031600  # zone ahead of the clock
    assert dns_output.next_serial(2026031499, TODAY) == 2026031500


def test_serial_kept_while_records_stay_the_same(dnsset, org_zone_text):
    zone = dnsset.zone("example.org")
    later = dt.date(2026, 4, 1)
    assert dns_output.zone_serial(zone, org_zone_text, later) == 2026031400
    assert dns_output.zone_serial(zone, None, later) == 2026040100


def test_serial_moves_when_records_change(dnsset, org_zone_text):
    zone = dnsset.zone("example.org")
    extra = Record("new.example.org", "A", 3600, "192.0.2.99")
    changed = dataclasses.replace(zone, records=(*zone.records, extra))
    assert dns_output.zone_serial(changed, org_zone_text, dt.date(2026, 4, 1)) == 2026040100
    assert dns_output.zone_serial(changed, org_zone_text, TODAY) == 2026031401
    # A changed TTL or SOA field is a change too.
    ttl = dataclasses.replace(zone, ttl=7200)
    assert dns_output.zone_serial(ttl, org_zone_text, TODAY) == 2026031401
    soa = dataclasses.replace(zone, soa=dataclasses.replace(zone.soa, retry=1800))
    assert dns_output.zone_serial(soa, org_zone_text, TODAY) == 2026031401


def test_serial_starts_over_when_the_old_file_does_not_parse(dnsset):
    zone = dnsset.zone("example.org")
    assert dns_output.zone_serial(zone, "garbage {", TODAY) == 2026031400


# ---------------------------------------------------------------- records to paste


def test_records_text_shows_txt_joined_and_split(dnsset):
    zone = dnsset.zone("example.net")
    text = dns_output.records_text(zone)
    lines = text.splitlines()
    assert lines[0] == (
        "# example.net: DNS records for mail, to enter at the DNS provider of example.net"
    )
    at = next(i for i, line in enumerate(lines) if line.startswith("_dmarc "))
    assert lines[at].split(None, 3) == [
        "_dmarc", "TXT", "1800", "v=DMARC1; p=reject; rua=mailto:dmarc@example.org",
    ]  # fmt: skip
    assert lines[at + 1].strip() == 'split: "v=DMARC1; p=reject; rua=mailto:dmarc@example.org"'
    dkim_at = next(i for i, line in enumerate(lines) if line.startswith("s1._domainkey "))
    assert lines[dkim_at + 1].strip().startswith('split: "v=DKIM1; k=rsa; p=')
    assert lines[dkim_at + 1].count('" "') == 1  # two strings
    srv = next(line for line in lines if line.startswith("_submission._tcp "))
    assert srv.split() == ["_submission._tcp", "SRV", "1800", "5", "1", "1587", "mx1.example.org."]
    assert not [line for line in lines if " NS " in line]


def test_records_text_lists_reverse_dns_to_ask_for(dnsset):
    zone = dnsset.zone("example.org")
    text = dns_output.records_text(zone, dnsset.reverse_for(zone), dnsset.files_for(zone))
    assert (
        "203.0.113.10  →  mx1.example.org   (10.113.0.203.in-addr.arpa. PTR mx1.example.org.)"
        in (text)
    )
    assert "203.0.113.11  →  mx2.example.org" in text
    assert "https://mta-sts.example.org/.well-known/mta-sts.txt" in text
    # The full zone's records include what is not mail, but never the zone's own NS.
    assert "\nwww " in text and " NS " not in text


# ---------------------------------------------------------------- JSON


def test_json_is_the_record_model(dnsset):
    data = json.loads(dns_output.json_text(dnsset, dnsset.zones, {"example.org": 2026031400}))
    zones = {z["zone"]: z for z in data["zones"]}
    assert zones["example.org"]["soa"]["serial"] == 2026031400
    assert zones["example.org"]["soa"]["mname"] == "ns1.example.org"
    assert zones["example.net"]["soa"] is None
    spf = next(r for r in zones["example.net"]["records"] if r["purpose"] == "spf")
    assert spf == {
        "name": "example.net",
        "type": "TXT",
        "ttl": 1800,
        "value": '"v=spf1 mx ip4:203.0.113.10 ip6:2001:db8::10 ip4:203.0.113.11 -all"',
        "purpose": "spf",
        "domain": "example.net",
        "text": "v=spf1 mx ip4:203.0.113.10 ip6:2001:db8::10 ip4:203.0.113.11 -all",
    }
    assert data["reverse"][0] == {
        "address": "203.0.113.10",
        "name": "10.113.0.203.in-addr.arpa",
        "ptr": "mx1.example.org.",
    }
    assert {f["domain"] for f in data["files"]} == {"example.org", "example.net"}


# ---------------------------------------------------------------- selection and files


def test_default_output_is_zone_for_full_and_records_for_the_rest(dnsset):
    out = dns_output.render_output(dnsset, dnsset.zones, None, {"example.org": 2026031400})
    assert out.stdout.startswith("# example.net: DNS records for mail")
    assert "$ORIGIN example.org." in out.stdout
    assert sorted(out.files) == [
        "example.net.records.txt",
        "example.net/config-v1.1.xml",
        "example.org.records.txt",
        "example.org.zone",
        "example.org/config-v1.1.xml",
        "example.org/mta-sts.txt",
    ]
    ptr_notes = [n.message for n in out.notes if "reverse DNS" in n.message]
    assert ptr_notes[0] == (
        "reverse DNS: ask the owner of 203.0.113.10 to set 10.113.0.203.in-addr.arpa. "
        "PTR mx1.example.org."
    )
    assert len(ptr_notes) == 3


def test_records_format_for_a_full_zone(dnsset):
    zone = dnsset.zone("example.org")
    out = dns_output.render_output(dnsset, [zone], "records", {"example.org": 1})
    assert out.stdout.startswith("# example.org: DNS records for mail")
    assert "example.org.zone" not in out.files and "example.org.records.txt" in out.files
    assert not [n for n in out.notes if "reverse DNS" in n.message]  # the text lists them


def test_select_zones():
    kinds = {"example.org": "full", "example.net": "records"}
    assert dns_output.select_zones(kinds, None, None) == ["example.net", "example.org"]
    assert dns_output.select_zones(kinds, "Example.ORG.", "zone") == ["example.org"]
    with pytest.raises(UsageError, match=r"no zone file for example\.net"):
        dns_output.select_zones(kinds, None, "zone")
    with pytest.raises(UsageError, match=r"no zone example\.com in the spec"):
        dns_output.select_zones(kinds, "example.com", None)


def test_zone_kinds_match_the_built_zones(spec_dir, dnsset):
    kinds = zone_kinds(load_spec(spec_dir / FIXTURE.name).spec)
    assert kinds == {z.name: z.managed for z in dnsset.zones}
