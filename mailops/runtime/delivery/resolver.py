"""DNS for delivery and SPF: MX, address, TXT and PTR lookups with dnspython's async resolver.

Answers are classified the way delivery needs them: a name that does not exist
is a permanent fact (the mail bounces), a server that does not answer is a
temporary one (the mail waits), and "no records of this type" is an answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
import dns.reversename

TIMEOUT = 5.0  # per server and query
LIFETIME = 15.0  # per lookup, over every server and retry
# dnspython caches answers and "no such name" by their TTLs, but not a server that
# failed (SERVFAIL, REFUSED, timeouts). RFC 2308 §7.1 lets a resolver remember
# that for up to five minutes; a few seconds are enough that a domain whose DNS is
# broken costs one lookup, not one per message (SPF of each inbound message, the
# jobs of a deep queue), while a fixed server is asked again soon.
FAILURE_SECONDS = 5.0
FAILURE_LIMIT = 10_000


class DnsError(Exception):
    """A lookup failed; `permanent` when the name does not exist."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class MxRecord:
    preference: int
    host: str  # lowercase, no trailing dot; "" is the null MX's root


def parse_server(text: str) -> tuple[str, int]:
    """`IP`, `IP:PORT` or `[IPv6]:PORT` → (address, port); ValueError if neither."""
    text = text.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, "53"
    address = ipaddress.ip_address(host.rstrip("]")).compressed
    number = int(port or "53")
    if not 0 < number < 65536:
        raise ValueError(f"port out of range: {port}")
    return address, number


def make_resolver(servers: list[str] | None) -> dns.asyncresolver.Resolver:
    """The configured servers, or the system's (/etc/resolv.conf) when None."""
    if servers is None:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(*parse_server(server)) for server in servers
        ]
    resolver.timeout = TIMEOUT
    resolver.lifetime = LIFETIME
    # Honours each answer's TTL: a busy queue asks once per domain, not per message.
    resolver.cache = dns.resolver.LRUCache(10_000)
    return resolver


class Dns:
    """The three lookups delivery makes, with errors reduced to DnsError."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver
        self._failures: dict[tuple[str, str], tuple[float, str]] = {}  # → (until, why)
        # Lookups under way: sessions asking the same at once (the SPF record of a
        # busy sender) share one query.
        self._asking: dict[tuple[str, str], asyncio.Future] = {}

    def forget_failures(self) -> None:
        """New servers (a reload): what the old ones failed to answer is worth asking."""
        self._failures.clear()

    async def mx(self, domain: str) -> list[MxRecord] | None:
        """The domain's MX records; None when it has none (but exists)."""
        answer = await self._query(domain, "MX")
        if answer is None:
            return None
        return [
            MxRecord(r.preference, r.exchange.to_text(omit_final_dot=True).lower()) for r in answer
        ]

    async def addresses(self, host: str, rdtypes: tuple[str, ...] = ("A", "AAAA")) -> list[str]:
        """IPv4 then IPv6 addresses of `host` (or just the `rdtypes` asked for);
        [] when it has none."""
        found: list[str] = []
        errors: list[DnsError] = []
        for rdtype in rdtypes:
            try:
                answer = await self._query(host, rdtype)
            except DnsError as exc:
                errors.append(exc)
                continue
            found += [r.address for r in answer or ()]
        if not found and errors:
            # Both failed, or one failed and the other was empty: say why.
            raise next((e for e in errors if not e.permanent), errors[0])
        return found

    async def txt(self, name: str) -> list[str] | None:
        """The TXT strings of `name`, each record's strings joined; None if none."""
        answer = await self._query(name, "TXT")
        if answer is None:
            return None
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    async def ptr(self, address: str) -> list[str]:
        """The names the reverse zone gives `address` (lowercase, no final dot)."""
        name = dns.reversename.from_address(address).to_text(omit_final_dot=True)
        answer = await self._query(name, "PTR")
        return [r.target.to_text(omit_final_dot=True).lower() for r in answer or ()]

    async def _query(self, name: str, rdtype: str):
        failed = self._failures.get((name, rdtype))
        if failed is not None and failed[0] > time.monotonic():
            raise DnsError(failed[1], permanent=False)  # a new one: tracebacks never pile up
        key = (name, rdtype)
        asking = self._asking.get(key)
        if asking is None:
            asking = asyncio.ensure_future(self._ask(name, rdtype))
            self._asking[key] = asking
            asking.add_done_callback(lambda done: self._asked(key, done))
        return await asyncio.shield(asking)  # one asker cancelled: the others still wait

    def _asked(self, key: tuple[str, str], done: asyncio.Future) -> None:
        self._asking.pop(key, None)
        if done.cancelled():
            return
        error = done.exception()  # retrieved even when every asker was cancelled
        if isinstance(error, DnsError) and not error.permanent:
            self._remember(*key, str(error))

    def _remember(self, name: str, rdtype: str, error: str) -> None:
        now = time.monotonic()
        if len(self._failures) >= FAILURE_LIMIT:
            self._failures = {k: v for k, v in self._failures.items() if v[0] > now}
            if len(self._failures) >= FAILURE_LIMIT:
                self._failures.clear()
        self._failures[(name, rdtype)] = (now + FAILURE_SECONDS, error)

    async def _ask(self, name: str, rdtype: str):
        try:
            return await self.resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            raise DnsError(f"{name}: no such domain", permanent=True) from None
        except dns.resolver.NoAnswer:
            return None
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            text = f"{name} {rdtype}: DNS lookup failed ({_short(exc)})"
            raise DnsError(text, permanent=False) from None
        except dns.exception.DNSException as exc:
            raise DnsError(f"{name} {rdtype}: {_short(exc)}", permanent=False) from None


def _short(exc: Exception) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "timed out"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "no server answered"
    return type(exc).__name__
