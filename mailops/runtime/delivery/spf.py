"""SPF (RFC 7208): may the connecting address send mail for the MAIL FROM domain?

`check` evaluates the domain's `v=spf1` record for the client address: the
mechanisms all, include, a, mx, ptr, ip4, ip6 and exists, the redirect
modifier, macros, and the limits that bound the work a sender's DNS can cause
(10 lookups, 2 void lookups, 10 MX or PTR names, 20 seconds). The explanation
(`exp=`) is ignored: the result is information for the Authentication-Results
header, never a reason to refuse mail. For the null sender (bounces) the HELO
name is checked instead (§2.4). Mail from 127.0.0.1 or ::1 is this machine's own
(cron, scripts, a filter handing mail back) and is not checked, as policyd-spf's
default skip_addresses do; other loopback addresses are the lab's hosts.

DNS goes through the runtime's resolver (`Dns`), so the configured servers and
the answer cache apply.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from typing import Literal

from mailops.runtime.delivery.resolver import Dns, DnsError

Result = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_LOOKUPS = 10  # §4.6.4: terms that cause DNS lookups (include, a, mx, ptr, exists, redirect)
MAX_VOID_LOOKUPS = 2  # §4.6.4: lookups that found nothing
MAX_NAMES = 10  # §4.6.4: MX hosts of one mx, names of one ptr
TIME_LIMIT = 20.0  # §4.6.4: seconds for the whole check

QUALIFIERS: dict[str, Result] = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)")
_DIRECTIVE = re.compile(r"([-+~?]?)([A-Za-z][A-Za-z0-9_.-]*)(.*)")
_DUAL_CIDR = re.compile(r"(.*?)(?:/(\d{1,2}))?(?://(\d{1,3}))?")
# A macro, or "%" and whatever follows it (which must then be %, _ or -).
_MACRO = re.compile(r"%(?:\{([A-Za-z])(\d*)(r?)([-.+,/_=]*)\}|(.?))", re.IGNORECASE)
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class PermError(Exception):
    """The record is broken (syntax, limits): the domain's fault, result permerror."""


class TempError(Exception):
    """DNS did not answer: try later, result temperror."""


@dataclass(frozen=True)
class Term:
    qualifier: str  # "+-~?" for a mechanism, "" for a modifier
    name: str  # lowercase
    spec: str  # the domain-spec or network, "" if none
    cidr4: int = 32
    cidr6: int = 128


LOCALHOST = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


async def check(dns: Dns, client_ip: str, sender: str, helo: str) -> tuple[Result, str] | None:
    """The SPF result and the identity checked, as RFC 8601 writes it
    (`smtp.mailfrom=<sender>`, or `smtp.helo=<helo>` for the null sender);
    None for mail from this machine itself."""
    if sender:
        identity, domain = f"smtp.mailfrom={sender}", sender.rpartition("@")[2]
    else:
        identity, domain, sender = f"smtp.helo={helo}", helo, f"postmaster@{helo}"
    try:
        ip = _unmapped(ipaddress.ip_address(client_ip))
    except ValueError:
        return "none", identity  # not an IP connection (a test harness, a socket file)
    if ip in LOCALHOST:
        return None
    check = _Check(dns, ip, sender, helo)
    try:
        async with asyncio.timeout(TIME_LIMIT):
            return await check.check_host(domain.rstrip(".")), identity
    except (TempError, TimeoutError):
        return "temperror", identity
    except PermError:
        return "permerror", identity


