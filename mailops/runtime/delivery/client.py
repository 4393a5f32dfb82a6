"""The SMTP client side: sessions to other servers, and what their replies mean.

`deliver` tries the targets in order with the recipients not yet finished: a
server that cannot be reached, or answers 4xx, passes the recipients to the
next target (RFC 5321 §5.1); a 2xx or 5xx for a recipient is final. Every
recipient comes back with an `Outcome`: delivered, failed (bounce) or deferred
(retry).

Sessions are set up by aiosmtplib (connect, EHLO, STARTTLS, AUTH) and then
handed to `Wire`, which sends MAIL, every RCPT and DATA in one write when the
server offers PIPELINING (RFC 2920) and one at a time when it does not.

Connections leave from the address the SMTP listener is bound to, when it is one
address of the target's kind (the address SPF and the MX records name).

Sessions are pooled: after a transaction the connection stays open for a few
seconds and the next message for the same server reuses it (RSET semantics are
implied by a completed transaction), as Postfix's connection cache does. On MX
delivery STARTTLS is opportunistic (RFC 7435): used when offered, not verified,
and if the handshake fails the message goes again in plaintext. Relays and
MTA-STS `enforce` domains get verified TLS or nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiosmtplib

from mailops.runtime.delivery.router import Target
from mailops.runtime.delivery.wire import Reply, Wire, WireError
from mailops.runtime.log import log

IDLE_SECONDS = 5.0  # how long an unused connection is kept for the next message
MAX_USES = 100  # messages per connection before it is closed and opened afresh
_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # never in an address: it would end the command line

State = Literal["delivered", "failed", "deferred"]


@dataclass(frozen=True)
class Outcome:
    """What became of one recipient in one attempt."""

    state: State
    status: str  # RFC 3463 enhanced status code, e.g. "5.1.1"
    diagnostic: str  # RFC 3464 Diagnostic-Code: "smtp; 550 5.1.1 ..." or "x-mailops; ..."
    remote: str | None = None  # the server that answered (host name)

    @classmethod
    def reply(cls, code: int, message: str, remote: str) -> Outcome:
        text = " ".join(message.split())  # one line, as a DSN field must be
        match = _STATUS.match(text)
        klass = str(code)[0]
        if match and match.group(1) == klass:
            status = ".".join(match.groups())
        else:
            status = {"2": "2.0.0", "4": "4.0.0"}.get(klass, "5.0.0")
        state: State = {"2": "delivered", "4": "deferred"}.get(klass, "failed")  # type: ignore[assignment]
        return cls(state, status, f"smtp; {code} {text}"[:900], remote)

    @classmethod
    def local(cls, state: State, status: str, text: str, remote: str | None = None) -> Outcome:
        return cls(state, status, f"x-mailops; {' '.join(text.split())}"[:900], remote)


class SessionError(Exception):
    """The session failed before any recipient got a final answer."""

    def __init__(self, outcome: Outcome, *, stale: bool = False) -> None:
        super().__init__(outcome.diagnostic)
        self.outcome = outcome
        self.stale = stale  # a reused connection the server had already closed


@dataclass(eq=False)
class Connection:
    target: Target
    wire: Wire
    tls: bool
    extensions: dict[str, str]  # EHLO keywords (lowercase) → their parameters
    uses: int = 0
    # Between transactions: every reply read and no envelope open on the server.
    # Only a clean connection goes back to the pool.
    clean: bool = True
    idle_timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def pipelining(self) -> bool:
        return "pipelining" in self.extensions

    def close(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.wire.close()


class NamedContext(ssl.SSLContext):
    """A verifying context that checks the certificate for `server_name` whatever
    address the connection was made to: aiosmtplib names the peer by the address
    we give it, and we connect to the address our own resolver found."""

    server_name: str

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name, session)


def verified_context(ca_file: Path | None, server_name: str | None = None) -> ssl.SSLContext:
    context = (
        NamedContext(ssl.PROTOCOL_TLS_CLIENT)
        if server_name
        else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    )
    if server_name:
        context.server_name = server_name  # type: ignore[attr-defined]
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    else:
        context.load_default_certs()
    return context


def opportunistic_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # RFC 7435: encryption without authentication
    return context


class Pool:
    """Open SMTP sessions by target; see module doc."""

    def __init__(
        self,
        hostname: str,
        *,
        ca_file: Path | None = None,
        connect_timeout: float = 30.0,
        command_timeout: float = 300.0,
        listen: Sequence[str] = (),
    ) -> None:
        self.hostname = hostname
        self.sources = source_addresses(listen)
        self.ca_file = ca_file
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.verified = verified_context(ca_file)
        self.opportunistic = opportunistic_context()
        self._idle: dict[tuple, list[Connection]] = {}
        self._closing: set[asyncio.Task] = set()  # QUITs of idle connections under way
        self.opened = 0  # connections made so far: for tests and benchmarks

    async def acquire(self, target: Target, *, fresh: bool = False) -> tuple[Connection, bool]:
        """A session ready for MAIL FROM, and whether it was reused."""
        idle = self._idle.get(target.pool_key)
        while idle and not fresh:
            conn = idle.pop()
            if conn.idle_timer is not None:
                conn.idle_timer.cancel()
            if conn.wire.ready:
                return conn, True
            conn.close()  # closed by the server, or it spoke out of turn (a 421 goodbye)
        return await self._open(target, starttls=True), False

    def release(self, conn: Connection, *, reusable: bool) -> None:
        conn.uses += 1
        if not (reusable and conn.clean) or conn.uses >= MAX_USES or not conn.wire.ready:
            conn.close()
            return
        idle = self._idle.setdefault(conn.target.pool_key, [])
        idle.append(conn)
        loop = asyncio.get_running_loop()
        conn.idle_timer = loop.call_later(IDLE_SECONDS, self._expire, conn)

    def _expire(self, conn: Connection) -> None:
        idle = self._idle.get(conn.target.pool_key, [])
        if conn in idle:
            idle.remove(conn)
            task = asyncio.get_running_loop().create_task(_quit(conn))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        conns = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        await asyncio.gather(*(_quit(c) for c in conns))

    # ------------------------------------------------------------ opening

    async def _open(self, target: Target, *, starttls: bool) -> Connection:
        implicit = target.tls == "implicit"
        smtp = aiosmtplib.SMTP(
            hostname=target.address,
            port=target.port,
            local_hostname=self.hostname,
            timeout=self.command_timeout,
            use_tls=implicit,
            start_tls=False,
            tls_context=verified_context(self.ca_file, target.host) if implicit else None,
            source_address=self._source(target.address),
        )
        try:
            await smtp.connect(timeout=self.connect_timeout)
            self.opened += 1
            await _hello(smtp)
            tls = implicit
            if not implicit and self._wants_starttls(target, smtp, starttls):
                await self._starttls(smtp, target)
                tls = True
            if target.username:
                await smtp.login(target.username, _read_secret(target.password_file))
            extensions = dict(smtp.esmtp_extensions)
            wire = Wire.adopt(smtp, self.command_timeout)
        except SessionError:
            smtp.close()
            raise
        except ssl.SSLError as exc:
            smtp.close()
            if target.tls == "may" and starttls:
                log("delivery.tls_fallback", host=target.host, address=target.address, error=exc)
                return await self._open(target, starttls=False)
            raise SessionError(_tls_failure(target, exc)) from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            # A wrong relay password is the operator's to fix: wait, do not bounce.
            text = f"authentication as {target.username} refused: {exc.code} {exc.message}"
            raise SessionError(Outcome.local("deferred", "4.7.8", text, target.host)) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            smtp.close()
            raise SessionError(_session_failure(target, exc)) from None
        return Connection(target, wire, tls, extensions)

    def _source(self, address: str) -> tuple[str, int] | None:
        """Where connections to `address` come from: this host's SMTP address of that
        family, the one its SPF record and MX names — or the kernel's choice."""
        ip = ipaddress.ip_address(address)
        source = self.sources.get((ip.version, ip.is_loopback))
        return (source, 0) if source else None

    def _wants_starttls(self, target: Target, smtp: aiosmtplib.SMTP, allowed: bool) -> bool:
        if target.tls == "verify":
            if not smtp.supports_extension("starttls"):
                text = f"{target.host} does not offer STARTTLS, which is required"
                raise SessionError(Outcome.local("deferred", "4.7.5", text, target.host))
            return True
        return target.tls == "may" and allowed and smtp.supports_extension("starttls")

    async def _starttls(self, smtp: aiosmtplib.SMTP, target: Target) -> None:
        context = self.verified if target.tls == "verify" else self.opportunistic
        try:
            await smtp.starttls(server_hostname=target.host, tls_context=context)
        except aiosmtplib.SMTPResponseException as exc:
            # The server offered STARTTLS but refused it: treat as a failed handshake.
            raise ssl.SSLError(f"STARTTLS refused: {exc.code} {exc.message}") from None
        await _hello(smtp)


