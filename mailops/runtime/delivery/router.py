"""Where a recipient's mail goes, and in which order the servers are tried.

Per recipient, one of (DESIGN.md §4 "Outbound"):
- local:  a domain this host keeps mailboxes for (delivered into the Maildir);
- backup: a domain this host is a backup MX for: forwarded to its better MX hosts;
- relay:  the sender's domain names a relay (smarthost): everything goes there;
- mx:     MX lookup, lowest preference first, equal preferences shuffled
          (RFC 5321 §5.1), A/AAAA of the domain itself when it has no MX,
          null MX (RFC 7505) a permanent failure.
The relay follows the *sender's* domain, like Postfix's sender-dependent relay:
a domain is given a relay because its mail must leave that way (SPF, a provider
that blocks port 25). Bounces and forwards of outside senders go by MX.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Literal

from mailops.runtime.config import RuntimeConfig
from mailops.runtime.delivery.mtasts import Policy
from mailops.runtime.delivery.resolver import Dns, DnsError, MxRecord

SMTP_PORT = 25
CACHE_SECONDS = 5.0  # how long one destination's servers are reused without asking again
CACHE_LIMIT = 10_000
MAX_ADDRESSES = 10  # per attempt, over every MX host: bounded work for a dead domain

TlsMode = Literal["may", "verify", "implicit", "none"]
"""may: STARTTLS when offered, unverified, plaintext if it fails (RFC 7435);
verify: STARTTLS required, certificate verified for the host name;
implicit: TLS from the first byte, verified; none: never TLS."""


class RouteError(Exception):
    """No server to try: `permanent` failures bounce, the others wait."""

    def __init__(self, status: str, text: str) -> None:
        super().__init__(text)
        self.status = status  # RFC 3463 enhanced status code
        self.text = text

    @property
    def permanent(self) -> bool:
        return self.status.startswith("5")


@dataclass(frozen=True)
class Destination:
    kind: Literal["local", "backup", "relay", "mx"]
    name: str  # the relay's name, or the recipient domain

    @property
    def key(self) -> str:
        """What concurrency limits count: one relay, or one recipient domain."""
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Target:
    """One server to try: `host` names it (TLS, logs), `address` is where to connect."""

    host: str
    address: str
    port: int = SMTP_PORT
    tls: TlsMode = "may"
    username: str | None = None
    password_file: str | None = None

    @property
    def pool_key(self) -> tuple:
        return (self.address, self.port, self.tls, self.host, self.username)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def destination(sender: str, recipient: str, config: RuntimeConfig) -> Destination:
    domain = domain_of(recipient)
    served = config.domains.get(domain)
    if served is not None:
        return Destination("local" if served.role == "mailbox" else "backup", domain)
    own = config.domains.get(domain_of(sender)) if sender else None
    if own is not None and own.role == "mailbox" and own.relay:
        return Destination("relay", own.relay)
    return Destination("mx", domain)


def order_mx(records: Sequence[MxRecord], rng: random.Random) -> list[MxRecord]:
    """Lowest preference first; hosts of equal preference in random order, which
    spreads the load as RFC 5321 §5.1 asks."""
    ordered: list[MxRecord] = []
    by_pref = sorted(records, key=lambda r: r.preference)
    for _, group in groupby(by_pref, key=lambda r: r.preference):
        same = list(group)
        rng.shuffle(same)
        ordered += same
    return ordered


PolicyLookup = Callable[[str], Awaitable[Policy | None]]


class Router:
    """Turns a destination into the servers to try, in order."""

    def __init__(
        self,
        dns: Dns,
        config: Callable[[], RuntimeConfig],
        *,
        policy: PolicyLookup | None = None,
        rng: random.Random | None = None,
        port: int = SMTP_PORT,
    ) -> None:
        self.dns = dns
        self.config = config
        self.policy = policy
        self.rng = rng or random.SystemRandom()
        self.port = port
        self._cache: dict[Destination, tuple[float, list[Target]]] = {}
        self._lookups: dict[Destination, asyncio.Future[list[Target]]] = {}

    async def targets(self, dest: Destination) -> list[Target]:
        """The servers to try, best first; RouteError when there are none."""
        cached = self._cache.get(dest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        # The jobs of a deep queue start together: one lookup answers all of them,
        # so a domain's MX, addresses and MTA-STS policy are asked for once, not
        # once per job. shield: a cancelled job does not cancel the others' answer.
        lookup = self._lookups.get(dest)
        if lookup is None:
            lookup = asyncio.ensure_future(self._lookup_and_cache(dest))
            self._lookups[dest] = lookup
            lookup.add_done_callback(lambda done: self._looked_up(dest, done))
        return await asyncio.shield(lookup)

    async def _lookup_and_cache(self, dest: Destination) -> list[Target]:
        targets = await self._lookup(dest)
        # A busy queue sends many messages to one domain within seconds: reuse the
        # answer briefly (DNS answers are cached anyway; this saves the work around them).
        now = time.monotonic()
        self._cache[dest] = (now + CACHE_SECONDS, targets)
        if len(self._cache) > CACHE_LIMIT:
            self._cache = {d: c for d, c in self._cache.items() if c[0] > now}
        return targets

    def _looked_up(self, dest: Destination, done: asyncio.Future) -> None:
        self._lookups.pop(dest, None)
        if not done.cancelled():
            done.exception()  # retrieved, even if every job that asked was cancelled

    async def _lookup(self, dest: Destination) -> list[Target]:
        if dest.kind == "relay":
            return await self._relay(dest.name)
        if dest.kind == "backup":
            names = self.config().domains[dest.name].primary_mx
            hosts = [h.lower().rstrip(".") for h in names if not self._is_me(h)]
            if not hosts:
                raise RouteError("4.3.5", f"no primary MX configured for {dest.name}")
            return await self._resolve(hosts, "may")
        return await self._mx(dest.name)

    async def _relay(self, name: str) -> list[Target]:
        relay = self.config().relays.get(name)
        if relay is None:
            # A configuration mistake: wait for the operator rather than bounce.
            raise RouteError("4.3.5", f"relay '{name}' is not configured")
        mode: TlsMode = {"starttls": "verify", "implicit": "implicit", "none": "none"}[relay.tls]
        password = str(relay.password_file) if relay.password_file else None
        targets = await self._resolve([relay.host.lower().rstrip(".")], mode, relay.port)
        return [Target(t.host, t.address, t.port, mode, relay.username, password) for t in targets]

    async def _mx(self, domain: str) -> list[Target]:
        try:
            records = await self.dns.mx(domain)
        except DnsError as exc:
            raise RouteError("5.1.2" if exc.permanent else "4.4.3", str(exc)) from None
        if records is None:
            # RFC 5321 §5.1: no MX means the domain itself is the one mail server.
            records = [MxRecord(0, domain)]
            implicit = True
        else:
            implicit = False
        real = [r for r in records if r.host not in ("", ".")]
        if not real:
            raise RouteError("5.1.10", f"{domain} accepts no mail (null MX, RFC 7505)")
        hosts = self._below_me([r for r in order_mx(real, self.rng)], domain)
        mode: TlsMode = "may"
        policy = await self.policy(domain) if self.policy else None
        if policy is not None and policy.mode == "enforce":
            allowed = [h for h in hosts if policy.matches(h)]
            if not allowed:
                raise RouteError("4.7.5", f"no MX of {domain} is allowed by its MTA-STS policy")
            hosts, mode = allowed, "verify"
        try:
            return await self._resolve(hosts, mode)
        except RouteError as exc:
            if implicit and exc.status == "4.4.4":
                raise RouteError("5.1.2", f"{domain} has no MX and no address record") from None
            raise

    def _below_me(self, records: list[MxRecord], domain: str) -> list[str]:
        """RFC 5321 §5.1: if this host is an MX of the domain, only better ones count."""
        for index, record in enumerate(records):
            if self._is_me(record.host):
                if index == 0:
                    raise RouteError("5.4.6", f"mail for {domain} loops back to myself")
                return [r.host for r in records[:index]]
        return [r.host for r in records]

    def _is_me(self, host: str) -> bool:
        return host.lower().rstrip(".") == self.config().hostname.lower().rstrip(".")

    async def _resolve(
        self, hosts: list[str], mode: TlsMode, port: int | None = None
    ) -> list[Target]:
        targets: list[Target] = []
        failure: DnsError | None = None
        own = self._own_addresses()
        for host in hosts:
            try:
                addresses = await self.dns.addresses(host)
            except DnsError as exc:
                failure = failure or exc
                continue
            for address in addresses:
                if (address, port or self.port) in own:
                    continue  # an MX name that points back at this host
                targets.append(Target(host, address, port or self.port, mode))
            if len(targets) >= MAX_ADDRESSES:
                break
        if not targets and failure is not None:
            # Names that do not resolve may be a passing DNS fault: never bounce for it.
            raise RouteError("4.4.3", str(failure))
        if not targets and hosts:
            raise RouteError("4.4.4", f"no address for {', '.join(hosts)}")
        return targets[:MAX_ADDRESSES]

    def _own_addresses(self) -> set[tuple[str, int]]:
        return {(x.address, x.port) for x in self.config().listeners if x.service == "smtp"}
