"""Asking DNS servers directly: an authoritative server (no recursion wanted)
or the resolver (recursion wanted), over UDP with a TCP fallback, with retries.

Answers are cached per server, name and type for one audit, so checks that
need the same answer (the domain's TXT for the SPF record and for its syntax)
ask once. Whatever comes back — an error code, a CNAME where a TXT was
expected, records of a type nobody asked for — is data for a finding, never
an exception escaping to the user.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from mailops.audit.net import Exhausted, RetryPolicy, with_retries
from mailops.errors import UsageError


@dataclass(frozen=True)
class Server:
    address: str
    port: int = 53
    name: str = ""
    """The NS name it was found under, for messages ("" when given by address)."""

    def __str__(self) -> str:
        where = f"[{self.address}]" if ":" in self.address else self.address
        if self.port != 53:
            where += f":{self.port}"
        return f"{self.name} ({where})" if self.name else where


def parse_server(text: str) -> Server:
    """`IP`, `IP:PORT`, `[IPv6]:PORT` or a bare IPv6 address."""
    value = text.strip()
    host, port = value, "53"
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "53"
    elif value.count(":") == 1:
        host, port = value.split(":")
    try:
        address = ipaddress.ip_address(host).compressed
        number = int(port)
    except ValueError:
        raise UsageError(
            f"{text!r} is not a DNS server address: write IP or IP:PORT (like 127.0.0.1:5353)"
        ) from None
    if not 0 < number < 65536:
        raise UsageError(f"{text!r}: port {number} is out of range")
    return Server(address, number)


@dataclass(frozen=True)
class Answer:
    name: str
    rdtype: str
    rcode: str
    """NOERROR, NXDOMAIN, REFUSED, SERVFAIL, …"""
    authoritative: bool
    rrset: dns.rrset.RRset | None
    """The records of exactly this name and type; None when there are none."""
    cname: str | None = None
    """The target, when a CNAME stands at the name instead."""
    zone_soa: str | None = None
    """Owner of the SOA in the authority section: the zone the name lies in."""
    retried: int = 0

    @property
    def ttl(self) -> int | None:
        return self.rrset.ttl if self.rrset is not None else None

    def describe_empty(self) -> str:
        """Why there is no record, in words."""
        if self.cname:
            return f"a CNAME to {self.cname} stands there instead"
        if self.rcode == "NXDOMAIN":
            return "the name does not exist (NXDOMAIN)"
        if self.rcode != "NOERROR":
            return f"the server answered {self.rcode}"
        return "no such record"


class QueryFailed(Exception):
    """No answer at all after every retry."""

    def __init__(self, server: Server, name: str, rdtype: str, cause: Exhausted):
        super().__init__(f"{server} did not answer {name} {rdtype}: {cause.text()}")
        self.server = server
        self.reason = cause.text()
        self.retried = cause.retried


class Querier:
    """One audit's DNS client: concurrent, retried, cached, bounded."""

    def __init__(self, policy: RetryPolicy, parallel: int = 64):
        self.policy = policy
        self._cache: dict[tuple, asyncio.Task[Answer]] = {}
        self._gate = asyncio.Semaphore(parallel)

    async def ask(self, server: Server, name: str, rdtype: str, *, recurse: bool) -> Answer:
        key = (server.address, server.port, name.lower().rstrip("."), rdtype, recurse)
        task = self._cache.get(key)
        if task is None:
            task = asyncio.ensure_future(self._ask(server, key[2], rdtype, recurse))
            self._cache[key] = task
        return await task

    async def _ask(self, server: Server, name: str, rdtype: str, recurse: bool) -> Answer:
        query = dns.message.make_query(name + ".", rdtype, use_edns=0, payload=1232)
        if not recurse:
            query.flags &= ~dns.flags.RD

        async def once() -> dns.message.Message:
            response, _ = await dns.asyncquery.udp_with_fallback(
                query, server.address, timeout=self.policy.timeout, port=server.port
            )
            return response

        async with self._gate:
            try:
                response, retried = await with_retries(once, self.policy)
            except Exhausted as exc:
                raise QueryFailed(server, name, rdtype, exc) from None
            except dns.exception.DNSException as exc:  # a malformed answer: no retry helps
                cause = Exhausted(exc, 1)
                raise QueryFailed(server, name, rdtype, cause) from None
        return read_answer(response, name, rdtype, retried)


def read_answer(response: dns.message.Message, name: str, rdtype: str, retried: int) -> Answer:
    qname = dns.name.from_text(name + ".")
    wanted = dns.rdatatype.from_text(rdtype)
    rrset = cname = None
    for candidate in response.answer:
        if candidate.name != qname:
            continue
        if candidate.rdtype == wanted:
            rrset = candidate
        elif candidate.rdtype == dns.rdatatype.CNAME and wanted != dns.rdatatype.CNAME:
            cname = candidate[0].target.to_text()  # type: ignore[attr-defined]
    zone = next(
        (
            r.name.to_text(omit_final_dot=True)
            for r in response.authority
            if r.rdtype == dns.rdatatype.SOA
        ),
        None,
    )
    return Answer(
        name=name,
        rdtype=rdtype,
        rcode=dns.rcode.to_text(response.rcode()),
        authoritative=bool(response.flags & dns.flags.AA),
        rrset=rrset,
        cname=cname,
        zone_soa=zone,
        retried=retried,
    )
