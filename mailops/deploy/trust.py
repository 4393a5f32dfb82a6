"""`mailops trust SPEC HOST`: show a host's SSH key and add it to known_hosts."""

from __future__ import annotations

from collections.abc import Callable

from mailops.deploy import hostkeys
from mailops.deploy.connection import SSHTarget
from mailops.deploy.errors import DeployError, HostKeyError
from mailops.errors import UsageError


def fetch_key(target: SSHTarget, timeout: float = 15):
    """The key the host presents, from a key exchange only (no login)."""
    from mailops.deploy.sshlib import connect_socket, paramiko_module

    paramiko = paramiko_module()
    try:
        sock = connect_socket(target.address, target.port, timeout)
    except OSError as exc:
        raise DeployError(
            f"{target.host_id}: cannot connect to {target.address} port {target.port}: "
            f"{exc.strerror or exc}"
        ) from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except paramiko.SSHException as exc:
        raise DeployError(f"{target.host_id}: SSH key exchange failed: {exc}") from None
    finally:
        transport.close()


def trust(target: SSHTarget | None, confirm: Callable[[str], bool]) -> str:
    """Add the host's key to the spec's known_hosts after `confirm(description)`."""
    if target is None:
        raise UsageError("this host has connection: local; there is no SSH key to trust")
    key = fetch_key(target)
    name = hostkeys.entry_name(target.address, target.port)
    known = hostkeys.known_key(target.known_hosts, name, key.get_name())
    described = f"{name} presents {key.get_name()} {hostkeys.fingerprint(key)}"
    if known is not None and known == key:
        return f"{target.host_id}: {described}; already trusted in {target.known_hosts}"
    if known is not None:
        raise HostKeyError(
            hostkeys.changed_key_message(target.host_id, name, known, key, target.known_hosts)
        )
    if not confirm(described):
        raise DeployError(f"{target.host_id}: not trusted; nothing was written")
    hostkeys.append(target.known_hosts, name, key)
    return f"{target.host_id}: trusted {described}; added to {target.known_hosts}"
