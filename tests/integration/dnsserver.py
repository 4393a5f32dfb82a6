"""A real authoritative DNS server (NSD) on 127.0.0.1, for integration tests.

    with nsd_server({"example.org": zone_file_text}, tmp_path / "nsd") as server:
        rrset = server.rrset("example.org", "MX")        # None when there is no answer
        resolver = server.resolver()                       # a dnspython Resolver aimed at it
        runtime_resolver_setting = server.address          # "127.0.0.1:PORT"

Everything NSD needs — config, zone files, pid file, state, log — lives in the
given folder; it runs in the foreground (`-d`) as the current user, without
chroot or privilege drop, on a free port, and is always stopped when the block
ends. Nothing but 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest

HOST = "127.0.0.1"
NSD = shutil.which("nsd") or "/usr/sbin/nsd"


def nsd_available() -> bool:
    return os.access(NSD, os.X_OK)


requires_nsd = pytest.mark.skipif(not nsd_available(), reason="NSD (Debian package nsd) is absent")


class DnsServerError(RuntimeError):
    pass


@dataclass
class DnsServer:
    host: str
    port: int
    workdir: Path
    process: subprocess.Popen
    _stderr: IO[bytes]

    @property
    def address(self) -> str:
        """The server as the spec's `resolver` setting writes it."""
        return f"{self.host}:{self.port}"

    def query(self, name: str, rdtype: str, *, tcp: bool = False) -> dns.message.Message:
        """Ask the server directly. UDP with EDNS (4096 bytes) falls back to TCP
        when the answer is truncated; `tcp=True` uses TCP from the start."""
        request = dns.message.make_query(name, rdtype, use_edns=0, payload=4096)
        if tcp:
            return dns.query.tcp(request, self.host, timeout=3, port=self.port)
        response, _ = dns.query.udp_with_fallback(request, self.host, timeout=3, port=self.port)
        return response

    def rrset(self, name: str, rdtype: str, *, tcp: bool = False) -> dns.rrset.RRset | None:
        """The answer's RRset for exactly this name and type, or None."""
        response = self.query(name, rdtype, tcp=tcp)
        try:
            return response.find_rrset(
                response.answer,
                dns.name.from_text(name),
                dns.rdataclass.IN,
                dns.rdatatype.from_text(rdtype),
            )
        except KeyError:
            return None

    def resolver(self) -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.host]
        resolver.port = self.port
        resolver.timeout = resolver.lifetime = 3
        return resolver

    def log(self) -> str:
        path = self.workdir / "nsd.log"
        return path.read_text(errors="replace") if path.exists() else ""


def free_port(host: str = HOST) -> int:
    """A port free for both UDP and TCP right now (DNS needs both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise DnsServerError("no free port for UDP and TCP on " + host)


def write_config(workdir: Path, zones: Mapping[str, str], port: int) -> Path:
    """nsd.conf and the zone files in `workdir`; returns the config's path."""
    workdir.mkdir(parents=True, exist_ok=True)
    zone_blocks = []
    for name, text in sorted(zones.items()):
        filename = f"{name}.zone"
        (workdir / filename).write_text(text)
        zone_blocks.append(f'zone:\n    name: "{name}"\n    zonefile: "{filename}"\n')
    config = f"""\
server:
    ip-address: {HOST}@{port}
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{workdir}"
    pidfile: "{workdir}/nsd.pid"
    database: ""
    zonelistfile: "{workdir}/zone.list"
    xfrdfile: "{workdir}/xfrd.state"
    xfrdir: "{workdir}"
    logfile: "{workdir}/nsd.log"
    server-count: 1
    verbosity: 1
    hide-version: yes
    reuseport: no

remote-control:
    control-enable: no

{"".join(zone_blocks)}"""
    path = workdir / "nsd.conf"
    path.write_text(config)
    return path


@contextlib.contextmanager
def nsd_server(
    zones: Mapping[str, str], workdir: Path, *, timeout: float = 15.0
) -> Iterator[DnsServer]:
    """Serve `zones` (zone name → zone file text) until the block ends."""
    if not zones:
        raise ValueError("NSD needs at least one zone to serve")
    probe = sorted(zones)[0]
    server = None
    for _attempt in range(3):  # another process may take the port between probe and bind
        server = _start(zones, workdir, free_port())
        if _wait_ready(server, probe, timeout):
            break
        log = server.log()
        _stop(server)
        if "bind" not in log.lower() and "address already in use" not in log.lower():
            raise DnsServerError(f"NSD did not start; its log:\n{log}")
    else:
        raise DnsServerError("NSD could not bind a free port three times")
    try:
        yield server
    finally:
        _stop(server)


def _start(zones: Mapping[str, str], workdir: Path, port: int) -> DnsServer:
    config = write_config(workdir, zones, port)
    (workdir / "nsd.log").unlink(missing_ok=True)
    stderr = (workdir / "nsd.stderr").open("wb")
    process = subprocess.Popen(
        [NSD, "-d", "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,  # its own process group, so a hung NSD's workers go with it
    )
    return DnsServer(HOST, port, workdir, process, stderr)


def _wait_ready(server: DnsServer, zone: str, timeout: float) -> bool:
    """Poll until the server answers authoritatively for `zone`, or give up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            request = dns.message.make_query(zone, "SOA")
            response = dns.query.udp(request, server.host, timeout=0.3, port=server.port)
            if response.answer:
                return True
        except (dns.exception.Timeout, OSError):
            pass
        time.sleep(0.05)
    return False


def _stop(server: DnsServer) -> None:
    """SIGTERM: NSD stops its workers and exits. If it hangs, kill the process
    group it leads (its own workers, nothing else) while it still exists."""
    process = server.process
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
    finally:
        server._stderr.close()
