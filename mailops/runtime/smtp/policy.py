"""Address rules that keep the MTA from becoming an open relay.

Only recipients in served domains are accepted on port 25, and their local
part must be a plain dot-atom: the old relay tricks (`user%other@`,
`other!user@`, `"user@other"@`, source routes `@a:user@b`) smuggle a second
destination inside the local part, and some software still routes on them.
mailops never does, but refusing them outright keeps every downstream tool safe.
"""

from __future__ import annotations

import re

_DOT_ATOM = re.compile(r"^[A-Za-z0-9#$&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9#$&'*+/=?^_`{|}~-]+)*$")
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)

RELAY_DENIED = "554 5.7.1 Relay access denied"
BAD_ADDRESS = "553 5.1.3 Recipient address rejected: not a plain local@domain address"


def split(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    return local, domain.lower().rstrip(".")


def recipient_syntax_ok(address: str) -> bool:
    """local@domain with a dot-atom local part (no %, !, quotes, routes) and a DNS domain."""
    local, domain = split(address)
    return bool(_DOT_ATOM.match(local)) and "%" not in local and bool(_DOMAIN.match(domain))


def sender_syntax_ok(address: str) -> bool:
    """Senders are looser (other systems' addresses), but never a source route."""
    if address == "":
        return True
    local, domain = split(address)
    return bool(local) and ":" not in address and bool(_DOMAIN.match(domain))
