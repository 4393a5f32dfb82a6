"""Benchmark: IMAP on a 10,000-message INBOX, mailops against Dovecot side by side.

    python bench/imap.py [--messages 10000] [--runs 5] [--idle 1000] [--idle-users 100]
                         [--dir PATH] [--no-dovecot]

Makes a Maildir of `--messages` messages with a seeded RNG (2–15 KiB, realistic
headers, a quarter multipart, CRLF as the MTA stores them), then, against a real
`mailops serve` and against a private Dovecot (its own config in a temp dir, never the
system's) on a copy of the same Maildir:

  login+select   connect, LOGIN, SELECT INBOX (the first session builds the index:
                 "cold"; later ones find it: "warm")
  envelope       FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)
  headers        UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])
  search from    SEARCH FROM <one sender of 97>
  search text    SEARCH TEXT <a word in about 1 message of 200>

The first session of each server is "cold" (nothing indexed or cached); the figure
compared is the median of `--runs` warm sessions. Goals: mailops/Dovecot <= 1.0 for
each, and <= 0.2 for SEARCH TEXT (an index beats a scan).

Answers are checked, so a fast wrong answer cannot pass: counts, sizes, every
envelope and header block against what was generated, both SEARCH results against
the expected sets, and mailops's answers against Dovecot's. The process exits 1 when
a check fails.

Then `--idle` connections (of `--idle-users` users, spread evenly) log in, SELECT
INBOX and IDLE on the same mailops process; its resident memory is read from /proc
(goal < 250 MB), and a message submitted to one user must wake that user's IDLE
sessions within a second.

Both servers run as separate processes on loopback without TLS, with the same light
argon2id password hash (so the figures show the IMAP servers, not the KDF); the
client is the same raw-socket loop, so the figures compare servers, not clients.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import re
import resource
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import argon2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import dovecot
from tests.dovecot import free_port, stop, wait_port

DOMAIN = "example.test"
USER = "alice"
ADDRESS = f"{USER}@{DOMAIN}"
PASSWORD = "alice-pw"
WORDS = [
    *("mail", "server", "index", "folder", "message", "network", "protocol", "client"),
    *("delivery", "storage", "header", "body", "quota", "session", "retrieve"),
    *("benchmark", "system", "dovecot", "python", "maildir", "meeting", "report"),
    *("invoice", "release", "review", "schedule", "budget", "project", "update"),
]
SENDERS = 97
FROM_SENDER = 17  # SEARCH FROM sender17: about one message in 97
TEXT_WORD = "zeppelin"  # SEARCH TEXT: in about one message in 200
TEXT_RATE = 0.005
PHASES = ("login", "envelope", "headers", "from", "text")
TITLES = {
    "login": "login+select",
    "envelope": "envelope",
    "headers": "headers",
    "from": "search from",
    "text": "search text",
}
GOALS = {"login": 1.0, "envelope": 1.0, "headers": 1.0, "from": 1.0, "text": 0.2}
IDLE_USERS = 100  # the IDLE connections' users (each has 20 messages)
RSS_GOAL_MB = 250


# ------------------------------------------------------------------- the data


@dataclass
class Meta:
    """What a generated message must look like through IMAP."""

    n: int
    size: int
    header_fields: bytes  # BODY[HEADER.FIELDS (FROM SUBJECT DATE)]
    from_hit: bool
    text_hit: bool
    message_id: str


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high)))


def _body_lines(rng: random.Random, size: int, word: bool) -> list[str]:
    lines, length = [], 0
    while length < size:
        line = _words(rng, 6, 14)
        lines.append(line)
        length += len(line) + 2
    if word:
        lines.insert(rng.randrange(len(lines) + 1), f"see the {TEXT_WORD} notes")
    return lines


def make_message(rng: random.Random, n: int) -> tuple[bytes, Meta]:
    size = rng.randint(2048, 15 * 1024)
    sender = n % SENDERS
    word = rng.random() < TEXT_RATE
    day = 1 + n % 28
    date = f"{['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'][day % 7]}, {day} May 2024 "
    date += f"{n % 24:02d}:{n % 60:02d}:{(n * 7) % 60:02d} +0000"
    subject = f"{_words(rng, 3, 8)} #{n}"
    if n % 10 == 3:
        subject = f"Re: {subject}"
    message_id = f"<{n}.{rng.getrandbits(48):x}@remote{sender}.example>"
    name = f"Sender {sender}" if sender % 5 else '"Sender, ' + str(sender) + '"'
    fields = {
        "From": f"{name} <sender{sender}@remote{sender}.example>",
        "Subject": subject,
        "Date": date,
    }
    head = [
        f"Return-Path: <sender{sender}@remote{sender}.example>",
        f"Delivered-To: {ADDRESS}",
        f"Received: from mta{n % 7}.remote{sender}.example (mta{n % 7}.remote{sender}.example "
        f"[192.0.2.{n % 250}])",
        f"\tby mx1.{DOMAIN} (mailops) with ESMTPS id {n:016x}",
        f"\tfor <{ADDRESS}>; {date}",
        f"Received: from [10.{n % 200}.{n % 13}.2] by mta{n % 7}.remote{sender}.example; {date}",
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=remote{sender}.example;",
        f"\ts=sel1; h=from:to:subject:date:message-id; bh={_b64(rng, 32)};",
        f"\tb={_b64(rng, 96)}",
        f"From: {fields['From']}",
        f"To: Alice <{ADDRESS}>",
    ]
    if n % 4 == 1:
        head.append(f"Cc: Team {n % 11} <team{n % 11}@{DOMAIN}>, bob@{DOMAIN}")
    head += [f"Subject: {subject}", f"Date: {date}", f"Message-ID: {message_id}"]
    if n % 10 == 3:
        head.append(f"In-Reply-To: <{n - 1}.reply@{DOMAIN}>")
        head.append(f"References: <{n - 2}.reply@{DOMAIN}> <{n - 1}.reply@{DOMAIN}>")
    if n % 6 == 0:
        head.append(f"List-Id: Project {n % 5} <project{n % 5}.lists.example>")
    head.append("MIME-Version: 1.0")

    kind = n % 8
    if kind == 0:  # a quarter multipart: alternative
        boundary = f"=_alt_{n}_{rng.getrandbits(32):08x}"
        head.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        text = _body_lines(rng, size // 2, word)
        body = [
            "This is a multi-part message in MIME format.",
            f"--{boundary}",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 7bit",
            "",
            *text,
            f"--{boundary}",
            "Content-Type: text/html; charset=utf-8",
            "Content-Transfer-Encoding: 7bit",
            "",
            "<html><body>",
            *(f"<p>{line}</p>" for line in text),
            "</body></html>",
            f"--{boundary}--",
        ]
    elif kind == 4:  # and mixed, with an attachment
        boundary = f"=_mix_{n}_{rng.getrandbits(32):08x}"
        head.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
        text = _body_lines(rng, size // 3, word)
        blob = base64.encodebytes(rng.randbytes(size // 2)).decode().splitlines()
        body = [
            f"--{boundary}",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 7bit",
            "",
            *text,
            f"--{boundary}",
            f'Content-Type: application/pdf; name="report-{n}.pdf"',
            f'Content-Disposition: attachment; filename="report-{n}.pdf"',
            "Content-Transfer-Encoding: base64",
            "",
            *blob,
            f"--{boundary}--",
        ]
    else:
        head.append("Content-Type: text/plain; charset=utf-8")
        head.append("Content-Transfer-Encoding: 7bit")
        body = _body_lines(rng, size - 900, word)
    data = ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(body) + "\r\n").encode()
    header_fields = "".join(f"{k}: {fields[k]}\r\n" for k in ("From", "Subject", "Date"))
    meta = Meta(
        n,
        len(data),
        header_fields.encode() + b"\r\n",
        sender == FROM_SENDER,
        word,
        message_id,
    )
    return data, meta


def _b64(rng: random.Random, size: int) -> str:
    return base64.b64encode(rng.randbytes(size)).decode()


def make_maildir(root: Path, count: int) -> tuple[Path, dict[str, Meta]]:
    """The Maildir and, by Message-ID, what each message must look like."""
    box = root / "mail" / DOMAIN / USER
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    base = 1_715_000_000
    metas = {}
    for n in range(count):
        data, meta = make_message(rng, n)
        name = f"{base + n}.M{n % 1_000_000}P4242Q{n}.bench.example,S={len(data)}"
        # Most mail has been read: cur/ with S; the newest hundred are unread in new/.
        path = box / "cur" / f"{name}:2,S" if n < count - 100 else box / "new" / name
        path.write_bytes(data)
        os.utime(path, (base + n, base + n))
        metas[meta.message_id] = meta
    return box, metas


def make_idle_users(root: Path, users: int) -> None:
    """Small INBOXes (20 messages) for the IDLE connections."""
    rng = random.Random(2)
    for u in range(users):
        box = root / "mail" / DOMAIN / f"idle{u}"
        for sub in ("cur", "new", "tmp"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        for n in range(20):
            data, _ = make_message(rng, n)
            (box / "cur" / f"{1_715_000_000 + n}.M{n}P1Q{u}.bench.example:2,S").write_bytes(data)


# ------------------------------------------------------------------- servers


def password_hash() -> str:
    """A light argon2id (the same on both servers): logins cost little, so the figures
    (and the thousand IDLE logins) measure the servers, not the KDF."""
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    encoded = argon2.low_level.hash_secret(
        PASSWORD.encode(),
        b"benchsaltbenchsa",
        time_cost=hasher.time_cost,
        memory_cost=hasher.memory_cost,
        parallelism=hasher.parallelism,
        hash_len=hasher.hash_len,
        type=argon2.low_level.Type.ID,
    )
    return "{ARGON2ID}" + encoded.decode("ascii")


def passwd(idle_users: int) -> str:
    hashed = password_hash()
    lines = [f"{ADDRESS}:{hashed}::::::"]
    lines += [f"idle{u}@{DOMAIN}:{hashed}::::::" for u in range(idle_users)]
    return "\n".join(lines) + "\n"


def start_mailops(work: Path, data_dir: Path, idle_users: int) -> tuple[subprocess.Popen, dict]:
    ports = {"imap": free_port(), "submission": free_port()}
    etc = work / "mailops-etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(passwd(idle_users))
    (etc / "aliases").write_text("")
    (etc / "runtime.toml").write_text(
        f'hostname = "bench.example"\ndata_dir = "{data_dir}"\n'
        'passwd_file = "passwd"\naliases_file = "aliases"\n'
        "plaintext_auth_on_loopback = true\n"
        f'resolver = ["127.0.0.1:{free_port()}"]\n'
        f'[[listeners]]\nservice = "imap"\naddress = "127.0.0.1"\nport = {ports["imap"]}\n'
        f'[[listeners]]\nservice = "submission"\naddress = "127.0.0.1"\n'
        f"port = {ports['submission']}\n"
        f'[domains."{DOMAIN}"]\nrole = "mailbox"\n'
    )
    log = work / "mailops.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailops", "serve", "--config", str(etc / "runtime.toml")],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    wait_port(ports["imap"], proc, log)
    return proc, ports


def start_dovecot(work: Path, data_dir: Path) -> tuple[subprocess.Popen, dict]:
    port = free_port()
    conf = work / "dovecot"
    conf.mkdir()
    (conf / "passwd").write_text(passwd(0))
    uid, gid = dovecot.mail_owner([data_dir])
    conf_file = dovecot.config(
        conf,
        protocol="imap",
        mail_location=f"maildir:{data_dir}/mail/%d/%n",
        uid=uid,
        gid=gid,
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
    return dovecot.launch(conf_file, [port], work / "dovecot-stdout.log"), {"imap": port}


# -------------------------------------------------------------------- client


class Failed(Exception):
    pass


class Raw:
    """A minimal IMAP client: sends a command, collects the response bytes as they
    come (literals read by length), and leaves the parsing for after the clock."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=300)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb", buffering=1 << 16)
        self.tag = 0
        if not self.file.readline().startswith(b"* OK"):
            raise Failed("no greeting")

    def command(self, text: str) -> bytes:
        self.tag += 1
        tag = b"b%d " % self.tag
        self.sock.sendall(tag + text.encode() + b"\r\n")
        readline, read = self.file.readline, self.file.read
        out = []
        while True:
            line = readline()
            if not line:
                raise Failed(f"connection closed during {text!r}")
            out.append(line)
            while line.endswith(b"}\r\n"):
                match = re.search(rb"\{(\d+)\+?\}\r\n$", line)
                if match is None:
                    break
                out.append(read(int(match.group(1))))
                line = readline()
                out.append(line)
            if line.startswith(tag):
                if not line.startswith(tag + b"OK"):
                    raise Failed(f"{text!r}: {line!r}")
                return b"".join(out)

    def close(self) -> None:
        with contextlib.suppress(OSError, Failed):
            self.command("LOGOUT")
        self.sock.close()


