"""Helpers for the real-client IMAP tests (test_imap_clients.py): a seeded corpus of
realistic messages written straight into a Maildir++ tree, the IMAP servers under test
(a real `mailops serve`, or a private Dovecot as the reference that proves a test is
right), what a server holds as seen through imaplib, what a client's local Maildir
holds, and the client runners (mbsync, offlineimap, fetchmail, getmail6).

Every client runs with HOME and its config under the test's own directory, with a
timeout, and with its protocol trace written to a log file that an assertion message
quotes, so a failure shows the exchange that went wrong.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import os
import random
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from mailops.passwords import hash_password
from tests import dovecot as private_dovecot
from tests.integration.mailserver import MailServer, mail_server

USER = "alice"
DOMAIN = "example.test"
ADDRESS = f"{USER}@{DOMAIN}"
PASSWORD = "alice-pw"
HOSTNAME = "mx1.example.test"
# mbsync matches the host it dials against DNS names only (not IP addresses), so the
# certificate also names "localhost" (loopback here) and mbsync dials that.
CERT_NAMES = (HOSTNAME, "localhost", "127.0.0.1")

MBSYNC = shutil.which("mbsync")
OFFLINEIMAP = shutil.which("offlineimap")
FETCHMAIL = shutil.which("fetchmail")
GETMAIL = shutil.which("getmail")
CLIENT_TIMEOUT = 60

# Maildir info letters ↔ IMAP system flags (the ones every client maps).
LETTERS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
FLAG_LETTER = {flag.lower(): letter for letter, flag in LETTERS.items()}

# ----------------------------------------------------------------- the corpus

WORDS = [
    "mail",
    "server",
    "index",
    "folder",
    "message",
    "network",
    "protocol",
    "client",
    "delivery",
    "storage",
    "header",
    "body",
    "quota",
    "session",
    "benchmark",
    "system",
    "python",
    "maildir",
    "sync",
    "flag",
]
EIGHT_BIT = [
    "Grüße aus Köln, die Bücher sind angekommen.",
    "Ça coûte très cher, naïve café crème brûlée.",
    "日本語のテキストも正しく届くはずです。",
    "Смотри, это тоже должно дойти без изменений.",
]

# folder → (number of messages, Maildir letters used for some of them)
FOLDERS: dict[str, int] = {
    "INBOX": 18,
    "Lists": 6,
    "Lists.python": 8,
    "Work": 7,
    "Reports 2024": 4,
    "Entw&APw-rfe": 3,  # "Entwürfe" in modified UTF-7, as it is on the wire and on disk
    "Archive": 4,
}


@dataclass(frozen=True)
class Mail:
    data: bytes
    letters: str  # Maildir info letters (sorted), e.g. "FS"

    @property
    def message_id(self) -> bytes:
        return message_id(self.data)


def message_id(data: bytes) -> bytes:
    match = re.search(rb"^Message-ID: *(<[^>\r\n]+>)", data, re.MULTILINE | re.IGNORECASE)
    assert match, data[:300]
    return match.group(1)


def _headers(rng: random.Random, n: int, folder: str, extra: str = "") -> str:
    day = 1 + n % 28
    sender = rng.choice(
        [
            "Bob Jones <bob@remote.example>",
            "Carol <carol@lists.example>",
            '"Dave, the build bot" <ci@build.example>',
            "eve@remote.example",
        ]
    )
    subject = " ".join(rng.choices(WORDS, k=rng.randint(3, 7)))
    return (
        f"Return-Path: <bounce-{n}@remote.example>\r\n"
        f"Delivered-To: {ADDRESS}\r\n"
        f"Received: from mta{n % 5}.remote.example ([192.0.2.{n % 250}])\r\n"
        f"\tby {HOSTNAME} (mailops) with ESMTPS id {n:08X}\r\n"
        f"\tfor <{ADDRESS}>; {_date(day, n)}\r\n"
        f"From: {sender}\r\n"
        f"To: Alice <{ADDRESS}>\r\n"
        f"Subject: [{folder}] {subject} #{n}\r\n"
        f"Date: {_date(day, n)}\r\n"
        f"Message-ID: <{n}.{rng.getrandbits(40):x}@corpus.example>\r\n"
        f"{extra}"
    )


def _date(day: int, n: int) -> str:
    return (
        f"{['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'][day % 7]}, {day} May 2024 "
        f"{8 + n % 12:02d}:{n % 60:02d}:{(n * 7) % 60:02d} +0200"
    )


def _text(rng: random.Random, lines: int) -> str:
    return "\r\n".join(" ".join(rng.choices(WORDS, k=rng.randint(5, 12))) for _ in range(lines))


def make_message(rng: random.Random, n: int, folder: str) -> bytes:
    """One of five kinds: plain, 8-bit UTF-8, 8-bit Latin-1, alternative, mixed+attachment."""
    kind = n % 5
    if kind == 0:
        head = _headers(
            rng, n, folder, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
        )
        return (head + "\r\n" + _text(rng, rng.randint(3, 40)) + "\r\n").encode()
    if kind == 1:
        head = _headers(
            rng,
            n,
            folder,
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n",
        )
        body = _text(rng, 4) + "\r\n" + rng.choice(EIGHT_BIT) + "\r\n" + _text(rng, 3) + "\r\n"
        return head.encode() + b"\r\n" + body.encode("utf-8")
    if kind == 2:
        head = _headers(
            rng,
            n,
            folder,
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=iso-8859-1\r\n"
            "Content-Transfer-Encoding: 8bit\r\n",
        )
        body = "Gr\u00fc\u00dfe, \u00e7a co\u00fbte tr\u00e8s cher.\r\n" + _text(rng, 5) + "\r\n"
        return head.encode() + b"\r\n" + body.encode("latin-1")
    boundary = f"=_b{n}_{rng.getrandbits(32):08x}"
    if kind == 3:
        head = _headers(
            rng,
            n,
            folder,
            f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="{boundary}"\r\n',
        )
        plain = _text(rng, rng.randint(2, 10))
        body = (
            "This is a multi-part message in MIME format.\r\n"
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            f"{plain}\r\nGr=C3=BC=C3=9Fe\r\n"
            f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            f"<html><body><p>{plain}</p></body></html>\r\n"
            f"--{boundary}--\r\n"
        )
        return (head + "\r\n" + body).encode()
    head = _headers(
        rng,
        n,
        folder,
        f'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="{boundary}"\r\n',
    )
    blob = base64.encodebytes(rng.randbytes(rng.randint(300, 6000))).decode().replace("\n", "\r\n")
    inner = _headers(rng, n + 10_000, folder)
    body = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        f"{_text(rng, 3)}\r\n{rng.choice(EIGHT_BIT)}\r\n"
        f'--{boundary}\r\nContent-Type: application/octet-stream; name="data {n}.bin"\r\n'
        f'Content-Disposition: attachment; filename="data {n}.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{blob}"
        f"--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n"
        f"{inner}\r\n{_text(rng, 2)}\r\n"
        f"--{boundary}--\r\n"
    )
    return (head + "\r\n").encode() + body.encode("utf-8")


def make_corpus(seed: int = 7) -> dict[str, list[Mail]]:
    """~50 messages in several folders (one nested, one with a space, one non-ASCII)."""
    rng = random.Random(seed)
    corpus: dict[str, list[Mail]] = {}
    n = 0
    for folder, count in FOLDERS.items():
        mails = []
        for _ in range(count):
            n += 1
            letters = rng.choice(["", "", "S", "S", "S", "FS", "RS", "F"])
            if folder == "Archive":
                letters = "S"
            mails.append(Mail(make_message(rng, n, folder), letters))
        corpus[folder] = mails
    return corpus


_TRACE = re.compile(rb"^(?:Return-Path|Delivered-To|Received):.*\r\n(?:[ \t].*\r\n)*", re.MULTILINE)


def extra_message(tag: str, n: int = 0) -> bytes:
    """A fresh message as its sender submits it (for appends and deliveries during a
    test): without the trace header fields (Return-Path, Received) delivery adds."""
    rng = random.Random(f"{tag}-{n}")
    data = make_message(rng, 90_000 + n + rng.randint(0, 9999), tag)
    head, sep, body = data.partition(b"\r\n\r\n")
    return _TRACE.sub(b"", head + b"\r\n") + sep[2:] + body


def without_return_path(data: bytes) -> bytes:
    """getmail replaces every Return-Path: field with one of its own (naming the first
    one's address) at the top; the rest must be the message."""
    head, sep, body = lf(data).partition(b"\n\n")
    head = re.sub(rb"^Return-Path:.*\n(?:[ \t].*\n)*", b"", head + b"\n", flags=re.MULTILINE)
    return head + b"\n" + body if sep else head


def write_maildir(root: Path, corpus: dict[str, list[Mail]]) -> None:
    """The corpus as an MTA and earlier clients leave it: Maildir++ (folders are
    `.Name` directories beside INBOX's cur/new/tmp), unread mail in new/."""
    base = 1_714_000_000
    n = 0
    for folder, mails in corpus.items():
        path = root if folder == "INBOX" else root / f".{folder}"
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        if folder != "INBOX":
            (path / "maildirfolder").touch()
        for mail in mails:
            n += 1
            name = f"{base + n}.M{n}P4242Q{n}.corpus.example,S={len(mail.data)}"
            if mail.letters:
                target = path / "cur" / f"{name}:2,{mail.letters}"
            else:
                target = path / "new" / name
            target.write_bytes(mail.data)
            os.utime(target, (base + n, base + n))


# ------------------------------------------------------------ comparing mail


def lf(data: bytes) -> bytes:
    """Clients store mail with their platform's line ending; compare up to it."""
    return data.replace(b"\r\n", b"\n")


_TUID = re.compile(rb"^X-TUID: [A-Za-z0-9+/]{12}\r?\n", re.MULTILINE)


def without_tuid(data: bytes) -> bytes:
    """mbsync writes an `X-TUID:` header into every message it copies, either way (so
    it can find the copy again if interrupted); the rest must be the message."""
    end = data.find(b"\n\n")
    crlf = data.find(b"\r\n\r\n")
    if crlf != -1 and (end == -1 or crlf < end):
        end = crlf + 2
    head, body = (data, b"") if end == -1 else (data[: end + 1], data[end + 1 :])
    return _TUID.sub(b"", head, count=1) + body


def letters_of(flags: set[str] | frozenset[str]) -> str:
    return "".join(sorted(FLAG_LETTER[f.lower()] for f in flags if f.lower() in FLAG_LETTER))


Content = dict[str, Counter]  # folder → Counter of (lf bytes, flag letters)


def expected_content(corpus: dict[str, list[Mail]], normalize=lf) -> Content:
    return {
        f: Counter((normalize(m.data), m.letters) for m in mails) for f, mails in corpus.items()
    }


def describe_difference(a: Content, b: Content, names=("server", "local")) -> str:
    """A short account of how two contents differ (for assertion messages)."""
    out = []
    for folder in sorted(set(a) | set(b)):
        if folder not in a or folder not in b:
            out.append(f"folder {folder!r} only on {names[0] if folder in a else names[1]}")
            continue
        only_a, only_b = a[folder] - b[folder], b[folder] - a[folder]
        for label, extra in ((names[0], only_a), (names[1], only_b)):
            for (data, letters), count in extra.items():
                ident = re.search(rb"^Subject: (.*)$", data, re.MULTILINE)
                subject = ident.group(1).decode("utf-8", "replace") if ident else data[:60]
                out.append(f"{folder!r}: only on {label} x{count}: {subject!r} flags={letters!r}")
    return "\n".join(out) or "(no difference)"


# ------------------------------------------------------------ the server side


@dataclass
class ServerFolder:
    uidvalidity: int
    messages: dict[int, tuple[str, bytes]]  # uid → (flag letters, bytes)


def imap_connect(target: Target, *, timeout: float = 30) -> imaplib.IMAP4:
    client = imaplib.IMAP4_SSL(
        "127.0.0.1", target.ports["imaps"], ssl_context=target.client_context(), timeout=timeout
    )
    client.login(target.address, PASSWORD)
    return client


def check(response: tuple[str, list]) -> list:
    status, data = response
    assert status == "OK", (status, data)
    return data


_LIST = re.compile(rb'^\((?P<attrs>[^)]*)\) (?P<delim>"(?:[^"\\]|\\.)*"|NIL) (?P<name>.*)$')


def _unquote(raw: bytes) -> str:
    if raw.startswith(b'"') and raw.endswith(b'"'):
        raw = re.sub(rb"\\(.)", rb"\1", raw[1:-1])
    return raw.decode("utf-8", "surrogateescape")


def list_folders(client: imaplib.IMAP4) -> dict[str, set[str]]:
    """LIST "" "*": folder name (as on the wire) → its attributes, lower case."""
    folders = {}
    data = check(client.list('""', '"*"'))
    items = iter(data)
    for item in items:
        if item is None:
            continue
        if isinstance(item, tuple):  # the name came as a literal
            line, name = item[0], item[1]
            match = _LIST.match(line.rstrip())
            assert match, line
            folders[name.decode("utf-8", "surrogateescape")] = set(
                match.group("attrs").decode().lower().split()
            )
            continue
        match = _LIST.match(item)
        assert match, item
        folders[_unquote(match.group("name"))] = set(match.group("attrs").decode().lower().split())
    return folders


def quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def select(client: imaplib.IMAP4, folder: str, readonly: bool = True) -> int:
    data = check(client.select(quote(folder), readonly=readonly))
    return int(data[0])


def uidvalidity(client: imaplib.IMAP4) -> int:
    code = client.response("UIDVALIDITY")[1]
    assert code and code[0], "SELECT gave no UIDVALIDITY"
    return int(code[0])


def fetch_flags(client: imaplib.IMAP4) -> dict[int, str]:
    out = {}
    for line in check(client.uid("FETCH", "1:*", "(UID FLAGS)")):
        if line is None:
            continue
        uid = re.search(rb"UID (\d+)", line)
        flags = re.search(rb"FLAGS \(([^)]*)\)", line)
        assert uid and flags, line
        out[int(uid.group(1))] = letters_of(set(flags.group(1).decode().split()))
    return out


def fetch_bodies(client: imaplib.IMAP4) -> dict[int, bytes]:
    out = {}
    data = check(client.uid("FETCH", "1:*", "(UID BODY.PEEK[])"))
    for i, item in enumerate(data):
        if not isinstance(item, tuple):
            continue
        meta = item[0]
        uid = re.search(rb"UID (\d+)", meta)
        if uid is None and i + 1 < len(data) and isinstance(data[i + 1], bytes):
            uid = re.search(rb"UID (\d+)", data[i + 1])  # UID after the literal
        assert uid, (meta, data[i + 1 : i + 2])
        out[int(uid.group(1))] = item[1]
    return out


def server_content(state: dict[str, ServerFolder], normalize=lf) -> Content:
    return {
        name: Counter((normalize(data), letters) for letters, data in folder.messages.values())
        for name, folder in state.items()
    }


# ------------------------------------------------------------- the local side


def local_folders(root: Path, layout: str) -> dict[str, Path]:
    """Folder name → Maildir path. `maildir++`: INBOX is the root, folders are `.Name`
    directories (mbsync's SubFolders Maildir++); `flat`: one directory per folder,
    named after it (offlineimap with sep = .)."""
    folders = {}
    if layout == "maildir++":
        if (root / "cur").is_dir():
            folders["INBOX"] = root
        for sub in root.iterdir():
            if sub.name.startswith(".") and (sub / "cur").is_dir():
                folders[sub.name[1:]] = sub
    else:
        for sub in root.iterdir():
            if (sub / "cur").is_dir():
                folders[sub.name] = sub
    return folders


def local_letters(name: str) -> str:
    _, sep, info = name.rpartition(":2,")
    return "".join(sorted(ch for ch in info if ch in LETTERS)) if sep else ""


def local_files(root: Path) -> dict[str, bytes]:
    """Every message file under a local tree (relative path → bytes): a snapshot
    in which a rename (a flag change) or a rewrite shows."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.parent.name in ("cur", "new")
    }


def local_content(root: Path, layout: str, normalize=lf) -> Content:
    out = {}
    for name, path in local_folders(root, layout).items():
        counter: Counter = Counter()
        for sub in ("cur", "new"):
            for file in (path / sub).iterdir():
                counter[(normalize(file.read_bytes()), local_letters(file.name))] += 1
        out[name] = counter
    return out


def find_local(root: Path, layout: str, folder: str, mid: bytes) -> Path:
    path = local_folders(root, layout)[folder]
    for file in [*(path / "cur").iterdir(), *(path / "new").iterdir()]:
        if message_id(file.read_bytes()) == mid:
            return file
    raise AssertionError(f"{mid!r} not in local {folder}")


def set_local_letters(file: Path, letters: str) -> Path:
    """What a Maildir mail reader does to flag a message: rename into cur/ with the
    new info letters."""
    base = file.name.split(":2,")[0]
    target = file.parent.parent / "cur" / f"{base}:2,{''.join(sorted(letters))}"
    file.rename(target)
    return target


def deliver_local(root: Path, layout: str, folder: str, data: bytes, letters: str = "") -> Path:
    """A message written into the local Maildir as a mail reader would (a sent copy,
    a draft): it must be uploaded on the next sync."""
    path = local_folders(root, layout)[folder]
    name = f"{int(time.time())}.M{random.getrandbits(32)}P{os.getpid()}.client.example"
    tmp = path / "tmp" / name
    tmp.write_bytes(data.replace(b"\r\n", b"\n"))  # a local mail reader writes LF
    target = path / "cur" / f"{name}:2,{letters}"
    tmp.rename(target)
    return target


# ------------------------------------------------------------------- servers


class Target:
    """An IMAP server the clients run against: ports "imap" (143-style, STARTTLS) and
    "imaps" (993-style), a CA file to trust, and `reset(corpus)`, which gives the
    test a fresh account (`address`) holding a copy of the corpus."""

    name = ""
    address = ADDRESS

    def __init__(self, ports: dict[str, int], ca: trustme.CA, ca_file: Path) -> None:
        self.ports = ports
        self.ca = ca
        self.ca_file = ca_file

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def reset(self, corpus: dict[str, list[Mail]]) -> None:
        raise NotImplementedError

    def deliver(self, data: bytes) -> None:
        """New mail for the account's INBOX, the way the server gets it."""
        raise NotImplementedError

    def log(self) -> str:
        return ""

    def log_tail(self) -> str:
        return self.log()[-4000:]


# Accounts for the client tests, one per test, so that no test needs a server restart:
# a domain of users with alice's password, added through mail_server's `extra`.
CLIENTS_DOMAIN = "clients.test"
CLIENT_USERS = 12


class MailopsTarget(Target):
    """A real `mailops serve` (tests/integration/mailserver.py)."""

    name = "mailops"

    def __init__(self, server: MailServer, ca_file: Path) -> None:
        super().__init__(
            {"imap": server.ports["imap"], "imaps": server.ports["imaps"]}, server.ca, ca_file
        )
        self.server = server
        self.used = 0

    def reset(self, corpus: dict[str, list[Mail]]) -> None:
        """A user that never logged in yet: its Maildir is written as an MDA and other
        tools would have left it, and the server indexes it on first login."""
        self.used += 1
        assert self.used <= CLIENT_USERS, "more tests than accounts: raise CLIENT_USERS"
        user = f"u{self.used}"
        box = self.server.maildir(user, CLIENTS_DOMAIN)
        shutil.rmtree(box, ignore_errors=True)
        write_maildir(box, corpus)
        self.address = f"{user}@{CLIENTS_DOMAIN}"

    def deliver(self, data: bytes) -> None:
        """Through the server's own submission service and MDA (a note to self): the
        path of new mail into the INBOX, without the DNS checks of inbound SMTP, which
        wait out their timeouts here (the test resolver never answers)."""
        with smtplib.SMTP("127.0.0.1", self.server.ports["submission"], timeout=30) as client:
            client.starttls(context=self.client_context())
            client.login(self.address, PASSWORD)
            client.sendmail(self.address, [self.address], data)

    def log(self) -> str:
        return self.server.log()


@contextlib.contextmanager
def mailops_target(root: Path) -> Iterator[MailopsTarget]:
    password_hash = hash_password(PASSWORD, b"alicesaltalicesa")  # alice's: one hash
    users = "".join(
        f'      u{n}: {{password_hash: "{password_hash}"}}\n' for n in range(1, CLIENT_USERS + 1)
    )
    extra = (
        f"  {CLIENTS_DOMAIN}:\n    mailbox_host: mx1\n    mx: [{{host: mx1, priority: 10}}]\n"
        f"    users:\n{users}"
    )
    with mail_server(root, extra=extra) as srv:
        # A certificate that also names "localhost" (for mbsync) and has a subject
        # common name (fetchmail insists on one): written, then loaded by a reload.
        ca_file = srv.root / "ca.pem"
        srv.ca.cert_pem.write_to_path(str(ca_file))
        cert = srv.ca.issue_cert(*CERT_NAMES, common_name=HOSTNAME)
        cert.private_key_and_cert_chain_pem.write_to_path(str(srv.root / "server.pem"))
        cert.private_key_pem.write_to_path(str(srv.root / "server.key"))
        reloads = srv.log().count("event=reload.done")
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while srv.log().count("event=reload.done") == reloads:
            assert time.monotonic() < deadline, f"no reload after SIGHUP:\n{srv.log()[-3000:]}"
            time.sleep(0.05)
        yield MailopsTarget(srv, ca_file)


def dovecot_available() -> bool:
    return private_dovecot.available("imap")


DOVECOT_TLS = """ssl = yes
ssl_cert = <{conf}/server.pem
ssl_key = <{conf}/server.key
disable_plaintext_auth = yes
auth_mechanisms = plain login"""

DOVECOT_SERVICES = """
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}"""


class DovecotTarget(Target):
    """A private Dovecot (its own config in a temp dir, never the system's) serving
    alice: the reference the client tests are checked against. `reset` restarts it
    on a fresh Maildir and index."""

    name = "dovecot"

    def __init__(self, work: Path) -> None:
        self.work = work
        self.conf, self.mail = work / "conf", work / "mail"
        for sub in ("run", "state"):
            (self.conf / sub).mkdir(parents=True)
        ca = trustme.CA()
        cert = ca.issue_cert(*CERT_NAMES, common_name=HOSTNAME)
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.conf / "server.pem"))
        cert.private_key_pem.write_to_path(str(self.conf / "server.key"))
        ca.cert_pem.write_to_path(str(work / "ca.pem"))
        ports = {"imap": private_dovecot.free_port(), "imaps": private_dovecot.free_port()}
        super().__init__(ports, ca, work / "ca.pem")
        (self.conf / "passwd").write_text(
            f"{ADDRESS}:{hash_password(PASSWORD, b'alicesaltalicesa')}::::::\n"
        )
        self.uid, self.gid = private_dovecot.mail_owner([])
        self.conf_file = private_dovecot.config(
            self.conf,
            protocol="imap",
            mail_location=f"maildir:{self.mail}/%d/%n:INDEX={self.conf}/index/%d/%n",
            uid=self.uid,
            gid=self.gid,
            tls=DOVECOT_TLS.format(conf=self.conf),
            services=DOVECOT_SERVICES.format(**self.ports),
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.work / "stdout.log"
        self.proc = private_dovecot.launch(self.conf_file, self.ports.values(), log)

    def stop(self) -> None:
        if self.proc is not None:
            private_dovecot.stop(self.proc)

    def reset(self, corpus: dict[str, list[Mail]]) -> None:
        self.stop()
        for path in (self.mail, self.conf / "index", self.conf / "home"):
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
        write_maildir(self.mail / DOMAIN / USER, corpus)
        for path in [self.mail, *self.mail.rglob("*"), self.conf / "index", self.conf / "home"]:
            os.chown(path, self.uid, self.gid)
        self.start()

    def deliver(self, data: bytes) -> None:
        """As an MDA does: into tmp/, then renamed into new/."""
        box = self.mail / DOMAIN / USER
        name = f"{time.time_ns()}.M{random.getrandbits(32)}P{os.getpid()}.mda.example"
        (box / "tmp" / name).write_bytes(data)
        os.chown(box / "tmp" / name, self.uid, self.gid)
        (box / "tmp" / name).rename(box / "new" / name)

    def log(self) -> str:
        path = self.conf / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def dovecot_target() -> Iterator[DovecotTarget]:
    work = Path(tempfile.mkdtemp(prefix="mailops-imap-clients-"))
    work.chmod(0o755)  # Dovecot's auth and mail processes do not run as root
    target = DovecotTarget(work)
    try:
        target.reset({"INBOX": []})
        yield target
    finally:
        target.stop()
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------- clients


@dataclass
class Run:
    argv: list[str]
    returncode: int
    output: str
    log: Path

    def tail(self, chars: int = 6000) -> str:
        return f"$ {' '.join(self.argv)}\n(exit {self.returncode})\n{self.output[-chars:]}"


def run_client(argv: list[str], home: Path, log: Path, *, env: dict | None = None) -> Run:
    """Run a client with HOME pointing at the test's directory and a timeout; its
    output (with the protocol trace) goes to `log`, appended run after run."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(home),
        **(env or {}),
    }
    with log.open("ab") as out:
        out.write(f"\n===== {' '.join(argv)}\n".encode())
        out.flush()
        start = out.tell()
        try:
            result = subprocess.run(
                argv,
                env=environment,
                cwd=home,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=CLIENT_TIMEOUT,
            )
            code = result.returncode
        except subprocess.TimeoutExpired:
            code = -999
            out.write(f"\n===== TIMEOUT after {CLIENT_TIMEOUT} s\n".encode())
    with log.open("rb") as data:
        data.seek(start)
        output = data.read().decode("utf-8", "replace")
    return Run(argv, code, output, log)


class SyncClient:
    """A two-way sync client with a local Maildir under `work`."""

    name = ""
    layout = ""

    def __init__(self, work: Path, target: Target, port: str) -> None:
        self.work = work
        self.target = target
        self.port = port  # "imap" (STARTTLS) or "imaps"
        self.home = work / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.local = work / "mail"
        self.log = work / f"{self.name}.log"
        self.configure()

    def configure(self) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    @staticmethod
    def normalize(data: bytes) -> bytes:
        return lf(data)

    def content(self) -> Content:
        return local_content(self.local, self.layout, self.normalize)

    def files(self) -> dict[str, bytes]:
        return local_files(self.local)

    def find(self, folder: str, mid: bytes) -> Path:
        return find_local(self.local, self.layout, folder, mid)

    def has(self, folder: str, mid: bytes) -> bool:
        try:
            self.find(folder, mid)
        except AssertionError:
            return False
        return True

    def sync(self) -> Run:
        run = run_client(self.command(), self.home, self.log)
        assert run.returncode == 0 and self.ok(run), self.explain(run)
        return run

    def ok(self, run: Run) -> bool:
        return True

    def explain(self, run: Run) -> str:
        return (
            f"{self.name} failed against {self.target.name}:\n{run.tail()}\n"
            f"--- server log tail:\n{self.target.log_tail()}"
        )


class Mbsync(SyncClient):
    name = "mbsync"
    layout = "maildir++"

    def configure(self) -> None:
        ssl_type = "STARTTLS" if self.port == "imap" else "IMAPS"
        self.local.mkdir(parents=True, exist_ok=True)
        self.config = self.work / "mbsyncrc"
        self.config.write_text(
            f"""IMAPAccount test
Host localhost
Port {self.target.ports[self.port]}
User {self.target.address}
Pass {PASSWORD}
SSLType {ssl_type}
CertificateFile {self.target.ca_file}
SystemCertificates no
Timeout 30

IMAPStore remote
Account test

MaildirStore local
Inbox {self.local}
SubFolders Maildir++

Channel test
Far :remote:
Near :local:
Patterns *
Create Both
Remove None
Expunge Both
SyncState *
"""
        )

    @staticmethod
    def normalize(data: bytes) -> bytes:
        return lf(without_tuid(data))

    def command(self) -> list[str]:
        return [MBSYNC or "mbsync", "-c", str(self.config), "-V", "-Dn", "-a"]

    def ok(self, run: Run) -> bool:
        # mbsync reports some per-message failures as warnings and still exits 0.
        return "Error" not in run.output and "Warning:" not in run.output


class OfflineImap(SyncClient):
    name = "offlineimap"
    layout = "flat"

    def configure(self) -> None:
        self.local.mkdir(parents=True, exist_ok=True)
        self.config = self.work / "offlineimaprc"
        implicit = self.port == "imaps"
        self.config.write_text(
            f"""[general]
accounts = test
metadata = {self.work}/offlineimap-meta
maxsyncaccounts = 1

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {self.local}
sep = .

[Repository remote]
type = IMAP
remotehost = localhost
remoteport = {self.target.ports[self.port]}
remoteuser = {self.target.address}
remotepass = {PASSWORD}
ssl = {"yes" if implicit else "no"}
starttls = {"no" if implicit else "yes"}
sslcacertfile = {self.target.ca_file}
maxconnections = 1
holdconnectionopen = no
expunge = yes
"""
        )

    def command(self) -> list[str]:
        return [
            OFFLINEIMAP or "offlineimap",
            "-c",
            str(self.config),
            "-o",
            "-1",
            "-u",
            "basic",
            "-d",
            "imap",
        ]

    def ok(self, run: Run) -> bool:
        # offlineimap exits 0 after some errors it only logs.
        return "ERROR" not in run.output and "Traceback" not in run.output


# ------------------------------------------------------------ server changes


class Observer:
    """Another client of the same account (a phone, a webmail): one imaplib session
    over 993, kept for a whole test, through which a test reads what the server holds
    and changes it. (One session rather than one per look: logins cost a password
    hash each.)"""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._client: imaplib.IMAP4 | None = None

    @property
    def imap(self) -> imaplib.IMAP4:
        if self._client is None:
            self._client = imap_connect(self.target)
        return self._client

    def close(self) -> None:
        """Log out (before the server restarts, say); the next use logs in again."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.logout()
            self._client = None

    def state(self) -> dict[str, ServerFolder]:
        """Every selectable folder: UIDVALIDITY, and each message's flags and bytes."""
        client = self.imap
        state = {}
        for name, attrs in list_folders(client).items():
            if "\\noselect" in attrs or "\\nonexistent" in attrs:
                continue
            exists = select(client, name)
            validity = uidvalidity(client)
            if exists == 0:
                state[name] = ServerFolder(validity, {})
            else:
                flags, bodies = fetch_flags(client), fetch_bodies(client)
                assert set(flags) == set(bodies), (name, sorted(flags), sorted(bodies))
                assert len(flags) == exists, (name, exists, len(flags))
                state[name] = ServerFolder(validity, {u: (flags[u], bodies[u]) for u in flags})
            check(client.close())
        return state

    def set_flags(self, folder: str, uid: int, flags: str) -> None:
        select(self.imap, folder, readonly=False)
        check(self.imap.uid("STORE", str(uid), "+FLAGS", flags))
        check(self.imap.close())

    def move(self, folder: str, uid: int, dest: str) -> None:
        select(self.imap, folder, readonly=False)
        check(self.imap.uid("MOVE", str(uid), quote(dest)))
        check(self.imap.close())

    def delete(self, folder: str, uid: int) -> None:
        select(self.imap, folder, readonly=False)
        check(self.imap.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)"))
        check(self.imap.expunge())
        check(self.imap.close())


def uid_of(state: dict[str, ServerFolder], folder: str, mid: bytes) -> int:
    uids = [uid for uid, (_, data) in state[folder].messages.items() if message_id(data) == mid]
    assert len(uids) == 1, (folder, mid, uids)
    return uids[0]


def by_message_id(state: dict[str, ServerFolder], folder: str) -> dict[bytes, tuple[str, bytes]]:
    return {message_id(data): (letters, data) for letters, data in state[folder].messages.values()}


# ------------------------------------------------------------ fetch clients


SAVE_SCRIPT = '#!/bin/sh\nexec cat > "$1/$(date +%s%N).$$"\n'


def _outbox(work: Path) -> tuple[Path, Path]:
    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)
    save = work / "save.sh"
    save.write_text(SAVE_SCRIPT)
    save.chmod(0o700)
    return out, save


