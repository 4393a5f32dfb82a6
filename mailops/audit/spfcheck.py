"""The SPF record a receiver would read: its syntax (RFC 7208 §4.6, §5, §6) and
the DNS lookups evaluating it costs, includes followed, at most 10 (§4.6.4).

Everything is read through the resolver, as a receiver reads it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mailops.audit.context import AuditContext, domain_group
from mailops.audit.dnsquery import Querier, QueryFailed
from mailops.audit.findings import Finding, fail, ok, warn
from mailops.audit.net import Exhausted, ProtocolError

MAX_LOOKUPS = 10
LOOKUP_MECHANISMS = ("include", "a", "mx", "ptr", "exists")
MECHANISMS = ("all", "ip4", "ip6", *LOOKUP_MECHANISMS)
_MODIFIER = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*)=(.*)$")
_MECHANISM = re.compile(r"^([+\-~?]?)([A-Za-z0-9]+)(?::([^/]*))?((?:/\d+)?(?://\d+)?)$")
_DOMAIN_SPEC = re.compile(r"^[A-Za-z0-9_.%{}+\-=]+$")


@dataclass
class Parsed:
    mechanisms: list[tuple[str, str]] = field(default_factory=list)
    """(name, argument) in order; argument "" when none."""
    redirect: str | None = None
    errors: list[str] = field(default_factory=list)


def parse(text: str) -> Parsed:
    terms = text.split()
    out = Parsed()
    if not terms or terms[0].lower() != "v=spf1":
        out.errors.append("does not start with v=spf1")
        return out
    seen_all = False
    for term in terms[1:]:
        modifier = _MODIFIER.match(term)
        if modifier:
            _modifier(out, modifier.group(1).lower(), modifier.group(2), term)
            continue
        match = _MECHANISM.match(term)
        if not match or match.group(2).lower() not in MECHANISMS:
            out.errors.append(f"unknown term {term!r}")
            continue
        name, arg, cidr = match.group(2).lower(), match.group(3) or "", match.group(4)
        problem = _mechanism_problem(name, arg, cidr, match.group(3) is not None)
        if problem:
            out.errors.append(f"{term!r}: {problem}")
            continue
        if seen_all:
            out.errors.append(f"{term!r} comes after 'all' and is never evaluated")
        seen_all = seen_all or name == "all"
        out.mechanisms.append((name, arg))
    return out


def _modifier(out: Parsed, name: str, value: str, term: str) -> None:
    if name == "redirect":
        if out.redirect is not None:
            out.errors.append("redirect= appears twice")
        elif not _DOMAIN_SPEC.match(value):
            out.errors.append(f"{term!r}: not a domain")
        else:
            out.redirect = value.lower().rstrip(".")
    # exp= and unknown modifiers are allowed and ignored (RFC 7208 §6).


def _mechanism_problem(name: str, arg: str, cidr: str, has_arg: bool) -> str | None:
    if name == "all":
        return "all takes no argument" if has_arg or cidr else None
    if name in ("ip4", "ip6"):
        try:
            network = ipaddress.ip_network(arg + (cidr or ""), strict=False)
        except ValueError:
            return f"not an {name} address or network"
        return None if network.version == int(name[-1]) else f"not an {name} address"
    if name in ("include", "exists") and not arg:
        return f"{name} needs a domain"
    if has_arg and not _DOMAIN_SPEC.match(arg):
        return "not a domain"
    if cidr and name not in ("a", "mx"):
        return "takes no prefix length"
    return None


# ---------------------------------------------------------------- lookups

Fetch = Callable[[str], Awaitable[list[str]]]


@dataclass
class Count:
    lookups: int = 0
    problems: list[str] = field(default_factory=list)
    """Includes that break evaluation (no record, two records): permerror."""
    unreachable: list[str] = field(default_factory=list)


async def count_lookups(text: str, fetch: Fetch, depth: int = 0, seen=None) -> Count:
    """Lookups of the record and, recursively, of what it includes/redirects to."""
    seen = set() if seen is None else seen
    total = Count()
    parsed = parse(text)
    targets = []
    for name, arg in parsed.mechanisms:
        if name in LOOKUP_MECHANISMS:
            total.lookups += 1
            if name == "include":
                targets.append(arg.lower().rstrip("."))
    if parsed.redirect and not any(name == "all" for name, _ in parsed.mechanisms):
        total.lookups += 1
        targets.append(parsed.redirect)
    for target in targets:
        if target in seen or depth >= MAX_LOOKUPS or "%" in target:
            continue  # a loop, too deep, or a macro we cannot expand: counted, not followed
        seen.add(target)
        await _follow(target, fetch, depth, seen, total)
    return total


async def _follow(target: str, fetch: Fetch, depth: int, seen: set, total: Count) -> None:
    try:
        records = await fetch(target)
    except QueryFailed as exc:
        total.unreachable.append(f"{target} ({exc.reason})")
        return
    if len(records) != 1:
        total.problems.append(
            f"{target} has {'no' if not records else len(records)} SPF record"
            f"{'s' if len(records) > 1 else ''}: receivers fail the check (permerror)"
        )
        return
    inner = await count_lookups(records[0], fetch, depth + 1, seen)
    total.lookups += inner.lookups
    total.problems += inner.problems
    total.unreachable += inner.unreachable


# ---------------------------------------------------------------- findings


async def spf_records(ctx: AuditContext, q: Querier, name: str) -> list[str]:
    """The SPF records at `name`; QueryFailed when the resolver cannot say (a
    SERVFAIL is a temporary error to a receiver, not a missing record)."""
    answer = await q.ask(ctx.resolver, name, "TXT", recurse=True)
    if answer.rcode not in ("NOERROR", "NXDOMAIN"):
        raise QueryFailed(ctx.resolver, name, "TXT", Exhausted(ProtocolError(answer.rcode), 1))
    if answer.rrset is None:
        return []
    texts = [b"".join(rd.strings).decode("utf-8", "replace") for rd in answer.rrset]  # type: ignore[attr-defined]
    return [t for t in texts if t.split(" ")[0].lower() == "v=spf1"]


async def check_domain(ctx: AuditContext, q: Querier, domain: str) -> list[Finding]:
    group, subject = domain_group(domain), f"{domain} TXT (SPF)"
    try:
        published = await spf_records(ctx, q, domain)
    except QueryFailed as exc:
        text = f"could not read the SPF record: {exc.reason}"
        return [warn("spf.syntax", subject, text, "", group)]
    if not published:
        return []  # dns.spf reports the missing record, with the line to publish
    findings = [_syntax(ctx, domain, published, subject, group)]
    if len(published) == 1:  # with two, receivers stop at once (dns.spf says so)
        count = await count_lookups(published[0], lambda n: spf_records(ctx, q, n))
        findings.append(_lookups(ctx, domain, count, subject, group))
    return findings


def _syntax(ctx, domain: str, published: list[str], subject: str, group: str) -> Finding:
    errors = [e for text in published for e in parse(text).errors]
    if errors:
        return fail(
            "spf.syntax",
            subject,
            "; ".join(errors) + ": receivers treat the record as broken (permerror)",
            f"publish the SPF record {ctx.spec_command('dns')} prints for {domain}",
            group,
        )
    return ok("spf.syntax", subject, f"valid: {published[0]}", group)


def _lookups(ctx, domain: str, count: Count, subject: str, group: str) -> Finding:
    if count.problems:
        return fail(
            "spf.lookups",
            subject,
            "; ".join(count.problems),
            f"fix or remove those includes (domains.{domain}.spf.include, or the relay's "
            "spf_include)",
            group,
        )
    if count.lookups > MAX_LOOKUPS:
        return fail(
            "spf.lookups",
            subject,
            f"evaluating it takes {count.lookups} DNS lookups; receivers stop at "
            f"{MAX_LOOKUPS} and fail the check (RFC 7208 §4.6.4)",
            f"drop entries from domains.{domain}.spf.include, or replace includes with the "
            "ip4:/ip6: networks they stand for",
            group,
        )
    text = f"{count.lookups} DNS lookup{'s' if count.lookups != 1 else ''} (limit {MAX_LOOKUPS})"
    if count.unreachable:
        return warn(
            "spf.lookups",
            subject,
            text + "; could not read " + ", ".join(count.unreachable),
            "",
            group,
        )
    return ok("spf.lookups", subject, text, group)
