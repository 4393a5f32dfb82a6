"""A private Postfix on 127.0.0.6:25 as a peer MTA for the delivery tests.

    with postfix_peer(tmp / "pf", forward={"beta.lab.test": "127.0.0.3"}) as pf:
        ... mail to pat@pf.lab.test lands in pf.messages(...)

Everything lives under `root`: its own config_directory, queue_directory,
data_directory, log file and Maildir base — /etc/postfix and the system's
instance are never touched. It receives for pf.lab.test (user pat, a Maildir)
and sends mail for each `forward` domain straight to the given address
(`smtp:[address]:25`: no DNS at all; and no reverse lookups of clients), so it
only ever talks to 127.0.0.0/8. Nothing is chrooted; the log goes to a file.
Needs root: Postfix's master starts as root and its daemons drop to `postfix`.
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

from tests.integration.mailnet import POSTFIX_ADDRESS

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
POSTMAP = "/usr/sbin/postmap"
DOMAIN = "pf.lab.test"
MAILBOX_OWNER = "nobody"

# service type private unpriv chroot wakeup maxproc command
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
smtp      unix  - - n -     - smtp
virtual   unix  - n n -     - virtual
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class PostfixUnavailable(Exception):
    """Postfix is not installed here, or this instance could not start."""


@dataclass
class PostfixPeer:
    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def messages(self, subject: str) -> list[bytes]:
        box = self.root / "mail" / DOMAIN / "pat"
        files = [*box.glob("new/*"), *box.glob("cur/*")]
        found = [f.read_bytes() for f in files]
        return [m for m in found if f"Subject: {subject}".encode() in m]


def unavailable() -> str | None:
    for tool in (POSTFIX, POSTCONF, POSTMAP):
        if not os.access(tool, os.X_OK):
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "Postfix's master must be started as root"
    try:
        pwd.getpwnam("postfix")
        pwd.getpwnam(MAILBOX_OWNER)
    except KeyError as exc:
        return f"user {exc} is missing"
    return None


@contextlib.contextmanager
def postfix_peer(root: Path, *, forward: dict[str, str]) -> Iterator[PostfixPeer]:
    problem = unavailable()
    if problem:
        raise PostfixUnavailable(problem)
    root.mkdir(parents=True)
    peer = PostfixPeer(root)
    _configure(peer, forward)
    try:
        _run(POSTFIX, "-c", str(peer.config_dir), "start")
        _wait_for_banner(peer)
        yield peer
    finally:
        subprocess.run([POSTFIX, "-c", str(peer.config_dir), "stop"], capture_output=True)
        _wait_for_exit(peer)


def _configure(peer: PostfixPeer, forward: dict[str, str]) -> None:
    root = peer.root
    os.chmod(root, 0o755)  # virtual(8) runs as nobody and must reach the Maildir base
    for parent in root.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise PostfixUnavailable(f"{parent} is not searchable by {MAILBOX_OWNER}")
    # `postfix start` fills the queue folder in and creates data_directory with
    # the owners and modes Postfix expects; the queue folder only has to exist.
    for sub in ("etc", "queue"):
        (root / sub).mkdir()
    owner = pwd.getpwnam(MAILBOX_OWNER)
    (root / "mail").mkdir()
    os.chown(root / "mail", owner.pw_uid, owner.pw_gid)
    etc = peer.config_dir
    (etc / "main.cf").write_text("")
    (etc / "master.cf").write_text(MASTER_CF.format(listen=f"{POSTFIX_ADDRESS}:25"))
    (etc / "vmailbox").write_text(f"pat@{DOMAIN} {DOMAIN}/pat/\n")  # trailing /: Maildir
    (etc / "transport").write_text(
        "".join(f"{domain} smtp:[{address}]:25\n" for domain, address in forward.items())
    )
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": root / "queue",
        "data_directory": root / "data",
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": DOMAIN,
        "mydestination": "",
        # Interfaces Postfix knows as its own; master.cf binds 127.0.0.6 explicitly,
        # which needs no interface of its own (Linux routes all of 127/8 to lo).
        "inet_interfaces": "loopback-only",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        "smtpd_peername_lookup": "no",  # no reverse DNS of loopback clients
        "smtp_dns_support_level": "disabled",
        "transport_maps": f"hash:{etc / 'transport'}",
        "virtual_mailbox_domains": DOMAIN,
        "virtual_mailbox_base": root / "mail",
        "virtual_mailbox_maps": f"hash:{etc / 'vmailbox'}",
        "virtual_uid_maps": f"static:{owner.pw_uid}",
        "virtual_gid_maps": f"static:{owner.pw_gid}",
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": "",
        "biff": "no",
        "append_dot_mydomain": "no",
        "maillog_file": root / "maillog",
        "maillog_file_prefixes": root,
    }
    _run(POSTCONF, "-c", str(etc), "-e", *(f"{k} = {v}" for k, v in settings.items()))
    _run(POSTMAP, "-c", str(etc), f"hash:{etc / 'vmailbox'}")
    _run(POSTMAP, "-c", str(etc), f"hash:{etc / 'transport'}")
    # Not `postfix set-permissions`: it re-applies modes to the system's own
    # Postfix programs and libraries, not only to this instance's folders.


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise PostfixUnavailable(f"{' '.join(argv[:4])} failed: {output}")


def _wait_for_banner(peer: PostfixPeer, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((POSTFIX_ADDRESS, 25), 0.5) as sock:
                sock.settimeout(5)
                if sock.recv(512).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.05)
    raise PostfixUnavailable(f"smtpd did not answer on {POSTFIX_ADDRESS}:25:\n{peer.log()}")


def _wait_for_exit(peer: PostfixPeer, timeout: float = 15) -> None:
    """`postfix stop` returns before master has exited; wait so nothing is left behind."""
    pid_file = peer.root / "queue" / "pid" / "master.pid"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(int(pid_file.read_text().split()[0]), 0)
        except (OSError, ValueError, IndexError):
            return
        time.sleep(0.05)
