"""The IMAP listeners: 143 (plain, STARTTLS) and 993 (TLS from the first byte).

`ImapService` makes asyncio protocols for `loop.create_server`, tracks sessions, says
what the server can do (CAPABILITY) and closes sessions on shutdown with a BYE.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Protocol

from mailops.runtime.auth import Authenticator
from mailops.runtime.config import RuntimeConfig
from mailops.runtime.imap.conn import MAX_LINE, Conn
from mailops.runtime.imap.session import Session
from mailops.runtime.store import Store

IMAP_SERVICES = frozenset({"imap", "imaps"})

# Always offered (RFC 3501 and the extensions every state may use).
_BASE = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE"]
# Offered once logged in: what the command modules implement.
_AUTHENTICATED = [
    "NAMESPACE",
    "UIDPLUS",
    "MOVE",
    "UNSELECT",
    "CHILDREN",
    "SPECIAL-USE",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "STATUS=SIZE",
    "CONDSTORE",
    "QRESYNC",
    "ESEARCH",
    "UTF8=ACCEPT",
    "COMPRESS=DEFLATE",
]


class ImapHost(Protocol):
    """What the service needs from the runtime (read on every use: reload swaps them)."""

    config: RuntimeConfig
    tls: ssl.SSLContext | None
    authenticator: Authenticator
    store: Store


class ImapService:
    def __init__(self, host: ImapHost) -> None:
        self._host = host
        self.sessions: set[Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.stopping = False

    def config(self) -> RuntimeConfig:
        return self._host.config

    def tls(self) -> ssl.SSLContext | None:
        return self._host.tls

    def authenticator(self) -> Authenticator:
        return self._host.authenticator

    def store(self) -> Store:
        return self._host.store

    def idle_timeout(self) -> float:
        return float(getattr(self._host.config, "imap_idle_timeout", 1800))

    def max_literal(self) -> int:
        return self._host.config.max_message_size

    def capabilities(self, session: Session) -> list[str]:
        caps = list(_BASE)
        if session.account is None:
            if session.starttls_available():
                caps.append("STARTTLS")
            caps.append("AUTH=PLAIN" if session.plaintext_ok() else "LOGINDISABLED")
            return caps
        caps += _AUTHENTICATED
        caps.append(f"APPENDLIMIT={self.max_literal()}")
        if session.conn.compressed:
            caps.remove("COMPRESS=DEFLATE")
        return caps

    def protocol_factory(self, implicit_tls: bool) -> Callable[[], asyncio.BaseProtocol]:
        def make() -> asyncio.BaseProtocol:
            reader = asyncio.StreamReader(limit=MAX_LINE)

            async def connected(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                await self._serve(r, w, implicit_tls)

            return asyncio.StreamReaderProtocol(reader, connected)

        return make

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, implicit_tls: bool
    ) -> None:
        if self.stopping:
            writer.close()
            return
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        session = Session(self, Conn(reader, writer), implicit_tls, client)
        task = asyncio.current_task()
        self.sessions.add(session)
        if task is not None:
            self._tasks.add(task)
        try:
            await session.run()
        except asyncio.CancelledError:
            pass
        finally:
            self.sessions.discard(session)
            if task is not None:
                self._tasks.discard(task)

    async def drain(self, timeout: float) -> None:
        """Stop: BYE to idle sessions now, busy ones get `timeout` seconds to finish."""
        self.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        told: set[Session] = set()
        while self.sessions and loop.time() < deadline:
            for session in list(self.sessions):
                if not session.busy and session not in told:
                    told.add(session)
                    with contextlib.suppress(Exception):
                        session.untagged("BYE Server shutting down")
                        session.conn.push()
                    session.conn.close()
            await asyncio.sleep(0.05)
        for task in list(self._tasks):
            task.cancel()
