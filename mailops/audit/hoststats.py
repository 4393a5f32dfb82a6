"""Queue length, oldest queued message and free disk of a host's data folder.

deploy's facts do not carry these (yet), so a few lines of Python run on the
host over the same connection the facts came through: they only read
directory entries and statvfs, and print one JSON line. The queue is counted
as the runtime keeps it (DESIGN.md §2: `<data>/queue/<id>.msg`, one immutable
file per message, so its mtime is when the message was queued).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from mailops.deploy.connection import Connection

SCRIPT = r"""
import json, os, sys, time
data = sys.argv[1]
count, oldest = 0, None
try:
    with os.scandir(os.path.join(data, "queue")) as entries:
        for entry in entries:
            if entry.name.endswith(".msg") and entry.is_file():
                count += 1
                mtime = entry.stat().st_mtime
                oldest = mtime if oldest is None else min(oldest, mtime)
except OSError:
    pass
free = size = None
try:
    st = os.statvfs(data)
    free, size = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
except OSError:
    pass
result = {"now": time.time(), "queue": count, "oldest": oldest, "free": free, "size": size}
print(json.dumps(result))
"""


@dataclass(frozen=True)
class HostStats:
    queue: int
    oldest_age: float | None
    """Seconds the oldest queued message has waited (the host's clock)."""
    free: int | None
    size: int | None


class StatsError(Exception):
    pass


def read_stats(
    connection: Connection, data_dir: str, login_user: str | None, needs_root: bool
) -> HostStats:
    command = f"python3 -c {shlex.quote(SCRIPT)} {shlex.quote(data_dir)}"
    if needs_root and login_user not in (None, "root"):
        command = f"sudo -n {command}"  # the queue belongs to the runtime's user
    pipe = connection.run(command)
    line = pipe.readline()
    code, stderr = pipe.finish()
    try:
        data = json.loads(line)
    except ValueError:
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {code}"
        raise StatsError(f"reading the queue and disk failed: {detail}") from None
    oldest = data["oldest"]
    return HostStats(
        queue=data["queue"],
        oldest_age=None if oldest is None else max(0.0, data["now"] - oldest),
        free=data["free"],
        size=data["size"],
    )
