"""Spec × host → the runtime's files (a Bundle): runtime.toml, passwd, aliases,
TLS material, DKIM keys, relay passwords.

Deterministic: the same spec gives the same bytes (password hashes use a fixed
per-address salt; generated keys are kept beside the spec), so a second plan
finds nothing to do. Secrets are resolved here and nowhere else.

`password:` secrets are hashed with argon2id, which is slow on purpose (a
fifth of a second each on a small machine). The hashes are made in the
background from the moment a host is rendered, so that plan and apply, which
first talk to the host, wait for them only as long as the host takes to
answer; and where the host's passwd already holds a hash of the same
strength that matches the password, that hash is kept (see `Passwd`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mailops import inputs
from mailops.errors import MailopsError
from mailops.passwords import ARGON2_PARAMS, hash_password, verify_password
from mailops.render import dkim, systemd
from mailops.render.bundle import Bundle
from mailops.render.tls import ensure_self_signed
from mailops.spec.load import LoadedSpec
from mailops.spec.model import Domain, Host, Spec


class RenderError(MailopsError):
    exit_code = 2


HEADER = "# Rendered by mailops for host {host}; changes here are overwritten.\n"


def render_host(loaded: LoadedSpec, host_id: str) -> Bundle:
    bundle, passwd = render_host_deferred(loaded, host_id)
    bundle.add("passwd", passwd.text().encode(), 0o640, True)
    return bundle


def render_host_deferred(loaded: LoadedSpec, host_id: str) -> tuple[Bundle, Passwd]:
    """Every file but passwd, and passwd to be finished (`Passwd.text`) once
    the host's current passwd is known; its hashes are being made meanwhile."""
    spec = loaded.spec
    if host_id not in spec.hosts:
        known = ", ".join(sorted(spec.hosts))
        raise RenderError(f"no host '{host_id}' in {loaded.path} (hosts: {known})")
    host = spec.hosts[host_id]
    key_dir = dkim.key_dir_for(loaded.base_dir)
    roles = domain_roles(spec, host_id)
    bundle = Bundle(host_id)
    passwd = passwd_file(spec, host_id, roles, loaded.base_dir)
    bundle.add("aliases", aliases_text(spec, host_id, roles).encode())
    tls = _tls_files(bundle, host_id, host, loaded.base_dir / "keys")
    dkim_files = _dkim_files(bundle, spec, roles, key_dir)
    relay_files = _relay_files(bundle, spec, roles, loaded.base_dir)
    config = runtime_config(spec, host_id, roles, loaded.base_dir, tls, dkim_files, relay_files)
    bundle.add("runtime.toml", (HEADER.format(host=host_id) + toml_text(config)).encode())
    if host.service == "systemd":
        _systemd_unit(bundle, host_id, host, loaded.base_dir)
    return bundle, passwd


def _systemd_unit(bundle: Bundle, host_id: str, host: Host, base_dir: Path) -> None:
    """The unit goes to /etc/systemd/system on the host (`target`); `render --out`
    writes it as systemd/mailops.service under the output folder."""
    paths = [
        host_path(p, base_dir) for p in (host.paths.config, host.paths.data, host.paths.install)
    ]
    unit = systemd.unit_text(host_id, host, *paths)
    bundle.add("systemd/" + systemd.UNIT_NAME, unit, target=systemd.UNIT_PATH)


def domain_roles(spec: Spec, host_id: str) -> dict[str, str]:
    """The domains this host serves: "mailbox" where the mailboxes are here,
    "backup" where it is only an MX (accept, queue, forward)."""
    roles: dict[str, str] = {}
    for name, domain in spec.domains.items():
        if domain.mailbox_host == host_id:
            roles[name] = "mailbox"
        elif any(mx.host == host_id for mx in domain.mx):
            roles[name] = "backup"
    return roles


