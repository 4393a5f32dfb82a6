"""Private OpenSSH servers for deploy tests and benchmarks.

Each `SshServer` is a real `sshd` on 127.0.0.1 and a free port, with its own
generated host key, one authorised user key (the caller logs in as the current
user, root here), and every path under one folder. `ssh_servers(n, root)`
starts n of them and always stops them, and any runtime the tests started
through them (by the pid files under the test's folder).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def sshd_available() -> bool:
    return Path(SSHD).exists() and Path(KEYGEN).exists() and os.geteuid() == 0


def free_port() -> int:
    from tests.deploy.specs import free_ports

    return free_ports(1)[0]


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(
        [KEYGEN, "-q", "-t", kind, "-N", "", "-C", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
UseDNS no
MaxStartups 100:30:200
Subsystem sftp internal-sftp
LogLevel ERROR
# This machine's root ~/.bashrc runs `pyenv init` (a quarter second per
# command). A mail host has no such thing: give sessions a HOME of their own.
SetEnv HOME={root}/home{env}

"""


@dataclass
class SshServer:
    root: Path
    port: int
    user_key: Path
    env: dict[str, str] = field(default_factory=dict)  # more variables for sessions
    proc: subprocess.Popen | None = None
    host_key: Path = field(init=False)

    def __post_init__(self) -> None:
        self.host_key = self.root / "ssh_host_ed25519_key"

    def prepare(self) -> None:
        (self.root / "home").mkdir(parents=True, exist_ok=True)
        if not self.host_key.exists():
            keygen(self.host_key)
        shutil.copy(f"{self.user_key}.pub", self.root / "authorized_keys")
        env = "".join(f" {k}={v}" for k, v in self.env.items())
        config = CONFIG.format(port=self.port, host_key=self.host_key, root=self.root, env=env)
        (self.root / "sshd_config").write_text(config)

    def start(self) -> None:
        self.prepare()
        # sshd wants its privilege separation folder; Debian makes it at boot.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "sshd.log").open("ab"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2) as s,
            ):
                if s.recv(4).startswith(b"SSH-"):
                    return
            time.sleep(0.02)
        raise RuntimeError("sshd did not start")

    def kill_connections(self) -> None:
        """Kill the listener and every sshd process it forked for a connection:
        seen from the client, the network is gone. What the sessions started
        (the agent, the runtime) lives on, as on a host whose link dropped."""
        if self.proc is None:
            return
        doomed = [pid for pid in _descendants(self.proc.pid) if _is_sshd(pid)]
        for pid in [self.proc.pid, *doomed]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        self.kill_connections()

    def known_hosts_line(self) -> str:
        pub = Path(f"{self.host_key}.pub").read_text().split()
        return f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n"


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _descendants(root: int) -> list[int]:
    parents = _parents()
    found, todo = [], [root]
    while todo:
        parent = todo.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        todo += children
    return found


def _is_sshd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sshd")
    except OSError:
        return False


def stop_runtime(pid_file: Path, timeout: float = 40.0) -> None:
    """Stop a runtime that a test started through apply (its pid file says which)."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def ssh_servers(
    n: int, root: Path, env: dict[str, str] | None = None, runtimes: Path | None = None
) -> Iterator[list[SshServer]]:
    """n servers under `root`; at the end, also every runtime whose pid file is
    under `runtimes` (default: root's parent, where the tests put hosts' data)."""
    root.mkdir(parents=True, exist_ok=True)
    user_key = root / "id_ed25519"
    if not user_key.exists():
        keygen(user_key)
    servers = [
        SshServer(root / f"host{i}", free_port(), user_key, dict(env or {})) for i in range(n)
    ]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()
        for pid_file in (runtimes or root.parent).rglob("mailops.pid"):
            stop_runtime(pid_file)