def source_addresses(listen: Sequence[str]) -> dict[tuple[int, bool], str]:
    """(IP version, loopback) → the address to send from, for a host whose SMTP
    listener is bound to exactly one address of that kind (like Postfix with one
    inet_interfaces address). A wildcard or several addresses: the kernel chooses."""
    by_kind: dict[tuple[int, bool], set[str]] = {}
    for text in listen:
        ip = ipaddress.ip_address(text)
        if not ip.is_unspecified:
            by_kind.setdefault((ip.version, ip.is_loopback), set()).add(ip.compressed)
    return {kind: found.pop() for kind, found in by_kind.items() if len(found) == 1}


async def _hello(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError as exc:
        if exc.code < 500:
            raise
        await smtp.helo()  # a server from before ESMTP


async def _quit(conn: Connection) -> None:
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(5):
            await conn.wire.command(b"QUIT\r\n")
    conn.close()


def _read_secret(path: str | None) -> str:
    if path is None:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SessionError(
            Outcome.local("deferred", "4.3.5", f"cannot read relay password file: {exc.strerror}")
        ) from None


def _tls_failure(target: Target, exc: Exception) -> Outcome:
    text = f"TLS with {target.host} [{target.address}] failed: {exc}"
    return Outcome.local("deferred", "4.7.5", text, target.host)


def _session_failure(target: Target, exc: Exception) -> Outcome:
    where = f"{target.host} [{target.address}]:{target.port}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        # A 5xx greeting or EHLO refusal is this server's, not the domain's answer:
        # skip to the next server, as Postfix's smtp_skip_5xx_greeting does.
        text = f"{where} said: {exc.code} {' '.join(exc.message.split())}"
        return Outcome.local("deferred", "4.4.2", text, target.host)
    if isinstance(exc, TimeoutError | aiosmtplib.SMTPTimeoutError):
        return Outcome.local("deferred", "4.4.2", f"{where}: timed out", target.host)
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return Outcome.local("deferred", "4.4.1", f"connect to {where} failed: {reason}", target.host)


# ---------------------------------------------------------------- transactions


async def transact(
    conn: Connection,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    release: Callable[[], object] | None = None,
) -> dict[str, Outcome]:
    """MAIL, RCPT for each, DATA: the outcome per recipient. SessionError when the
    session broke or a 4xx/421 answered MAIL or DATA (the next server may do better).

    With PIPELINING, MAIL, every RCPT and DATA go in one write and their replies
    are read in order (RFC 2920 §3.1); the message itself still waits for the
    354. Once it is sent, `release` (if given) lets the session carry the next
    transaction, whose commands then follow the message while its reply is on the
    way. Without PIPELINING, each command waits for the reply to the one before.
    """
    refusal = _refusal(conn.target.host, conn.extensions, sender, recipients, message)
    if refusal is not None:
        return dict.fromkeys(recipients, refusal)
    utf8 = not all(a.isascii() for a in (sender, *recipients))
    mail = _mail_command(conn.extensions, sender, message, utf8)
    rcpts = [_line(f"RCPT TO:<{rcpt}>", utf8) for rcpt in recipients]
    conn.clean = False  # until the transaction is known to be over
    try:
        replies = _Replies(conn, [mail, *rcpts, b"DATA\r\n"])
        first = await replies.of(0)
    except WireError as exc:
        # No reply to MAIL, so certainly no 354: nobody has the message, and a
        # fresh connection may safely try again.
        raise SessionError(_lost(conn.target, exc), stale=True) from None
    except (OSError, TimeoutError) as exc:
        raise SessionError(_lost(conn.target, exc)) from None
    try:
        return await _after_mail(conn, first, recipients, replies, message, release)
    except (OSError, TimeoutError) as exc:
        # Lost mid-transaction: nobody is known to have the message; all wait.
        raise SessionError(_lost(conn.target, exc)) from None


class _Replies:
    """The replies to one transaction's commands: claimed all at once when the
    commands went in one write, else asked for one command at a time."""

    def __init__(self, conn: Connection, lines: list[bytes]) -> None:
        self.wire = conn.wire
        self.lines = lines
        self.claims = (
            conn.wire.send(b"".join(lines), replies=len(lines)) if conn.pipelining else None
        )

    async def of(self, index: int) -> Reply:
        if self.claims is None:
            return await self.wire.command(self.lines[index])
        return await self.wire.reply(self.claims[index])


async def _after_mail(
    conn: Connection, mail: Reply, recipients, replies: _Replies, message, release
) -> dict[str, Outcome]:
    host = conn.target.host
    if mail.code // 100 != 2:
        # Pipelined RCPTs and DATA are refused in turn; rather than read those
        # replies the connection is dropped (it stays unclean).
        return _final(mail, host, recipients)
    outcomes: dict[str, Outcome] = {}
    accepted: list[str] = []
    for index, rcpt in enumerate(recipients, start=1):
        reply = await replies.of(index)
        if reply.code // 100 == 2:
            accepted.append(rcpt)
            continue
        outcomes[rcpt] = Outcome.reply(reply.code, reply.text, host)
        if reply.code == 421:  # the server is closing the session
            raise SessionError(outcomes[rcpt])
    if not accepted and not conn.pipelining:
        await _reset(conn)
        return outcomes
    start = await replies.of(len(recipients) + 1)
    if start.code != 354:
        if accepted:
            return outcomes | _final(start, host, accepted)
        await _reset(conn)  # DATA refused for want of a recipient, as it should be
        return outcomes
    if not accepted:
        # A server that says 354 with no recipient: RFC 2920 §3.1 ends it with a lone dot.
        await conn.wire.command(b".\r\n")
        conn.clean = True
        return outcomes
    (end,) = conn.wire.send(_data_block(message), replies=1)
    if release is not None and conn.pipelining:
        conn.clean = True  # the server reads the next MAIL after this message
        release()
    reply = await conn.wire.reply(end)
    conn.clean = True  # the final reply, whatever it says, ends the transaction
    return outcomes | _final(reply, host, accepted)


async def _reset(conn: Connection) -> None:
    """End a transaction that got no recipient, so the session can carry the next."""
    reply = await conn.wire.command(b"RSET\r\n")
    conn.clean = reply.code // 100 == 2


def _final(reply: Reply, host: str, recipients) -> dict[str, Outcome]:
    """One reply that answers for all `recipients`; a 4xx goes to the next server."""
    outcome = Outcome.reply(reply.code, reply.text, host)
    if outcome.state == "deferred":
        raise SessionError(outcome)
    return dict.fromkeys(recipients, outcome)


def _refusal(host, extensions, sender, recipients, message) -> Outcome | None:
    """The Outcome that makes sending pointless, if there is one."""
    limit = extensions.get("size", "")
    if limit.isdigit() and 0 < int(limit) < len(message):
        text = f"message of {len(message)} bytes exceeds the server's limit of {limit}"
        return Outcome.local("failed", "5.3.4", text, host)
    if any(_CONTROL.search(address) for address in (sender, *recipients)):
        return Outcome.local("failed", "5.1.3", "control character in an address", host)
    if not all(a.isascii() for a in (sender, *recipients)) and "smtputf8" not in extensions:
        text = "the server does not accept internationalised addresses (SMTPUTF8)"
        return Outcome.local("failed", "5.6.7", text, host)
    return None


def _mail_command(extensions, sender: str, message: bytes, utf8: bool) -> bytes:
    words = [f"MAIL FROM:<{sender}>"]
    if "size" in extensions:
        words.append(f"SIZE={len(message)}")
    if "8bitmime" in extensions and not message.isascii():
        words.append("BODY=8BITMIME")
    if utf8:
        words.append("SMTPUTF8")
    return _line(" ".join(words), utf8)


def _line(text: str, utf8: bool) -> bytes:
    return (text + "\r\n").encode("utf-8" if utf8 else "ascii")


def _data_block(message: bytes) -> bytes:
    """The message as DATA sends it (RFC 5321 §4.5.2): CRLF line ends, a dot
    doubled at the start of a line, then the line with the lone dot."""
    crlf = message.count(b"\r\n")
    if not message.count(b"\r") == message.count(b"\n") == crlf:  # a bare CR or LF
        message = _LINE_END.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    message = message.replace(b"\r\n.", b"\r\n..")
    if message.startswith(b"."):
        message = b"." + message
    return message + b".\r\n"


def _lost(target: Target, exc: Exception) -> Outcome:
    where = f"{target.host} [{target.address}]:{target.port}"
    if isinstance(exc, TimeoutError):
        return Outcome.local("deferred", "4.4.2", f"{where}: timed out", target.host)
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return Outcome.local("deferred", "4.4.2", f"{where}: {reason}", target.host)


async def deliver(
    pool: Pool,
    targets: Sequence[Target],
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    on_sent: Callable[[], object] | None = None,
) -> dict[str, Outcome]:
    """Try `targets` in order until every recipient has a final answer.

    `on_sent` is called when the message is sent and its session has gone on to
    carry the next one (PIPELINING), so only the final reply is still to come."""
    final: dict[str, Outcome] = {}
    last: Outcome = Outcome.local("deferred", "4.4.1", "no server to try")
    remaining = list(recipients)
    for target in targets:
        try:
            outcomes = await _attempt(pool, target, sender, remaining, message, on_sent)
        except SessionError as exc:
            last = exc.outcome
            continue
        for rcpt, outcome in outcomes.items():
            if outcome.state == "deferred":
                last = outcome
            else:
                final[rcpt] = outcome
        remaining = [r for r in remaining if r not in final]
        if not remaining:
            break
    return final | dict.fromkeys(remaining, last)


async def _attempt(pool, target, sender, recipients, message, on_sent) -> dict[str, Outcome]:
    conn, reused = await pool.acquire(target)
    try:
        return await _on(pool, conn, sender, recipients, message, on_sent)
    except SessionError as exc:
        if not (exc.stale and reused):
            raise
    # The server closed the cached connection while it sat idle: open a new one.
    conn, _ = await pool.acquire(target, fresh=True)
    return await _on(pool, conn, sender, recipients, message, on_sent)


async def _on(pool: Pool, conn: Connection, sender, recipients, message, on_sent):
    """One transaction on `conn`, which then goes back to the pool: after the final
    reply, or as soon as the message is sent when the server pipelines."""
    released = False

    def release() -> None:
        nonlocal released
        if conn.uses + 1 < MAX_USES and conn.wire.ready:  # else it retires after this one
            released = True
            pool.release(conn, reusable=True)
            if on_sent is not None:
                on_sent()

    try:
        outcomes = await transact(conn, sender, recipients, message, release)
    except BaseException:
        # Broken, refused in a way that leaves it unclean, cancelled, or a bug: never
        # back to the pool. Once released it is the next transaction's; a broken wire
        # has closed itself.
        if not released:
            conn.close()
        raise
    if not released:
        pool.release(conn, reusable=True)
    return outcomes