# An IMAP response parser (for checking answers, off the clock).

_ATOM_END = b" ()[]{}\r\n"


class Parser:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def value(self):
        data, pos = self.data, self.pos
        ch = data[pos : pos + 1]
        if ch == b"(":
            self.pos += 1
            items = []
            while self.data[self.pos : self.pos + 1] != b")":
                if self.data[self.pos : self.pos + 1] == b" ":
                    self.pos += 1
                    continue
                items.append(self.value())
            self.pos += 1
            return items
        if ch == b'"':
            end = pos + 1
            out = bytearray()
            while data[end : end + 1] != b'"':
                if data[end : end + 1] == b"\\":
                    end += 1
                out += data[end : end + 1]
                end += 1
            self.pos = end + 1
            return bytes(out)
        if ch == b"{":
            close = data.index(b"}", pos)
            size = int(data[pos + 1 : close].rstrip(b"+"))
            start = close + 3  # "}\r\n"
            self.pos = start + size
            return data[start : start + size]
        end = pos
        while end < len(data) and data[end : end + 1] not in _ATOM_END:
            end += 1
        if data[end : end + 1] == b"[":  # BODY[...] and BODY[...]<n>
            depth = 0
            while True:
                c = data[end : end + 1]
                depth += c == b"["
                depth -= c == b"]"
                end += 1
                if depth == 0 and c == b"]":
                    break
            while end < len(data) and data[end : end + 1] not in _ATOM_END:
                end += 1
        atom = data[pos:end]
        self.pos = end
        return None if atom.upper() == b"NIL" else atom


