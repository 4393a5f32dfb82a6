"""Nothing acknowledged is ever lost: `kill -9` the runtime while clients send, restart
it, and every message whose DATA got `250` is in the Maildir, whole, exactly once.

The authoritative client is a small asyncio SMTP client that knows exactly which of
its messages got `250`; each carries a unique `X-Test-Id` header and a random body so
a truncated or mixed-up file cannot pass. Postfix's `smtp-source`, when installed, adds
load around it (its messages are only checked for being complete). The kills land at
a random moment of each round; the seed is in every failure message, and
DURABILITY_SEED=<seed> replays the same delays.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path

import pytest

from tests.integration.mailserver import MailServer, mail_server

pytestmark = pytest.mark.integration

ROUNDS = 5
CONNECTIONS = 8  # Python clients per round; smtp-source adds its own sessions
KILL_AFTER = (0.2, 1.0)  # seconds of load before the kill, drawn per round
MAX_MESSAGES_PER_CONNECTION = 2000  # a bound for the loop; a kill ends it long before
REPLY_TIMEOUT = 10.0
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SMTP_SOURCE_BODY_BYTES = 2048


@dataclass
class Ledger:
    """What the Python clients sent and which of it the server acknowledged."""

    sent: dict[str, bytes] = field(default_factory=dict)  # X-Test-Id → message as sent
    acked: set[str] = field(default_factory=set)  # got 250 to DATA


def make_message(test_id: str, rng: random.Random) -> bytes:
    # Random base64 lines: never a line starting with '.', so no dot-stuffing is needed,
    # and any truncation or mix-up changes the bytes.
    raw = rng.randbytes(rng.randrange(1024, 8192))
    text = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    head = (
        "From: load@remote.example\r\nTo: bob@example.test\r\n"
        f"Subject: durability {test_id}\r\nX-Test-Id: {test_id}\r\n\r\n"
    )
    return head.encode() + text


class Closed(Exception):
    """The server went away (it was killed): the client's run is over."""


async def reply(reader: asyncio.StreamReader) -> int:
    """The code of one (possibly multi-line) SMTP reply."""
    while True:
        line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
        if not line.endswith(b"\n"):
            raise Closed
        if line[3:4] != b"-":
            return int(line[:3])


async def expect(reader: asyncio.StreamReader, code: int) -> None:
    got = await reply(reader)
    if got != code:
        raise AssertionError(f"expected {code}, server said {got}")


async def client(port: int, name: str, ledger: Ledger, rng: random.Random) -> int:
    """Send messages until the connection breaks; returns how many got 250."""
    acked = 0
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0
    try:
        await expect(reader, 220)
        writer.write(b"EHLO durability.example\r\n")
        await expect(reader, 250)
        for n in range(MAX_MESSAGES_PER_CONNECTION):
            test_id = f"{name}-{n}"
            message = make_message(test_id, rng)
            ledger.sent[test_id] = message
            writer.write(b"MAIL FROM:<load@remote.example>\r\n")
            await expect(reader, 250)
            writer.write(b"RCPT TO:<bob@example.test>\r\n")
            await expect(reader, 250)
            writer.write(b"DATA\r\n")
            await expect(reader, 354)
            writer.write(message + b".\r\n")
            await expect(reader, 250)
            ledger.acked.add(test_id)  # only now may the message be counted on
            acked += 1
    except (Closed, ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return acked


def start_smtp_source(port: int) -> subprocess.Popen | None:
    """Background load from Postfix's generator, if installed (it stops on the kill)."""
    if not os.access(SMTP_SOURCE, os.X_OK):
        return None
    argv = [SMTP_SOURCE, "-d", "-s", "4", "-m", "100000", "-l", str(SMTP_SOURCE_BODY_BYTES)]
    argv += ["-f", "sender@remote.example", "-t", "bob@example.test", f"127.0.0.1:{port}"]
    return subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for_port(port: int, timeout: float = 10) -> None:
    # start() waits for the submission listener; port 25 may be bound a moment later.
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


async def one_round(server: MailServer, number: int, ledger: Ledger, rng: random.Random) -> int:
    """Load the server, kill -9 it after a random delay; returns the messages acknowledged."""
    port = server.ports["smtp"]
    wait_for_port(port)
    load = start_smtp_source(port)
    clients = [
        asyncio.create_task(client(port, f"r{number}c{c}", ledger, random.Random(rng.random())))
        for c in range(CONNECTIONS)
    ]
    try:
        await asyncio.sleep(rng.uniform(*KILL_AFTER))
        stopped = [task for task in clients if task.done()]
        if stopped:
            await stopped[0]  # raises what stopped it (a refusal, say)
        assert not stopped, "a client stopped before the kill"
        os.kill(server.proc.pid, signal.SIGKILL)
        # Every client must notice the kill and stop; the bound catches a hung client.
        acked = await asyncio.wait_for(asyncio.gather(*clients), 3 * REPLY_TIMEOUT)
    finally:
        for task in clients:
            task.cancel()
        if load is not None:
            load.kill()
            load.wait()
    assert server.proc.wait(timeout=10) == -signal.SIGKILL
    return sum(acked)


def stored_messages(maildir: Path) -> list[tuple[Path, bytes]]:
    files = sorted((maildir / "new").iterdir()) + sorted((maildir / "cur").iterdir())
    return [(path, path.read_bytes()) for path in files]


def body(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""


def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path):
    seed = int(os.environ.get("DURABILITY_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    ledger = Ledger()
    with mail_server(tmp_path / "srv") as server:
        per_round = []
        for number in range(ROUNDS):
            if number:
                server.start()
            per_round.append(asyncio.run(one_round(server, number, ledger, rng)))
        stored = stored_messages(server.maildir("bob"))

    context = f"seed={seed} acked per round={per_round}"
    # A round in which nothing was acknowledged proves nothing: the kill came too early.
    assert all(per_round), context

    copies = collections.Counter()
    load_bodies = collections.Counter()
    for path, data in stored:
        message = message_from_bytes(data)
        assert message.defects == [], f"{path.name} does not parse: {message.defects} ({context})"
        test_id = message["X-Test-Id"]
        if test_id is None:  # smtp-source's load: check it is complete, not what it is
            assert data.endswith(b"\r\n"), f"{path.name} is truncated ({context})"
            load_bodies[body(data)] += 1
            continue
        assert test_id in ledger.sent, f"{path.name}: unknown id {test_id} ({context})"
        sent = ledger.sent[test_id]
        assert body(data) == body(sent), f"{path.name}: body differs from {test_id} ({context})"
        assert data.endswith(sent), f"{path.name} does not end with what was sent ({context})"
        copies[test_id] += 1

    lost = sorted(ledger.acked - copies.keys())
    assert not lost, f"{len(lost)} acknowledged messages missing, e.g. {lost[:5]} ({context})"
    duplicated = sorted(test_id for test_id, n in copies.items() if n > 1)
    assert not duplicated, f"stored more than once: {duplicated[:5]} ({context})"
    # smtp-source sends one fixed body: every one of its files must hold all of it.
    if load_bodies:
        (reference, _), *others = load_bodies.most_common()
        assert len(reference) >= SMTP_SOURCE_BODY_BYTES, context
        assert not others, f"{sum(n for _, n in others)} smtp-source files differ ({context})"
