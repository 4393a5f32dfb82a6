"""Which handler a host's changes need: nothing, reload (SIGHUP), restart or start.

The runtime reloads users, aliases, keys, domains and relays on SIGHUP; what
its listeners are bound with (addresses, ports, TLS) or what process it is
(user, folders, code) needs a restart.
"""

from __future__ import annotations

import tomllib

# runtime.toml keys the runtime takes over on SIGHUP (server.py Runtime.reload).
RELOADABLE_KEYS = frozenset(
    {
        "domains",
        "relays",
        "hostname",
        "queue",
        "delivery",
        "resolver",
        "max_message_size",
        "plaintext_auth_on_loopback",
        "pop3_idle_timeout",
    }
)


def toml_needs_restart(old: bytes | None, new: bytes) -> bool:
    """True when runtime.toml changed beyond what a reload takes over."""
    if old is None:
        return True
    try:
        before, after = tomllib.loads(old.decode()), tomllib.loads(new.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return True
    keys = (before.keys() | after.keys()) - RELOADABLE_KEYS
    return any(before.get(k) != after.get(k) for k in keys)


def choose(
    changed: list[str],
    toml_restart: bool,
    install_changed: bool,
    running: bool,
    runtime_stale: bool,
) -> str | None:
    """`changed` holds the bundle names (rel) of files created, updated or deleted."""
    if not running:
        return "start"
    restart = (
        install_changed
        or toml_restart
        or any(rel.startswith(("tls/", "systemd/")) for rel in changed)
    )
    if restart:
        return "restart"
    if changed or runtime_stale:
        return "reload"
    return None
