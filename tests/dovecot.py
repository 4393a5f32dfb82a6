"""A private Dovecot for the tests and benchmarks that compare against it.

Its configuration, runtime folders and logs live in a folder of the caller's;
the system's Dovecot (/etc/dovecot, its services) is never touched. Callers
differ in protocol, TLS and mail location, so they pass those; the rest of the
configuration, starting, waiting for the ports and stopping are here.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
PLAINTEXT = "ssl = no\ndisable_plaintext_auth = no\nauth_mechanisms = plain"

CONFIG = """
base_dir = {conf}/run
state_dir = {conf}/state
log_path = {conf}/dovecot.log
protocols = {protocol}
listen = 127.0.0.1
{tls}
first_valid_uid = 0
mail_location = {mail_location}
{extra}
passdb {{
  driver = passwd-file
  args = {passdb_args}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={conf}/home/%u
}}
{services}
"""


def available(protocol: str = "imap") -> bool:
    return Path(DOVECOT).exists() and Path(f"/usr/lib/dovecot/{protocol}").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mail_owner(paths: Iterable[Path]) -> tuple[int, int]:
    """The uid and gid Dovecot's mail processes run as. Dovecot never runs them as
    root, so as root the `paths` (with everything in them) are given to nobody."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    for path in paths:
        for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
            os.chown(item, uid, gid)
    return uid, gid


def config(
    conf: Path,
    *,
    protocol: str,
    mail_location: str,
    uid: int,
    gid: int,
    services: str,
    passdb_args: str | None = None,
    tls: str = PLAINTEXT,
    extra: str = "",
) -> Path:
    """Write `conf`/dovecot.conf (creating the folders it names) and return its path."""
    for sub in ("run", "state", "home"):
        (conf / sub).mkdir(parents=True, exist_ok=True)
    os.chown(conf / "home", uid, gid)  # the users' homes: the mail processes write there
    path = conf / "dovecot.conf"
    path.write_text(
        CONFIG.format(
            conf=conf,
            protocol=protocol,
            tls=tls,
            mail_location=mail_location,
            extra=extra,
            passdb_args=passdb_args or f"username_format=%u {conf}/passwd",
            uid=uid,
            gid=gid,
            services=services,
        )
    )
    return path


def launch(conf_file: Path, ports: Iterable[int], log: Path) -> subprocess.Popen:
    """Start Dovecot in the foreground and return once every port answers."""
    proc = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(conf_file)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        for port in ports:
            wait_port(port, proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not start:\n{log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
