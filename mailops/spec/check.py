"""Cross-checks over a spec whose parts are each valid on their own.

Findings carry the path of the key or value at fault (the loader turns it
into a line and column) and, for "defined twice", the path of the first
definition.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from mailops.spec.model import MAILBOX_SERVICES, Domain, Host, Spec

Path = tuple[str | int, ...]

AUTH_SERVICES = ("submission", "submissions", "imap", "imaps", "pop3", "pop3s")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning"
    path: Path
    message: str
    at_key: bool = False  # point at the key rather than its value
    first: Path | None = None  # for "defined twice": where it was first
    depends: tuple[str, ...] = ()
    # What the finding is a conclusion about: "host:<id>", "relay:<id>", "host-ids",
    # "relay-ids" (every id, for "unknown" findings), "addresses:<domain>". When the
    # loader had to leave out a broken part of one of these, the finding may be a
    # mere consequence of that, and is held back.


def error(path: Path, message: str, *, at_key=False, first=None, depends=()) -> Finding:
    return Finding("error", path, message, at_key, first, tuple(depends))


def warning(path: Path, message: str, *, at_key=False, depends=()) -> Finding:
    return Finding("warning", path, message, at_key, None, tuple(depends))


def check(spec: Spec) -> list[Finding]:
    findings: list[Finding] = []
    for section in ("hosts", "domains"):
        if not getattr(spec, section):
            findings.append(error((section,), f"{section} must have at least 1 entry"))
    findings += _hosts(spec)
    for name, domain in spec.domains.items():
        findings += _routing(spec, name, domain)
        findings += _addresses(spec, name, domain)
        findings += _policy(spec, name, domain)
    findings += _zones(spec)
    return findings


# ---------------------------------------------------------------- hosts


def _is_public(host: Host) -> bool:
    return any(ipaddress.ip_address(a).is_global for a in host.addresses())


def _hosts(spec: Spec) -> Iterator[Finding]:
    fqdns: dict[str, str] = {}
    for hid, host in spec.hosts.items():
        here = ("hosts", hid)
        if host.fqdn in fqdns:
            yield error(
                (*here, "fqdn"),
                f"fqdn {host.fqdn} is already used by host '{fqdns[host.fqdn]}'",
                first=("hosts", fqdns[host.fqdn], "fqdn"),
            )
        fqdns.setdefault(host.fqdn, hid)
        ports: dict[int, str] = {}
        for service in dict.fromkeys(host.services):  # a repeat is reported on its own
            port = getattr(host.ports, service)
            if port in ports:
                yield error(
                    (*here, "ports", service),
                    f"port {port} is used by both {ports[port]} and {service} on host '{hid}'",
                )
            ports.setdefault(port, service)
        yield from _repeats((*here, "services"), host.services, "service")
        needs_tls = [s for s in host.services if s in AUTH_SERVICES]
        if host.tls is None and needs_tls:
            yield error(
                here,
                f"host '{hid}' offers {', '.join(needs_tls)} but has no tls: passwords need TLS "
                "(give tls.cert and tls.key, or tls.self_signed: true)",
                at_key=True,
            )
        elif host.tls is None:
            yield warning(
                here, f"host '{hid}' has no tls, so port 25 offers no STARTTLS", at_key=True
            )
        elif host.tls.self_signed and _is_public(host):
            yield warning(
                (*here, "tls", "self_signed"),
                f"host '{hid}' has a public address but a self-signed certificate; "
                "clients will refuse it (use a real certificate)",
            )


# ---------------------------------------------------------------- routing


def _routing(spec: Spec, name: str, domain: Domain) -> Iterator[Finding]:
    here = ("domains", name)
    box = spec.hosts.get(domain.mailbox_host)
    if box is None:
        yield error(
            (*here, "mailbox_host"),
            _unknown("host", domain.mailbox_host, spec.hosts),
            depends=("host-ids", f"host:{domain.mailbox_host}"),
        )
    elif not MAILBOX_SERVICES & set(box.services):
        yield error(
            (*here, "mailbox_host"),
            f"mailbox host '{domain.mailbox_host}' offers none of imap, imaps, pop3, pop3s, "
            "so nobody could read the mail",
            depends=(f"host:{domain.mailbox_host}",),
        )
    if not domain.mx:
        yield error((*here, "mx"), "mx must have at least 1 entry")
    targets: dict[str, int] = {}
    for i, mx in enumerate(domain.mx):
        at = (*here, "mx", i)
        target = mx.name
        if mx.host is not None:
            host = spec.hosts.get(mx.host)
            if host is None:
                yield error(
                    (*at, "host"),
                    _unknown("host", mx.host, spec.hosts),
                    depends=("host-ids", f"host:{mx.host}"),
                )
                continue
            if "smtp" not in host.services:
                yield error(
                    (*at, "host"),
                    f"MX host '{mx.host}' does not offer the smtp service",
                    depends=(f"host:{mx.host}",),
                )
            target = host.fqdn
        if target in targets:
            yield error(
                at,
                f"MX {target} is listed twice for domain {name} (one entry per host, "
                "each with its own priority)",
                at_key=True,
                first=(*here, "mx", targets[target]),
            )
        targets.setdefault(target, i)  # type: ignore[arg-type]
    names = [s.name for s in domain.dkim.selectors]
    yield from _repeats((*here, "dkim", "selectors"), names, "selector")
    relay = domain.outbound.relay
    if relay is not None and relay not in spec.relays:
        yield error(
            (*here, "outbound", "relay"),
            _unknown("relay", relay, spec.relays),
            depends=("relay-ids", f"relay:{relay}"),
        )


def _repeats(path: Path, items: list[str], what: str) -> Iterator[Finding]:
    """A list entry that repeats an earlier one, reported at the repeat."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item in seen:
            yield error((*path, i), f"{path[-1]} must not list {what} {item!r} twice")
        seen.add(item)