def parse_fetch(data: bytes) -> dict[int, dict[bytes, object]]:
    """`* n FETCH (...)` responses: sequence number → {attribute name: value}."""
    out: dict[int, dict[bytes, object]] = {}
    parser = Parser(data)
    pattern = re.compile(rb"\* (\d+) FETCH ")
    while True:
        match = pattern.search(data, parser.pos)
        if match is None:
            return out
        parser.pos = match.end()
        items = parser.value()
        attrs = out.setdefault(int(match.group(1)), {})
        for key, value in zip(items[::2], items[1::2], strict=True):
            attrs[key.upper()] = value


def parse_search(data: bytes) -> list[int]:
    numbers: list[int] = []
    for line in data.split(b"\r\n"):
        if line.startswith(b"* SEARCH"):
            numbers += [int(x) for x in line[8:].split()]
    return numbers


COMMANDS = {
    "envelope": "FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)",
    "headers": "UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])",
    "from": f"SEARCH FROM sender{FROM_SENDER}@",
    "text": f"SEARCH TEXT {TEXT_WORD}",
}


@dataclass
class Answers:
    """One session's responses, kept to be checked after the clock stopped."""

    exists: int
    data: dict[str, bytes]
    errors: dict[str, str]


def login(port: int) -> tuple[Raw, bytes]:
    client = Raw(port)
    client.command(f"LOGIN {ADDRESS} {PASSWORD}")
    return client, client.command("SELECT INBOX")


