"""POP3 as a client sees it: 110 (STLS) and 995 (TLS from the first byte).

Before TLS the server must neither offer USER nor accept it (RFC 2595 §4,
RFC 8314), and must offer STLS. The small client here also serves the
end-to-end test.
"""

from __future__ import annotations

from mailops.audit.net import ProtocolError
from mailops.audit.probes.base import Probe
from mailops.audit.probes.wire import Wire


class Client:
    def __init__(self, wire: Wire):
        self.wire = wire

    async def status(self) -> tuple[bool, str]:
        line = await self.wire.line()
        if line.startswith("+OK"):
            return True, line
        if line.startswith("-ERR"):
            return False, line
        raise ProtocolError(f"not a POP3 answer: {line[:80]!r}")

    async def command(self, text: str) -> tuple[bool, str]:
        await self.wire.send(text)
        return await self.status()

    async def lines(self) -> list[bytes]:
        """The body of a multi-line answer, dot-unstuffed, up to the lone '.'."""
        out = []
        while True:
            line = await self.wire.raw_line()
            if line == b".":
                return out
            out.append(line[1:] if line.startswith(b"..") else line)

    async def multi(self, text: str) -> tuple[bool, str, list[bytes]]:
        good, status = await self.command(text)
        return good, status, (await self.lines() if good else [])

    async def capabilities(self) -> set[str]:
        good, _, lines = await self.multi("CAPA")
        return (
            {line.decode(errors="replace").split(" ")[0].upper() for line in lines}
            if good
            else set()
        )

    async def login(self, user: str, password: str) -> tuple[bool, str]:
        good, status = await self.command(f"USER {user}")
        if not good:
            return good, status
        return await self.command(f"PASS {password}")


async def probe(p: Probe) -> None:
    wire = await p.connect()
    try:
        await _session(p, Client(wire))
    finally:
        await wire.close()


async def _session(p: Probe, client: Client) -> None:
    p.step = "pop3.greeting"
    good, greeting = await client.status()
    if not good:
        p.fail("pop3.greeting", f"greets with {greeting!r}, not +OK")
        return
    p.ok("pop3.greeting", greeting)
    if p.target.implicit_tls:
        await client.command("QUIT")
        return
    p.step = "auth.before-tls"
    caps = await client.capabilities()
    if not await _check_before_tls(p, client, caps):
        return
    if "STLS" not in caps:
        p.no_starttls("STLS")
        return
    p.step = "tls.handshake"
    await _stls(client)
    client.wire = await p.start_tls(client.wire, lambda context: _reopen(p, context))
    await client.command("QUIT")


async def _check_before_tls(p: Probe, client: Client, caps: set[str]) -> bool:
    """USER must be neither offered nor accepted: some servers accept what they
    do not list, so the command is tried (with a name that is nobody's).
    False when the session cannot go on (it waits for a password now)."""
    accepted, answer = await client.command("USER mailops-audit@mailops-audit.invalid")
    if "USER" in caps or accepted:
        how = "offered and accepted" if accepted else "offered"
        p.fail(
            "auth.before-tls",
            f"USER is {how} before TLS ({answer}): passwords can cross in clear",
            "the runtime allows it only with plaintext_auth_on_loopback in runtime.toml (for "
            f"labs); {p.command('apply')} restores the rendered file",
        )
        if accepted:
            await client.command("QUIT")
        return not accepted
    p.ok("auth.before-tls", f"no USER before STLS ({answer})")
    return True


async def _stls(client: Client) -> None:
    good, answer = await client.command("STLS")
    if not good:
        raise ProtocolError(f"STLS refused: {answer}")


async def _reopen(p: Probe, context) -> Wire:
    client = Client(await p.open())
    await client.status()
    await _stls(client)
    await client.wire.start_tls(context, p.target.fqdn)
    return client.wire
