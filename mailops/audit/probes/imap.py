"""IMAP as a client sees it: 143 (STARTTLS) and 993 (TLS from the first byte).

Before TLS, the server must say LOGINDISABLED and offer no AUTH= mechanism
(RFC 3501 §6.2.3, RFC 8314), and offer STARTTLS; after TLS, logging in must
be possible. The small client here also serves the end-to-end test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailops.audit.net import ProtocolError
from mailops.audit.probes.base import Probe
from mailops.audit.probes.wire import Wire

_LITERAL = re.compile(r"\{(\d+)\}$")
_CAPS = re.compile(r"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)


@dataclass
class Response:
    status: str
    """OK, NO or BAD."""
    text: str
    untagged: list[str] = field(default_factory=list)
    literals: list[bytes] = field(default_factory=list)


class Client:
    """Just enough IMAP for probing and for finding one message."""

    def __init__(self, wire: Wire):
        self.wire = wire
        self.counter = 0

    async def greeting(self) -> str:
        line = await self.wire.line()
        if not line.startswith("* "):
            raise ProtocolError(f"not an IMAP greeting: {line[:80]!r}")
        return line

    async def command(self, text: str) -> Response:
        self.counter += 1
        tag = f"m{self.counter}"
        await self.wire.send(f"{tag} {text}")
        response = Response("", "")
        while True:
            line = await self._line(response)
            if line.startswith(tag + " "):
                status, _, rest = line[len(tag) + 1 :].partition(" ")
                response.status, response.text = status.upper(), rest
                return response
            response.untagged.append(line)

    async def _line(self, response: Response) -> str:
        """A response line with its literals ({n} + n bytes) taken out."""
        line = await self.wire.line()
        while (match := _LITERAL.search(line)) is not None:
            response.literals.append(await self.wire.exactly(int(match.group(1))))
            line = line[: match.start()] + "{}" + await self.wire.line()
        return line

    async def capabilities(self, greeting: str = "") -> set[str]:
        found = _CAPS.search(greeting)
        if found:
            return set(found.group(1).upper().split())
        response = await self.command("CAPABILITY")
        for line in response.untagged:
            if line.upper().startswith("* CAPABILITY "):
                return set(line[len("* CAPABILITY ") :].upper().split())
        return set()

    async def login(self, user: str, password: str) -> Response:
        return await self.command(f"LOGIN {quote(user)} {quote(password)}")


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def login_offered(caps: set[str]) -> bool:
    return "LOGINDISABLED" not in caps or any(c.startswith("AUTH=") for c in caps)


async def probe(p: Probe) -> None:
    wire = await p.connect()
    try:
        await _session(p, Client(wire))
    finally:
        await wire.close()


async def _session(p: Probe, client: Client) -> None:
    p.step = "imap.greeting"
    greeting = await client.greeting()
    if greeting.upper().startswith("* PREAUTH"):
        p.fail("imap.greeting", f"logged in without a password: {greeting}")
        return
    if not greeting.upper().startswith("* OK"):
        p.fail("imap.greeting", f"greets with {greeting!r}, not * OK")
        return
    caps = await client.capabilities(greeting)
    if p.target.implicit_tls:
        _check_login(p, caps, greeting)
        await client.command("LOGOUT")
        return
    p.ok("imap.greeting", greeting)
    p.step = "auth.before-tls"
    _check_before_tls(p, caps)
    if "STARTTLS" not in caps:
        p.no_starttls("STARTTLS")
        return
    p.step = "tls.handshake"
    await _starttls(client)
    client.wire = await p.start_tls(client.wire, lambda context: _reopen(p, context))
    await client.command("LOGOUT")


def _check_before_tls(p: Probe, caps: set[str]) -> None:
    if login_offered(caps):
        offered = sorted(c for c in caps if c.startswith("AUTH=")) or ["LOGIN"]
        p.fail(
            "auth.before-tls",
            f"login is possible before TLS ({', '.join(offered)}; no LOGINDISABLED): "
            "passwords can cross in clear",
            "the runtime allows it only with plaintext_auth_on_loopback in runtime.toml (for "
            f"labs); {p.command('apply')} restores the rendered file",
        )
    else:
        p.ok("auth.before-tls", "LOGINDISABLED until STARTTLS")


def _check_login(p: Probe, caps: set[str], greeting: str) -> None:
    if "LOGINDISABLED" in caps:
        p.fail("imap.greeting", "LOGINDISABLED over TLS: users cannot log in")
    else:
        p.ok("imap.greeting", greeting)


async def _starttls(client: Client) -> None:
    response = await client.command("STARTTLS")
    if response.status != "OK":
        raise ProtocolError(f"STARTTLS refused: {response.status} {response.text}")


async def _reopen(p: Probe, context) -> Wire:
    client = Client(await p.open())
    await client.greeting()
    await _starttls(client)
    await client.wire.start_tls(context, p.target.fqdn)
    return client.wire
