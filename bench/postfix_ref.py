"""A private Postfix instance on loopback, the reference the SMTP ingest bench compares to.

    with postfix_instance(Path(tmp), port) as pf:  # PostfixUnavailable if it cannot start
        ... load 127.0.0.1:pf.port, count the files in pf.maildir / "new" ...

Everything lives under one temporary directory: its own config_directory (main.cf,
master.cf), queue_directory, data_directory, log file and Maildir base, so the system's
/etc/postfix and its instance are never touched. The instance is set up like mailops in
the tests: `example.test` is a virtual mailbox domain, bob@example.test a Maildir, and
only 127.0.0.1 may connect. Nothing is chrooted (no copies of /etc files needed), the
log goes to a file through postlogd (no syslog daemon on a test machine), and delivery
is to Maildir with Postfix's own fsyncs (queue file on accept, Maildir file on delivery).
Needs root: Postfix's master starts as root and its daemons run as `mail_owner`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# The private-instance pieces are shared with the Postfix peer of the delivery tests.
from tests.integration.postfix import (
    MAILBOX_OWNER,
    MASTER_CF,
    POSTCONF,
    POSTFIX,
    POSTMAP,
    PostfixUnavailable,
    _run,
    unavailable,
)

RECIPIENT = "bob@example.test"


@dataclass
class PostfixRef:
    root: Path
    port: int

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def maildir(self) -> Path:
        return self.root / "pfmail" / "example.test" / "bob"

    @property
    def log_path(self) -> Path:
        return self.root / "maillog"

    def master_pid(self) -> int | None:
        try:
            return int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def postfix_instance(root: Path, port: int) -> Iterator[PostfixRef]:
    """Configure and start a private Postfix under `root` (a fresh directory); always stop it."""
    problem = unavailable()
    if problem:
        raise PostfixUnavailable(problem)
    ref = PostfixRef(root, port)
    _configure(ref)
    try:
        _run(POSTFIX, "-c", str(ref.config_dir), "start")
        _wait_for_port(ref)
        yield ref
    finally:
        # Stop even if start half-failed: master may be up without its smtpd listening.
        subprocess.run(
            [POSTFIX, "-c", str(ref.config_dir), "stop"], capture_output=True, timeout=30
        )
        _wait_for_exit(ref)


def _configure(ref: PostfixRef) -> None:
    root = ref.root
    # virtual(8) runs as nobody and must reach the Maildir base through this tree.
    os.chmod(root, 0o755)
    for parent in root.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise PostfixUnavailable(f"{parent} is not searchable by {MAILBOX_OWNER}")
    ref.config_dir.mkdir()
    (root / "queue").mkdir()  # `postfix` starts in it; its subdirectories come later
    owner = pwd.getpwnam(MAILBOX_OWNER)
    mail_base = root / "pfmail"
    mail_base.mkdir()
    os.chown(mail_base, owner.pw_uid, owner.pw_gid)
    (ref.config_dir / "main.cf").write_text("")
    (ref.config_dir / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{ref.port}"))
    vmailbox = ref.config_dir / "vmailbox"
    vmailbox.write_text(f"{RECIPIENT} example.test/bob/\n")  # trailing slash: Maildir
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": root / "queue",
        "data_directory": root / "data",
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "postfix-ref.example.test",
        "mydestination": "",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        "smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination",
        "virtual_mailbox_domains": "example.test",
        "virtual_mailbox_base": mail_base,
        "virtual_mailbox_maps": f"hash:{vmailbox}",
        "virtual_uid_maps": f"static:{owner.pw_uid}",
        "virtual_gid_maps": f"static:{owner.pw_gid}",
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": "",
        "biff": "no",
        "append_dot_mydomain": "no",
        # A log file instead of syslog (written by the postlog service in master.cf);
        # Postfix only writes logs under listed prefixes.
        "maillog_file": ref.log_path,
        "maillog_file_prefixes": root,
    }
    _run(
        POSTCONF,
        "-c",
        str(ref.config_dir),
        "-e",
        *(f"{key} = {value}" for key, value in settings.items()),
    )
    _run(POSTMAP, "-c", str(ref.config_dir), f"hash:{vmailbox}")
    # The queue's subdirectories and data_directory are left to `postfix start`: its check
    # creates what is missing with the owners and modes Postfix expects. Not `postfix
    # set-permissions`: it also resets the system's /etc/postfix and /usr/sbin files.


def _wait_for_port(ref: PostfixRef, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", ref.port), 0.2) as sock:
                sock.settimeout(5)
                if sock.recv(512).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.05)
    raise PostfixUnavailable(f"smtpd did not answer on 127.0.0.1:{ref.port}:\n{ref.log()}")


def _wait_for_exit(ref: PostfixRef, timeout: float = 15) -> None:
    """`postfix stop` returns before master has exited; wait so the next run can bind."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = ref.master_pid()
        if pid is None or not _alive(pid):
            return
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
