"""Benchmark: SMTP ingest of `mailops serve` into Maildir, side by side with Postfix.

    python bench/smtp_ingest.py [--messages 2000] [--serial-messages 1000] [--runs 5]
                                [--connections 20] [--size 2048] [--dir PATH]
                                [--no-postfix] [--profile FILE]

Figures (median of --runs runs), for mailops and, when it can be started, a private
Postfix instance on the same machine (see postfix_ref.py):

- 20 connections, 2 KiB messages to bob@example.test, delivered to a Maildir with
  fsync: messages per second accepted (the load generator's wall time), and the time
  from the start of the load until every message is a file in the Maildir (Postfix
  accepts into its queue and delivers afterwards; mailops delivers before its 250);
- p50/p99 latency per message, MAIL to the DATA reply, from a small asyncio client
  with the same number of connections and the same message size;
- one connection sending --serial-messages messages in a row: messages per second;
- idle RSS after start, before any load (mailops goal: < 80 MB).

Load comes from Postfix's `smtp-source` when installed (a C client: the figure is the
server's, not the client's), with -d so each session keeps its connection, as the
asyncio client does; without it the asyncio client makes all the load. Both servers
get the same load in the same run, alternating, after a short warm-up.
Target: mailops ≥ 1.5x Postfix's msg/s with 20 connections (below 1.0x is not done).
Postfix runs with its defaults, so its in_flow_delay (smtpd waits up to 1 s per
message while the queue manager lags behind) can show in its p99.

--profile FILE runs one more 20-connection load on mailops under py-spy (if installed)
and prints where the runtime process spends its time; FILE keeps the raw stacks.
Disk figures depend on where the files land (see bench/durable.py): point --dir at a
fresh directory on the disk to measure for comparable numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

# Run as `python bench/smtp_ingest.py`: the repository root is needed for the tests'
# server helper, this folder is already on the path for postfix_ref.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from postfix_ref import PostfixUnavailable, postfix_instance

from tests.integration.mailserver import free_ports, mail_server

SENDER = "sender@remote.example"
RECIPIENT = "bob@example.test"
TARGET_RATIO = 1.5
WARMUP_MESSAGES = 100
DELIVERY_TIMEOUT = 120.0  # seconds to wait for the last message to reach the Maildir
REPLY_TIMEOUT = 30.0
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"


@dataclass
class Target:
    """A running server under test: where to connect and how to count its deliveries."""

    name: str
    port: int
    pid: int  # the process whose idle RSS is reported (Postfix: master, plus children)
    maildir: Path  # bob's Maildir
    # Messages sent so far. Delivered files are counted, never removed: deleting
    # thousands of files between runs makes the next file creations on ext4 slower
    # (it skips recently deleted inodes), which would measure the bench, not the server.
    sent: int = 0

    def delivered(self) -> int:
        return sum(_count(self.maildir / sub) for sub in ("new", "cur"))


@dataclass
class Figures:
    accepted_rate: float  # msg/s, 20 connections, load generator wall time
    maildir_seconds: float  # start of load until all N are files in the Maildir
    client_rate: float  # msg/s of the asyncio client (it also measures latency)
    p50_ms: float
    p99_ms: float
    serial_rate: float  # msg/s, one connection


# ------------------------------------------------------------------ load generators


def make_message(size: int) -> bytes:
    """A message like smtp-source's: a few headers, then `size` bytes of 80-byte lines.

    No line starts with '.', so the client needs no dot-stuffing.
    """
    line = b"X" * 78 + b"\r\n"
    body = (line * (size // len(line) + 1))[:size]
    if not body.endswith(b"\r\n"):
        body = body[:-2] + b"\r\n"
    head = f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: bench\r\n\r\n"
    return head.encode() + body


async def _expect(reader: asyncio.StreamReader, code: int) -> None:
    while True:
        line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
        if line[3:4] != b"-":
            break
    if not line.startswith(str(code).encode()):
        raise RuntimeError(f"expected {code}, server said {line!r}")


async def _session(port: int, message: bytes, left: list[int], latencies: list[float]) -> None:
    """One connection sending messages while any are left, timing each transaction."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _expect(reader, 220)
        writer.write(b"EHLO bench.example\r\n")
        await _expect(reader, 250)
        while left[0] > 0:
            left[0] -= 1  # one event loop: no lock needed
            started = time.perf_counter()
            writer.write(f"MAIL FROM:<{SENDER}>\r\n".encode())
            await _expect(reader, 250)
            writer.write(f"RCPT TO:<{RECIPIENT}>\r\n".encode())
            await _expect(reader, 250)
            writer.write(b"DATA\r\n")
            await _expect(reader, 354)
            writer.write(message + b".\r\n")
            await _expect(reader, 250)
            latencies.append(time.perf_counter() - started)
        writer.write(b"QUIT\r\n")
        await _expect(reader, 221)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def python_load(port: int, messages: int, connections: int, size: int) -> tuple[float, list[float]]:
    """Send `messages` over `connections`; returns wall seconds and per-message latencies."""

    async def run() -> tuple[float, list[float]]:
        left, latencies = [messages], []
        message = make_message(size)
        started = time.perf_counter()
        await asyncio.gather(
            *(_session(port, message, left, latencies) for _ in range(connections))
        )
        return time.perf_counter() - started, latencies

    return asyncio.run(run())


