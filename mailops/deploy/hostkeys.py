"""SSH host keys: known_hosts from the spec, fingerprints, and trusting a key.

An unknown key is refused with its fingerprint and the two ways to trust it;
a changed key is always refused, loudly. Keys are only ever added to the
known_hosts file (by `mailops trust` or --accept-new-host-keys), never replaced.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from pathlib import Path

from mailops.deploy.errors import HostKeyError
from mailops.deploy.sshlib import paramiko_module

paramiko = paramiko_module()
_append_lock = threading.Lock()
_cache_lock = threading.Lock()
_cache: dict[Path, tuple[tuple[int, int, int], paramiko.HostKeys]] = {}


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint, as `ssh-keygen -l` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def entry_name(address: str, port: int) -> str:
    """The host's name in known_hosts: `[address]:port` unless the port is 22."""
    return address if port == 22 else f"[{address}]:{port}"


def load(path: Path) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    if path.exists():
        try:
            keys.load(str(path))
        except (OSError, paramiko.SSHException) as exc:
            raise HostKeyError(f"cannot read known_hosts {path}: {exc}") from None
    return keys


def entries_for(path: Path, name: str) -> dict:
    """The known_hosts entry for `name` ({key type: key}), from a copy of the
    file parsed once per command however many hosts share it."""
    try:
        info = path.stat()
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
    except OSError:
        stamp = (0, 0, 0)
    with _cache_lock:
        cached = _cache.get(path)
        if cached is None or cached[0] != stamp:
            cached = _cache[path] = (stamp, load(path))
    entry = cached[1].lookup(name)
    return dict(entry) if entry else {}


def known_key(path: Path, name: str, key_type: str) -> paramiko.PKey | None:
    entry = load(path).lookup(name)
    return entry.get(key_type) if entry else None


def append(path: Path, name: str, key: paramiko.PKey) -> None:
    """Add one line to known_hosts (made if missing)."""
    line = f"{name} {key.get_name()} {key.get_base64()}\n"
    with _append_lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text() if path.exists() else ""
        if line in text:
            return
        prefix = "" if not text or text.endswith("\n") else "\n"
        with path.open("a") as handle:
            handle.write(prefix + line)


def unknown_key_message(host_id: str, name: str, key: paramiko.PKey, path: Path, spec: str) -> str:
    return (
        f"{host_id}: unknown SSH host key for {name}: {key.get_name()} {fingerprint(key)}; "
        f"nothing was sent. If this is the host's key, trust it with "
        f"`mailops trust {spec} {host_id}` (or pass --accept-new-host-keys); it is kept in {path}"
    )


def changed_key_message(
    host_id: str, name: str, known: paramiko.PKey, got: paramiko.PKey, path: Path
) -> str:
    return (
        f"{host_id}: HOST KEY CHANGED for {name}! known_hosts ({path}) has "
        f"{known.get_name()} {fingerprint(known)}, the host now presents {got.get_name()} "
        f"{fingerprint(got)}. Someone may be intercepting the connection; nothing was sent. "
        f"If the host was really reinstalled, remove its old line from {path} and run "
        f"`mailops trust` again"
    )


class Policy(paramiko.MissingHostKeyPolicy):
    """For a key known_hosts does not have: refuse (default) or record it."""

    def __init__(self, host_id: str, path: Path, spec: str, accept_new: bool):
        self.host_id, self.path, self.spec, self.accept_new = host_id, path, spec, accept_new
        self.seen: paramiko.PKey | None = None

    def missing_host_key(self, client, hostname, key):
        self.seen = key
        if not self.accept_new:
            raise HostKeyError(
                unknown_key_message(self.host_id, hostname, key, self.path, self.spec)
            )
        append(self.path, hostname, key)
