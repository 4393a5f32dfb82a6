"""The systemd unit that runs the runtime on a `service: systemd` host.

The runtime runs as the unprivileged `mailops` user (apply creates it) and
binds ports below 1024 through CAP_NET_BIND_SERVICE, its only capability.
The sandbox leaves it the data folder to write and nothing else: the config
folder, the venv and the rest of the system are read-only to it.
"""

from __future__ import annotations

from pathlib import Path

from mailops.spec.model import Host

UNIT_NAME = "mailops.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
DRAIN_SECONDS = 30  # the runtime's own drain on SIGTERM (server.DRAIN_SECONDS)

UNIT = """\
# Rendered by mailops for host {host_id}; changes here are overwritten.
[Unit]
Description=mailops mail runtime for {fqdn} (SMTP, submission, IMAP, POP3)
Documentation=man:mailops(1)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=mailops
Group=mailops
ExecStart={install}/current/bin/mailops serve --config {config}/runtime.toml
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2s
TimeoutStopSec={stop_timeout}s
UMask=0027
LimitNOFILE=65536

# Low ports without root, and nothing else.
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes

# Read-only system; the data folder (mailboxes, queue) is the one place it writes.
ProtectSystem=strict
ReadWritePaths={data}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"""


def unit_text(host_id: str, host: Host, config: Path, data: Path, install: Path) -> bytes:
    """The unit's bytes; the same spec gives the same bytes."""
    return UNIT.format(
        host_id=host_id,
        fqdn=host.fqdn,
        install=install,
        config=config,
        data=data,
        stop_timeout=DRAIN_SECONDS + 15,
    ).encode()
