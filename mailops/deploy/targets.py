"""The hosts a command works on: picked from the spec, rendered, and how to
reach each one."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

from mailops.deploy.connection import Connection, LocalConnection, SSHConnection, SSHTarget
from mailops.deploy.desired import Desired, desired_files
from mailops.deploy.layout import Layout, host_layout
from mailops.errors import UsageError
from mailops.render.host import Passwd, render_host_deferred
from mailops.spec.load import LoadedSpec

UNSETTLED = ""  # the sha256 of a file whose bytes wait for the host's facts


@dataclass
class Target:
    host_id: str
    layout: Layout
    desired: list[Desired]
    ssh: SSHTarget | None  # None for connection: local
    # passwd when it holds `password:` hashes, which settle against the host's
    # current passwd (see render.host.Passwd); its Desired is UNSETTLED till then.
    passwd: Passwd | None = None

    def settle(self, contents: dict[str, bytes]) -> list[Desired]:
        """The desired files, passwd finished against the host's current one
        (`contents`: the old bytes the facts brought back, by path)."""
        if self.passwd is None:
            return self.desired
        out = []
        for item in self.desired:
            if item.sha256 == UNSETTLED:
                data = self.passwd.text(contents.get(item.path)).encode()
                item = dataclasses.replace(item, data=data, sha256=hashlib.sha256(data).hexdigest())
            out.append(item)
        return out

    @property
    def needs_root(self) -> bool:
        return self.layout.service == "systemd"

    @property
    def login_user(self) -> str | None:
        return self.ssh.user if self.ssh else None

    def connect(self, accept_new_host_keys: bool = False) -> Connection:
        if self.ssh is None:
            return LocalConnection(self.host_id)
        return SSHConnection(self.ssh, accept_new_host_keys)


def select_hosts(loaded: LoadedSpec, wanted: list[str] | None) -> list[str]:
    hosts = list(loaded.spec.hosts)
    if not wanted:
        return hosts
    unknown = [h for h in wanted if h not in loaded.spec.hosts]
    if unknown:
        raise UsageError(
            f"no host {', '.join(repr(h) for h in unknown)} in {loaded.path} "
            f"(hosts: {', '.join(hosts)})"
        )
    return [h for h in hosts if h in wanted]


def ssh_target(loaded: LoadedSpec, host_id: str) -> SSHTarget | None:
    host = loaded.spec.hosts[host_id]
    if host.connection == "local":
        return None
    ssh = host.ssh

    def beside_spec(value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else loaded.base_dir / path

    return SSHTarget(
        host_id=host_id,
        address=ssh.address or host.fqdn,
        port=ssh.port,
        user=ssh.user,
        identity_file=beside_spec(ssh.identity_file) if ssh.identity_file else None,
        known_hosts=beside_spec(ssh.known_hosts or "~/.ssh/known_hosts"),
        spec_path=str(loaded.path),
    )


def make_target(loaded: LoadedSpec, host_id: str) -> Target:
    layout = host_layout(loaded, host_id)
    bundle, passwd = render_host_deferred(loaded, host_id)
    if not passwd.hashing:
        bundle.add("passwd", passwd.text().encode(), 0o640, True)
        desired = desired_files(bundle, layout)
        return Target(host_id, layout, desired, ssh_target(loaded, host_id))
    bundle.add("passwd", b"", 0o640, True)  # settled once the facts bring the host's passwd
    desired = [
        dataclasses.replace(d, sha256=UNSETTLED) if d.rel == "passwd" else d
        for d in desired_files(bundle, layout)
    ]
    return Target(host_id, layout, desired, ssh_target(loaded, host_id), passwd)
