"""The agent's loop: read a request frame, answer it, until stdin ends.

Requests: facts, install, transaction, service. Every answer is one frame
{"ok": true, "result": …} or {"ok": false, "error": …}; a transaction also
sends {"event": …} frames as it goes. Nothing else is written to stdout.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

# install and transaction (and what they import) only load when a session
# needs them: a facts-only session, a no-op apply, starts quicker without.
from . import facts, lock, service, verify, wire
from .errors import AgentFailure


class Output:
    """stdout for frames; after the connection is lost, writes are dropped so
    that the work in hand still finishes."""

    def __init__(self, stream):
        self.stream = stream
        self.lost = False

    def send(self, message: dict, blobs=()) -> None:
        if self.lost:
            return
        try:
            self.stream.write(wire.encode(message, blobs))
            self.stream.flush()
        except (BrokenPipeError, OSError):
            self.lost = True

    def event(self, name: str) -> None:
        self.send({"event": name})


class Session:
    def __init__(self):
        self.lock: lock.HostLock | None = None

    def facts(self, request, blobs, out):
        sweep = []
        if request.get("lock"):
            self.lock = self.lock or lock.HostLock(request["lock_key"])
            self.lock.acquire()
            sweep = request.get("sweep", [])
        return facts.gather(dict(request, sweep=sweep))

    def install(self, request, blobs, out):
        self._need_lock()
        from . import install

        out.event("installing")
        return install.install(request, blobs), []

    def transaction(self, request, blobs, out):
        from . import transaction

        self._need_lock()
        return transaction.run(request, blobs, out.event), []

    def service(self, request, blobs, out):
        control = service.controller(request["service"])
        action = request["action"]
        if action == "status":
            status = verify.read_status(Path(request["status_file"]))
            return {"state": control.state(), "status": status}, []
        self.lock = self.lock or lock.HostLock(request["lock_key"])
        self.lock.acquire()
        if action == "start" and control.pid() is not None:
            return {"state": control.state(), "problems": [], "warnings": []}, []
        since = time.time()
        service.run_handler(control, action)
        if action == "stop":
            return {"state": control.state(), "problems": [], "warnings": []}, []
        request_verify = dict(request["verify"], since=since)
        problems, warnings = verify.wait_verified(
            request_verify, control, request["verify"]["timeout"]
        )
        return {"state": control.state(), "problems": problems, "warnings": warnings}, []

    def _need_lock(self) -> None:
        if self.lock is None:
            raise lock.LockError("the host lock is not held (facts with lock first)")


KNOWN_ERRORS = (AgentFailure, OSError)


def main() -> None:
    # The session may end under us (ssh dropped): finish the work in hand.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    stdin, out = sys.stdin.buffer, Output(sys.stdout.buffer)
    sys.stdout = sys.stderr  # nothing but frames on the real stdout
    session = Session()
    while True:
        try:
            frame = wire.receive(stdin)
        except wire.WireError:
            return  # a request cut short is never acted on
        if frame is None:
            _quit()
        request, blobs = frame
        handler = getattr(session, request.get("op", ""), None)
        if handler is None or request["op"].startswith("_"):
            out.send({"ok": False, "error": f"unknown request {request.get('op')!r}"})
            continue
        try:
            result, reply_blobs = handler(request, blobs, out)
            out.send({"ok": True, "result": result}, reply_blobs)
        except KNOWN_ERRORS as exc:
            out.send({"ok": False, "error": _message(exc)})
        except Exception as exc:
            out.send({"ok": False, "error": f"{type(exc).__name__}: {exc}", "internal": True})


def _quit() -> None:
    """The session is over and every answer sent: exit now. An orderly
    interpreter shutdown would free nothing that the exit does not, and it
    takes longer than a no-op's facts (the lock goes with the process)."""
    sys.stderr.flush()
    os._exit(0)


def _message(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)