def session(port: int) -> tuple[dict[str, float | None], Answers]:
    """One session: seconds per phase (None when the server failed the command)."""
    times: dict[str, float | None] = {}
    started = time.perf_counter()
    client, selected = login(port)
    times["login"] = time.perf_counter() - started
    exists = int(re.search(rb"\* (\d+) EXISTS", selected).group(1))
    data, errors = {}, {}
    for phase, command in COMMANDS.items():
        mark = time.perf_counter()
        try:
            data[phase] = client.command(command)
            times[phase] = time.perf_counter() - mark
        except (Failed, OSError) as exc:
            # A command the server fails (or that kills the connection) is reported,
            # and the other phases still run, on a new connection.
            times[phase], errors[phase], data[phase] = None, str(exc)[:300], b""
            client.sock.close()
            client, _ = login(port)
    client.close()
    return times, Answers(exists, data, errors)


@dataclass
class Checked:
    """What a server answered, in a form to compare: by Message-ID."""

    envelopes: dict[str, list]
    headers: dict[str, bytes]
    search_from: set[str]
    search_text: set[str]


def check(name: str, answers: Answers, metas: dict[str, Meta], problems: list[str]) -> Checked:
    """Counts, sizes, header blocks and SEARCH results against what was generated."""

    def problem(text: str) -> None:
        problems.append(f"{name}: {text}")

    count = len(metas)
    if answers.exists != count:
        problem(f"SELECT says {answers.exists} EXISTS, the folder has {count}")
    for phase, error in answers.errors.items():
        problem(f"{TITLES[phase]} failed: {error}")
    fetched = parse_fetch(answers.data["envelope"])
    if sorted(fetched) != list(range(1, count + 1)):
        problem(f"FETCH 1:* ENVELOPE answered {len(fetched)} messages of {count}")
    by_seq: dict[int, str] = {}
    by_uid: dict[int, str] = {}
    envelopes: dict[str, list] = {}
    wrong_size = 0
    for seq, attrs in fetched.items():
        envelope = attrs.get(b"ENVELOPE")
        if not isinstance(envelope, list) or len(envelope) != 10:
            problem(f"message {seq}: no ENVELOPE of ten fields: {envelope!r}"[:300])
            continue
        mid = (envelope[9] or b"").decode()
        meta = metas.get(mid)
        if meta is None:
            problem(f"message {seq}: ENVELOPE message-id {mid!r} was never generated")
            continue
        if int(attrs.get(b"RFC822.SIZE", -1)) != meta.size:
            wrong_size += 1
        if b"UID" not in attrs or b"FLAGS" not in attrs:
            problem(f"message {seq}: UID or FLAGS missing")
            continue
        by_seq[seq] = mid
        by_uid[int(attrs[b"UID"])] = mid
        envelopes[mid] = envelope
    if wrong_size:
        problem(f"{wrong_size} RFC822.SIZE values differ from the file sizes")
    if len(envelopes) != count:
        problem(f"{len(envelopes)} distinct messages in the ENVELOPE fetch, not {count}")

    headers: dict[str, bytes] = {}
    wrong_headers = 0
    for attrs in parse_fetch(answers.data["headers"]).values():
        uid = int(attrs.get(b"UID", -1))
        block = next((v for k, v in attrs.items() if k.startswith(b"BODY[")), None)
        mid = by_uid.get(uid)
        if mid is None or not isinstance(block, bytes):
            wrong_headers += 1
            continue
        headers[mid] = block
        wrong_headers += block != metas[mid].header_fields
    if len(headers) != count or wrong_headers:
        problem(f"header fetch: {len(headers)} of {count} answered, {wrong_headers} wrong")

    results = {}
    for key, data, hit in (
        ("from", answers.data["from"], lambda m: m.from_hit),
        ("text", answers.data["text"], lambda m: m.text_hit),
    ):
        found = {by_seq.get(seq, f"?{seq}") for seq in parse_search(data)}
        expected = {mid for mid, meta in metas.items() if hit(meta)}
        if found != expected:
            problem(
                f"SEARCH {key.upper()}: {len(found)} found, {len(expected)} expected, "
                f"{len(found - expected)} wrong, {len(expected - found)} missed"
            )
        results[key] = found
    return Checked(envelopes, headers, results["from"], results["text"])


