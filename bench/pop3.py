"""Benchmark: POP3 on a 10,000-message INBOX, mailops against Dovecot side by side.

    python bench/pop3.py [--messages 10000] [--runs 5] [--dir PATH] [--no-dovecot]

Makes a Maildir of `--messages` messages (2–10 KiB, realistic headers, CRLF as the
MTA stores them), then:

1. index build: `Store.open` + `select("INBOX")` on the fresh Maildir, and again after
   deleting the index (the rebuild a lost index costs); goal under 2 s for 10,000;
2. POP3 over loopback with Python's poplib against a real `mailops serve`: log in,
   STAT, LIST, UIDL, RETR of every message; first session (cold index) and then the
   median of `--runs` warm sessions;
3. the same against a private Dovecot (its own config in a temp dir, never the
   system's) on a copy of the same Maildir, when `dovecot` is installed, and the
   ratio mailops / Dovecot (goal ≤ 1.0). Both servers run at once and take turns,
   session by session, so a change in the machine's load hits both alike; the spread
   of the per-round ratios shows how noisy the run was; a last RETR of everything on
   both servers at once, in blocks that take turns, gives the steadiest ratio. The
   server CPU columns (user + system seconds, from /proc: the whole session, and the
   RETRs alone) are steadier than wall time on a busy machine;
4. the same paired RETR of 2,000 messages in a random order: clients download in
   order, and mailops then reads the next message ahead while the client takes in
   one; out of order it reads nothing ahead, and this row shows the plain round trip.

The machine's load average is printed at the start and the end: on a shared machine
with few cores, every figure moves with it (run it more than once).

Both servers run as separate processes on loopback without TLS; the client is the
same poplib loop, so the figures compare servers, not clients. Messages are checked
(sizes and a sample of contents) so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import os
import poplib
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailops.passwords import hash_password
from mailops.runtime.store import Store
from mailops.runtime.store.index import INDEX_FILE
from tests import dovecot
from tests.dovecot import free_port, stop, wait_port

DOMAIN = "example.test"
USER = "alice"
PASSWORD = "alice-pw"
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
    conf.mkdir()
    # The same argon2id hash mailops verifies, so logins cost the same on both sides.
    (conf / "passwd").write_text(f"{USER}@{DOMAIN}:{password_hash()}::::::\n")
    uid, gid = dovecot.mail_owner([data_dir])
    conf_file = dovecot.config(
        conf,
        protocol="pop3",
        mail_location=f"maildir:{data_dir}/mail/%d/%n",
        uid=uid,
        gid=gid,
        extra="pop3_uidl_format = %08Xu%08Xv",
        services=f"""
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
}}""",
    )
    return dovecot.launch(conf_file, [port], work / "dovecot-stdout.log"), port


# -------------------------------------------------------------------- client


def session(
    port: int, expected: dict[int, int], cpu: Callable[[], float] = lambda: 0.0
) -> dict[str, float]:
    """One POP3 session: seconds per phase, and the server's CPU seconds (`cpu` reads
    its counter) during the RETRs. Checks counts, sizes and some contents."""
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

    cpu_before = cpu()
    mark = time.perf_counter()
    for number in range(1, count + 1):
        lines = client.retr(number)[1]
        if number % 997 == 0:
            data = b"\r\n".join(lines) + b"\r\n"
            assert len(data) == sizes[number - 1]
    times["retr"] = time.perf_counter() - mark
    times["retr_cpu"] = cpu() - cpu_before
    client.quit()
    return times


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a server and its processes, exited
    ones included (Dovecot forks a process per login and per session)."""
    ticks = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile: its parent counts it once it is reaped
        ticks += sum(int(field) for field in fields[11:15])  # utime stime cutime cstime
        pending += [int(child) for child in children]
    return ticks / os.sysconf("SC_CLK_TCK")


class Server:
    """A running server under test: its name, process and port."""

    def __init__(self, name: str, proc: subprocess.Popen, port: int) -> None:
        self.name, self.proc, self.port = name, proc, port
        self.first: dict[str, float] = {}
        self.warm: list[dict[str, float]] = []

    def session(self, expected: dict[int, int]) -> dict[str, float]:
        before = server_cpu(self.proc.pid)
        times = session(self.port, expected, lambda: server_cpu(self.proc.pid))
        times["cpu"] = server_cpu(self.proc.pid) - before
        return times

    def median(self) -> dict[str, float]:
        return {key: statistics.median(run[key] for run in self.warm) for key in self.warm[0]}


def measure(servers: list[Server], expected: dict[int, int], runs: int) -> None:
    """A first session on each, then `runs` rounds of one warm session on each, the
    servers taking turns (the order alternates), so that both see the same machine:
    on a shared machine the load changes from minute to minute."""
    for server in servers:
        server.first = server.session(expected)
    for round_ in range(runs):
        for server in servers if round_ % 2 == 0 else servers[::-1]:
            server.warm.append(server.session(expected))


