"""Benchmark: load + validate a spec of 200 domains × 50 users (10,000 users).

Prints the median wall time of several runs. Target: under 1.0 s on 2 cores.
Run: python bench/validate.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mailops.passwords import hash_password
from mailops.spec.load import check_spec

DOMAINS, USERS = 200, 50


def make_spec(hashes: list[str]) -> str:
    lines = [
        "version: 1",
        "hosts:",
        "  mx1: {fqdn: mx1.bench.example, ipv4: 5.1.2.3, tls: {self_signed: false, "
        "cert: /c.pem, key: /k.pem}}",
        "  mx2: {fqdn: mx2.bench.example, ipv4: 5.1.2.4, services: [smtp], "
        "tls: {cert: /c.pem, key: /k.pem}}",
        "domains:",
    ]
    for d in range(DOMAINS):
        lines += [
            f"  d{d}.bench.example:",
            "    mailbox_host: mx1",
            "    mx: [{host: mx1, priority: 10}, {host: mx2, priority: 20}]",
            "    dkim: {selectors: [{name: s1, algorithm: ed25519}]}",
            "    users:",
        ]
        for u in range(USERS):
            lines += [
                f"      user{u}:",
                f'        password_hash: "{hashes[u % len(hashes)]}"',
                "        quota: 1GiB",
                f"        aliases: [u{u}.alias]",
            ]
        lines += ["    aliases:", "      postmaster: user0", "      team: [user1, user2]"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    hashes = [hash_password(f"pw{i}") for i in range(4)]  # pre-made: not timed
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(make_spec(hashes))
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            loaded, diagnostics = check_spec(path)
            times.append(time.perf_counter() - start)
            if loaded is None:
                sys.exit("bench spec did not validate: " + diagnostics[0].format())
        size = path.stat().st_size
    users = sum(len(d.users) for d in loaded.spec.domains.values())
    median = statistics.median(times)
    print(f"validate: {DOMAINS} domains, {users} users, {size / 1e6:.1f} MB YAML")
    print(
        f"validate: median {median:.3f} s over {args.runs} runs "
        f"(min {min(times):.3f}, max {max(times):.3f}); target < 1.0 s"
    )


if __name__ == "__main__":
    main()
