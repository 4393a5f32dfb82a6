"""Benchmark: delivery out of the queue, from one runtime to another on loopback.

    python bench/smtp_relay.py [--messages 5000] [--size 2048] [--runs 3] [--dkim]

The small mail network of the delivery tests (tests/integration/mailnet.py: runtimes
on 127.0.0.2-5 port 25, NSD for DNS, MTA-STS) is started once. For each run the
sending runtime (a) is stopped, --messages entries of --size bytes for
bob@beta.lab.test are written straight into its queue, and it is started again:
from then on the clock runs until every message is a file in bob's Maildir on the
receiving runtime (b). Printed (median of --runs): messages per second delivered,
and the queue's drain time (start to empty queue). Goal: ≥ 500 msg/s.

Messages are from an outside sender, so they are not DKIM-signed; --dkim sends them
as alice@alpha.lab.test, signed with RSA-2048 by dkimpy (pure Python: ~12 ms a
signature, which then dominates) — a second figure, not the goal's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailops.runtime.durable import GroupCommit
from mailops.runtime.queue import Queue
from tests.integration.mailnet import mail_net

RECIPIENT = "bob@beta.lab.test"


def message(n: int, size: int, sender: str) -> bytes:
    head = f"From: <{sender}>\r\nTo: <{RECIPIENT}>\r\nSubject: relay bench {n}\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    body = line * max(0, (size - len(head)) // len(line))
    return head + body + b"." * max(0, size - len(head) - len(body) - 2) + b"\r\n"


async def fill(queue: Queue, count: int, size: int, sender: str) -> None:
    committer = GroupCommit()
    batch = []
    for n in range(count):
        batch.append(queue.prepare(sender, [RECIPIENT], message(n, size, sender))[1])
        if len(batch) == 256:
            await committer.commit(batch)
            batch = []
    await committer.commit(batch)
    await committer.close()


def count(box: Path) -> int:
    try:
        return len(os.listdir(box / "new"))
    except FileNotFoundError:
        return 0


def queued(queue: Queue) -> bool:
    return any(name.endswith(".msg") for name in os.listdir(queue.path))


def one_run(net, args, sender: str) -> tuple[float, float]:
    a, b = net["a"], net["b"]
    box = b.data / "mail" / "beta.lab.test" / "bob"
    a.stop()
    before = count(box)
    queue = Queue(a.data)
    asyncio.run(fill(queue, args.messages, args.size, sender))
    start = time.monotonic()
    a.start()
    drained = None
    deadline = start + 600
    while time.monotonic() < deadline:
        # Polled every 50 ms: listing thousands of files costs the runtimes CPU too.
        if drained is None and not queued(queue):
            drained = time.monotonic() - start
        if count(box) - before >= args.messages:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"only {count(box) - before} of {args.messages} arrived")
    delivered = time.monotonic() - start
    while drained is None:
        if not queued(queue):
            drained = time.monotonic() - start
        time.sleep(0.05)
    return args.messages / delivered, drained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dkim", action="store_true", help="sign as alice@alpha.lab.test")
    args = parser.parse_args()
    sender = "alice@alpha.lab.test" if args.dkim else "bench@elsewhere.test"
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="mailops-relay-bench-") as tmp,
        mail_net(Path(tmp), lifetime=3600, delay_warning=3000) as net,
    ):
        for run in range(args.runs):
            rate, drain = one_run(net, args, sender)
            results.append((rate, drain))
            print(f"run {run + 1}: {rate:7.0f} msg/s delivered, queue drained in {drain:.2f} s")
    rate = statistics.median(r for r, _ in results)
    drain = statistics.median(d for _, d in results)
    signed = "DKIM-signed (RSA-2048)" if args.dkim else "unsigned"
    print(
        f"\n{args.messages} x {args.size} B {signed} messages, runtime a → runtime b over "
        f"loopback (median of {args.runs}):\n"
        f"  delivered: {rate:.0f} msg/s   queue drain time: {drain:.2f} s   "
        f"(goal ≥ 500 msg/s: {'met' if rate >= 500 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