def _unknown(kind: str, name: str, known: dict) -> str:
    listed = ", ".join(sorted(known)) or "none are defined"
    return f"unknown {kind} '{name}' (known {kind}s: {listed})"


# ---------------------------------------------------------------- addresses


def _local_names(domain: Domain, name: str) -> tuple[dict[str, Path], list[Finding]]:
    """Every local part a domain defines → where; and the ones defined twice."""
    defined: dict[str, Path] = {}
    twice: list[Finding] = []

    def define(local: str, path: Path, what: str) -> None:
        if local in defined:
            twice.append(
                error(
                    path,
                    f"address {local}@{name} is defined twice (here as {what})",
                    at_key=what != "a user alias",
                    first=defined[local],
                )
            )
        else:
            defined[local] = path

    here = ("domains", name)
    for user in domain.users:
        define(user, (*here, "users", user), "a user")
    for user, spec_user in domain.users.items():
        for i, alias in enumerate(spec_user.aliases):
            define(alias, (*here, "users", user, "aliases", i), "a user alias")
    for alias in domain.aliases:
        define(alias, (*here, "aliases", alias), "an alias")
    return defined, twice


def _addresses(spec: Spec, name: str, domain: Domain) -> Iterator[Finding]:
    here = ("domains", name)
    defined, twice = _local_names(domain, name)
    yield from twice
    for alias, targets in domain.aliases.items():
        for i, target in enumerate(targets):
            problem = _target_problem(spec, name, target)
            if problem:
                path = (
                    (*here, "aliases", alias) if len(targets) == 1 else (*here, "aliases", alias, i)
                )
                yield error(path, problem, depends=(_depends_on(name, target),))
    if domain.catch_all is not None:
        problem = _target_problem(spec, name, domain.catch_all)
        if problem:
            yield error(
                (*here, "catch_all"), problem, depends=(_depends_on(name, domain.catch_all),)
            )
    yield from _alias_loops(spec, name, domain)
    if "postmaster" not in defined and domain.catch_all is None:
        yield warning(
            here,
            f"domain {name} has no postmaster address; RFC 5321 requires one "
            "(add an alias such as 'postmaster: alice')",
            at_key=True,
            depends=(f"addresses:{name}",),
        )