def host_path(value: str, base_dir: Path) -> Path:
    """Host paths as the spec gives them; relative ones are beside the spec (local labs)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


# ---------------------------------------------------------------- users and aliases


def user_salt(address: str) -> bytes:
    """A fixed salt per address: unique per user, the same on every render."""
    return hashlib.sha256(b"mailops-passwd-salt:" + address.encode()).digest()[:16]


def passwd_text(spec: Spec, host_id: str, roles: dict[str, str], base_dir: Path) -> str:
    return passwd_file(spec, host_id, roles, base_dir).text()


def passwd_file(spec: Spec, host_id: str, roles: dict[str, str], base_dir: Path) -> Passwd:
    entries: list[tuple[str, str | _Hashing, str]] = []
    for name in sorted(roles):
        for local, user in sorted(spec.domains[name].users.items()):
            address = f"{local}@{name}"
            if roles[name] == "backup":
                # A backup MX only needs to know the address exists; it holds no hash.
                entries.append((address, "!", "nologin"))
                continue
            stored: str | _Hashing
            if user.password is not None:
                stored = _Hashing(address, user.password.resolve(base_dir))
            elif isinstance(user.password_hash, str):
                stored = user.password_hash
            else:
                stored = user.password_hash.resolve(base_dir)  # type: ignore[union-attr]
            extra = f"userdb_quota_rule=*:bytes={user.quota}" if user.quota else ""
            entries.append((address, stored, extra))
    return Passwd(HEADER.format(host=host_id).rstrip("\n"), entries)


class Passwd:
    """A host's passwd file (Dovecot passwd-file), its `password:` hashes being
    made in the background. Never shows a password or a hash in its repr."""

    def __init__(self, header: str, entries: list[tuple[str, str | _Hashing, str]]):
        self.header = header
        self.entries = entries

    @property
    def hashing(self) -> bool:
        """True when some hash is a `password:` secret's (and may keep the host's)."""
        return any(isinstance(stored, _Hashing) for _, stored, _ in self.entries)

    def text(self, current: bytes | None = None) -> str:
        """The file. Given the host's `current` one, a `password:` user keeps the
        hash the host has when it is an argon2id hash as strong as ours that
        matches the password: the same password never shows as changed."""
        now = _passwd_hashes(current)
        lines = [self.header]
        for address, stored, extra in self.entries:
            if isinstance(stored, _Hashing):
                stored = stored.result(now.get(address))
            # user:password:uid:gid:gecos:home:shell:extra (Dovecot passwd-file)
            lines.append(f"{address}:{stored}::::::{extra}")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"<Passwd of {len(self.entries)} user(s)>"


class _Hashing:
    """One `password:` secret and its hash with the user's fixed salt, made in a
    worker thread (argon2 leaves the interpreter free meanwhile)."""

    _pool: ThreadPoolExecutor | None = None
    _pool_lock = threading.Lock()

    def __init__(self, address: str, password: str):
        self.address = address
        self._password = password
        self._fixed: Future[str] = self._workers().submit(
            hash_password, password, user_salt(address)
        )

    @classmethod
    def _workers(cls) -> ThreadPoolExecutor:
        with cls._pool_lock:
            if cls._pool is None:
                cls._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="argon2")
            return cls._pool

    def result(self, current: str | None) -> str:
        fixed = self._fixed.result()
        if current is None or current == fixed or not _same_strength(current):
            return fixed
        return current if verify_password(current, self._password) else fixed

    def __repr__(self) -> str:
        return f"<password of {self.address}>"


def _same_strength(stored: str) -> bool:
    """An {ARGON2ID} hash with the parameters mailops hashes with."""
    head = stored.split("$")
    return stored.startswith("{ARGON2ID}$argon2id$") and len(head) > 3 and head[3] == ARGON2_PARAMS


def _passwd_hashes(data: bytes | None) -> dict[str, str]:
    out = {}
    for line in (data or b"").decode(errors="replace").splitlines():
        if line and not line.startswith("#"):
            fields = line.split(":")
            if len(fields) > 1:
                out[fields[0]] = fields[1]
    return out


def aliases_text(spec: Spec, host_id: str, roles: dict[str, str]) -> str:
    """Postfix virtual-alias lines; `@domain` is the catch-all."""
    lines = [HEADER.format(host=host_id).rstrip("\n")]
    for name in sorted(roles):
        domain = spec.domains[name]
        entries = _alias_entries(name, domain)
        lines += [f"{key}  {', '.join(targets)}" for key, targets in entries]
    return "\n".join(lines) + "\n"


def _alias_entries(name: str, domain: Domain) -> list[tuple[str, list[str]]]:
    def full(target: str) -> str:
        return target if "@" in target else f"{target}@{name}"

    entries = []
    for local, user in sorted(domain.users.items()):
        entries += [(f"{alias}@{name}", [f"{local}@{name}"]) for alias in sorted(user.aliases)]
    for local, targets in sorted(domain.aliases.items()):
        entries.append((f"{local}@{name}", [full(t) for t in targets]))
    if domain.catch_all:
        entries.append((f"@{name}", [full(domain.catch_all)]))
    return sorted(entries)


# ---------------------------------------------------------------- keys and secrets


def _tls_files(bundle: Bundle, host_id: str, host: Host, key_dir: Path) -> dict[str, str] | None:
    if host.tls is None:
        return None
    if host.tls.self_signed:
        cert, key = ensure_self_signed(key_dir, host_id, host.fqdn, host.addresses())
        bundle.add("tls/cert.pem", cert)
        bundle.add("tls/key.pem", key, 0o600, True)
        return {"cert": "tls/cert.pem", "key": "tls/key.pem"}
    return {"cert": host.tls.cert, "key": host.tls.key}  # type: ignore[dict-item]


def _dkim_files(bundle: Bundle, spec: Spec, roles: dict[str, str], key_dir: Path):
    """The active (first) selector's key of each mailbox domain: this host signs
    its mail. Only those keys are read (and made if missing): the other
    selectors' are `mailops dns`'s business, and a spec of many hosts would
    otherwise load every key once per host."""
    active: dict[str, tuple[str, str]] = {}
    for name, role in roles.items():
        selectors = spec.domains[name].dkim.selectors
        if role != "mailbox" or not selectors:
            continue
        selector = selectors[0]
        path = dkim.key_path(key_dir, name, selector.name)
        dkim.ensure_key(path, selector.algorithm)
        inputs.note_file(path)
        rel = f"dkim/{name}.{selector.name}.key"
        bundle.add(rel, path.read_bytes(), 0o600, True)
        active[name] = (selector.name, rel)
    return active


def _relay_files(bundle: Bundle, spec: Spec, roles: dict[str, str], base_dir: Path):
    used = {spec.domains[d].outbound.relay for d, role in roles.items() if role == "mailbox"}
    files = {}
    for name in sorted(r for r in used if r):
        relay = spec.relays[name]
        if relay.password is not None:
            rel = f"relays/{name}.password"
            bundle.add(rel, relay.password.resolve(base_dir).encode(), 0o600, True)
            files[name] = rel
    return files


# ---------------------------------------------------------------- runtime.toml


def runtime_config(spec, host_id, roles, base_dir, tls, dkim_files, relay_files) -> dict:
    host = spec.hosts[host_id]
    data_dir = host_path(host.paths.data, base_dir)
    config: dict[str, Any] = {
        "hostname": host.fqdn,
        "data_dir": str(data_dir),
        "passwd_file": "passwd",
        "aliases_file": "aliases",
    }
    if host.service == "process":
        config["pid_file"] = str(data_dir / "mailops.pid")
    elif host.connection == "ssh":
        config["user"] = "mailops"
    if host.resolver:
        config["resolver"] = list(host.resolver)
    if tls:
        config["tls"] = tls
    config["listeners"] = [
        {"service": s, "address": address, "port": getattr(host.ports, s)}
        for s in host.services
        for address in host.listen
    ]
    config["domains"] = {
        name: _domain_config(spec, host_id, name, roles[name], dkim_files) for name in sorted(roles)
    }
    relays = {spec.domains[d].outbound.relay for d, role in roles.items() if role == "mailbox"}
    config["relays"] = {
        name: _relay_config(spec, name, relay_files) for name in sorted(r for r in relays if r)
    }
    return config


def _domain_config(spec: Spec, host_id: str, name: str, role: str, dkim_files) -> dict:
    domain = spec.domains[name]
    out: dict[str, Any] = {"role": role, "subaddress": domain.subaddress or ""}
    if role == "mailbox" and domain.outbound.relay:
        out["relay"] = domain.outbound.relay
    if name in dkim_files:
        out["dkim_selector"], out["dkim_key"] = dkim_files[name]
    if role == "backup":
        mine = min(mx.priority for mx in domain.mx if mx.host == host_id)
        better = sorted((mx for mx in domain.mx if mx.priority < mine), key=lambda m: m.priority)
        out["primary_mx"] = [spec.hosts[mx.host].fqdn if mx.host else mx.name for mx in better]
    return out


def _relay_config(spec: Spec, name: str, relay_files: dict[str, str]) -> dict:
    relay = spec.relays[name]
    out: dict[str, Any] = {"host": relay.host, "port": relay.port, "tls": relay.tls}
    if relay.username:
        out["username"] = relay.username
    if name in relay_files:
        out["password_file"] = relay_files[name]
    return out


def toml_text(data: dict) -> str:
    """A small TOML writer for the shapes runtime.toml has: scalars and lists of
    scalars first, then tables, then arrays of tables. Deterministic output."""
    lines: list[str] = []
    _toml_table(lines, [], data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_table(lines: list[str], path: list[str], table: dict) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_list(v)}
    if path and (scalars or not table):
        lines += ["", f"[{'.'.join(_toml_key(p) for p in path)}]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars.items()]
    for key, value in table.items():
        if _is_table(value) and value:
            _toml_table(lines, [*path, key], value)
        elif _is_table_list(value):
            for item in value:
                lines += ["", f"[[{'.'.join(_toml_key(p) for p in [*path, key])}]]"]
                lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items()]


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