def paired_retr(servers: list[Server], numbers: list[int], label: str, block: int = 100) -> None:
    """RETR of `numbers` on all servers at once, in blocks that take turns: both see
    the same moment of the machine, so their ratio is the steadiest figure here."""
    clients = []
    for server in servers:
        client = poplib.POP3("127.0.0.1", server.port, timeout=60)
        client.user(f"{USER}@{DOMAIN}")
        client.pass_(PASSWORD)
        clients.append(client)
    seconds = [0.0] * len(servers)
    blocks: list[list[float]] = [[] for _ in servers]
    for round_, first in enumerate(range(0, len(numbers), block)):
        part = numbers[first : first + block]
        order = range(len(servers)) if round_ % 2 == 0 else reversed(range(len(servers)))
        for i in order:
            mark = time.perf_counter()
            for number in part:
                clients[i].retr(number)
            blocks[i].append(time.perf_counter() - mark)
            seconds[i] += blocks[i][-1]
    for client in clients:
        client.quit()
    per_message = [
        f"{server.name} {seconds[i] / len(numbers) * 1e6:.0f} µs"
        for i, server in enumerate(servers)
    ]
    print(
        f"\npaired RETR {label} ({len(numbers)} messages in blocks of {block}, taking turns):"
        f" {', '.join(per_message)} a message"
    )
    if len(servers) > 1:
        per_block = statistics.quantiles([m / d for m, d in zip(*blocks, strict=True)], n=4)
        print(
            f"paired RETR {label} ratio {seconds[0] / seconds[1]:.2f}x; per block: median "
            f"{per_block[1]:.2f}x, quartiles {per_block[0]:.2f}–{per_block[2]:.2f}x"
        )


def row(label: str, times: dict[str, float]) -> str:
    cells = " ".join(f"{times[p]:>8.3f}" for p in PHASES)
    total = sum(times[p] for p in PHASES)
    return f"{label:<22} {cells} {total:>8.3f} {times['cpu']:>8.3f} {times['retr_cpu']:>8.3f}"


def ratios(ours: Server, theirs: Server) -> None:
    """Ratios of the medians, and the spread of the per-round ratios (the noise)."""
    mine, other = ours.median(), theirs.median()

    def ratio(key: str) -> str:
        return f"{mine[key] / other[key]:.2f}x"

    total = sum(mine[p] for p in PHASES) / sum(other[p] for p in PHASES)
    print(
        f"\nratio mailops/dovecot (medians): warm total {total:.2f}x, RETR {ratio('retr')}, "
        f"login {ratio('login')} (goal <= 1.0); server CPU {ratio('cpu')}, "
        f"in the RETRs {ratio('retr_cpu')}"
    )
    per_round = [
        (sum(m[p] for p in PHASES) / sum(d[p] for p in PHASES), m["retr"] / d["retr"])
        for m, d in zip(ours.warm, theirs.warm, strict=True)
    ]
    totals = sorted(t for t, _ in per_round)
    retrs = sorted(r for _, r in per_round)
    print(
        f"per-round ratios: warm total {totals[0]:.2f}–{totals[-1]:.2f}x, "
        f"RETR {retrs[0]:.2f}–{retrs[-1]:.2f}x over {len(per_round)} rounds"
    )
    first = sum(ours.first[p] for p in PHASES) / sum(theirs.first[p] for p in PHASES)
    print(f"first session {first:.2f}x")


def load() -> str:
    """The load average (1, 5, 15 minutes) against the number of CPUs."""
    return f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--no-dovecot", action="store_true")
    args = parser.parse_args()

    print(f"load average at the start: {load()}")
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
            f"{'total':>8} {'srv CPU':>8} {'RETR CPU':>8}   (seconds; poplib client)"
        )
        servers = [Server("mailops", *start_mailops(work, ours))]
        procs.append(servers[0].proc)
        if args.no_dovecot or not dovecot.available("pop3"):
            print("(Dovecot not installed: apt-get install dovecot-pop3d; no comparison)")
        else:
            servers.append(Server("dovecot", *start_dovecot(work, theirs)))
            procs.append(servers[1].proc)
        try:
            measure(servers, expected, args.runs)
        except poplib.error_proto:
            if len(servers) > 1:
                print((work / "dovecot" / "dovecot.log").read_text(errors="replace")[-3000:])
            raise
        for server in servers:
            print(row(f"{server.name} first session", server.first))
            print(row(f"{server.name} warm (median)", server.median()))
        if len(servers) > 1:
            ratios(*servers)
        everything = list(range(1, len(expected) + 1))
        paired_retr(servers, everything, "in order")
        # Clients download in order, which reading ahead serves; out of order it does
        # not help, and the plain round trip shows here.
        shuffled = random.Random(2).sample(everything, min(len(everything), 2000))
        paired_retr(servers, shuffled, "out of order")
        print(f"\nload average at the end: {load()}")
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