def smtp_source_load(port: int, messages: int, connections: int, size: int) -> float:
    """Send with Postfix's smtp-source (-d: each session keeps its connection)."""
    argv = [SMTP_SOURCE, "-d", "-s", str(connections), "-m", str(messages), "-l", str(size)]
    argv += ["-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"]
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {result.stderr.strip()}")
    return elapsed


def load(target: Target, messages: int, connections: int, size: int) -> float:
    """Wall seconds to send `messages`: smtp-source if installed, else the asyncio client."""
    target.sent += messages
    if os.access(SMTP_SOURCE, os.X_OK):
        return smtp_source_load(target.port, messages, connections, size)
    return python_load(target.port, messages, connections, size)[0]


def timed_client(
    target: Target, messages: int, connections: int, size: int
) -> tuple[float, list[float]]:
    """The asyncio client's wall seconds and per-message latencies."""
    target.sent += messages
    return python_load(target.port, messages, connections, size)


def wait_delivered(target: Target, since: float) -> float:
    """Seconds from `since` until every message sent so far is a file in the Maildir.

    Called once the load has ended, so polling never competes with the server under load.
    """
    deadline = time.perf_counter() + DELIVERY_TIMEOUT
    while (count := target.delivered()) < target.sent:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{target.name}: only {count}/{target.sent} delivered")
        time.sleep(0.005)
    return time.perf_counter() - since


# ------------------------------------------------------------------ measuring


def measure(target: Target, args: argparse.Namespace) -> Figures:
    """One run of every figure against one server."""
    n, conns, size = args.messages, args.connections, args.size

    started = time.perf_counter()
    accepted = load(target, n, conns, size)
    in_maildir = wait_delivered(target, started)

    client_seconds, latencies = timed_client(target, n, conns, size)
    wait_delivered(target, started)  # no work left over into the next phase
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")

    serial = load(target, args.serial_messages, 1, size)
    wait_delivered(target, started)
    return Figures(
        accepted_rate=n / accepted,
        maildir_seconds=in_maildir,
        client_rate=n / client_seconds,
        p50_ms=quantiles[49] * 1000,
        p99_ms=quantiles[98] * 1000,
        serial_rate=args.serial_messages / serial,
    )


def median(runs: list[Figures]) -> Figures:
    return Figures(
        **{f.name: statistics.median(getattr(r, f.name) for r in runs) for f in fields(Figures)}
    )


def rss_mb(pid: int) -> float:
    """VmRSS of one process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree_rss_mb(pid: int) -> tuple[float, int]:
    """Summed VmRSS of a process and its children (shared pages count once per process)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{entry}/status").read_text()
                if re.search(rf"^PPid:\s+{pid}$", status, re.M):
                    pids.append(int(entry))
    return sum(rss_mb(p) for p in pids), len(pids)


# ------------------------------------------------------------------ servers


