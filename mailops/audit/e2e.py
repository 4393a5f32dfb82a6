"""End to end (`--e2e`): does mail actually flow?

For each selected domain with a usable login, one message goes from one of its
users to a user of another domain (on another host where there is one, so the
message leaves its host and gets DKIM-signed): submitted on 587 with STARTTLS
and AUTH, then looked for by IMAP and by POP3 until a timeout, its
DKIM-Signature verified against DNS (through the resolver, as a receiver
would), then deleted.

Logins come from the spec's secret references (`password: {env: …}` or
`{file: …}`), or `--as user@domain` with the password in MAILOPS_AUDIT_PASSWORD
(needed for users the spec knows only by hash).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import os
import secrets
import time
from dataclasses import dataclass

import dkim
import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from mailops.audit.context import AuditContext, domain_group
from mailops.audit.findings import Finding, Severity, fail
from mailops.audit.net import ProtocolError, describe
from mailops.audit.probes import imap, pop3, smtp, tls
from mailops.audit.probes.wire import Wire
from mailops.errors import MailopsError
from mailops.render.host import domain_roles

PASSWORD_ENV = "MAILOPS_AUDIT_PASSWORD"
TOKEN_HEADER = "X-Mailops-Audit"
POLL = 0.2


@dataclass(frozen=True)
class Login:
    address: str
    password: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True)
class Flow:
    sender: Login
    recipient: Login
    token: str

    @property
    def subject(self) -> str:
        return f"{self.sender.address} → {self.recipient.address}"


class Failed(Exception):
    """A step failed; its finding is already made."""


# ---------------------------------------------------------------- who sends to whom


def logins(ctx: AuditContext) -> tuple[list[Login], list[Finding]]:
    spec, found, findings = ctx.spec, [], []
    for address in ctx.options.e2e_as:
        address = address.lower()
        local, _, domain = address.rpartition("@")
        user = spec.domains.get(domain, None)
        if user is None or local not in user.users:
            text = f"--as {address}: no such user in the spec"
            findings.append(fail("e2e.credentials", address, text, "", "audit"))
            continue
        password = _spec_password(ctx, domain, local) or os.environ.get(PASSWORD_ENV)
        if password is None:
            text = f"no password for {address}: the spec has only its hash"
            fix = f"set {PASSWORD_ENV} to its password"
            findings.append(fail("e2e.credentials", address, text, fix, "audit"))
            continue
        found.append(Login(address, password))
    if not ctx.options.e2e_as:
        for domain in ctx.domains:
            for local in sorted(spec.domains[domain].users):
                password = _spec_password(ctx, domain, local)
                if password is not None:
                    found.append(Login(f"{local}@{domain}", password))
    return found, findings


def _spec_password(ctx: AuditContext, domain: str, local: str) -> str | None:
    ref = ctx.spec.domains[domain].users[local].password
    if ref is None:
        return None
    try:
        return ref.resolve(ctx.loaded.base_dir)
    except MailopsError:
        return None


def flows(ctx: AuditContext, found: list[Login]) -> list[Flow]:
    """One message per domain that has a login: to another domain's user whose
    mailboxes are on another host if possible (so the message is signed on its
    way out), else another domain, else the same domain."""
    out = []
    senders: dict[str, Login] = {}
    for login in found:
        if login.domain in ctx.domains:
            senders.setdefault(login.domain, login)
    for domain, sender in senders.items():
        home = ctx.spec.domains[domain].mailbox_host
        others = [x for x in found if x.domain != domain]
        far = [x for x in others if ctx.spec.domains[x.domain].mailbox_host != home]
        near = [x for x in found if x.domain == domain and x != sender]
        recipient = (far or others or near or [sender])[0]
        out.append(Flow(sender, recipient, secrets.token_hex(8)))
    return out


async def run(ctx: AuditContext) -> list[Finding]:
    found, findings = logins(ctx)
    planned = flows(ctx, found)
    if not planned and not findings:
        findings.append(
            fail(
                "e2e.credentials",
                "logins",
                "no user with a password the audit can use",
                "give a user `password: {env: NAME}` or `{file: path}` in the spec, or pass "
                f"--as user@domain with {PASSWORD_ENV} set",
                "audit",
            )
        )
    results = await asyncio.gather(*(E2E(ctx, flow).run() for flow in planned))
    return findings + [f for result in results for f in result]


# ---------------------------------------------------------------- one message


class E2E:
    def __init__(self, ctx: AuditContext, flow: Flow):
        self.ctx, self.flow = ctx, flow
        self.group = domain_group(flow.sender.domain)
        self.findings: list[Finding] = []
        self.step = "e2e.submit"
        """The step under way: a network failure is charged to it."""

    def _add(self, severity: Severity, check: str, text: str, fix: str = "") -> None:
        self.findings.append(Finding(check, self.flow.subject, severity, text, fix, self.group))

    async def run(self) -> list[Finding]:
        raw = None
        try:
            await self.submit()
            self.step = "e2e.imap"
            raw = await self.find_by_imap()
            self.step = "e2e.pop3"
            raw = await self.find_by_pop3() or raw
        except Failed:
            pass
        except (OSError, TimeoutError, EOFError, asyncio.IncompleteReadError, ProtocolError) as exc:
            self._add("fail", self.step, describe(exc))  # the network: a finding like the rest
        if raw is not None:
            await self.verify_dkim(raw)
        return self.findings

    # ------------------------------------------------------------ hosts and connections

    def _host(self, login: Login):
        host_id = self.ctx.spec.domains[login.domain].mailbox_host
        return host_id, self.ctx.host(host_id)

    def _context(self, host_id: str):
        if tls.self_signed(self.ctx, host_id):
            return tls.unverified_context()
        return tls.verifying_context(self.ctx.options.ca_file)

    async def _open(self, host_id: str, service: str, implicit: bool) -> Wire:
        host = self.ctx.host(host_id)
        context = self._context(host_id) if implicit else None
        return await Wire.open(
            host.addresses()[0],
            getattr(host.ports, service),
            self.ctx.policy.timeout,
            context,
            host.fqdn if implicit else None,
        )

    # ------------------------------------------------------------ steps

    async def submit(self) -> None:
        host_id, host = self._host(self.flow.sender)
        service = next((s for s in ("submission", "submissions") if s in host.services), None)
        if service is None:
            self._add("fail", "e2e.submit", f"{host_id} offers no submission port")
            raise Failed
        started = time.monotonic()
        wire = await self._open(host_id, service, service == "submissions")
        try:
            reply = await self._send(wire, host_id, service)
        finally:
            await wire.close()
        port = getattr(host.ports, service)
        took = time.monotonic() - started
        self._add(
            "ok", "e2e.submit", f"accepted on {host_id} port {port} in {took:.1f} s ({reply})"
        )

    async def _send(self, wire: Wire, host_id: str, service: str):
        ehlo = await smtp.start(wire)
        if service == "submission":
            if "STARTTLS" not in smtp.extensions(ehlo):
                self._add("fail", "e2e.submit", "no STARTTLS on the submission port")
                raise Failed
            await smtp.starttls(wire)
            await wire.start_tls(self._context(host_id), self.ctx.host(host_id).fqdn)
            await wire.command(f"EHLO {smtp.HELO_NAME}")
        sender, recipient = self.flow.sender, self.flow.recipient
        plain = base64.b64encode(f"\0{sender.address}\0{sender.password}".encode()).decode()
        reply = await wire.command(f"AUTH PLAIN {plain}")
        if reply.code != 235:
            self._add(
                "fail",
                "e2e.submit",
                f"login as {sender.address} refused ({reply})",
                f"check the password in the spec and {self.ctx.spec_command('apply', host_id)}",
            )
            raise Failed
        for command in (f"MAIL FROM:<{sender.address}>", f"RCPT TO:<{recipient.address}>", "DATA"):
            reply = await wire.command(command)
            if reply.code >= 400:
                self._add("fail", "e2e.submit", f"{command.split(':')[0]} refused ({reply})")
                raise Failed
        await wire.send(self.message() + b".\r\n")
        reply = await wire.reply()
        if reply.code != 250:
            self._add("fail", "e2e.submit", f"the message was refused ({reply})")
            raise Failed
        await wire.send("QUIT")
        return reply

    def message(self) -> bytes:
        flow = self.flow
        lines = [
            f"From: <{flow.sender.address}>",
            f"To: <{flow.recipient.address}>",
            f"Subject: mailops audit {flow.token}",
            f"Date: {email.utils.formatdate(localtime=False)}",
            f"Message-ID: <mailops-audit-{flow.token}@{flow.sender.domain}>",
            f"{TOKEN_HEADER}: {flow.token}",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=us-ascii",
            "",
            "A test message from `mailops audit --e2e`; it deletes it once found.",
        ]
        return "".join(line + "\r\n" for line in lines).encode()

    def _deadline(self) -> float:
        return time.monotonic() + self.ctx.options.e2e_timeout

    async def find_by_imap(self) -> bytes | None:
        host_id, host = self._host(self.flow.recipient)
        service = next((s for s in ("imaps", "imap") if s in host.services), None)
        if service is None:
            return None
        client = imap.Client(await self._open(host_id, service, service == "imaps"))
        started = time.monotonic()
        try:
            await client.greeting()
            if service == "imap":
                await client.command("STARTTLS")
                await client.wire.start_tls(self._context(host_id), host.fqdn)
            await self._imap_login(client, host_id)
            uid = await self._imap_search(client)
            fetched = await client.command(f"UID FETCH {uid} BODY.PEEK[]")
            raw = fetched.literals[0] if fetched.literals else None
            if not self._pop3_host():
                await client.command(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)")
                await client.command("EXPUNGE")
                self._add("ok", "e2e.cleanup", "deleted by IMAP")
            await client.command("LOGOUT")
        finally:
            await client.wire.close()
        took = time.monotonic() - started
        self._add("ok", "e2e.imap", f"found by IMAP on {host_id} after {took:.1f} s")
        return raw

    async def _imap_login(self, client: imap.Client, host_id: str) -> None:
        recipient = self.flow.recipient
        response = await client.login(recipient.address, recipient.password)
        if response.status != "OK":
            self._add(
                "fail", "e2e.imap", f"IMAP login as {recipient.address} refused ({response.text})"
            )
            raise Failed
        selected = await client.command("SELECT INBOX")
        if selected.status != "OK":
            raise ProtocolError(f"SELECT INBOX: {selected.status} {selected.text}")

    async def _imap_search(self, client: imap.Client) -> str:
        deadline = self._deadline()
        while True:
            found = await client.command(f"UID SEARCH HEADER {TOKEN_HEADER} {self.flow.token}")
            uids = [
                word
                for line in found.untagged
                if line.upper().startswith("* SEARCH")
                for word in line.split()[2:]
            ]
            if uids:
                return uids[0]
            if time.monotonic() > deadline:
                self._not_arrived("e2e.imap")
            await asyncio.sleep(POLL)
            await client.command("NOOP")

    def _not_arrived(self, check: str) -> None:
        host_id, _ = self._host(self.flow.sender)
        self._add(
            "fail",
            check,
            f"not delivered within {self.ctx.options.e2e_timeout:.0f} s",
            f"on {host_id}: `mailops queue list` shows whether it waits in the queue, and why",
        )
        raise Failed

    def _pop3_host(self) -> str | None:
        _, host = self._host(self.flow.recipient)
        return next((s for s in ("pop3s", "pop3") if s in host.services), None)

    async def find_by_pop3(self) -> bytes | None:
        service = self._pop3_host()
        if service is None:
            return None
        host_id, host = self._host(self.flow.recipient)
        deadline, started = self._deadline(), time.monotonic()
        while True:
            raw = await self._pop3_once(host_id, host, service)
            if raw is not None:
                took = time.monotonic() - started
                self._add("ok", "e2e.pop3", f"found by POP3 on {host_id} after {took:.1f} s")
                self._add("ok", "e2e.cleanup", "deleted by POP3")
                return raw
            if time.monotonic() > deadline:
                self._not_arrived("e2e.pop3")
            await asyncio.sleep(POLL)

    async def _pop3_once(self, host_id: str, host, service: str) -> bytes | None:
        """One POP3 session: find the message, fetch it, delete it (at QUIT)."""
        client = pop3.Client(await self._open(host_id, service, service == "pop3s"))
        try:
            await client.status()
            if service == "pop3":
                await client.command("STLS")
                await client.wire.start_tls(self._context(host_id), host.fqdn)
            recipient = self.flow.recipient
            good, answer = await client.login(recipient.address, recipient.password)
            if not good:
                self._add(
                    "fail", "e2e.pop3", f"POP3 login as {recipient.address} refused ({answer})"
                )
                raise Failed
            raw = await self._pop3_find(client)
            await client.command("QUIT")
            return raw
        finally:
            await client.wire.close()

    async def _pop3_find(self, client: pop3.Client) -> bytes | None:
        good, _, listing = await client.multi("LIST")
        marker = f"{TOKEN_HEADER}: {self.flow.token}".encode().lower()
        for line in listing if good else []:
            number = line.split()[0].decode()
            _, _, head = await client.multi(f"TOP {number} 0")
            if any(marker == h.lower().strip() for h in head):
                _, _, body = await client.multi(f"RETR {number}")
                await client.command(f"DELE {number}")
                return b"".join(part + b"\r\n" for part in body)
        return None

    # ------------------------------------------------------------ DKIM

    async def verify_dkim(self, raw: bytes) -> None:
        sender_domain = self.flow.sender.domain
        selectors = self.ctx.spec.domains[sender_domain].dkim.selectors
        home, _ = self._host(self.flow.sender)
        if not selectors:
            self._add("ok", "e2e.dkim", f"not checked: {sender_domain} has no DKIM selector")
            return
        if domain_roles(self.ctx.spec, home).get(self.flow.recipient.domain) == "mailbox":
            self._add(
                "ok",
                "e2e.dkim",
                f"not checked: the message stayed on {home} (mail is signed when it leaves a host)",
            )
            return
        if b"dkim-signature:" not in raw.lower():
            self._add(
                "fail",
                "e2e.dkim",
                f"the message is not DKIM-signed although {sender_domain} has selector "
                f"{selectors[0].name}",
                f"dkim_selector/dkim_key of {sender_domain} in {home}'s runtime.toml: "
                f"{self.ctx.spec_command('apply', home)} restores them",
            )
            return
        verified = await asyncio.to_thread(dkim.verify, raw, dnsfunc=self._txt)
        if verified:
            self._add("ok", "e2e.dkim", f"DKIM-Signature of {sender_domain} verified through DNS")
        else:
            self._add(
                "fail",
                "e2e.dkim",
                f"the DKIM-Signature of {sender_domain} does not verify against its key in DNS",
                "see the dns.dkim finding: publish the record of the key the host signs with",
            )

    def _txt(self, name: bytes, timeout: float = 5) -> bytes | None:
        """dkimpy's DNS hook: TXT through the audit's resolver (runs in a thread)."""
        server = self.ctx.resolver
        query = dns.message.make_query(name.decode(), dns.rdatatype.TXT)
        try:
            response, _ = dns.query.udp_with_fallback(
                query, server.address, timeout=self.ctx.policy.timeout, port=server.port
            )
        except (dns.exception.DNSException, OSError):
            return None
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(rrset[0].strings)  # type: ignore[attr-defined]
        return None
