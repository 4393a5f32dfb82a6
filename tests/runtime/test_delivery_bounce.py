"""DSNs (RFC 3464): structure, original headers, and where they are delivered."""

from __future__ import annotations

import email
import email.policy

from mailops.runtime.config import DomainConfig
from mailops.runtime.delivery.bounce import Report, build_dsn, dsn_files
from mailops.runtime.delivery.client import Outcome
from mailops.runtime.directory import Account, Directory
from mailops.runtime.queue import Queue
from mailops.runtime.store.maildir import MaildirDelivery

ORIGINAL = (
    b"From: Alice <alice@here.test>\r\nTo: bob@far.test\r\nSubject: plans\r\n"
    b"Message-ID: <m1@here.test>\r\n\r\nThe secret body.\r\n"
)
FAILED = Outcome.reply(550, "5.1.1 <bob@far.test>: user unknown", "mx.far.test")


def dsn(reports, action="failed", original=ORIGINAL):
    raw = build_dsn(
        hostname="mx.here.test",
        to="alice@here.test",
        original=original,
        arrival=1_700_000_000,
        reports=reports,
        action=action,
        now=1_700_000_100,
        retry_until=1_700_400_000,
    )
    return raw, email.message_from_bytes(raw, policy=email.policy.default)


def groups(message):
    part = next(p for p in message.walk() if p.get_content_type().endswith("delivery-status"))
    return [dict(g.items()) for g in part.get_payload()]


def test_failed_dsn_is_a_multipart_report_with_status_and_headers():
    raw, message = dsn([Report("bob@far.test", FAILED)])
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF throughout
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.here.test"
    assert message["Auto-Submitted"] == "auto-replied"
    kinds = [p.get_content_type() for p in message.iter_parts()]
    assert kinds == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    per_message, recipient = groups(message)
    assert per_message["Reporting-MTA"] == "dns; mx.here.test"
    assert recipient["Final-Recipient"] == "rfc822; bob@far.test"
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "5.1.1"
    assert recipient["Remote-MTA"] == "dns; mx.far.test"
    assert recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@far.test>: user unknown"
    headers = list(message.iter_parts())[2].get_payload(decode=True)
    assert b"Subject: plans\r\n" in headers and b"Message-ID: <m1@here.test>" in headers
    assert b"secret body" not in raw  # the original headers only
    assert "user unknown" in next(iter(message.iter_parts())).get_content()


def test_delayed_dsn_says_until_when():
    deferred = Outcome.local("deferred", "4.4.1", "connect to mx.far.test failed: refused")
    _, message = dsn([Report("bob@far.test", deferred), Report("c@far.test", deferred)], "delayed")
    assert message["Subject"] == "Delayed Mail (still being retried)"
    _, first, second = groups(message)
    assert first["Action"] == second["Action"] == "delayed"
    assert first["Status"] == "4.4.1" and "Will-Retry-Until" in first
    assert second["Final-Recipient"] == "rfc822; c@far.test"


def test_internationalised_headers_use_the_global_types():
    original = "Subject: Grüße\r\nFrom: jörg@here.test\r\n\r\nx\r\n".encode()
    _, message = dsn([Report("bob@far.test", FAILED)], original=original)
    kinds = [p.get_content_type() for p in message.iter_parts()]
    assert kinds[2] == "message/global-headers"


def test_enhanced_status_comes_from_the_reply_or_its_class():
    assert Outcome.reply(552, "5.2.2 mailbox full", "h").status == "5.2.2"
    assert Outcome.reply(550, "no such user", "h").status == "5.0.0"
    assert Outcome.reply(451, "try later", "h").state == "deferred"
    assert Outcome.reply(250, "2.0.0 ok", "h").state == "delivered"
    assert Outcome.reply(550, "4.1.1 mixed up", "h").status == "5.0.0"  # class must agree


def test_dsn_files_go_to_local_mailboxes_or_the_queue(tmp_path):
    directory = Directory(
        {"here.test": DomainConfig(role="mailbox")},
        accounts={"alice@here.test": Account("alice@here.test", "")},
    )
    maildir = MaildirDelivery(tmp_path, "mx.here.test")
    queue = Queue(tmp_path)
    files, problem = dsn_files(b"Subject: x\r\n\r\n", "alice@here.test", directory, maildir, queue)
    assert problem is None
    assert [f.final_path.parent for f in files] == [tmp_path / "mail/here.test/alice/new"]
    assert files[0].data.startswith(b"Return-Path: <>\r\nDelivered-To: alice@here.test\r\n")
    files, problem = dsn_files(b"Subject: x\r\n\r\n", "eve@far.test", directory, maildir, queue)
    assert problem is None and [f.final_path.parent for f in files] == [queue.path]
    assert files[0].data.startswith(b'{"v":1') and b'"sender":""' in files[0].data
    files, problem = dsn_files(b"Subject: x\r\n\r\n", "nobody@here.test", directory, maildir, queue)
    assert files == [] and "not a known address" in problem
