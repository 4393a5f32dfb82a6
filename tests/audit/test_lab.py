"""`mailops audit` against a real deployment (lab.py: two runtimes deployed by
apply, one local and one over SSH, and NSD serving the zones of `mailops dns`).

The clean setup audits all green, end to end included; then each deliberate
fault turns exactly its own checks red (or yellow, for propagation), with the
fix in the finding, and is undone before the next test.
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from mailops.audit.findings import Finding
from mailops.render.dkim import dkim_record_text, generate_key
from mailops.render.dns import Record
from mailops.runtime.config import load_config
from mailops.runtime.delivery import admin
from tests.audit.lab import (
    PASSWORDS,
    SERIAL,
    expired_certificate,
    lab,
    with_records,
    zone_texts,
)
from tests.deploy.sshd import sshd_available
from tests.integration.dnsserver import nsd_available, nsd_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not nsd_available(), reason="NSD (Debian package nsd) is absent"),
    pytest.mark.skipif(not sshd_available(), reason="needs OpenSSH's sshd and root"),
]

PORTS = {
    "smtp": 25,
    "submission": 587,
    "submissions": 465,
    "imap": 143,
    "imaps": 993,
    "pop3": 110,
    "pop3s": 995,
}


@pytest.fixture(scope="module")
def the_lab(tmp_path_factory):
    with lab(tmp_path_factory.mktemp("audit-lab")) as the_lab:
        yield the_lab


def failing(result) -> list[tuple[str, str]]:
    return sorted((f.check, f.subject) for f in result.findings if f.severity == "fail")


def warned(result) -> list[tuple[str, str]]:
    return sorted((f.check, f.subject) for f in result.findings if f.severity == "warn")


def finding(result, check: str, subject: str = "") -> Finding:
    found = [f for f in result.findings if f.check == check and f.subject.startswith(subject)]
    assert len(found) == 1, found
    return found[0]


def ports(the_lab, host_id: str, services=PORTS) -> list[str]:
    address = the_lab.addresses[host_id]
    return [f"{host_id} {s} {address}:{PORTS[s]}" for s in services]


# ---------------------------------------------------------------- clean


def test_clean_setup_is_all_green_end_to_end(the_lab):
    result = the_lab.audit(e2e=True)
    assert [f for f in result.findings if f.severity != "ok"] == []
    ran = {f.check for f in result.findings}
    assert {
        "dns.servers", "dns.mx", "dns.spf", "dns.dkim", "dns.dmarc", "dns.srv", "dns.address",
        "dns.fcrdns", "spf.syntax", "spf.lookups", "dmarc.syntax", "net.port", "smtp.banner",
        "smtp.ehlo", "tls.handshake", "tls.cert", "auth.before-tls", "smtp.auth-required",
        "smtp.relay", "smtp.unknown-recipient", "imap.greeting", "pop3.greeting", "drift.file",
        "drift.runtime", "drift.service", "drift.queue", "drift.disk", "e2e.submit", "e2e.imap",
        "e2e.pop3", "e2e.dkim", "e2e.cleanup",
    } <= ran  # fmt: skip
    # 7 services × 2 hosts, each with its own port finding
    assert len([f for f in result.findings if f.check == "net.port"]) == 14
    # each message left its host (bob's through mx2, alpha's backup MX), so both are signed
    for sender, domain in (("alice@alpha.test →", "alpha.test"), ("bob@beta.test →", "beta.test")):
        signed = finding(result, "e2e.dkim", sender)
        assert signed.text == f"DKIM-Signature of {domain} verified through DNS"
        # ...and the test messages are gone again
        assert finding(result, "e2e.cleanup", sender).text == "deleted by POP3"
    box = the_lab.data("mx2") / "mail" / "beta.test" / "bob"
    assert not [p for d in ("new", "cur") for p in (box / d).glob("*")]


# ---------------------------------------------------------------- DNS faults


def test_missing_mx(the_lab, tmp_path):
    zones = with_records(
        the_lab.zones(), "alpha.test", drop=lambda r: r.purpose == "mx" and r.name == "alpha.test"
    )
    with nsd_server(zone_texts(zones), tmp_path / "nsd") as broken:
        result = the_lab.audit(dns=broken, only=["dns", "probes"])
    assert failing(result) == [("dns.mx", "alpha.test MX")]
    mx = finding(result, "dns.mx", "alpha.test")
    assert mx.text == "no such record; lacks MX 10 mx1.alpha.test.; lacks MX 20 mx2.beta.test."
    assert mx.fix.endswith(
        "publish: alpha.test. 60 IN MX 10 mx1.alpha.test.\n"
        "publish: alpha.test. 60 IN MX 20 mx2.beta.test."
    )


def test_wrong_dkim_key_in_dns(the_lab, tmp_path):
    owner = "s1._domainkey.alpha.test"
    other = Record.txt(owner, dkim_record_text(generate_key("ed25519")), 60, "dkim", "alpha.test")
    zones = with_records(
        the_lab.zones(), "alpha.test", drop=lambda r: r.name == owner, add=(other,)
    )
    with nsd_server(zone_texts(zones), tmp_path / "nsd") as broken:
        result = the_lab.audit(dns=broken, only=["dns", "probes"])
    assert failing(result) == [("dns.dkim", f"{owner} TXT")]
    dkim = finding(result, "dns.dkim", owner)
    key_file = the_lab.root / "keys" / "dkim" / "alpha.test.s1.key"
    assert dkim.text == (
        f"the public key in DNS is not the key in {key_file}: mail signed with it fails DKIM "
        "verification"
    )
    right = next(r for r in the_lab.zones()["alpha.test"].records if r.name == owner)
    assert f"publish: {owner}. 60 IN TXT {right.value}" in dkim.fix
    assert f'remove: {owner}. IN TXT "{other.text}"' in dkim.fix


def test_second_spf_record(the_lab, tmp_path):
    second = Record.txt("alpha.test", "v=spf1 include:_spf.mail.example ~all", 60, "extra")
    zones = with_records(the_lab.zones(), "alpha.test", add=(second,))
    with nsd_server(zone_texts(zones), tmp_path / "nsd") as broken:
        result = the_lab.audit(dns=broken, only=["dns", "probes"])
    assert failing(result) == [("dns.spf", "alpha.test TXT")]
    spf = finding(result, "dns.spf", "alpha.test")
    assert "receivers fail every SPF check (permerror" in spf.text
    assert spf.fix.endswith('remove: alpha.test. IN TXT "v=spf1 include:_spf.mail.example ~all"')


def test_lagging_resolver_is_propagation_not_failure(the_lab, tmp_path):
    """The resolver is a second NSD serving yesterday's zone, where alpha.test had
    no backup MX yet: authoritative is right, so it is a warning with the TTL."""
    old = with_records(
        the_lab.zones(), "alpha.test", drop=lambda r: r.purpose == "mx" and "mx2" in r.value
    )
    with nsd_server(zone_texts(old, SERIAL - 1), tmp_path / "old") as lagging:
        result = the_lab.audit(resolver=lagging, only=["dns"])
    assert failing(result) == []
    assert warned(result) == [("dns.mx", "alpha.test MX")]
    mx = finding(result, "dns.mx", "alpha.test")
    assert mx.text == (
        "published on 1 authoritative server, but not yet seen through the resolver "
        f"{lagging.address}, which still answers MX 10 mx1.alpha.test. (propagation; cached "
        "up to 60 s)"
    )
    assert mx.fix == "nothing to change: caches pick it up within 60 s (the TTL)"
    assert not result.failed


# ---------------------------------------------------------------- host faults


def test_expired_certificate(the_lab):
    cert_file, key_file = the_lab.root / "tls" / "mx1.pem", the_lab.root / "tls" / "mx1.key"
    good = cert_file.read_bytes(), key_file.read_bytes()
    expired, key = expired_certificate(the_lab)
    key_file.write_bytes(key)
    cert_file.write_bytes(expired)
    the_lab.reload("mx1")
    try:
        result = the_lab.audit()
    finally:
        cert_file.write_bytes(good[0])
        key_file.write_bytes(good[1])
        the_lab.reload("mx1")
    assert failing(result) == sorted(("tls.cert", s) for s in ports(the_lab, "mx1"))
    for f in result.findings:
        if f.severity == "fail":
            assert f.text.startswith("expired on ")
            assert f.fix == (
                f"renew {cert_file} on the host (with its chain), then "
                f"`mailops service {the_lab.spec_path} reload --host mx1`"
            )


def test_stopped_service(the_lab):
    the_lab.stop("mx2")
    try:
        result = the_lab.audit()
    finally:
        the_lab.redeploy()  # apply starts it again
    expected = [("net.port", s) for s in ports(the_lab, "mx2")] + [("drift.service", "mx2 service")]
    assert failing(result) == sorted(expected)
    smtp = finding(result, "net.port", "mx2 smtp ")
    assert smtp.text == "connection refused (2 attempts)"
    assert smtp.retried == 1
    assert f"`mailops service {the_lab.spec_path} start --host mx2`" in smtp.fix
    service = finding(result, "drift.service", "mx2")
    assert service.fix == f"`mailops service {the_lab.spec_path} start --host mx2`"


def test_hand_edited_config_file(the_lab):
    aliases = the_lab.etc("mx1") / "aliases"
    rendered = aliases.read_bytes()
    aliases.write_bytes(rendered + b"leak@alpha.test  someone@example.net\n")
    try:
        result = the_lab.audit()
    finally:
        aliases.write_bytes(rendered)
    assert failing(result) == [("drift.file", f"mx1 {aliases}")]
    drift = finding(result, "drift.file", f"mx1 {aliases}")
    assert drift.text == (
        "differs from the rendered file (on the host: 'leak@alpha.test  someone@example.net')"
    )
    assert drift.fix == f"`mailops apply {the_lab.spec_path} --host mx1` restores it"
    assert warned(result) == []


def test_relay_opened_by_a_hand_edited_config(the_lab):
    """Someone made mx1 accept mail for a domain the spec does not serve (a domain
    in runtime.toml and a catch-all forwarding it on): that is an open relay."""
    toml, aliases = the_lab.etc("mx1") / "runtime.toml", the_lab.etc("mx1") / "aliases"
    rendered = toml.read_bytes(), aliases.read_bytes()
    toml.write_bytes(rendered[0] + b'\n[domains."example.net"]\nrole = "mailbox"\n')
    aliases.write_bytes(rendered[1] + b"@example.net  forward@elsewhere.example\n")
    the_lab.reload("mx1")
    try:
        result = the_lab.audit()
    finally:
        toml.write_bytes(rendered[0])
        aliases.write_bytes(rendered[1])
        the_lab.reload("mx1")
    assert failing(result) == [
        ("drift.file", f"mx1 {aliases}"),
        ("drift.file", f"mx1 {toml}"),
        ("smtp.relay", f"mx1 smtp {the_lab.addresses['mx1']}:25"),
    ]
    relay = finding(result, "smtp.relay", "mx1")
    assert relay.text.startswith(
        "OPEN RELAY: accepts mail from mailops-audit@example.com to outside addresses: "
        "RCPT TO:<relay-probe@example.net> → 250"
    )
    assert f"`mailops apply {the_lab.spec_path} --host mx1` to restore" in relay.fix
    # the second host is not fooled into the same finding
    assert finding(result, "smtp.relay", "mx2 ").severity == "ok"


def test_catch_all_added_by_hand_accepts_unknown_recipients(the_lab):
    aliases = the_lab.etc("mx2") / "aliases"
    rendered = aliases.read_bytes()
    aliases.write_bytes(rendered + b"@beta.test  bob@beta.test\n")
    the_lab.reload("mx2")
    try:
        result = the_lab.audit(only=["probes", "drift"])
    finally:
        aliases.write_bytes(rendered)
        the_lab.reload("mx2")
    subject = f"mx2 smtp {the_lab.addresses['mx2']}:25 beta.test"
    assert failing(result) == [
        ("drift.file", f"mx2 {aliases}"),
        ("smtp.unknown-recipient", subject),
    ]
    unknown = finding(result, "smtp.unknown-recipient", subject)
    assert unknown.text.startswith("accepts mail for mailops-audit-nobody-")
    assert unknown.fix == (
        "the spec has no catch-all for beta.test: look for one in the host's aliases file "
        f"(@beta.test); `mailops apply {the_lab.spec_path} --host mx2` restores the rendered file"
    )


def test_old_queued_mail_is_a_warning(the_lab):
    with smtplib.SMTP(the_lab.addresses["mx1"], 587, timeout=10) as client:
        client.starttls(context=_trusting(the_lab))
        client.login("alice@alpha.test", PASSWORDS["alice@alpha.test"])
        client.sendmail("alice@alpha.test", ["someone@nowhere.example"], b"Subject: x\r\n\r\nx\r\n")
    queue = the_lab.data("mx1") / "queue"
    entry = _wait_for(lambda: next(iter(queue.glob("*.msg")), None))
    two_hours_ago = time.time() - 7200
    os.utime(entry, (two_hours_ago, two_hours_ago))
    try:
        result = the_lab.audit(only=["drift"])
    finally:
        admin.delete(load_config(the_lab.etc("mx1") / "runtime.toml"), entry.stem)
    assert failing(result) == []
    assert warned(result) == [("drift.queue", "mx1 queue")]
    queued = finding(result, "drift.queue", "mx1")
    assert queued.text == "1 message(s) waiting, the oldest for 2.0 h"
    assert "mailops queue list --config" in queued.fix


def _trusting(the_lab) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(the_lab.ca_file))
    context.check_hostname = False  # connecting by address; the certificate names mx1
    return context


def _wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


# ---------------------------------------------------------------- the command line


def test_cli_json_and_junit(the_lab, tmp_path):
    options = the_lab.options()
    junit = tmp_path / "audit.xml"
    done = subprocess.run(
        [
            sys.executable, "-m", "mailops", "audit", str(the_lab.spec_path),
            "--resolver", options.resolver, "--authoritative", options.authoritative[0],
            "--ca-file", str(the_lab.ca_file), "--only", "dns", "--only", "probes",
            "--json", "--junit", str(junit),
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data["ok"] is True
    assert data["summary"]["fail"] == 0 and data["summary"]["ok"] > 80
    root = ET.parse(junit).getroot()
    assert (root.get("failures"), root.get("tests")) == ("0", str(len(data["findings"])))
