"""One apply at a time per host: an flock on a lock file of the host's config folder.

The lock file lives in /run/lock (or the temp folder), named after the config
folder, so taking it writes nothing where mailops manages files (a refused
apply leaves the host exactly as it was). The lock belongs to the agent
process: it is released when the session ends in any way (done, killed,
connection lost) and never goes stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from .errors import AgentFailure
from .files import sha256


class LockError(AgentFailure):
    pass


def lock_path(config_dir: str) -> Path:
    if os.access("/run/lock", os.W_OK):
        folder = "/run/lock"
    else:
        import tempfile

        folder = tempfile.gettempdir()
    digest = sha256(config_dir.encode()).hexdigest()[:16]
    return Path(folder) / f"mailops-apply-{digest}.lock"


class HostLock:
    def __init__(self, config_dir: str):
        self.config_dir = config_dir
        self.path = lock_path(config_dir)
        self.fd: int | None = None

    def acquire(self) -> None:
        if self.fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise LockError(
                f"another apply is running on this host ({holder or 'holder unknown'}) for "
                f"{self.config_dir}; wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        os.pwrite(fd, f"pid {os.getpid()} since {started}\n".encode(), 0)
        self.fd = fd


@contextlib.contextmanager
def blocking(key: str):
    """Wait for, then hold, the lock named by `key` for the `with` block."""
    fd = os.open(lock_path(key), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
