"""What the MTA does with each SMTP command: who may send, who may receive,
and where an accepted message goes. aiosmtpd calls these `handle_*` hooks.

The promise kept here: `250` to DATA only after every copy (each local mailbox
and one queue entry for everything else) is on disk — a single group commit.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from mailops.runtime.directory import Route
from mailops.runtime.durable import CommitError
from mailops.runtime.log import log
from mailops.runtime.smtp import headers
from mailops.runtime.smtp.policy import (
    BAD_ADDRESS,
    RELAY_DENIED,
    recipient_syntax_ok,
    sender_syntax_ok,
    split,
)
from mailops.runtime.store.maildir import QuotaExceeded

if TYPE_CHECKING:
    from mailops.runtime.server import Runtime

MAX_RECIPIENTS = 1000


class Acceptor:
    """The rules both front doors share; MX and Submission differ in who may
    send and where mail may go."""

    service = "smtp"

    def __init__(self, runtime: Runtime):
        self.rt = runtime

    def __dir__(self):
        # aiosmtpd looks through dir(handler) for handle_*/auth_* on every new
        # connection; the short list keeps that cheap (see Session.__dir__).
        return [n for n in dir(type(self)) if n.startswith(("handle_", "auth_"))]

    # ------------------------------------------------------------ policy hooks

    def sender_problem(self, session, address: str) -> str | None:
        return None

    def outside_route(self, address: str) -> Route | None:
        """Route for a recipient in a domain this host does not serve (None: refuse)."""
        return None

    def protocol(self, session) -> str:
        tls = session.ssl is not None or getattr(session, "implicit_tls", False)
        return "ESMTPS" if tls else "ESMTP"

    def extra_headers(self, session, envelope, data: bytes, message_id: str) -> bytes:
        return headers.received(
            helo=session.host_name or "unknown",
            client_ip=_ip(session),
            hostname=self.rt.config.hostname,
            protocol=self.protocol(session),
            queue_id=message_id,
            rcpt=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None,
        )

    # ------------------------------------------------------------ aiosmtpd hooks

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        """Advertise PIPELINING (RFC 2920): aiosmtpd reads and answers commands
        strictly in order, so a client may send MAIL, RCPT and DATA at once and
        save two round trips per message. DATA still ends only at CRLF.CRLF."""
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if address == "<>":
            address = ""  # the null sender of bounces, as aiosmtpd passes it through
        if not sender_syntax_ok(address):
            return "553 5.1.7 Sender address rejected: not a valid address"
        problem = self.sender_problem(session, address)
        if problem:
            log("smtp.sender_refused", service=self.service, client=_ip(session), sender=address)
            return problem
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.routes = {}
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        routes: dict[str, Route] = getattr(envelope, "routes", {})
        if len(routes) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        if not recipient_syntax_ok(address):
            return BAD_ADDRESS
        _, domain = split(address)
        directory = self.rt.directory
        if directory.serves(domain):
            route = directory.route(address)
            if route is None:
                return f"550 5.1.1 <{address}>: Recipient address rejected: user unknown"
        else:
            route = self.outside_route(address)
            if route is None:
                log("smtp.relay_refused", client=_ip(session), rcpt=address)
                return RELAY_DENIED
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        routes[address] = route
        envelope.routes = routes
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server, session, envelope):
        data: bytes = envelope.original_content
        if headers.bare_line_ending(data):
            log("smtp.bare_line_ending", client=_ip(session), sender=envelope.mail_from)
            return "550 5.6.0 Message contains bare CR or LF characters (RFC 5321 2.3.8)"
        message_id = secrets.token_hex(8)
        data = headers.without_return_path(data)
        message = self.extra_headers(session, envelope, data, message_id) + data
        files, queue_id, problem = self._copies(envelope, message)
        if problem:
            return problem
        try:
            await self.rt.committer.commit(files)
        except CommitError as exc:
            self._abandon(files)
            log("smtp.commit_failed", id=message_id, error=exc)
            return "451 4.3.0 Temporary failure storing the message; try again later"
        if queue_id is not None:
            self.rt.delivery.queued(queue_id)  # on disk now: the delivery workers may start
        self.rt.store.delivered(files)  # wake POP3/IMAP sessions on the mailboxes that got it
        log(
            "smtp.accepted",
            service=self.service,
            id=message_id,
            queue_id=queue_id,
            client=_ip(session),
            sender=envelope.mail_from,
            rcpts=len(envelope.rcpt_tos),
            size=len(message),
        )
        return f"250 2.0.0 OK queued as {message_id}"

    def _copies(self, envelope, message: bytes):
        """Files to commit: one per local mailbox, one queue entry for the rest."""
        files = []
        delivered: set[str] = set()
        outside: dict[str, None] = {}
        for rcpt, route in envelope.routes.items():
            for account in route.mailboxes:
                if account.address in delivered:
                    continue  # one copy per mailbox, however many of its addresses were named
                delivered.add(account.address)
                copy = self.rt.maildir.prepare(
                    account.domain,
                    account.user,
                    message,
                    return_path=envelope.mail_from,
                    delivered_to=account.address,
                    quota=account.quota,
                )
                if isinstance(copy, QuotaExceeded):
                    self._abandon(files)  # give back what earlier copies reserved
                    return [], None, f"452 4.2.2 <{rcpt}>: mailbox full"
                files.append(copy)
            outside.update(dict.fromkeys(route.remote))
            if route.forward:
                outside[rcpt] = None
        queue_id = None
        if outside:
            queue_id, entry = self.rt.queue.prepare(
                envelope.mail_from, list(outside), message, source={"service": self.service}
            )
            files.append(entry)
        return files, queue_id, None

    def _abandon(self, files) -> None:
        for pending in files:
            self.rt.maildir.abandon(pending)


class MX(Acceptor):
    """Port 25: mail for the domains this host serves, from anyone; nothing else."""

    async def handle_DATA(self, server, session, envelope):
        # SPF and DKIM verdicts on the message as it arrived; information, never a refusal.
        envelope.auth_results = await self.rt.delivery.authentication_results(
            envelope.original_content,
            client_ip=_ip(session),
            helo=session.host_name or "",
            sender=envelope.mail_from,
        )
        # Verdicts naming this host that came with the message are forged (RFC 8601 §5).
        envelope.original_content = self.rt.delivery.without_forged_results(
            envelope.original_content
        )
        return await super().handle_DATA(server, session, envelope)

    def extra_headers(self, session, envelope, data: bytes, message_id: str) -> bytes:
        received = super().extra_headers(session, envelope, data, message_id)
        return getattr(envelope, "auth_results", b"") + received


class Submission(Acceptor):
    """Ports 587/465: authenticated users, sending as themselves, to anywhere."""

    service = "submission"

    def sender_problem(self, session, address: str) -> str | None:
        account = session.auth_data
        if account is None:
            return "530 5.7.0 Authentication required"
        if address == "" or not self.rt.directory.may_send_as(account, address):
            return f"553 5.7.1 <{address}>: sender address not owned by {account.address}"
        return None

    def outside_route(self, address: str) -> Route | None:
        return Route(remote=(address.lower(),))

    def protocol(self, session) -> str:
        return super().protocol(session) + "A"

    def extra_headers(self, session, envelope, data: bytes, message_id: str) -> bytes:
        trace = super().extra_headers(session, envelope, data, message_id)
        return trace + headers.submission_headers(data, self.rt.config.hostname)


def _ip(session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else "unknown"
