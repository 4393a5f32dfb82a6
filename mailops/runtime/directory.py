"""The directory: users, aliases and domains → "where does this address go".

Reads the two files render writes and other mail software reads too:
- passwd: Dovecot passwd-file lines `user@domain:{SCHEME}hash:uid:gid:gecos:home:shell:extra`
  where extra may hold `userdb_quota_rule=*:bytes=N` and `nologin`;
- aliases: Postfix virtual-alias lines `alias@domain  target, target …`, and
  `@domain  target` for a catch-all.
A Directory is immutable; a reload builds a new one and swaps it in whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mailops.errors import MailopsError
from mailops.runtime.config import DomainConfig, RuntimeConfig

MAX_EXPANSION_DEPTH = 20


class DirectoryError(MailopsError):
    exit_code = 2


@dataclass(frozen=True)
class Account:
    address: str  # user@domain, lowercase
    password_hash: str  # "" when the account cannot log in
    quota: int | None = None

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @property
    def user(self) -> str:
        return self.address.rpartition("@")[0]

    @property
    def can_login(self) -> bool:
        return bool(self.password_hash)


@dataclass(frozen=True)
class Route:
    """Where one recipient's copies go."""

    mailboxes: tuple[Account, ...] = ()  # deliver here
    remote: tuple[str, ...] = ()  # queue for these addresses (other hosts)
    forward: bool = False  # backup MX: queue the original recipient for the primary

    @property
    def empty(self) -> bool:
        return not self.mailboxes and not self.remote and not self.forward


@dataclass(frozen=True)
class Directory:
    domains: dict[str, DomainConfig]
    accounts: dict[str, Account] = field(default_factory=dict)
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "@domain" = catch-all

    # ------------------------------------------------------------ lookups

    def serves(self, domain: str) -> bool:
        return domain.lower() in self.domains

    def account(self, address: str) -> Account | None:
        return self.accounts.get(address.lower())

    def route(self, address: str) -> Route | None:
        """Where mail for `address` goes; None when this host does not know it
        (an unknown user of a served domain, or a domain it does not serve)."""
        address = address.lower()
        domain = address.rpartition("@")[2]
        conf = self.domains.get(domain)
        if conf is None:
            return None
        known = self._canonical(address, conf)
        if known is None:
            return None
        if conf.role == "backup":
            return Route(forward=True)
        mailboxes: dict[str, Account] = {}
        remote: dict[str, None] = {}
        self._expand(known, mailboxes, remote, depth=0, seen=set())
        route = Route(tuple(mailboxes.values()), tuple(remote))
        return None if route.empty else route

    def owned_by(self, account: Account) -> frozenset[str]:
        """Addresses the account may send as: its own, and aliases whose only target it is."""
        own = {account.address}
        own |= {alias for alias, targets in self.aliases.items() if targets == (account.address,)}
        return frozenset(a for a in own if not a.startswith("@"))

    def may_send_as(self, account: Account, sender: str) -> bool:
        sender = sender.lower()
        if sender in self.owned_by(account):
            return True
        conf = self.domains.get(sender.rpartition("@")[2])
        base = _strip_subaddress(sender, conf.subaddress if conf else "")
        return base != sender and base in self.owned_by(account)

    # ------------------------------------------------------------ internals

    def _canonical(self, address: str, conf: DomainConfig) -> str | None:
        """The defined address mail for `address` goes to: itself, its address
        without +tag, or the domain's catch-all; None when none is defined."""
        if address in self.accounts or address in self.aliases:
            return address
        base = _strip_subaddress(address, conf.subaddress)
        if base != address and (base in self.accounts or base in self.aliases):
            return base
        catch_all = "@" + address.rpartition("@")[2]
        return catch_all if catch_all in self.aliases else None

    def _expand(self, address, mailboxes, remote, depth: int, seen: set[str]) -> None:
        if address in seen or depth > MAX_EXPANSION_DEPTH:
            return  # an alias loop: the spec checks forbid it; never recurse forever
        seen.add(address)
        if address in self.aliases:
            for target in self.aliases[address]:
                self._expand(target, mailboxes, remote, depth + 1, seen)
            return
        account = self.accounts.get(address)
        if account is not None:
            mailboxes[account.address] = account
        elif address.rpartition("@")[2] in self.domains:
            # A served address that names nobody: the catch-all or +tag rules apply.
            conf = self.domains[address.rpartition("@")[2]]
            known = self._canonical(address, conf)
            if known is not None and known != address:
                self._expand(known, mailboxes, remote, depth + 1, seen)
        else:
            remote[address] = None


def _strip_subaddress(address: str, separator: str) -> str:
    local, _, domain = address.rpartition("@")
    if separator and separator in local:
        return f"{local.split(separator, 1)[0]}@{domain}"
    return address


# ---------------------------------------------------------------- reading the files

_QUOTA_RE = re.compile(r"(?:^|\s)userdb_quota_rule=\*:bytes=(\d+)(?:\s|$)")


def parse_passwd(text: str, source: str = "passwd") -> dict[str, Account]:
    accounts: dict[str, Account] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(":", 7)
        if len(fields) < 2 or "@" not in fields[0]:
            raise DirectoryError(f"{source}:{lineno}: expected 'user@domain:{{SCHEME}}hash:…'")
        address = fields[0].strip().lower()
        extra = fields[7] if len(fields) > 7 else ""
        nologin = "nologin" in extra.split()
        password = "" if nologin or not fields[1].startswith("{") else fields[1]
        quota = _QUOTA_RE.search(extra)
        accounts[address] = Account(address, password, int(quota.group(1)) if quota else None)
    return accounts


def parse_aliases(text: str, source: str = "aliases") -> dict[str, tuple[str, ...]]:
    aliases: dict[str, tuple[str, ...]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, rest = line.strip().partition(" ")
        targets = tuple(t.strip().lower() for t in re.split(r"[,\s]+", rest) if t.strip())
        if "@" not in key or not targets:
            raise DirectoryError(f"{source}:{lineno}: expected 'alias@domain  target[, target…]'")
        aliases[key.lower()] = targets
    return aliases


def load_directory(config: RuntimeConfig) -> Directory:
    return Directory(
        domains=dict(config.domains),
        accounts=parse_passwd(_read(config.passwd_file), str(config.passwd_file)),
        aliases=parse_aliases(_read(config.aliases_file), str(config.aliases_file)),
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DirectoryError(f"{path}: cannot read: {exc.strerror}") from None