@dataclass
class _Check:
    """One evaluation: its inputs and its lookup budgets."""

    dns: Dns
    ip: Address
    sender: str
    helo: str
    lookups: int = 0
    voids: int = 0

    async def check_host(self, domain: str) -> Result:
        """§4: the result for `domain`; PermError and TempError escape."""
        if not valid_domain(domain):
            return "none"  # §4.3
        record = await self._record(domain)
        if record is None:
            return "none"
        directives, redirect = parse(record)
        for term in directives:
            if await self._matches(term, domain):
                return QUALIFIERS[term.qualifier]
        if redirect is None:
            return "neutral"
        self._count()
        result = await self.check_host(self._target(redirect, domain))
        if result == "none":
            raise PermError(f"redirect to a domain without SPF record: {redirect}")
        return result

    async def _record(self, domain: str) -> str | None:
        try:
            texts = await self.dns.txt(domain)
        except DnsError as exc:
            if exc.permanent:
                return None  # no such domain
            raise TempError(str(exc)) from None
        records = [
            t for t in texts or () if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")
        ]
        if len(records) > 1:
            raise PermError(f"{domain} has {len(records)} SPF records")
        return records[0] if records else None

    # ------------------------------------------------------------ mechanisms

    async def _matches(self, term: Term, domain: str) -> bool:
        name = term.name
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            return self._in_network(term)
        self._count()
        target = self._target(term.spec, domain) if term.spec else domain
        if name == "include":
            return await self._include(target)
        if name == "a":
            return self._any_within(await self._addresses(target), term)
        if name == "mx":
            return await self._mx(target, term)
        if name == "ptr":
            return await self._ptr(target)
        return bool(await self._addresses(target, ("A",)))  # exists: any A record

    async def _include(self, target: str) -> bool:
        result = await self.check_host(target)
        if result == "none":
            raise PermError(f"include of a domain without SPF record: {target}")
        return result == "pass"  # fail, softfail, neutral: no match (§5.2)

    async def _mx(self, target: str, term: Term) -> bool:
        try:
            records = await self.dns.mx(target)
        except DnsError as exc:
            if not exc.permanent:
                raise TempError(str(exc)) from None
            records = None
        if not records:
            self._void()
            return False
        if len(records) > MAX_NAMES:
            raise PermError(f"{target} has more than {MAX_NAMES} MX records")
        for record in records:
            if self._any_within(await self._addresses(record.host, void=False), term):
                return True
        return False

    async def _ptr(self, target: str) -> bool:
        """§5.5: a reverse name of the client, confirmed forward, in `target`."""
        try:
            names = (await self.dns.ptr(str(self.ip)))[:MAX_NAMES]
        except DnsError:
            return False  # §5.5: a DNS error here is simply no match
        for name in names:
            if name == target or name.endswith("." + target):
                try:
                    if str(self.ip) in await self.dns.addresses(name, self._rdtypes()):
                        return True
                except DnsError:
                    continue
        return False

    def _in_network(self, term: Term) -> bool:
        network = _network(term.name, term.spec)
        return network.version == self.ip.version and self.ip in network

    def _any_within(self, addresses: list[str], term: Term) -> bool:
        prefix = term.cidr4 if self.ip.version == 4 else term.cidr6
        for address in addresses:
            network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
            if self.ip in network:
                return True
        return False

    async def _addresses(self, name: str, rdtypes=None, *, void: bool = True) -> list[str]:
        try:
            found = await self.dns.addresses(name, rdtypes or self._rdtypes())
        except DnsError as exc:
            if not exc.permanent:
                raise TempError(str(exc)) from None
            found = []
        if not found and void:
            self._void()
        return found

    def _rdtypes(self) -> tuple[str, ...]:
        return ("A",) if self.ip.version == 4 else ("AAAA",)

    # ------------------------------------------------------------ limits, macros

    def _count(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise PermError(f"more than {MAX_LOOKUPS} DNS lookups")

    def _void(self) -> None:
        self.voids += 1
        if self.voids > MAX_VOID_LOOKUPS:
            raise PermError(f"more than {MAX_VOID_LOOKUPS} lookups found nothing")

    def _target(self, spec: str, domain: str) -> str:
        """A domain-spec with its macros expanded (§7), shortened to 253 octets."""
        name = expand(spec, self._macros(domain)).rstrip(".")
        while len(name) > 253 and "." in name:
            name = name.partition(".")[2]  # §7.3: drop labels from the left
        if not valid_domain(name):
            raise PermError(f"not a domain name: {name!r}")
        return name

    def _macros(self, domain: str) -> dict[str, str]:
        local, _, sender_domain = self.sender.rpartition("@")
        if self.ip.version == 4:
            dotted, version = str(self.ip), "in-addr"
        else:
            dotted, version = ".".join(self.ip.exploded.replace(":", "")), "ip6"
        return {
            "s": self.sender,
            "l": local or "postmaster",
            "o": sender_domain,
            "d": domain,
            "i": dotted,
            "p": "unknown",  # §7.3: allowed, and spares a PTR lookup per use
            "v": version,
            "h": self.helo,
        }


def parse(record: str) -> tuple[list[Term], str | None]:
    """The directives of a record, in order, and its redirect target; PermError for
    any syntax error anywhere in it (§4.6)."""
    directives: list[Term] = []
    modifiers: dict[str, str] = {}
    for text in record.split()[1:]:
        modifier = _MODIFIER.fullmatch(text)
        if modifier:
            name = modifier.group(1).lower()
            if name in modifiers and name in ("redirect", "exp"):
                raise PermError(f"{name} given twice")
            modifiers[name] = modifier.group(2)
            continue
        directives.append(_directive(text))
    redirect = modifiers.get("redirect")
    if redirect is not None and not redirect:
        raise PermError("empty redirect")
    # §6.1 ignores redirect in a record with "all": that always matches first anyway.
    return directives, redirect


def _directive(text: str) -> Term:
    match = _DIRECTIVE.fullmatch(text)
    if match is None or match.group(2).lower() not in MECHANISMS:
        raise PermError(f"unknown mechanism: {text}")
    qualifier, name, rest = match.group(1) or "+", match.group(2).lower(), match.group(3)
    if name == "all":
        if rest:
            raise PermError(f"bad term: {text}")
        return Term(qualifier, name, "")
    if name in ("ip4", "ip6", "include", "exists"):
        if not rest.startswith(":") or len(rest) < 2:
            raise PermError(f"{name} needs an argument: {text}")
        if name in ("ip4", "ip6"):
            _network(name, rest[1:])  # checked now: a bad one anywhere spoils the record
        return Term(qualifier, name, rest[1:])
    spec, cidr4, cidr6 = _DUAL_CIDR.fullmatch(rest).groups()  # type: ignore[union-attr]
    if spec and (not spec.startswith(":") or len(spec) < 2):
        raise PermError(f"bad term: {text}")
    if name == "ptr" and (cidr4 or cidr6):
        raise PermError(f"ptr takes no prefix length: {text}")
    four, six = int(cidr4 or 32), int(cidr6 or 128)
    if four > 32 or six > 128:
        raise PermError(f"prefix length out of range: {text}")
    return Term(qualifier, name, spec[1:], four, six)


def expand(spec: str, values: dict[str, str]) -> str:
    """§7: %{s} and friends, with digit, `r` and delimiter transformers."""

    def one(match: re.Match) -> str:
        letter, digits, reverse, delimiters, escape = match.groups()
        if escape is not None:
            simple = {"%": "%", "_": " ", "-": "%20"}.get(escape)
            if simple is None:
                raise PermError(f"bad macro: %{escape}")
            return simple
        value = values.get(letter.lower())
        if value is None:  # c, r, t belong in exp= only
            raise PermError(f"unknown macro letter: {letter}")
        parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
        if reverse:
            parts.reverse()
        if digits:
            if int(digits) == 0:
                raise PermError("macro keeps zero labels")
            parts = parts[-int(digits) :]
        text = ".".join(parts)
        return urllib.parse.quote(text, safe="") if letter.isupper() else text

    return _MACRO.sub(one, spec)


def valid_domain(name: str) -> bool:
    """A fully qualified name whose top label is not all digits (§4.3)."""
    labels = name.rstrip(".").split(".")
    return (
        len(labels) > 1
        and len(name) <= 253
        and all(_LABEL.fullmatch(x) for x in labels)
        and not labels[-1].isdigit()
    )


def _network(name: str, text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    kind = ipaddress.IPv4Network if name == "ip4" else ipaddress.IPv6Network
    try:
        return kind(text, strict=False)
    except ValueError:
        raise PermError(f"bad network: {name}:{text}") from None


def _unmapped(ip: Address) -> Address:
    """§5: an IPv4-mapped IPv6 client is checked as the IPv4 address it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