def compare(ours: Checked, theirs: Checked, problems: list[str]) -> int:
    """mailops's answers against Dovecot's; returns how many messages were compared."""
    differ = [mid for mid in ours.envelopes if ours.envelopes[mid] != theirs.envelopes.get(mid)]
    if differ:
        mid = differ[0]
        problems.append(
            f"ENVELOPE differs from Dovecot's for {len(differ)} messages, e.g. {mid}:\n"
            f"  mailops {ours.envelopes[mid]!r}\n  dovecot {theirs.envelopes.get(mid)!r}"
        )
    differ = [mid for mid in ours.headers if ours.headers[mid] != theirs.headers.get(mid)]
    if differ:
        problems.append(f"header fields differ from Dovecot's for {len(differ)} messages")
    if ours.search_from != theirs.search_from or ours.search_text != theirs.search_text:
        problems.append("SEARCH results differ from Dovecot's")
    return len(ours.envelopes)


def measure(port: int, runs: int) -> tuple[dict, dict, Answers]:
    first, answers = session(port)
    warm = [session(port)[0] for _ in range(runs)]
    median = {
        phase: None
        if any(run[phase] is None for run in warm)
        else statistics.median(run[phase] for run in warm)
        for phase in PHASES
    }
    return first, median, answers


def row(label: str, times: dict[str, float | None]) -> str:
    return f"{label:<26}" + "".join(
        f"{'failed':>13}" if times[p] is None else f"{times[p]:>13.3f}" for p in PHASES
    )


