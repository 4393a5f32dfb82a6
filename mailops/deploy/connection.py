"""How mailops reaches a host: one interface, two implementations.

`SSHConnection` (paramiko: key or agent auth, host key checked against the
spec's known_hosts) and `LocalConnection` (this machine, no SSH). Both only
start processes whose stdin/stdout carry agent frames, so everything above
(facts, plan, apply, service) runs the same code for both.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mailops.deploy.errors import DeployError, HostKeyError


class Pipe(Protocol):
    """A started remote command: its stdin and stdout, then its exit."""

    def write(self, data: bytes) -> None: ...
    def readline(self) -> bytes: ...
    def read(self, size: int) -> bytes: ...
    def finish(self) -> tuple[int | None, str]: ...  # exit code (None: unknown), stderr


class Connection(Protocol):
    host_id: str
    description: str

    def run(self, command: str) -> Pipe: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------- local


class _ProcessPipe:
    def __init__(self, proc: subprocess.Popen, stderr):
        self.proc, self.stderr = proc, stderr

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def readline(self) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def read(self, size: int) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.read(size)

    def finish(self) -> tuple[int | None, str]:
        if self.proc.stdin:
            self.proc.stdin.close()
        code = self.proc.wait()
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace")
        self.stderr.close()
        return code, text


class LocalConnection:
    """This machine: the agent runs as a child process with this Python."""

    def __init__(self, host_id: str):
        self.host_id = host_id
        self.description = "local"

    def run(self, command: str) -> _ProcessPipe:
        # The agent's python3 is ours; `command` names python3 for the shell on SSH.
        argv = shlex.split(command)
        if argv and argv[0] == "python3":
            argv[0] = sys.executable
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by finish()
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, bufsize=-1
        )
        return _ProcessPipe(proc, stderr)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- SSH


@dataclass(frozen=True)
class SSHTarget:
    host_id: str
    address: str
    port: int
    user: str
    identity_file: Path | None
    known_hosts: Path
    spec_path: str  # for messages: `mailops trust SPEC HOST`


class _ChannelPipe:
    def __init__(self, channel):
        self.channel = channel
        self.stdout = channel.makefile("rb", -1)

    def write(self, data: bytes) -> None:
        self.channel.sendall(data)

    def readline(self) -> bytes:
        return self.stdout.readline()

    def read(self, size: int) -> bytes:
        return self.stdout.read(size)

    def finish(self) -> tuple[int | None, str]:
        try:
            self.channel.shutdown_write()
            code = self.channel.recv_exit_status()
            err = self.channel.makefile_stderr("rb", -1).read().decode(errors="replace")
        except (OSError, EOFError):
            return None, ""
        finally:
            self.channel.close()
        return code, err


class SSHConnection:
    def __init__(self, target: SSHTarget, accept_new_host_keys: bool = False, timeout: float = 15):
        self.host_id = target.host_id
        self.target = target
        self.description = f"ssh {target.user}@{target.address}:{target.port}"
        self.client = None
        # The TCP connection first: sshd starts its side of the session (a new
        # process that loads its keys) while paramiko is being imported here.
        self._sock = self._open_socket(timeout)
        try:
            self.client = self._client(accept_new_host_keys)
            self._connect(timeout)
        except BaseException:
            self.close()
            raise

    def _open_socket(self, timeout: float):
        from mailops.deploy.sshlib import connect_socket

        t = self.target
        if t.identity_file and not t.identity_file.exists():
            raise DeployError(f"{t.host_id}: identity file {t.identity_file} does not exist")
        try:
            return connect_socket(t.address, t.port, timeout)
        except (TimeoutError, OSError) as exc:
            raise _unreachable(t, exc) from None

    def _client(self, accept_new_host_keys: bool):
        from mailops.deploy import hostkeys  # here, so that local-only runs never import paramiko
        from mailops.deploy.sshlib import paramiko_module

        t = self.target
        client = paramiko_module().SSHClient()
        name = hostkeys.entry_name(t.address, t.port)
        for key_type, key in hostkeys.entries_for(t.known_hosts, name).items():
            client.get_host_keys().add(name, key_type, key)
        client.set_missing_host_key_policy(
            hostkeys.Policy(t.host_id, t.known_hosts, t.spec_path, accept_new_host_keys)
        )
        return client

    def _connect(self, timeout: float) -> None:
        from mailops.deploy.sshlib import paramiko_module

        paramiko = paramiko_module()
        t = self.target
        identity = str(t.identity_file) if t.identity_file else None
        try:
            self.client.connect(
                t.address,
                port=t.port,
                username=t.user,
                key_filename=identity,
                look_for_keys=identity is None,
                allow_agent=True,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                sock=self._sock,
            )
        except paramiko.BadHostKeyException as exc:
            from mailops.deploy import hostkeys

            name = hostkeys.entry_name(t.address, t.port)
            raise HostKeyError(
                hostkeys.changed_key_message(
                    t.host_id, name, exc.expected_key, exc.key, t.known_hosts
                )
            ) from None
        except paramiko.AuthenticationException:
            how = f"key {identity}" if identity else "the SSH agent and ~/.ssh keys"
            raise DeployError(
                f"{t.host_id}: SSH login as {t.user}@{t.address}:{t.port} refused (tried {how})"
            ) from None
        except (TimeoutError, OSError) as exc:
            raise _unreachable(t, exc) from None
        except paramiko.SSHException as exc:
            raise DeployError(f"{t.host_id}: SSH to {t.address}:{t.port} failed: {exc}") from None

    def run(self, command: str) -> _ChannelPipe:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise DeployError(f"{self.host_id}: the SSH connection is closed")
        channel = transport.open_session()
        channel.exec_command(command)
        return _ChannelPipe(channel)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self._sock is not None:
            self._sock.close()


def _unreachable(t: SSHTarget, exc: OSError) -> DeployError:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return DeployError(f"{t.host_id}: cannot connect to {t.address} port {t.port}: {reason}")


def agent_command(login_user: str | None, needs_root: bool) -> str:
    """`python3 -c BOOT`, through `sudo -n` when a non-root login must act as root."""
    from mailops.deploy.agent.boot import BOOT

    # -S: no site-packages (the agent needs the standard library only), which
    # also spares the start-up cost of whatever .pth files the host has.
    command = f"python3 -S -c {shlex.quote(BOOT)}"
    if needs_root and login_user not in (None, "root"):
        command = f"sudo -n {command}"
    return command