def _collect(out: Path, before: set[Path]) -> list[bytes]:
    return [path.read_bytes() for path in sorted(set(out.iterdir()) - before)]


def fetchmail(target: Target, work: Path, *, implicit: bool, keep: bool) -> tuple[list[bytes], Run]:
    """One fetchmail run in IMAP mode; the messages its MDA received, and the run."""
    out, save = _outbox(work)
    before = set(out.iterdir())
    port = target.ports["imaps" if implicit else "imap"]
    rc = work / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll 127.0.0.1 service {port} proto imap auth password\n"
        f'  user "{target.address}" there with password "{PASSWORD}" is "{USER}" here\n'
        f"  {'ssl ' if implicit else ''}sslproto 'tls1.2+' sslcertck"
        f' sslcertfile "{target.ca_file}" sslcommonname "{HOSTNAME}"\n'
        f"  {'keep' if keep else 'no keep'}\n"
        f'  mda "{save} {out}"\n'
    )
    rc.chmod(0o600)
    run = run_client(
        [FETCHMAIL or "fetchmail", "-f", str(rc), "--nodetach", "-v", "-v"],
        work,
        work / "fetchmail.log",
        env={"FETCHMAILHOME": str(work)},
    )
    # 0: mail fetched; 1: no mail. Anything else is a failure worth reading.
    assert run.returncode in (0, 1), f"{run.tail()}\n--- server log:\n{target.log_tail()}"
    if not implicit:
        assert "STARTTLS" in run.output, run.tail()
    return _collect(out, before), run


