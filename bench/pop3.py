"""Benchmark: POP3 on a 10,000-message INBOX, mailops against Dovecot side by side.

    python bench/pop3.py [--messages 10000] [--runs 3] [--dir PATH] [--no-dovecot]

Makes a Maildir of `--messages` messages (2–10 KiB, realistic headers, CRLF as the
MTA stores them), then:

1. index build: `Store.open` + `select("INBOX")` on the fresh Maildir, and again after
   deleting the index (the rebuild a lost index costs); goal under 2 s for 10,000;
2. POP3 over loopback with Python's poplib against a real `mailops serve`: log in,
   STAT, LIST, UIDL, RETR of every message; first session (cold index) and then the
   median of `--runs` warm sessions;
3. the same against a private Dovecot (its own config in a temp dir, never the
   system's) on a copy of the same Maildir, when `dovecot` is installed, and the
   ratio mailops / Dovecot (goal ≤ 1.0).

Both servers run as separate processes on loopback without TLS; the client is the
same poplib loop, so the figures compare servers, not clients. Messages are checked
(sizes and a sample of contents) so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import grp
import os
import poplib
import pwd
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailops.passwords import hash_password
from mailops.runtime.store import Store
from mailops.runtime.store.index import INDEX_FILE

DOMAIN = "example.test"
USER = "alice"
PASSWORD = "alice-pw"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
WORDS = [
    *("mail", "server", "index", "folder", "message", "network", "protocol", "client"),
    *("delivery", "storage", "header", "body", "quota", "session", "retrieve"),
    *("benchmark", "system", "dovecot", "python", "maildir"),
]
PHASES = ("login", "stat", "list", "uidl", "retr")


# ------------------------------------------------------------------- the data


def make_message(rng: random.Random, n: int) -> bytes:
    size = rng.randint(2048, 10240)
    headers = (
        f"Return-Path: <sender{n % 97}@remote.example>\r\n"
        f"Delivered-To: {USER}@{DOMAIN}\r\n"
        f"Received: from mta{n % 7}.remote.example ([192.0.2.{n % 250}])\r\n"
        f"\tby mx1.{DOMAIN} (mailops) with ESMTPS id {n:016x}\r\n"
        f"\tfor <{USER}@{DOMAIN}>; Mon, 6 May 2024 10:{n % 60:02d}:00 +0000\r\n"
        f"From: Sender {n % 97} <sender{n % 97}@remote.example>\r\n"
        f"To: Alice <{USER}@{DOMAIN}>\r\n"
        f"Subject: {' '.join(rng.choices(WORDS, k=6))} #{n}\r\n"
        f"Date: Mon, 6 May 2024 10:{n % 60:02d}:00 +0000\r\n"
        f"Message-ID: <{n}.{rng.getrandbits(48):x}@remote.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    lines = []
    length = len(headers)
    while length < size:
        line = " ".join(rng.choices(WORDS, k=rng.randint(6, 14)))
        if rng.random() < 0.02:
            line = "." + line  # dot-stuffing must happen
        lines.append(line)
        length += len(line) + 2
    return headers + ("\r\n".join(lines) + "\r\n").encode()


def make_maildir(root: Path, count: int) -> Path:
    box = root / "mail" / DOMAIN / USER
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    base = 1_715_000_000
    for n in range(count):
        data = make_message(rng, n)
        name = f"{base + n}.M{n % 1_000_000}P4242Q{n}.bench.example,S={len(data)}"
        (box / "new" / name).write_bytes(data)
    return box


# ---------------------------------------------------------------- index build


def index_build(data_dir: Path, box: Path) -> tuple[float, float, float]:
    """(first build, rebuild after deleting the index, warm open) in seconds."""

    def once() -> float:
        store = Store(data_dir, "bench.example")
        started = time.perf_counter()
        mailbox = store.open(DOMAIN, USER)
        view = mailbox.select("INBOX")
        elapsed = time.perf_counter() - started
        assert len(view.messages) > 0
        store.release(mailbox)
        return elapsed

    first = once()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{box / INDEX_FILE}{suffix}").unlink(missing_ok=True)
    rebuild = once()
    warm = once()
    return first, rebuild, warm


# ------------------------------------------------------------------- servers


def password_hash() -> str:
    return hash_password(PASSWORD, b"benchsaltbenchsa")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not start:\n{log.read_text(errors='replace')}")


def start_mailops(work: Path, data_dir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    etc = work / "mailops-etc"
    etc.mkdir()
    (etc / "passwd").write_text(f"{USER}@{DOMAIN}:{password_hash()}::::::\n")
    (etc / "aliases").write_text("")
    (etc / "runtime.toml").write_text(
        f'hostname = "bench.example"\ndata_dir = "{data_dir}"\n'
        'passwd_file = "passwd"\naliases_file = "aliases"\n'
        "plaintext_auth_on_loopback = true\n"
        f'[[listeners]]\nservice = "pop3"\naddress = "127.0.0.1"\nport = {port}\n'
        f'[domains."{DOMAIN}"]\nrole = "mailbox"\n'
    )
    log = work / "mailops.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailops", "serve", "--config", str(etc / "runtime.toml")],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_port(port, proc, log)
    return proc, port


def start_dovecot(work: Path, data_dir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = work / "dovecot"
    for sub in ("run", "state", "home"):
        (conf / sub).mkdir(parents=True)
    # The same argon2id hash mailops verifies, so logins cost the same on both sides.
    (conf / "passwd").write_text(f"{USER}@{DOMAIN}:{password_hash()}::::::\n")
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        # Dovecot never runs mail processes as root: serve the copy as nobody.
        uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
        for path in [data_dir, *data_dir.rglob("*"), conf / "home"]:
            os.chown(path, uid, gid)
    (conf / "dovecot.conf").write_text(
        f"""
