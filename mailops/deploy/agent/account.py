"""The unprivileged system user the runtime runs as (systemd hosts)."""

from __future__ import annotations

import pwd

from .errors import AgentFailure


class AccountError(AgentFailure):
    pass


def ensure_user(name: str, home: str) -> bool:
    """Create `name` (with a group of the same name) unless it exists; True if made."""
    try:
        pwd.getpwnam(name)
        return False
    except KeyError:
        pass
    import shutil
    import subprocess

    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    nologin = shutil.which("nologin") or "/usr/sbin/nologin"
    command = [useradd, "--system", "--user-group", "--no-create-home"]
    command += ["--home-dir", home, "--shell", nologin, name]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise AccountError(f"cannot create user {name}: {result.stderr.strip()}")
    return True
