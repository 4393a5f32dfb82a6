"""Delivery status notifications (RFC 3464): the sender hears of every failure.

A DSN is a multipart/report (RFC 6522) with report-type=delivery-status:
1. text/plain for the human;
2. message/delivery-status: Reporting-MTA, Arrival-Date, then per recipient
   Final-Recipient, Action (failed | delayed), Status, Remote-MTA,
   Diagnostic-Code, Last-Attempt-Date (and Will-Retry-Until when delayed);
3. text/rfc822-headers: the original message's headers (not its body: the
   sender has it, and a bounce should not carry a large attachment back).
Internationalised addresses or headers use the RFC 6533 types instead
(message/global-delivery-status, message/global-headers).

A DSN is sent with the null sender `<>` and never in reply to one (RFC 5321
§6.1), which is what stops bounce loops.
"""

from __future__ import annotations

import email.utils
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mailops.runtime.delivery.client import Outcome
from mailops.runtime.directory import Directory
from mailops.runtime.durable import PendingFile
from mailops.runtime.queue import Queue
from mailops.runtime.smtp.headers import header_block
from mailops.runtime.store.maildir import MaildirDelivery

Action = Literal["failed", "delayed"]


@dataclass(frozen=True)
class Report:
    recipient: str
    outcome: Outcome


def _date(when: float) -> str:
    return email.utils.formatdate(when, localtime=False, usegmt=True)


def _headers_part(original: bytes) -> tuple[str, bytes]:
    block = header_block(original).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    kind = "text/rfc822-headers" if block.isascii() else "message/global-headers"
    return kind, block.rstrip(b"\r\n") + b"\r\n"


def _human_text(action: Action, hostname: str, reports: Sequence[Report], until: float | None):
    if action == "failed":
        lead = (
            f"This is the mail system at {hostname}.\r\n\r\n"
            "Your message could not be delivered to one or more recipients.\r\n"
            "It is attached below (headers only). The mail system said:\r\n\r\n"
        )
    else:
        lead = (
            f"This is the mail system at {hostname}.\r\n\r\n"
            "Your message has not been delivered yet to the recipients below.\r\n"
            f"It will be retried until {_date(until or 0)}; you need do nothing.\r\n"
            "The mail system said:\r\n\r\n"
        )
    lines = [f"<{r.recipient}>: {r.outcome.diagnostic.partition('; ')[2]}" for r in reports]
    return lead + "\r\n".join(lines) + "\r\n"


def _status_part(
    action: Action,
    hostname: str,
    arrival: float,
    reports: Sequence[Report],
    until: float | None,
    now: float,
) -> str:
    fields = [f"Reporting-MTA: dns; {hostname}", f"Arrival-Date: {_date(arrival)}", ""]
    for report in reports:
        kind = "rfc822" if report.recipient.isascii() else "utf-8"
        fields.append(f"Final-Recipient: {kind}; {report.recipient}")
        fields.append(f"Action: {action}")
        fields.append(f"Status: {report.outcome.status}")
        if report.outcome.remote:
            fields.append(f"Remote-MTA: dns; {report.outcome.remote}")
        fields.append(f"Diagnostic-Code: {report.outcome.diagnostic}")
        fields.append(f"Last-Attempt-Date: {_date(now)}")
        if action == "delayed" and until is not None:
            fields.append(f"Will-Retry-Until: {_date(until)}")
        fields.append("")
    return "\r\n".join(fields)


def build_dsn(
    *,
    hostname: str,
    to: str,
    original: bytes,
    arrival: float,
    reports: Sequence[Report],
    action: Action,
    now: float,
    retry_until: float | None = None,
) -> bytes:
    """The DSN message (CRLF line endings) telling `to` about `reports`."""
    boundary = f"{secrets.token_hex(8)}/{hostname}"
    headers_kind, headers = _headers_part(original)
    status = _status_part(action, hostname, arrival, reports, retry_until, now)
    global_ = headers_kind != "text/rfc822-headers" or not status.isascii()
    status_kind = "message/global-delivery-status" if global_ else "message/delivery-status"
    subject = (
        "Undelivered Mail Returned to Sender"
        if action == "failed"
        else "Delayed Mail (still being retried)"
    )
    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
        f"To: <{to}>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {_date(now)}\r\n"
        f"Message-ID: <{secrets.token_hex(12)}@{hostname}>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f'\tboundary="{boundary}"\r\n'
        "\r\n"
        "This is a MIME-encapsulated message.\r\n\r\n"
    )
    parts = [
        f"--{boundary}\r\nContent-Description: Notification\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        + _human_text(action, hostname, reports, retry_until),
        f"--{boundary}\r\nContent-Description: Delivery report\r\n"
        f"Content-Type: {status_kind}\r\n\r\n" + status,
        f"--{boundary}\r\nContent-Description: Undelivered message headers\r\n"
        f"Content-Type: {headers_kind}\r\n\r\n",
    ]
    body = "\r\n".join(parts[:2]).encode() + b"\r\n" + parts[2].encode() + headers
    return head.encode() + body + f"\r\n--{boundary}--\r\n".encode()


def dsn_files(
    dsn: bytes, to: str, directory: Directory, maildir: MaildirDelivery, queue: Queue
) -> tuple[list[PendingFile], str | None]:
    """The files that deliver a DSN to `to`: straight into its mailboxes when they
    are here, else one queue entry with the null sender. Returns the files and a
    reason when there is nowhere to deliver (an unknown local address)."""
    domain = to.rpartition("@")[2].lower()
    if not directory.serves(domain):
        return [queue.prepare("", [to], dsn, source={"service": "bounce"})[1]], None
    route = directory.route(to)
    if route is None:
        return [], f"{to} is not a known address here"
    files: list[PendingFile] = []
    for account in route.mailboxes:
        # No quota check: a notice of lost mail is small and must not be lost itself.
        copy = maildir.prepare(
            account.domain,
            account.user,
            dsn,
            return_path="",
            delivered_to=account.address,
            quota=None,
        )
        files.append(copy)  # type: ignore[arg-type]  # no quota: never QuotaExceeded
    remote = list(route.remote) + ([to] if route.forward else [])
    if remote:
        files.append(queue.prepare("", remote, dsn, source={"service": "bounce"})[1])
    return files, None
