"""Specs for deploy tests: one host per private sshd (or local), each serving
its own domain on free loopback ports, paths under the test's folder."""

from __future__ import annotations

import functools
import random
import socket
from pathlib import Path

from mailops.passwords import hash_password
from tests.deploy.sshd import SshServer

SERVICES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s")


@functools.lru_cache(maxsize=8)
def password_hash(password: str) -> str:
    return hash_password(password, b"deploy-test-salt")


# Below Linux's ephemeral range (32768–60999): a port picked here is not taken
# meanwhile by some other program's outgoing connection or bind to port 0.
PORT_RANGE = (20000, 32000)
_handed_out: set[int] = set()  # never the same port twice in one process


def free_ports(n: int) -> list[int]:
    """n distinct ports that nothing listens on now and no earlier call gave."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(*PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        _handed_out.add(port)
    return ports


def host_block(
    host_id: str,
    root: Path,
    install: Path,
    server: SshServer | None,
    ports: dict[str, int] | None = None,
    services: tuple[str, ...] = SERVICES,
) -> str:
    ports = ports or dict(zip(services, free_ports(len(services)), strict=True))
    if server is None:
        how = "    connection: local\n"
    else:
        how = (
            f"    ssh: {{address: 127.0.0.1, port: {server.port}, user: root,\n"
            f"          identity_file: {server.user_key}}}\n"
        )
    port_text = ", ".join(f"{k}: {v}" for k, v in ports.items())
    return (
        f"  {host_id}:\n"
        f"    fqdn: {host_id}.deploy.test\n"
        f"    ipv4: 127.0.0.1\n"
        f"{how}"
        f"    service: process\n"
        f"    listen: [127.0.0.1]\n"
        f"    services: [{', '.join(services)}]\n"
        f"    ports: {{{port_text}}}\n"
        f"    tls: {{self_signed: true}}\n"
        f"    paths: {{config: {root}/{host_id}/etc, data: {root}/{host_id}/data, "
        f"install: {install}}}\n"
    )


def domain_block(host_id: str, passwords: dict[str, str] | None = None) -> str:
    passwords = {"alice": "alice-pw", "bob": "bob-pw", **(passwords or {})}
    users = "".join(
        f'      {u}: {{password_hash: "{password_hash(pw)}"}}\n' for u, pw in passwords.items()
    )
    return (
        f"  {host_id}.test:\n"
        f"    mailbox_host: {host_id}\n"
        f"    mx: [{{host: {host_id}, priority: 10}}]\n"
        f"    users:\n{users}"
        f"    aliases: {{postmaster: alice}}\n"
    )


def write_spec(path: Path, hosts: str, domains: str, known_hosts: Path | None) -> Path:
    defaults = f"defaults:\n  ssh: {{known_hosts: {known_hosts}}}\n" if known_hosts else ""
    path.write_text(f"version: 1\n{defaults}hosts:\n{hosts}domains:\n{domains}")
    return path