def ratio(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or theirs is None else ours / theirs


def ratio_row(label: str, ratios: dict[str, float | None]) -> str:
    return f"{label:<26}" + "".join(
        f"{'-':>13}" if ratios[p] is None else f"{ratios[p]:>12.2f}x" for p in PHASES
    )


# ------------------------------------------------------------ IDLE and memory


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(entry.name))
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


async def _expect(reader: asyncio.StreamReader, prefix: bytes, timeout: float = 60) -> bytes:
    async with asyncio.timeout(timeout):
        while True:
            line = await reader.readline()
            if not line:
                raise Failed(f"closed while waiting for {prefix!r}")
            if line.startswith(prefix):
                return line
            if re.match(rb"^a\d? (NO|BAD)", line):
                raise Failed(line.decode(errors="replace"))


async def idle_phase(ports: dict, pid: int, connections: int, users: int) -> tuple[float, ...]:
    """(RSS before and with every connection in IDLE (MB), seconds to wake, sessions
    woken, sessions that should have woken)."""
    before = rss_mb(pid)
    gate = asyncio.Semaphore(50)
    users = min(users, connections)

    async def one(i: int):
        async with gate:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", ports["imap"], limit=1 << 20
            )
            await _expect(reader, b"* OK")
            writer.write(f"a1 LOGIN idle{i % users}@{DOMAIN} {PASSWORD}\r\n".encode())
            await _expect(reader, b"a1 OK")
            writer.write(b"a2 SELECT INBOX\r\n")
            await _expect(reader, b"a2 OK")
            writer.write(b"a3 IDLE\r\n")
            await _expect(reader, b"+")
            return i % users, reader, writer

    sessions = await asyncio.gather(*(one(i) for i in range(connections)))
    await asyncio.sleep(1.0)
    during = rss_mb(pid)

    # One delivery (through submission) must wake every IDLE session of that user.
    woken_user = 0
    watched = [(r, w) for user, r, w in sessions if user == woken_user]
    smtp_started = time.perf_counter()
    await asyncio.to_thread(deliver, ports["submission"], f"idle{woken_user}@{DOMAIN}")
    started = time.perf_counter()  # the SMTP transaction is over: the mail is delivered
    smtp = started - smtp_started
    results = await asyncio.gather(
        *(_expect(r, b"* 21 EXISTS", timeout=10) for r, _ in watched), return_exceptions=True
    )
    woke = time.perf_counter() - started
    woken = sum(1 for r in results if isinstance(r, bytes))
    for _, _, writer in sessions:
        writer.close()
    with contextlib.suppress(Exception):
        await asyncio.gather(*(w.wait_closed() for _, _, w in sessions))
    return before, during, woke, woken, len(watched), smtp


