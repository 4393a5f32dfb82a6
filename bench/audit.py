"""Benchmark: a full `mailops audit` (DNS + probes + drift) of 2 hosts and 2 domains.

    python bench/audit.py [--runs 7] [--passwords hash|secret]

The audit tests' lab (tests/audit/lab.py) is started once: two runtimes deployed by
apply on loopback (mx1 local, mx2 over SSH to a private sshd), NSD serving both
zones. Then the audit runs --runs times in this process, and the median wall time
is printed, with each part's alone (dns, probes, drift) for scale. Goal: < 3 s.

--passwords: `hash` (default) gives the users password_hash in the spec; `secret`
gives them `{file: …}` references, which render hashes with argon2 on every
render — drift renders each host, so that adds the hashing (~0.5 s per user on an
idle core) to the audit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.audit.lab import lab


def timed(the_lab, runs: int, only=None) -> list[float]:
    seconds = []
    for _ in range(runs):
        started = time.monotonic()
        result = the_lab.audit(only=only)
        seconds.append(time.monotonic() - started)
        bad = [f for f in result.findings if f.severity != "ok"]
        if bad:
            raise SystemExit(f"the lab is not clean: {bad}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--passwords", choices=("hash", "secret"), default="hash")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailops-bench-audit-") as folder:
        started = time.monotonic()
        with lab(Path(folder), hashed=args.passwords == "hash") as the_lab:
            print(f"lab up in {time.monotonic() - started:.1f} s (2 hosts, 2 domains)")
            timed(the_lab, 1)  # warm up: imports, first SSH handshake, build id
            findings = len(the_lab.audit().findings)
            full = timed(the_lab, args.runs)
            parts = {
                kind: timed(the_lab, max(3, args.runs // 2), [kind])
                for kind in ("dns", "probes", "drift")
            }
    print(f"full audit: {findings} findings, all ok")
    print(
        f"  median {statistics.median(full):.2f} s  (min {min(full):.2f}, max {max(full):.2f}, "
        f"{args.runs} runs; goal < 3 s)"
    )
    for kind, seconds in parts.items():
        print(f"  {kind:<7} alone: median {statistics.median(seconds):.2f} s")
    load = os.getloadavg()[0]
    print(f"load average during the run: {load:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
