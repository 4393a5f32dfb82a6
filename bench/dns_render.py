"""Benchmark: render the DNS of a spec with 200 domains, 2 DKIM selectors each.

    python bench/dns_render.py [--runs 5] [--domains 200]

(Not bench/dns.py: a script of that name in bench/ shadows dnspython's `dns`
package for every benchmark run from that folder.)

Each domain is its own full zone. Keys are put in a temporary key folder before
timing (making 400 keys would measure RSA key generation, which happens once per
selector in a spec's life). A run is what `mailops dns --out` does between
loading the spec and writing files: read every key, derive every record, pick
the serials and render every zone file and records file. Target: < 1.5 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from mailops.render import dkim, dns_output
from mailops.render.dns import build_dns
from mailops.spec.load import load_spec

TARGET_SECONDS = 1.5
TODAY = dt.date(2026, 1, 1)


def make_spec(domains: int) -> dict:
    hosts = {
        "mx1": {"fqdn": "mx1.hosting.example", "ipv4": "203.0.113.10", "ipv6": "2001:db8::10"},
        "mx2": {"fqdn": "mx2.hosting.example", "ipv4": "203.0.113.11", "services": ["smtp"]},
    }
    for host in hosts.values():
        host["tls"] = {"cert": "/etc/ssl/mail.pem", "key": "/etc/ssl/mail.key"}
    nameservers = ["ns1.provider.example", "ns2.provider.example"]
    zones = {"hosting.example": {"managed": "full", "nameservers": nameservers}}
    spec_domains = {}
    for i in range(domains):
        name = f"d{i:03d}.example"
        spec_domains[name] = {
            "mailbox_host": "mx1",
            "mx": [{"host": "mx1", "priority": 10}, {"host": "mx2", "priority": 20}],
            "aliases": {"postmaster": "hostmaster@hosting.example"},
            "dkim": {
                "selectors": [
                    {"name": "rsa2026", "algorithm": "rsa-2048"},
                    {"name": "ed2026", "algorithm": "ed25519"},
                ]
            },
            "spf": {"include": ["spf.newsletter.example"]},
            "dmarc": {"policy": "reject", "rua": [f"mailto:dmarc@{name}"]},
            "mta_sts": {"mode": "enforce"},
            "tls_rpt": {"rua": [f"mailto:tls@{name}"]},
        }
        zones[name] = {
            "managed": "full",
            "nameservers": nameservers,
            "extra_records": [{"name": "www", "type": "A", "value": "203.0.113.80"}],
        }
    return {"version": 1, "hosts": hosts, "domains": spec_domains, "dns": {"zones": zones}}


def premake_keys(spec, key_dir: Path) -> None:
    """One RSA and one Ed25519 key, copied to every selector's file: the run reads
    (and parses) 400 files exactly as it would 400 different keys."""
    made = {alg: dkim.generate_key(alg) for alg in ("rsa-2048", "ed25519")}
    for name, domain in spec.domains.items():
        for selector in domain.dkim.selectors:
            path = dkim.key_path(key_dir, name, selector.name)
            dkim.create_key_file(path, made[selector.algorithm])


def render_all(spec, key_dir: Path) -> int:
    keys, notes = dkim.ensure_keys(spec, key_dir)
    assert not [n for n in notes if "made DKIM key" in n.message], "keys must exist before timing"
    dnsset = build_dns(spec, dkim.dkim_records(keys))
    serials = dns_output.serials_for(dnsset.zones, {}, TODAY)
    output = dns_output.render_output(dnsset, dnsset.zones, None, serials)
    return sum(name.endswith(".zone") for name in output.files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--domains", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec_file = folder / "bench.yaml"
        spec_file.write_text(yaml.safe_dump(make_spec(args.domains), sort_keys=False))
        started = time.perf_counter()
        spec = load_spec(spec_file).spec
        load_seconds = time.perf_counter() - started
        key_dir = dkim.key_dir_for(folder)
        premake_keys(spec, key_dir)
        times = []
        zones = 0
        for _ in range(args.runs):
            started = time.perf_counter()
            zones = render_all(spec, key_dir)
            times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(
        f"dns render: {args.domains} domains, {2 * args.domains} DKIM selectors, {zones} zone "
        f"files: median {median:.3f} s over {args.runs} runs "
        f"(min {min(times):.3f} s, max {max(times):.3f} s; target < {TARGET_SECONDS} s)"
    )
    print(f"spec load (not in the figure): {load_seconds:.3f} s")
    return 0 if median < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
