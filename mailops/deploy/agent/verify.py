"""Is the runtime serving what was just written?

The runtime writes a status file (`<data>/runtime-status.json`, see
mailops/runtime/server.py `write_status`) when it starts and after each
reload: its pid, when, the Python prefix it runs from, the sha256 of every
file it loaded, and the addresses it listens on. Verification waits until
that file is newer than the handler, names a live process, and reports the
hashes apply wrote; then every configured port must accept a connection and
the SMTP banner must name the host.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from . import service

POLL = 0.05
BANNER_SERVICES = ("smtp", "submission")


def read_status(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stale_files(status: dict | None, expected: dict[str, str]) -> list[str]:
    """Files whose loaded hash differs from the expected one, among those the
    runtime reports. Paths are compared as real paths: the runtime resolves
    symlinks in its config paths, mailops's view of the host does not."""
    if status is None:
        return sorted(expected)
    loaded = {os.path.realpath(p): sha for p, sha in status.get("files", {}).items()}
    stale = []
    for path, sha in expected.items():
        seen = loaded.get(os.path.realpath(path))
        if seen is not None and seen != sha:
            stale.append(path)
    return sorted(stale)


def _same_prefix(status: dict, prefix: str | None) -> bool:
    if not prefix:
        return True
    return os.path.realpath(status.get("prefix") or "/") == os.path.realpath(prefix)


def _connect_address(address: str) -> str:
    # A wildcard listener is reached on the loopback of the same family.
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)


def _port_answers(address: str, port: int, read_banner: bool) -> tuple[bool, str]:
    import socket

    try:
        with socket.create_connection((_connect_address(address), port), timeout=2) as sock:
            if not read_banner:
                return True, ""
            sock.settimeout(3)
            return True, sock.recv(512).decode(errors="replace").split("\r\n")[0]
    except OSError as exc:
        return False, exc.strerror or str(exc)


def check_once(request: dict, control) -> tuple[list[str], list[str]]:
    """(problems, warnings) right now; no problems means verified."""
    status = read_status(Path(request["status_file"]))
    since = request.get("since")
    if status is None:
        return ["the runtime has not reported its state yet"], []
    if since is not None and status.get("at", 0) < since:
        return ["the runtime has not reported loading the new files yet"], []
    if not service._alive(int(status.get("pid", 0))):
        return ["the runtime is not running"], []
    if not _same_prefix(status, request.get("prefix")):
        return [f"the runtime runs from {status.get('prefix')}, not {request['prefix']}"], []
    stale = stale_files(status, request["files"])
    if stale:
        return [f"the runtime serves an older {Path(stale[0]).name}"], []
    return _check_ports(request, status)


def _check_ports(request: dict, status: dict) -> tuple[list[str], list[str]]:
    problems, warnings = [], []
    listening = {(a, p) for a, p in status.get("listening", [])}
    banner_checked = False
    for svc, address, port in request["listeners"]:
        if (address, port) not in listening:
            warnings.append(f"{svc} on {address} port {port}: not offered by this runtime")
            continue
        wants_banner = svc in BANNER_SERVICES and not banner_checked
        ok, text = _port_answers(address, port, wants_banner)
        if not ok:
            problems.append(f"{svc} on {address} port {port} does not answer: {text}")
        elif wants_banner:
            banner_checked = True
            fqdn = request["fqdn"]
            if not (text.startswith("220") and fqdn.lower() in text.lower()):
                problems.append(f"{svc} banner does not name {fqdn}: {text!r}")
    return problems, warnings


def wait_verified(request: dict, control, timeout: float) -> tuple[list[str], list[str]]:
    """Poll until verified, the runtime is gone, or `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        problems, warnings = check_once(request, control)
        if not problems:
            return problems, warnings
        refused = _refusal(request)
        if refused:
            return [f"the runtime refused the new files: {refused}"], warnings
        if control.gone():
            return ["the runtime exited", *_diagnostics(control)], warnings
        if time.monotonic() > deadline:
            return problems + _diagnostics(control), warnings
        time.sleep(POLL)


def _refusal(request: dict) -> str | None:
    """The reason a reload was refused, when the runtime says so after `since`."""
    status = read_status(Path(request["status_file"]))
    since = request.get("since")
    if not status or since is None or status.get("refused_at", 0) < since:
        return None
    return status.get("refused")


def _diagnostics(control) -> list[str]:
    text = control.diagnostics()
    return [f"runtime log: {text}"] if text else []