def strip_fetchmail_received(data: bytes) -> bytes:
    """fetchmail adds one Received: header naming itself; the rest is the message."""
    pattern = rb"^Received: [^\n]*\n[ \t]+by [^\n]*\(fetchmail-[^\n]*\n(?:[ \t][^\n]*\n)*"
    stripped, count = re.subn(pattern, b"", data, count=1, flags=re.MULTILINE)
    assert count == 1, data[:500]
    return stripped


def getmail(target: Target, work: Path, *, delete: bool) -> tuple[list[bytes], Run]:
    """One getmail run with SimpleIMAPSSLRetriever (getmail has no IMAP STARTTLS)."""
    out, save = _outbox(work)
    before = set(out.iterdir())
    rc = work / "getmailrc"
    # An external MDA: getmail's own Maildir writer refuses to run as root (CI is root).
    rc.write_text(
        "[retriever]\n"
        "type = SimpleIMAPSSLRetriever\n"
        "server = localhost\n"
        f"port = {target.ports['imaps']}\n"
        f"username = {target.address}\n"
        f"password = {PASSWORD}\n"
        f"ca_certs = {target.ca_file}\n"
        'mailboxes = ("INBOX",)\n'
        "record_mailbox = false\n"
        "[destination]\n"
        "type = MDA_external\n"
        f"path = {save}\n"
        f'arguments = ("{out}",)\n'
        "allow_root_commands = true\n"
        "[options]\n"
        "verbose = 2\n"
        "read_all = false\n"
        f"delete = {'true' if delete else 'false'}\n"
        "delivered_to = false\n"
        "received = false\n"
    )
    run = run_client(
        [GETMAIL or "getmail", f"--getmaildir={work}", f"--rcfile={rc}"],
        work,
        work / "getmail.log",
    )
    assert run.returncode == 0, f"{run.tail()}\n--- server log:\n{target.log_tail()}"
    return _collect(out, before), run