@contextlib.contextmanager
def mailops_target(base: Path) -> Iterator[Target]:
    """`mailops serve` exactly as the integration tests start it."""
    with mail_server(base / "mailops") as server:
        yield Target("mailops", server.ports["smtp"], server.proc.pid, server.maildir("bob"))


@contextlib.contextmanager
def postfix_target(base: Path) -> Iterator[Target | None]:
    """A private Postfix, or None (and the reason on stderr) if it cannot be started."""
    root = base / "postfix"
    root.mkdir()
    try:
        with postfix_instance(root, free_ports(1)[0]) as pf:
            pid = pf.master_pid()
            if pid is None:
                raise PostfixUnavailable("started, but left no master.pid")
            yield Target("postfix", pf.port, pid, pf.maildir)
            return
    except PostfixUnavailable as exc:
        print(f"postfix reference not available: {exc}", file=sys.stderr)
    yield None


# ------------------------------------------------------------------ profiling


def profile(target: Target, args: argparse.Namespace) -> None:
    """One more 20-connection load on mailops under `py-spy record`; prints the summary."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("profile: py-spy not installed (pip install py-spy)", file=sys.stderr)
        return
    argv = [spy, "record", "--format", "raw", "--rate", "250", "--nonblocking"]
    argv += ["-o", str(args.profile), "-p", str(target.pid)]
    args.profile.unlink(missing_ok=True)  # its presence afterwards tells py-spy succeeded
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # py-spy attaches before the load starts
        started = time.perf_counter()
        load(target, args.messages, args.connections, args.size)
        wait_delivered(target, started)
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        _, errors = recorder.communicate(timeout=60)
    if not args.profile.exists():
        print(f"profile: py-spy failed: {errors.decode(errors='replace')}", file=sys.stderr)
        return
    print_profile(args.profile)


def print_profile(path: Path, top: int = 12) -> None:
    """Where the event loop and the commit threads spend their samples (py-spy raw stacks).

    Self time keeps line numbers (in durable._write the open() and the write() are
    different stories); inclusive time leaves out the frames every sample of a thread
    goes through (runpy, typer, run_forever), which say nothing.
    """
    groups: dict[str, list[tuple[list[str], int]]] = {
        "event loop": [],
        "commit threads": [],
        "other (stacks py-spy could not unwind)": [],
    }
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        group = "other (stacks py-spy could not unwind)"
        if "run_forever" in stack:
            group = "event loop"
        elif "concurrent/futures/thread.py" in stack:
            group = "commit threads"
        groups[group].append((stack.split(";"), int(count)))
    print(f"profile of mailops under load: {total} samples (250/s per busy thread) in {path}")
    for name, stacks in groups.items():
        samples = sum(n for _, n in stacks)
        own: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        for frames, n in stacks:
            own[frames[-1]] += n
            for frame in {re.sub(r":\d+\)$", ")", f) for f in frames}:
                inclusive[frame] += n
        print(f"  {name}: {100 * samples / max(total, 1):.0f}% of samples")
        for title, counter in (("self", own), ("inclusive", inclusive)):
            shown = [(f, n) for f, n in counter.most_common() if n < 0.95 * samples][:top]
            print(f"    top by {title} time (% of {name}):")
            for frame, n in shown:
                print(f"      {100 * n / samples:5.1f}%  {frame}")


def file_create_us(base: Path, files: int = 200) -> float:
    """Cost of creating and writing one 2 KiB file under `base`: the disk's main figure.

    On ext4 it ranges from ~30 µs to over 1 ms with the state of the block group the
    directory lands in, and every delivery (mailops and Postfix) creates files.
    """
    folder = Path(tempfile.mkdtemp(prefix="calibrate-", dir=base))
    data = b"x" * 2048
    started = time.perf_counter()
    for n in range(files):
        fd = os.open(folder / str(n), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.close(fd)
    return (time.perf_counter() - started) / files * 1e6


# ------------------------------------------------------------------ output


def describe(name: str, fig: Figures, args: argparse.Namespace) -> str:
    return (
        f"{name}: {args.connections} conns: {fig.accepted_rate:,.0f} msg/s accepted, "
        f"all in Maildir after {fig.maildir_seconds:.2f} s; asyncio client "
        f"{fig.client_rate:,.0f} msg/s, p50 {fig.p50_ms:.1f} ms, p99 {fig.p99_ms:.1f} ms; "
        f"1 conn: {fig.serial_rate:,.0f} msg/s"
    )


def print_ratios(ours_runs: list[Figures], ref_runs: list[Figures]) -> None:
    """Ratios of the medians, and for the headline also per pair of back-to-back runs:
    other work on the machine drifts, and a pair shares the same moment of it."""
    pairs = [o.accepted_rate / r.accepted_rate for o, r in zip(ours_runs, ref_runs, strict=True)]
    ours, ref = median(ours_runs), median(ref_runs)
    accepted = ours.accepted_rate / ref.accepted_rate
    into_maildir = ref.maildir_seconds / ours.maildir_seconds  # as a rate: higher is better
    print(
        "ratio mailops/postfix (rates: higher is better, latency: lower is better): "
        f"accepted {accepted:.2f}x, into Maildir {into_maildir:.2f}x, "
        f"asyncio client {ours.client_rate / ref.client_rate:.2f}x, "
        f"p50 {ours.p50_ms / ref.p50_ms:.2f}x, p99 {ours.p99_ms / ref.p99_ms:.2f}x, "
        f"1 conn {ours.serial_rate / ref.serial_rate:.2f}x"
    )
    verdict = "met" if accepted >= TARGET_RATIO else "NOT met"
    if accepted < 1.0:
        verdict += " (below Postfix)"
    print(
        f"target mailops >= {TARGET_RATIO}x postfix msg/s with 20 conns: {verdict} "
        f"(per run pair: {', '.join(f'{p:.2f}x' for p in pairs)})"
    )


def run(args: argparse.Namespace, base: Path) -> None:
    generator = "smtp-source" if os.access(SMTP_SOURCE, os.X_OK) else "asyncio client"
    print(
        f"{args.messages} messages of {args.size} B, {args.connections} connections, "
        f"{args.serial_messages} on 1 connection, load: {generator}, median of {args.runs} runs"
    )
    load_average = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {load_average:.1f} before the bench")
    if load_average > 1.0:
        print("  (other work is running: it takes CPU and disk from both servers, unevenly)")
    print(f"disk: creating a 2 KiB file under {base} costs {file_create_us(base):.0f} µs")
    with contextlib.ExitStack() as stack:
        mailops = stack.enter_context(mailops_target(base))
        postfix = None if args.no_postfix else stack.enter_context(postfix_target(base))
        print(f"mailops: idle RSS {rss_mb(mailops.pid):.1f} MB (goal < 80 MB)")
        targets = [mailops] + ([postfix] if postfix else [])
        if postfix:
            total, count = tree_rss_mb(postfix.pid)
            print(f"postfix: idle RSS {total:.1f} MB summed over {count} processes")
        results: dict[str, list[Figures]] = {t.name: [] for t in targets}
        for target in targets:  # spawns Postfix's daemons, warms mailops's code paths
            load(target, WARMUP_MESSAGES, args.connections, args.size)
            wait_delivered(target, time.perf_counter())
        for _ in range(args.runs):
            for target in targets:  # alternate, so drifts of the disk hit both alike
                results[target.name].append(measure(target, args))
        summary = {name: median(runs) for name, runs in results.items()}
        for name, fig in summary.items():
            spread = ", ".join(f"{r.accepted_rate:,.0f}" for r in results[name])
            print(describe(name, fig, args) + f" (accepted per run: {spread})")
        if postfix:
            print_ratios(results["mailops"], results["postfix"])
        if args.profile:
            profile(mailops, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--serial-messages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--dir", type=Path, default=None, help="where the servers' files go")
    parser.add_argument("--no-postfix", action="store_true", help="measure mailops alone")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy raw output file")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="mailops-ingest-", dir=args.dir))
    os.chmod(base, 0o755)  # Postfix's virtual(8) runs as nobody and must reach its Maildir
    try:
        run(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _count(path: Path) -> int:
    return len(_listdir(path))


if __name__ == "__main__":
    main()
