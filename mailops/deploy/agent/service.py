"""Starting, signalling and stopping the runtime on the host.

Two kinds, one interface: `process` (mailops starts `mailops serve` itself,
detached, and finds it again by its pid file) and `systemd` (systemctl on the
unit apply installed). A request's "service" part says which, and where.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from .errors import AgentFailure

# subprocess is imported where a process is started: a facts session starts none.


class ServiceError(AgentFailure):
    pass


def controller(spec: dict):
    return Systemd(spec) if spec["kind"] == "systemd" else Process(spec)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not serving anything (it is only waiting to be reaped).
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return " | ".join(line for line in text.splitlines()[-lines:] if line.strip())


class Process:
    """`mailops serve` run by mailops itself; its pid file says which process it is."""

    def __init__(self, spec: dict):
        self.command: list[str] = spec["command"]
        self.pid_file = Path(spec["pid_file"])
        self.log_file = Path(spec["log_file"])
        self.stop_timeout = float(spec.get("stop_timeout", 45))
        self.started = None  # the subprocess.Popen of a runtime started here

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if not _alive(pid):
            return None
        # A pid file can outlive its process and the number be reused: check it is ours.
        with contextlib.suppress(OSError):
            if b"serve" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return None
        return pid

    def state(self) -> dict:
        pid = self.pid()
        return {"running": pid is not None, "pid": pid}

    def start(self) -> None:
        import subprocess

        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            # A session of its own: the runtime outlives this agent and its SSH session.
            self.started = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
                cwd="/",  # hold no folder of the session that started it
            )

    def reload(self) -> None:
        pid = self.pid()
        if pid is None:
            raise ServiceError("the runtime is not running (nothing to reload)")
        os.kill(pid, signal.SIGHUP)

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def restart(self) -> None:
        self.stop()
        self.start()

    def gone(self) -> bool:
        """The runtime this agent started has exited, or (if it started none)
        no runtime runs at all."""
        if self.started is not None:
            return self.started.poll() is not None
        return self.pid() is None

    def diagnostics(self) -> str:
        return log_tail(self.log_file)


class Systemd:
    """The runtime as the systemd unit apply installed."""

    def __init__(self, spec: dict):
        self.unit = spec["unit"]

    def _ctl(self, *args: str, check: bool = True) -> str:
        import subprocess

        result = subprocess.run(
            ["systemctl", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if check and result.returncode != 0:
            message = (result.stderr or result.stdout).strip().splitlines()
            raise ServiceError(
                f"systemctl {' '.join(args)}: {message[-1] if message else 'failed'}"
            )
        return result.stdout.strip()

    def pid(self) -> int | None:
        try:
            text = self._ctl("show", "--property=MainPID", "--value", self.unit, check=False)
        except FileNotFoundError:
            return None
        pid = int(text) if text.isdigit() else 0
        return pid or None

    def state(self) -> dict:
        pid = self.pid()
        return {"running": pid is not None, "pid": pid}

    def daemon_reload(self) -> None:
        self._ctl("daemon-reload")

    def start(self) -> None:
        self._ctl("enable", self.unit)
        self._ctl("start", self.unit)

    def reload(self) -> None:
        self._ctl("reload", self.unit)

    def stop(self) -> None:
        self._ctl("stop", self.unit)

    def restart(self) -> None:
        self._ctl("enable", self.unit)
        self._ctl("restart", self.unit)

    def gone(self) -> bool:
        state = self._ctl("is-active", self.unit, check=False)
        return state in ("failed", "inactive")

    def diagnostics(self) -> str:
        import subprocess

        with contextlib.suppress(OSError):
            result = subprocess.run(
                ["journalctl", "-u", self.unit, "-n", "5", "--no-pager", "-o", "cat"],
                capture_output=True,
                text=True,
            )
            return " | ".join(result.stdout.strip().splitlines())
        return ""


def run_handler(control, handler: str | None) -> None:
    """start, reload or restart; reload falls back to start when nothing runs."""
    if handler is None:
        return
    running = control.pid() is not None
    if handler == "reload" and running:
        control.reload()
    elif handler == "restart" and running:
        control.restart()
    elif handler in ("reload", "restart", "start") and not running:
        control.start()
    elif handler == "stop":
        control.stop()
