"""Where one host's files live and how its runtime is run, from the spec.

Every absolute path that plan and apply touch on a host comes from here, so
the facts request, the transaction and the service commands agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailops.render.bundle import BundleFile
from mailops.render.host import host_path
from mailops.render.systemd import UNIT_NAME
from mailops.spec.load import LoadedSpec

RUNTIME_USER = "mailops"
STATUS_NAME = "runtime-status.json"  # written by the runtime (server.py write_status)


@dataclass(frozen=True)
class Layout:
    host_id: str
    fqdn: str
    connection: str  # ssh | local
    service: str  # systemd | process
    config_dir: str
    data_dir: str
    install_dir: str
    run_user: str | None  # the unprivileged user the runtime runs as, if any
    listeners: tuple[tuple[str, str, int], ...]  # (service, address, port)

    def target(self, item: BundleFile) -> str:
        """Where a bundle file goes on the host."""
        return item.target or f"{self.config_dir}/{item.path}"

    @property
    def runtime_toml(self) -> str:
        return f"{self.config_dir}/runtime.toml"

    @property
    def manifest(self) -> str:
        return f"{self.config_dir}/.mailops-manifest.json"

    @property
    def pid_file(self) -> str:
        return f"{self.data_dir}/mailops.pid"  # render puts it here for service: process

    @property
    def status_file(self) -> str:
        return f"{self.data_dir}/{STATUS_NAME}"

    @property
    def backups_dir(self) -> str:
        return f"{self.data_dir}/backups"

    @property
    def release_prefix(self) -> str:
        return f"{self.install_dir}/releases"

    def service_spec(self) -> dict:
        """How the agent controls the runtime."""
        return {
            "kind": self.service,
            "unit": UNIT_NAME,
            "command": [
                f"{self.install_dir}/current/bin/mailops",
                "serve",
                "--config",
                self.runtime_toml,
            ],
            "pid_file": self.pid_file,
            "log_file": f"{self.data_dir}/mailops.log",
        }


def host_layout(loaded: LoadedSpec, host_id: str) -> Layout:
    host = loaded.spec.hosts[host_id]

    def where(value: str) -> str:
        return str(host_path(value, loaded.base_dir))

    run_user = RUNTIME_USER if host.service == "systemd" else None
    listeners = tuple(
        (s, address, getattr(host.ports, s)) for s in host.services for address in host.listen
    )
    return Layout(
        host_id=host_id,
        fqdn=host.fqdn,
        connection=host.connection,
        service=host.service,
        config_dir=where(host.paths.config),
        data_dir=where(host.paths.data),
        install_dir=where(host.paths.install),
        run_user=run_user,
        listeners=listeners,
    )