def _depends_on(domain_name: str, target: str) -> str:
    return "addresses:" + _full(domain_name, target).rpartition("@")[2]


def _full(domain_name: str, target: str) -> str:
    return target if "@" in target else f"{target}@{domain_name}"


def _target_problem(spec: Spec, domain_name: str, target: str) -> str | None:
    local, _, dom = _full(domain_name, target).rpartition("@")
    served = spec.domains.get(dom)
    if served is None:
        return None  # an external address: not ours to check
    # The catch-all does not count: a target is named on purpose, and a typo
    # that silently fell through to the catch-all would never be noticed.
    if local in served.users or local in served.aliases:
        return None
    if any(local in user.aliases for user in served.users.values()):
        return None
    return (
        f"alias target '{target}' is not a user or alias of {dom} (a bare name means "
        f"{local}@{dom}; write a full address for another domain)"
    )


def _alias_loops(spec: Spec, name: str, domain: Domain) -> Iterator[Finding]:
    """An alias that, followed through other aliases, comes back to itself."""

    def expand(address: str) -> list[str]:
        local, _, dom = address.rpartition("@")
        served = spec.domains.get(dom)
        if served is None or local not in served.aliases:
            return []
        return [_full(dom, t) for t in served.aliases[local]]

    for alias in domain.aliases:
        start = f"{alias}@{name}"
        chain = _find_cycle(start, expand)
        if chain:
            yield error(
                ("domains", name, "aliases", alias),
                "alias loop: " + " → ".join(chain),
                at_key=True,
                depends=(f"addresses:{name}",),
            )


def _find_cycle(start: str, expand) -> list[str] | None:
    """The path start → … → start through `expand`, if there is one."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        address, chain = stack.pop()
        for nxt in expand(address):
            if nxt == start:
                return [*chain, nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*chain, nxt]))
    return None


# ---------------------------------------------------------------- policy warnings


def _is_lab(spec: Spec, domain: Domain) -> bool:
    """All MX hosts managed and none on a public address: a test setup, where
    warnings about reputation and redundancy on the Internet do not apply."""
    hosts = [spec.hosts.get(mx.host) for mx in domain.mx if mx.host]
    return len(hosts) == len(domain.mx) and not any(h and _is_public(h) for h in hosts)


def _policy(spec: Spec, name: str, domain: Domain) -> Iterator[Finding]:
    here = ("domains", name)
    if domain.spf.policy in ("+all", "?all"):
        yield warning(
            (*here, "spf", "policy"),
            f"SPF policy {domain.spf.policy} lets anyone send as {name}; use -all or ~all",
        )
    if _is_lab(spec, domain):
        return
    if len(domain.mx) == 1:
        yield warning(
            (*here, "mx"),
            f"domain {name} has a single MX; a second (backup) MX keeps mail flowing "
            "while the first is down",
            at_key=True,
        )
    if domain.dmarc.policy == "none":
        yield warning(
            (*here, "dmarc", "policy"),
            f"DMARC policy none does not protect {name} from spoofing; "
            "move to quarantine once reports look clean",
        )


def _zones(spec: Spec) -> Iterator[Finding]:
    for zone in spec.dns.zones:
        if not any(d == zone or d.endswith("." + zone) for d in spec.domains) and not any(
            h.fqdn.endswith("." + zone) for h in spec.hosts.values()
        ):
            yield warning(
                ("dns", "zones", zone),
                f"zone {zone} holds no domain or host of this spec",
                at_key=True,
            )
