"""Mail between hosts, the way the seed describes it: several real runtimes on their
own loopback addresses (port 25 each), a real NSD serving the zone `mailops dns`
made, and — where it can start — a private Postfix as a peer MTA."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import secrets
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from pathlib import Path

import dkim as dkimpy
import pytest

from mailops.runtime.delivery.client import Pool, deliver
from mailops.runtime.delivery.router import Target
from mailops.runtime.queue import Queue
from tests.integration.dnsserver import requires_nsd
from tests.integration.mailnet import ADDRESSES, POSTFIX_ADDRESS, mail_net, wait_for
from tests.integration.postfix import POSTCONF, POSTFIX, PostfixUnavailable, postfix_peer

pytestmark = [pytest.mark.integration, requires_nsd]

ALICE = "alice@alpha.lab.test"
BOB = "bob@beta.lab.test"


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with mail_net(tmp_path_factory.mktemp("net"), lifetime=6, delay_warning=2) as network:
        yield network


def message(sender: str, to: str) -> tuple[bytes, str]:
    subject = f"test {secrets.token_hex(6)}"
    text = f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nHello from {sender}.\r\n"
    return text.encode(), subject


def copies(runtime, user: str, domain: str, subject: str) -> list[bytes]:
    return [m for m in runtime.messages(user, domain) if f"Subject: {subject}".encode() in m]


def arrives(runtime, user, domain, subject, timeout=20.0) -> bytes:
    found = wait_for(lambda: copies(runtime, user, domain, subject), timeout, f"{subject}")
    return found[0]


def dsns(runtime, user: str, domain: str, subject: str, action: str) -> list:
    """Parsed DSNs in the mailbox about the message with `subject`."""
    found = []
    for raw in runtime.messages(user, domain):
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        if parsed.get_content_type() != "multipart/report":
            continue
        if f"Subject: {subject}" in raw.decode() and f"Action: {action}" in raw.decode():
            found.append(parsed)
    return found


def status_fields(dsn) -> list[dict[str, str]]:
    """The per-recipient groups of the message/delivery-status part."""
    part = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    groups = part.get_payload()
    return [{k.lower(): str(v) for k, v in group.items()} for group in groups[1:]]


def logged(runtime, event: str, **fields: str) -> list[str]:
    """The log lines, once there are some: the sender logs its outcome a moment
    after the receiver has stored the message."""
    return wait_for(lambda: log_lines(runtime, event, **fields), 10, f"{event} {fields}")


def log_lines(runtime, event: str, **fields: str) -> list[str]:
    lines = [line for line in runtime.log().splitlines() if f"event={event} " in line]
    for key, value in fields.items():
        lines = [line for line in lines if f" {key}={value}" in line]
    return lines


# ------------------------------------------------------------------ MX delivery


def test_mx_lookup_delivers_from_a_to_b_signed_and_verified(net):
    body, subject = message(ALICE, BOB)
    net.submit("a", ALICE, [BOB], body)
    stored = arrives(net["b"], "bob", "beta.lab.test", subject)
    # Verified TLS: beta.lab.test publishes an MTA-STS policy in enforce mode.
    assert b"by mx1.beta.lab.test (mailops) with ESMTPS id" in stored
    assert log_lines(net["a"], "mta_sts.policy", domain="beta.lab.test", mode="enforce")
    # B verified A's signature against the key `mailops dns` published, and A's
    # address against the SPF record it published...
    assert re.search(rb"dkim=pass header\.d=alpha\.lab\.test header\.s=s1 ", stored)
    assert b"\tspf=pass smtp.mailfrom=alice@alpha.lab.test;\r\n" in stored
    # ...and so does dkimpy here, asking the same DNS server.
    signed = stored[stored.index(b"DKIM-Signature:") :]
    resolver = net.resolver()

    def txt(name: bytes, timeout: float = 5) -> bytes:
        answer = resolver.resolve(name.decode(), "TXT")
        return b"".join(answer[0].strings)

    assert dkimpy.verify(signed, dnsfunc=txt)
    assert not dkimpy.verify(signed.replace(b"Hello from", b"Hullo from"), dnsfunc=txt)


def results_headers(stored: bytes) -> list[bytes]:
    """The Authentication-Results fields of a stored message, unfolded."""
    head = stored.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").replace(b"\r\n ", b"  ")
    return [
        line for line in head.split(b"\r\n") if line.lower().startswith(b"authentication-results:")
    ]


def test_a_spoofed_sender_gets_spf_fail_and_forged_verdicts_are_removed(net):
    _, subject = message(ALICE, BOB)
    forged = (
        b"Authentication-Results: mx1.beta.lab.test; spf=pass\r\n"
        b"\tsmtp.mailfrom=alice@alpha.lab.test; dkim=pass header.d=alpha.lab.test\r\n"
        b"Authentication-Results: (comment) MX1.Beta.Lab.Test; dmarc=pass\r\n"
        b"Authentication-Results: mx.elsewhere.test; spf=fail smtp.mailfrom=x@y.test\r\n"
        + f"From: <{ALICE}>\r\nTo: <{BOB}>\r\nSubject: {subject}\r\n\r\n".encode()
        + b"Authentication-Results: mx1.beta.lab.test; a body line, not a header\r\n"
    )
    # Straight to B's port 25 from 127.0.0.7, an address alpha.lab.test's SPF does not list.
    with smtplib.SMTP(ADDRESSES["b"], 25, timeout=20, source_address=("127.0.0.7", 0)) as client:
        client.sendmail(ALICE, [BOB], forged)
    stored = arrives(net["b"], "bob", "beta.lab.test", subject)
    headers = results_headers(stored)
    assert headers == [
        b"Authentication-Results: mx1.beta.lab.test; spf=fail smtp.mailfrom=alice@alpha.lab.test;"
        b" dkim=none",
        b"Authentication-Results: mx.elsewhere.test; spf=fail smtp.mailfrom=x@y.test",
    ]
    assert stored.endswith(b"\r\n\r\nAuthentication-Results: mx1.beta.lab.test; a body line, "
                           b"not a header\r\n")  # fmt: skip


def test_first_mx_down_the_second_takes_the_mail(net):
    # delta.lab.test: MX 10 is 127.0.0.9 (nothing listens), MX 20 is host b.
    body, subject = message(ALICE, "dave@delta.lab.test")
    net.submit("a", ALICE, ["dave@delta.lab.test"], body)
    arrives(net["b"], "dave", "delta.lab.test", subject)
    [line] = logged(net["a"], "delivery.delivered", rcpt="dave@delta.lab.test")
    assert " remote=mx1.beta.lab.test " in line and " attempts=1 " in line


def test_every_mx_down_is_retried_then_bounced_with_a_dsn(net):
    body, subject = message(ALICE, "x@down.lab.test")
    started = time.monotonic()
    net.submit("a", ALICE, ["x@down.lab.test"], body)
    wait_for(lambda: dsns(net["a"], "alice", "alpha.lab.test", subject, "failed"), 25, "bounce")
    assert time.monotonic() - started >= 5  # not before the 6 s lifetime ran out
    [dsn] = dsns(net["a"], "alice", "alpha.lab.test", subject, "failed")
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["To"].addresses[0].addr_spec == ALICE
    assert dsn["Auto-Submitted"] == "auto-replied"
    parts = [p.get_content_type() for p in dsn.iter_parts()]
    assert parts == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    [fields] = status_fields(dsn)
    assert fields["final-recipient"] == "rfc822; x@down.lab.test"
    assert fields["action"] == "failed"
    assert re.fullmatch(r"4\.4\.\d", fields["status"])  # expired: the last temporary reason
    assert "127.0.0.10" in fields["diagnostic-code"] or "127.0.0.9" in fields["diagnostic-code"]
    headers = next(p for p in dsn.iter_parts() if p.get_content_type() == "text/rfc822-headers")
    original = headers.get_payload(decode=True)
    assert f"Subject: {subject}".encode() in original and b"Hello from" not in original
    # Retried in between, and the sender was told about the delay once, first.
    queue_id = log_lines(net["a"], "smtp.accepted", sender=ALICE)[-1].split("queue_id=")[1]
    queue_id = queue_id.split()[0]
    assert len(log_lines(net["a"], "delivery.deferred", id=queue_id)) >= 2
    [delayed] = dsns(net["a"], "alice", "alpha.lab.test", subject, "delayed")
    [delay_fields] = status_fields(delayed)
    assert delay_fields["action"] == "delayed" and "will-retry-until" in delay_fields
    assert all(e.id != queue_id for e in Queue(net["a"].data).list())
    # The bounce went out with the null sender, so it can never bounce itself.
    bounce = next(m for m in net["a"].messages("alice", "alpha.lab.test") if subject.encode() in m)
    assert bounce.startswith(b"Return-Path: <>\r\n")


def test_null_mx_bounces_at_once(net):
    body, subject = message(ALICE, "nobody@null.lab.test")
    net.submit("a", ALICE, ["nobody@null.lab.test"], body)
    wait_for(lambda: dsns(net["a"], "alice", "alpha.lab.test", subject, "failed"), 4, "bounce")
    [dsn] = dsns(net["a"], "alice", "alpha.lab.test", subject, "failed")
    [fields] = status_fields(dsn)
    assert fields["status"] == "5.1.10"
    assert "null MX" in fields["diagnostic-code"]
    assert not dsns(net["a"], "alice", "alpha.lab.test", subject, "delayed")


def test_no_mx_delivers_to_the_a_record(net):
    body, subject = message(ALICE, "erin@nomx.lab.test")
    net.submit("a", ALICE, ["erin@nomx.lab.test"], body)
    arrives(net["smart"], "erin", "nomx.lab.test", subject)
    [line] = logged(net["a"], "delivery.delivered", rcpt="erin@nomx.lab.test")
    assert " remote=nomx.lab.test " in line


# ------------------------------------------------------------------ relay


def test_relay_domain_sends_through_the_smarthost_with_auth_over_tls(net):
    body, subject = message("carol@gamma.lab.test", BOB)
    net.submit("a", "carol@gamma.lab.test", [BOB], body)
    stored = arrives(net["b"], "bob", "beta.lab.test", subject)
    # The smarthost took it on its submission port: TLS and AUTH ("ESMTPSA")...
    assert b"by smart.relay.lab.test (mailops) with ESMTPSA id" in stored
    # ...and passed it on to beta's MX itself.
    assert b"by mx1.beta.lab.test (mailops) with ESMTPS id" in stored
    assert len(logged(net["a"], "delivery.delivered", rcpt=BOB, remote="smart.relay.lab.test")) == 1
    assert "carol-pw" not in net["a"].log()


# ------------------------------------------------------------------ backup MX


def test_backup_mx_holds_mail_while_the_primary_is_down_and_forwards_it(net):
    net["b"].stop()
    try:
        body, subject = message(ALICE, BOB)
        net.submit("a", ALICE, [BOB], body)
        held = wait_for(lambda: Queue(net["b2"].data).list(), 15, "the backup to hold it")
        assert [e.recipients for e in held] == [(BOB,)]
        wait_for(lambda: not Queue(net["a"].data).list(), 10, "a's queue to empty")
        # Killed without warning, the backup still has it after a restart.
        net["b2"].stop(signal.SIGKILL)
        net["b2"].start()
        assert [e.id for e in Queue(net["b2"].data).list()] == [e.id for e in held]
    finally:
        net["b"].start()
    flush = net["b2"].cli("queue", "flush")
    assert flush.returncode == 0, flush.stderr
    stored = arrives(net["b"], "bob", "beta.lab.test", subject)
    assert b"by mx2.beta.lab.test (mailops) with ESMTPS id" in stored
    wait_for(lambda: not Queue(net["b2"].data).list(), 10, "b2's queue to empty")
    time.sleep(1)
    assert len(copies(net["b"], "bob", "beta.lab.test", subject)) == 1  # exactly once


# ------------------------------------------------------------------ queue commands


def test_queue_show_and_bounce_from_the_command_line(net):
    body, subject = message(ALICE, "x@down.lab.test")
    net.submit("a", ALICE, ["x@down.lab.test"], body)
    [entry] = wait_for(lambda: [e for e in Queue(net["a"].data).list() if e.sender == ALICE])
    shown = net["a"].cli("queue", "show", entry.id)
    assert shown.returncode == 0, shown.stderr
    assert f"sender:    <{ALICE}>" in shown.stdout and f"Subject: {subject}" in shown.stdout
    bounced = net["a"].cli("queue", "bounce", entry.id)
    assert bounced.returncode == 0, bounced.stderr
    [dsn] = wait_for(lambda: dsns(net["a"], "alice", "alpha.lab.test", subject, "failed"), 5)
    assert "administrator" in status_fields(dsn)[0]["diagnostic-code"]
    again = net["a"].cli("queue", "delete", entry.id)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert again.stderr.startswith(f"mailops: error: no queue entry {entry.id}")


# ------------------------------------------------------------------ Postfix as a peer


@pytest.fixture
def postfix():
    # Not under pytest's tmp_path: Postfix's delivery agent runs as `nobody` and must
    # be able to walk down to its Maildir base, which pytest's 0700 folders forbid.
    root = Path(tempfile.mkdtemp(prefix="mailops-postfix-"))
    root.chmod(0o755)
    try:
        with postfix_peer(root / "pf", forward={"beta.lab.test": ADDRESSES["b"]}) as peer:
            yield peer
    except PostfixUnavailable as exc:
        pytest.skip(f"Postfix cannot run here: {exc}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_postfix_as_a_peer_mta_both_ways(net, postfix):
    # mailops → Postfix: pf.lab.test has no MX, its A record is Postfix's address.
    body, subject = message(ALICE, "pat@pf.lab.test")
    net.submit("a", ALICE, ["pat@pf.lab.test"], body)
    wait_for(lambda: postfix.messages(subject), 20, "Postfix to deliver")
    [line] = logged(net["a"], "delivery.delivered", rcpt="pat@pf.lab.test")
    assert " remote=pf.lab.test " in line
    # Postfix → mailops: injected over SMTP, sent on by Postfix's smtp client.
    body, subject = message("pat@pf.lab.test", BOB)
    with smtplib.SMTP(POSTFIX_ADDRESS, 25, timeout=20) as client:
        client.sendmail("pat@pf.lab.test", [BOB], body)
    stored = arrives(net["b"], "bob", "beta.lab.test", subject, timeout=30)
    assert b"Received: from pf.lab.test" in stored


def test_postfix_takes_a_message_pipelined_behind_another(postfix):
    """The delivery client sends the next message's MAIL, RCPT and DATA right behind
    a message whose reply is still to come (RFC 2920 §3.1). Postfix, with its
    strictest pipelining check on, must take both."""
    subprocess.run(
        [POSTCONF, "-c", str(postfix.config_dir), "-e", "smtpd_forbid_unauth_pipelining = yes"],
        check=True,
        capture_output=True,
    )
    subprocess.run([POSTFIX, "-c", str(postfix.config_dir), "reload"], check=True)
    time.sleep(1)  # smtpd processes started after the reload read the new setting
    bodies = [message(ALICE, "pat@pf.lab.test") for _ in range(2)]

    async def send_both():
        pool = Pool("mail.alpha.lab.test", command_timeout=20)
        target = Target("pf.lab.test", POSTFIX_ADDRESS, 25, "none")
        second: list[asyncio.Task] = []

        def send_second() -> None:  # the first message is out, its reply not yet in
            second.append(
                asyncio.create_task(
                    deliver(pool, [target], ALICE, ["pat@pf.lab.test"], bodies[1][0])
                )
            )

        first = await deliver(pool, [target], ALICE, ["pat@pf.lab.test"], bodies[0][0], send_second)
        outcomes = first, await second[0]
        await pool.close()
        return outcomes, pool.opened

    (first, second), opened = asyncio.run(send_both())
    assert first["pat@pf.lab.test"].state == second["pat@pf.lab.test"].state == "delivered"
    assert opened == 1
    for _, subject in bodies:
        wait_for(lambda subject=subject: postfix.messages(subject), 20, "Postfix to deliver")
    assert "improper command pipelining" not in postfix.log()