base_dir = {conf}/run
state_dir = {conf}/state
log_path = {conf}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 0
mail_location = maildir:{data_dir}/mail/%d/%n
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = username_format=%u {conf}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={conf}/home/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
}}
"""
    )
    log = work / "dovecot-stdout.log"
    proc = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(conf / "dovecot.conf")],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_port(port, proc, log)
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -------------------------------------------------------------------- client


def session(port: int, expected: dict[int, int]) -> dict[str, float]:
    """One POP3 session: seconds per phase. Checks counts, sizes and some contents."""
    times: dict[str, float] = {}
    started = time.perf_counter()
    client = poplib.POP3("127.0.0.1", port, timeout=60)
    client.user(f"{USER}@{DOMAIN}")
    client.pass_(PASSWORD)
    times["login"] = time.perf_counter() - started

    mark = time.perf_counter()
    count, size = client.stat()
    times["stat"] = time.perf_counter() - mark
    assert count == len(expected), (count, len(expected))

    mark = time.perf_counter()
    listing = client.list()[1]
    times["list"] = time.perf_counter() - mark
    sizes = [int(line.split()[1]) for line in listing]
    assert sum(sizes) == size == sum(expected.values())

    mark = time.perf_counter()
    uids = client.uidl()[1]
    times["uidl"] = time.perf_counter() - mark
    assert len(set(uids)) == count

    mark = time.perf_counter()
    for number in range(1, count + 1):
        lines = client.retr(number)[1]
        if number % 997 == 0:
            data = b"\r\n".join(lines) + b"\r\n"
            assert len(data) == sizes[number - 1]
    times["retr"] = time.perf_counter() - mark
    client.quit()
    return times


def measure(port: int, expected: dict[int, int], runs: int) -> tuple[dict, dict]:
    first = session(port, expected)
    warm = [session(port, expected) for _ in range(runs)]
    median = {phase: statistics.median(run[phase] for run in warm) for phase in PHASES}
    return first, median


def row(label: str, times: dict[str, float]) -> str:
    cells = " ".join(f"{times[p]:>8.3f}" for p in PHASES)
    return f"{label:<22} {cells} {sum(times.values()):>8.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--no-dovecot", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pop3-bench-", dir=args.dir))
    work.chmod(0o755)  # Dovecot's auth process runs as the dovecot user and must read passwd
    procs: list[subprocess.Popen] = []
    try:
        ours = work / "ours"
        started = time.perf_counter()
        box = make_maildir(ours, args.messages)
        total = sum(p.stat().st_size for p in (box / "new").iterdir())
        print(
            f"maildir: {args.messages} messages, {total / 1e6:.1f} MB "
            f"(made in {time.perf_counter() - started:.1f} s)"
        )
        theirs = work / "theirs"
        shutil.copytree(ours, theirs)  # Dovecot gets its own copy, before we index ours

        first, rebuild, warm = index_build(ours, box)
        print(
            f"index build: first {first:.3f} s, rebuild after losing it {rebuild:.3f} s,"
            f" warm open {warm:.3f} s (goal: build < 2 s)"
        )

        expected = {}
        store = Store(ours, "bench.example")
        mailbox = store.open(DOMAIN, USER)
        for n, message in enumerate(mailbox.select("INBOX").messages, 1):
            expected[n] = message.vsize + (0 if message.eol else 2)
        store.release(mailbox)
        # The server builds its own index from scratch, like a first login after delivery.
        for suffix in ("", "-wal", "-shm"):
            Path(f"{box / INDEX_FILE}{suffix}").unlink(missing_ok=True)

        print(
            f"\n{'':<22} {'login':>8} {'stat':>8} {'list':>8} {'uidl':>8} {'retr':>8} "
            f"{'total':>8}   (seconds; poplib client)"
        )
        proc, port = start_mailops(work, ours)
        procs.append(proc)
        m_first, m_warm = measure(port, expected, args.runs)
        stop(proc)
        print(row("mailops first session", m_first))
        print(row("mailops warm (median)", m_warm))

        if args.no_dovecot or not Path(DOVECOT).exists():
            print("\nDovecot not installed (apt-get install dovecot-pop3d): no comparison")
            return
        proc, port = start_dovecot(work, theirs)
        procs.append(proc)
        try:
            d_first, d_warm = measure(port, expected, args.runs)
        except poplib.error_proto:
            print((work / "dovecot" / "dovecot.log").read_text(errors="replace")[-3000:])
            raise
        stop(proc)
        print(row("dovecot first session", d_first))
        print(row("dovecot warm (median)", d_warm))
        ratio = sum(m_warm.values()) / sum(d_warm.values())
        retr = m_warm["retr"] / d_warm["retr"]
        first_ratio = sum(m_first.values()) / sum(d_first.values())
        print(
            f"\nratio mailops/dovecot: warm total {ratio:.2f}x, RETR {retr:.2f}x, "
            f"first session {first_ratio:.2f}x (goal <= 1.0)"
        )
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
