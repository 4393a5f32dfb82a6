"""An in-process POP3 server for the POP3 tests: a real Store in a temp dir, the real
Pop3Service on a loopback port, its event loop in a background thread, so tests can
drive it with Python's poplib (blocking) and look at the Maildir directly."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from mailops.passwords import hash_password
from mailops.runtime import auth
from mailops.runtime.auth import Authenticator
from mailops.runtime.config import DomainConfig, RuntimeConfig
from mailops.runtime.directory import Account, Directory
from mailops.runtime.pop3 import Pop3Service
from mailops.runtime.store import Store
from mailops.runtime.store.maildir import delivery_headers, unique_name

DOMAIN = "example.test"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}
_HASHES = {
    user: hash_password(pw, f"{user}saltsaltsalt!!"[:16].encode()) for user, pw in PASSWORDS.items()
}


@dataclass
class Host:
    """What Pop3Service reads from the runtime."""

    config: RuntimeConfig
    tls: ssl.SSLContext | None
    authenticator: Authenticator
    store: Store


@dataclass
class Pop3Server:
    root: Path
    host: Host
    service: Pop3Service
    loop: asyncio.AbstractEventLoop
    ports: dict[str, int] = field(default_factory=dict)
    ca: trustme.CA | None = None

    @property
    def store(self) -> Store:
        return self.host.store

    def maildir(self, user: str = "alice") -> Path:
        return self.root / "mail" / DOMAIN / user

    def deliver(self, message: bytes, user: str = "alice") -> str:
        """Drop a message into new/ the way the MDA does (tmp/, then rename)."""
        box = self.maildir(user)
        for sub in ("tmp", "new", "cur"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        data = delivery_headers(message, "sender@remote.example", f"{user}@{DOMAIN}") + message
        name = unique_name("mx.example.test", len(data))
        (box / "tmp" / name).write_bytes(data)
        (box / "tmp" / name).rename(box / "new" / name)
        return name

    def deliver_raw(self, data: bytes, user: str = "alice") -> str:
        """Drop `data` into new/ exactly as given (no headers added): what a local tool
        may leave, bare LFs, NULs, a first line starting with "." and all."""
        box = self.maildir(user)
        for sub in ("tmp", "new", "cur"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        name = unique_name("mx.example.test", len(data))
        (box / "tmp" / name).write_bytes(data)
        (box / "tmp" / name).rename(box / "new" / name)
        return name

    def files(self, user: str = "alice") -> list[Path]:
        box = self.maildir(user)
        return sorted(p for sub in ("new", "cur") for p in (box / sub).glob("*"))

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        assert self.ca is not None
        self.ca.configure_trust(context)
        return context

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)


def make_config(root: Path, **overrides) -> RuntimeConfig:
    values = {
        "hostname": "mx.example.test",
        "data_dir": root,
        "passwd_file": root / "passwd",
        "aliases_file": root / "aliases",
        "listeners": [],
        "plaintext_auth_on_loopback": True,
    }
    values.update(overrides)
    return RuntimeConfig(**values)


def directory() -> Directory:
    accounts = {
        f"{user}@{DOMAIN}": Account(f"{user}@{DOMAIN}", _HASHES[user]) for user in PASSWORDS
    }
    return Directory(domains={DOMAIN: DomainConfig(role="mailbox")}, accounts=accounts)


@contextlib.contextmanager
def pop3_server(root: Path, *, tls: bool = False, **config) -> Iterator[Pop3Server]:
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA() if tls else None
    context = None
    if ca is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("mx.example.test", "127.0.0.1").configure_cert(context)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    the_directory = directory()
    host = Host(
        make_config(root, **config),
        context,
        Authenticator(lambda: the_directory),
        Store(root, "mx.example.test"),
    )
    service = Pop3Service(host)
    server = Pop3Server(root, host, service, loop, ca=ca)
    listeners = []

    async def start() -> None:
        for name, implicit in (("pop3", False), ("pop3s", True)):
            if implicit and context is None:
                continue
            listener = await loop.create_server(
                service.protocol_factory(implicit),
                "127.0.0.1",
                0,
                ssl=context if implicit else None,
            )
            listeners.append(listener)
            server.ports[name] = listener.sockets[0].getsockname()[1]

    async def stop() -> None:
        for listener in listeners:
            listener.close()
        await service.drain(5)

    try:
        server.call(start())
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.call(stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def no_login_delay(monkeypatch) -> None:
    """Failed logins are slowed on purpose; tests that fail logins on purpose skip it."""
    monkeypatch.setattr(auth, "DELAY_PER_FAILURE", 0.0)


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