def deliver(port: int, user: str) -> None:
    """A note to self, sent through submission (port 587, no TLS on loopback here)."""
    data, _ = make_message(random.Random(3), 99_999)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.login(user, PASSWORD)
        client.sendmail(user, [user], data)


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=int, default=1000, help="IDLE connections (0: skip)")
    parser.add_argument(
        "--idle-users", type=int, default=IDLE_USERS, help="users the IDLE connections spread over"
    )
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--no-dovecot", action="store_true")
    args = parser.parse_args()
    # Both ends of every IDLE connection, the index files, the listeners: room to spare.
    nofile = raise_nofile(max(4096, 2 * args.idle + 1024))
    if nofile < 2 * args.idle + 256:
        sys.exit(f"RLIMIT_NOFILE is {nofile}: too low for {args.idle} connections")

    idle_users = min(args.idle_users, args.idle)
    work = Path(tempfile.mkdtemp(prefix="imap-bench-", dir=args.dir))
    work.chmod(0o755)  # Dovecot's auth process runs as the dovecot user and must read passwd
    procs: list[subprocess.Popen] = []
    problems: list[str] = []
    try:
        ours = work / "ours"
        started = time.perf_counter()
        _, metas = make_maildir(ours, args.messages)
        total = sum(meta.size for meta in metas.values())
        print(
            f"maildir: {args.messages} messages, {total / 1e6:.1f} MB, "
            f"{sum(m.from_hit for m in metas.values())} from sender{FROM_SENDER}, "
            f"{sum(m.text_hit for m in metas.values())} with {TEXT_WORD!r} "
            f"(made in {time.perf_counter() - started:.1f} s)"
        )
        theirs = work / "theirs"
        shutil.copytree(ours, theirs)  # Dovecot gets its own copy
        if args.idle:
            make_idle_users(ours, idle_users)

        head = "".join(f"{TITLES[p]:>13}" for p in PHASES)
        print(f"\n{'seconds':<26}{head}")
        proc, ports = start_mailops(work, ours, idle_users)
        procs.append(proc)
        try:
            m_first, m_warm, m_answers = measure(ports["imap"], args.runs)
        except Failed:
            print((work / "mailops.log").read_text(errors="replace")[-3000:])
            raise
        print(row("mailops first (cold)", m_first))
        print(row(f"mailops warm (median of {args.runs})", m_warm))
        m_checked = check("mailops", m_answers, metas, problems)

        if args.no_dovecot or not dovecot.available("imap"):
            print("(Dovecot: not run; apt-get install dovecot-imapd to compare)")
        else:
            dproc, dports = start_dovecot(work, theirs)
            procs.append(dproc)
            try:
                d_first, d_warm, d_answers = measure(dports["imap"], args.runs)
            except Failed:
                print((work / "dovecot" / "dovecot.log").read_text(errors="replace")[-3000:])
                raise
            stop(dproc)
            print(row("dovecot first (cold)", d_first))
            print(row(f"dovecot warm (median of {args.runs})", d_warm))
            d_checked = check("dovecot", d_answers, metas, problems)
            ratios = {p: ratio(m_warm[p], d_warm[p]) for p in PHASES}
            cold = {p: ratio(m_first[p], d_first[p]) for p in PHASES}
            print(ratio_row("ratio mailops/dovecot warm", ratios))
            print(ratio_row("ratio mailops/dovecot cold", cold))
            print(f"{'goal (warm)':<26}" + "".join(f"{'<= ' + str(GOALS[p]):>13}" for p in PHASES))
            met = {
                p: "-" if ratios[p] is None else "yes" if ratios[p] <= GOALS[p] else "NO"
                for p in PHASES
            }
            print(f"{'met':<26}" + "".join(f"{met[p]:>13}" for p in PHASES))
            compared = compare(m_checked, d_checked, problems)
            print(f"answers compared with Dovecot's: {compared} envelopes and header blocks")

        if args.idle:
            # A fresh process on the same data for the memory figure: what a thousand
            # idle sessions cost, not what the benchmark above left in caches.
            print(f"\nmailops RSS after the runs above: {rss_mb(proc.pid):.0f} MB")
            stop(proc)
            proc, ports = start_mailops(work, ours, idle_users)
            procs.append(proc)
            before, during, woke, woken, expected, smtp = asyncio.run(
                idle_phase(ports, proc.pid, args.idle, idle_users)
            )
            each = (during - before) * 1024 / args.idle
            print(
                f"mailops RSS, a new process: {before:.0f} MB idle, {during:.0f} MB with "
                f"{args.idle} connections of {idle_users} users in IDLE ({each:.0f} KB each; "
                f"goal < {RSS_GOAL_MB} MB: {'met' if during < RSS_GOAL_MB else 'NOT met'})"
            )
            print(
                f"IDLE wake-up after a delivery: {woken} of {expected} sessions, "
                f"{woke:.2f} s after the end of the SMTP transaction (goal < 1 s; the "
                f"transaction took {smtp:.2f} s)"
            )
            if woken < expected:
                problems.append(f"IDLE: only {woken} of {expected} sessions woke on delivery")
        stop(proc)
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    if problems:
        print("\nCHECKS FAILED:\n" + "\n".join(f"- {p}" for p in problems))
        sys.exit(1)
    print("\nall answers checked: counts, sizes, envelopes, header fields, SEARCH results")


if __name__ == "__main__":
    main()
