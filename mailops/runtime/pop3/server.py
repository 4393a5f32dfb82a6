"""The POP3 listeners: 110 (plain, STLS) and 995 (TLS from the first byte).

`Pop3Service` makes the protocols (`Pop3Connection`) for `loop.create_server`, tracks
sessions and closes them on shutdown: idle ones at once (a session that did not QUIT deletes
nothing), busy ones after their current command, within a bound.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Protocol

from mailops.runtime.auth import Authenticator
from mailops.runtime.config import RuntimeConfig
from mailops.runtime.log import log
from mailops.runtime.pop3.connection import Pop3Connection
from mailops.runtime.store import Store

POP3_SERVICES = frozenset({"pop3", "pop3s"})


class Pop3Host(Protocol):
    """What the service needs from the runtime (read on every use: reload swaps them)."""

    config: RuntimeConfig
    tls: ssl.SSLContext | None
    authenticator: Authenticator
    store: Store


class Pop3Service:
    def __init__(self, host: Pop3Host) -> None:
        self._host = host
        self.sessions: set[Pop3Connection] = set()  # until their mailbox is released
        self.stopping = False

    # What sessions read from the runtime, looked up each time (SIGHUP reload).
    def config(self) -> RuntimeConfig:
        return self._host.config

    def tls(self) -> ssl.SSLContext | None:
        return self._host.tls

    def authenticator(self) -> Authenticator:
        return self._host.authenticator

    def store(self) -> Store:
        return self._host.store

    def idle_timeout(self) -> float:
        return float(getattr(self._host.config, "pop3_idle_timeout", 600))

    def protocol_factory(self, implicit_tls: bool) -> Callable[[], asyncio.BaseProtocol]:
        def make() -> asyncio.BaseProtocol:
            return Pop3Connection(self, implicit_tls)

        return make

    async def drain(self, timeout: float) -> None:
        """Stop: close idle sessions now, give busy ones `timeout` seconds to finish."""
        self.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.sessions and loop.time() < deadline:
            for session in list(self.sessions):
                if not session.busy:
                    session.close()
            await asyncio.sleep(0.05)
        if self.sessions:
            log("pop3.drain_forced", sessions=len(self.sessions))
        for session in list(self.sessions):
            session.abort()
