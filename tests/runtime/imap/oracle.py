"""Test helpers that compare bytes on the wire: a raw IMAP client, and a private
Dovecot (its own config in a temp dir, never the system instance) serving a Maildir
of given messages, used as an oracle for what RFC 3501 leaves no freedom about."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests import dovecot as private_dovecot

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
    return private_dovecot.available("imap")


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
            private_dovecot.stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def _start(work: Path, messages: list[bytes]) -> tuple[subprocess.Popen, int]:
    port = private_dovecot.free_port()
    conf = work / "conf"
    conf.mkdir()
    write_maildir(work / "mail", messages)
    (conf / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    uid, gid = private_dovecot.mail_owner([work / "mail"])
    conf_file = private_dovecot.config(
        conf,
        protocol="imap",
        mail_location=f"maildir:{work}/mail",
        uid=uid,
        gid=gid,
        passdb_args=f"{conf}/passwd",
        services=f"""
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}""",
    )
    return private_dovecot.launch(conf_file, [port], work / "stdout.log"), port
