"""The DNS part against real NSD servers, for what the lab cannot show:
public addresses with reverse DNS, the MTA-STS policy over HTTPS, SPF lookup
limits, odd answers (a CNAME where a TXT belongs), and several authoritative
servers that disagree or do not answer."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import http.server
import random
import ssl
import threading
from pathlib import Path

import pytest
import trustme

from mailops.audit.context import AuditOptions
from mailops.audit.run import run_audit
from mailops.render import dkim, dns_output
from mailops.render.dns import Record, ZoneRecords, build_dns
from mailops.spec.load import load_spec
from tests.audit.lab import with_records, zone_texts
from tests.integration.dnsserver import nsd_available, nsd_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not nsd_available(), reason="NSD (Debian package nsd) is absent"),
]

HASH = "{BLF-CRYPT}$2b$05$abcdefghijklmnopqrstuu5s2v8.iMN4Ob5xq7bF0J8w0z5r8dE2i"
# big.spf.test includes eleven more: with gamma.test's own mx and include, 13 lookups.
BIG_SPF = "v=spf1 " + " ".join(f"include:i{n}.spf.test" for n in range(11)) + " -all"
SPF_RECORDS = "".join(
    f'        - {{name: i{n}, type: TXT, value: "v=spf1 -all"}}\n' for n in range(11)
)
SPEC = f"""\
version: 1
hosts:
  mx1: {{fqdn: mx1.gamma.test, ipv4: 192.0.2.10, tls: {{self_signed: true}}}}
  mx2: {{fqdn: mx2.gamma.test, ipv4: 192.0.2.11, services: [smtp], tls: {{self_signed: true}}}}
domains:
  gamma.test:
    mailbox_host: mx1
    mx: [{{host: mx1, priority: 10}}, {{host: mx2, priority: 20}}]
    users: {{alice: {{password_hash: "{HASH}"}}}}
    aliases: {{postmaster: alice}}
    spf: {{include: [big.spf.test]}}
    mta_sts: {{mode: enforce, max_age: 86400}}
dns:
  zones:
    gamma.test:
      managed: full
      ttl: 60
      nameservers: [ns.gamma.test]
      soa: {{minimum: 60}}
      extra_records:
        - {{name: ns, type: A, value: 127.0.0.1}}
        - {{name: mta-sts, type: A, value: "{{sts}}"}}
    spf.test:
      managed: full
      ttl: 60
      nameservers: [ns.gamma.test]
      extra_records:
        - {{name: big, type: TXT, value: "{BIG_SPF}"}}
{SPF_RECORDS}"""

REVERSE = "2.0.192.in-addr.arpa"


@dataclasses.dataclass
class World:
    spec: Path
    zones: dict[str, ZoneRecords]
    ca: trustme.CA
    sts_address: str

    def options(self, *servers, resolver=None, **kw) -> AuditOptions:
        kw.setdefault("timeout", 1.0)
        return AuditOptions(
            resolver=(resolver or servers[0]).address,
            authoritative=[s if isinstance(s, str) else s.address for s in servers],
            ca_file=self.spec.parent / "ca.pem",
            only=["dns"],
            attempts=2,
            **kw,
        )

    def audit(self, *servers, **kw):
        return run_audit(load_spec(self.spec), self.options(*servers, **kw))


def reverse_zone(ptrs: dict[str, str]) -> ZoneRecords:
    """The address owner's reverse zone, holding the PTRs given (last octet → name)."""
    soa = dns_output.SoaFields("ns.gamma.test", "hostmaster.gamma.test", 7200, 3600, 1209600, 60)
    records = [Record(REVERSE, "NS", 60, "ns.gamma.test.", "ns")]
    records += [Record(f"{n}.{REVERSE}", "PTR", 60, f"{name}.", "ptr") for n, name in ptrs.items()]
    return ZoneRecords(REVERSE, "full", True, 60, tuple(records), ("ns.gamma.test",), soa)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("dns-world")
    sts = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}.8"
    spec = root / "spec.yaml"
    spec.write_text(SPEC.replace("{sts}", sts))
    loaded = load_spec(spec)
    keys, _ = dkim.ensure_keys(loaded.spec, dkim.key_dir_for(root))
    zones = {z.name: z for z in build_dns(loaded.spec, dkim.dkim_records(keys)).zones}
    # mx1's address points back to it; mx2's to somebody else
    zones[REVERSE] = reverse_zone({"10": "mx1.gamma.test", "11": "shared-hosting.example"})
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    return World(spec, zones, ca, sts)


