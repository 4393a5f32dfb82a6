"""Test helpers that compare bytes on the wire: a raw IMAP client, and a private
Dovecot (its own config in a temp dir, never the system instance) serving a Maildir
of given messages, used as an oracle for what RFC 3501 leaves no freedom about."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER = "oracle"
PASSWORD = "oracle-pw"

_LITERAL_AT_END = re.compile(rb"\{(\d+)\}\r\n\Z")


class RawClient:
    """Sends commands as given and returns the response bytes exactly as they came."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""
        self.count = 0
        self.greeting = self.line()

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        end = self.buf.index(b"\r\n") + 2
        line, self.buf = self.buf[:end], self.buf[end:]
        return line

    def exact(self, size: int) -> bytes:
        while len(self.buf) < size:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def command(self, text: bytes | str) -> bytes:
        """Everything up to and including the tagged response (literals read whole)."""
        if isinstance(text, str):
            text = text.encode()
        self.count += 1
        tag = b"t%d" % self.count
        self.sock.sendall(tag + b" " + text + b"\r\n")
        out = []
        while True:
            line = self.line()
            out.append(line)
            found = _LITERAL_AT_END.search(line)
            if found:
                out.append(self.exact(int(found.group(1))))
                continue
            if line.startswith(tag + b" "):
                return b"".join(out)

    def ok(self, text: bytes | str) -> bytes:
        """Untagged responses of a command that must succeed (the tagged line dropped)."""
        response = self.command(text)
        body, _, last = response[:-2].rpartition(b"\r\n")
        assert last.split(b" ")[1] == b"OK", response[-300:]
        return body + b"\r\n" if body else b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def dovecot_available() -> bool:
    return Path(DOVECOT).exists() and Path("/usr/lib/dovecot/imap").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dovecot exited early:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"dovecot did not start:\n{log.read_text(errors='replace')}")


def write_maildir(maildir: Path, messages: list[bytes]) -> None:
    """Files named so that both servers give UIDs in list order."""
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for n, data in enumerate(messages):
        name = f"{1_600_000_000 + n}.M{n}P1.oracle.test:2,"
        path = maildir / "cur" / name
        path.write_bytes(data)
        os.utime(path, (1_600_000_000 + n, 1_600_000_000 + n))


@contextlib.contextmanager
def dovecot(messages: list[bytes]) -> Iterator[RawClient]:
    """A private Dovecot serving `messages` in INBOX; yields a client with INBOX selected."""
    work = Path(tempfile.mkdtemp(prefix="mailops-dovecot-"))
    work.chmod(0o755)  # its auth and mail processes do not run as root
    proc = None
    try:
        proc, port = _start(work, messages)
        client = RawClient(port)
        try:
            client.ok(f"LOGIN {USER} {PASSWORD}")
            client.ok("SELECT INBOX")
            yield client
        finally:
            client.close()
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def _start(work: Path, messages: list[bytes]) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    conf = work / "conf"
    for sub in ("run", "state", "home"):
        (conf / sub).mkdir(parents=True)
    write_maildir(work / "mail", messages)
    (conf / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:  # Dovecot never runs mail processes as root: serve the Maildir as nobody
        uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
        for path in [work / "mail", *(work / "mail").rglob("*"), conf / "home"]:
            os.chown(path, uid, gid)
    (conf / "dovecot.conf").write_text(
        f"""
base_dir = {conf}/run
state_dir = {conf}/state
log_path = {conf}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 0
mail_location = maildir:{work}/mail
passdb {{
  driver = passwd-file
  args = {conf}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={conf}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
    )
    log = work / "stdout.log"
    proc = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(conf / "dovecot.conf")],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_port(port, proc, log)
    except BaseException:
        _stop(proc)
        raise
    return proc, port


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