@contextlib.contextmanager
def policy_server(world: World, policy: str):
    """https://mta-sts.gamma.test/.well-known/mta-sts.txt, served with a test-CA certificate."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server calls
            body = policy.encode()
            self.send_response(200 if self.path == "/.well-known/mta-sts.txt" else 404)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    world.ca.issue_cert("mta-sts.gamma.test").configure_cert(context)
    server = http.server.ThreadingHTTPServer((world.sts_address, 443), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def policy_of(world: World) -> str:
    loaded = load_spec(world.spec)
    keys, _ = dkim.ensure_keys(loaded.spec, dkim.key_dir_for(world.spec.parent))
    files = build_dns(loaded.spec, dkim.dkim_records(keys)).files
    return next(f.mta_sts for f in files if f.domain == "gamma.test") or ""


def pick(result, check: str, subject: str):
    found = [f for f in result.findings if f.check == check and f.subject.startswith(subject)]
    assert len(found) == 1, found
    return found[0]


def test_reverse_dns_policy_and_spf_limits(world, tmp_path):
    with (
        nsd_server(zone_texts(world.zones), tmp_path / "nsd") as server,
        policy_server(world, policy_of(world)),
    ):
        result = world.audit(server)
    failures = sorted((f.check, f.subject) for f in result.findings if f.severity == "fail")
    assert failures == [
        ("dns.fcrdns", "mx2 192.0.2.11 PTR"),
        ("spf.lookups", "gamma.test TXT (SPF)"),
    ]
    assert pick(result, "dns.fcrdns", "mx1").text == "192.0.2.10 ⇄ mx1.gamma.test"
    wrong = pick(result, "dns.fcrdns", "mx2")
    assert wrong.text == "192.0.2.11 points back to shared-hosting.example, not mx2.gamma.test"
    assert wrong.fix == (
        "ask the owner of 192.0.2.11 (usually the hosting provider) to set its reverse DNS: "
        "11.2.0.192.in-addr.arpa. PTR mx2.gamma.test."
    )
    lookups = pick(result, "spf.lookups", "gamma.test")
    assert lookups.text == (
        "evaluating it takes 13 DNS lookups; receivers stop at 10 and fail the check "
        "(RFC 7208 §4.6.4)"
    )
    policy = pick(result, "mta-sts.policy", "https://mta-sts.gamma.test")
    assert policy.severity == "ok"
    assert policy.text == "served as the spec says (mode enforce, 2 mx, max_age 86400)"


def test_policy_that_differs_and_an_id_that_lags(world, tmp_path):
    stale = Record.txt("_mta-sts.gamma.test", "v=STSv1; id=20250101", 60, "mta-sts", "gamma.test")
    zones = with_records(
        world.zones, "gamma.test", drop=lambda r: r.purpose == "mta-sts", add=(stale,)
    )
    served = policy_of(world).replace("mode: enforce", "mode: testing")
    with nsd_server(zone_texts(zones), tmp_path / "nsd") as server, policy_server(world, served):
        result = world.audit(server, domains=["gamma.test"])
    record = pick(result, "dns.mta-sts", "_mta-sts.gamma.test")
    assert record.severity == "fail"
    assert record.text.startswith("id 20250101 is not the id of the policy the spec makes (")
    policy = pick(result, "mta-sts.policy", "https://")
    assert policy.severity == "fail"
    assert policy.text == "the served policy is not the spec's: mode: testing (spec: enforce)"
    assert "serve gamma.test/mta-sts.txt" in policy.fix


def test_cname_where_a_txt_belongs_is_a_finding(world, tmp_path):
    cname = Record("_dmarc.gamma.test", "CNAME", 60, "dmarc.elsewhere.example.", "extra")
    zones = with_records(
        world.zones, "gamma.test", drop=lambda r: r.purpose == "dmarc", add=(cname,)
    )
    with nsd_server(zone_texts(zones), tmp_path / "nsd") as server:
        result = world.audit(server, domains=["gamma.test"])
    dmarc = pick(result, "dns.dmarc", "_dmarc.gamma.test")
    assert dmarc.severity == "fail"
    assert dmarc.text == (
        "a CNAME to dmarc.elsewhere.example. stands there instead; "
        'lacks TXT "v=DMARC1; p=quarantine"'
    )
    assert dmarc.fix.endswith('publish: _dmarc.gamma.test. 60 IN TXT "v=DMARC1; p=quarantine"')


def test_authoritative_servers_that_disagree(world, tmp_path):
    behind = with_records(
        world.zones, "gamma.test", drop=lambda r: r.purpose == "mx" and "mx2" in r.value
    )
    serial = dns_output.next_serial(None, dt.date(2026, 1, 1))
    with (
        nsd_server(zone_texts(world.zones, serial), tmp_path / "a") as primary,
        nsd_server(zone_texts(behind, serial - 1), tmp_path / "b") as secondary,
    ):
        result = world.audit(primary, secondary, resolver=primary)
    servers = pick(result, "dns.servers", "gamma.test SOA")
    assert servers.severity == "warn"
    assert servers.text == (
        "the servers hold different versions of the zone (serials: "
        f"{primary.address} has {serial}, {secondary.address} has {serial - 1})"
    )
    mx = pick(result, "dns.mx", "gamma.test MX")
    assert mx.severity == "fail"
    assert mx.text == f"{secondary.address}: lacks MX 20 mx2.gamma.test."


def test_a_server_that_does_not_answer(world, tmp_path):
    with nsd_server(zone_texts(world.zones), tmp_path / "nsd") as server:
        result = world.audit(
            server, "127.0.0.1:1", resolver=server, domains=["gamma.test"], timeout=0.5
        )
    servers = pick(result, "dns.servers", "gamma.test SOA")
    assert servers.severity == "fail"
    assert servers.text == "127.0.0.1:1 does not answer: timed out (2 attempts)"
    assert servers.retried == 1
    # the records are still checked on the server that answers
    assert pick(result, "dns.mx", "gamma.test MX").severity == "ok"
