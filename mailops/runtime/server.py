"""`mailops serve`: every listener in one asyncio process.

SIGHUP reloads runtime.toml, passwd and aliases: the new ones are loaded and
checked completely first, then swapped in whole; a bad new config is refused
with a log line and the old one keeps serving. SIGTERM (or SIGINT) stops
accepting, lets sessions in flight finish for a bounded time, and exits with
everything acknowledged on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pwd
import signal
import ssl
import sys
import time
from pathlib import Path

from mailops.errors import MailopsError
from mailops.runtime.auth import Authenticator
from mailops.runtime.config import IMPLICIT_TLS, Listener, RuntimeConfig, load_config
from mailops.runtime.delivery.service import Delivery
from mailops.runtime.directory import Directory, load_directory
from mailops.runtime.durable import GroupCommit
from mailops.runtime.imap import IMAP_SERVICES, ImapService
from mailops.runtime.log import capture_library_logs, log
from mailops.runtime.pop3 import POP3_SERVICES, Pop3Service
from mailops.runtime.queue import Queue
from mailops.runtime.smtp.handlers import MX, Submission
from mailops.runtime.smtp.session import Session
from mailops.runtime.store import Store
from mailops.runtime.store.maildir import sweep_stale_tmp

DRAIN_SECONDS = 30.0
SMTP_SERVICES = {"smtp": MX, "submission": Submission, "submissions": Submission}


def tls_context(config: RuntimeConfig) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # No TLS 1.3 session tickets. A server sends them after the handshake, while
    # the client already writes its first command; a client that reads and writes
    # one TLS connection from two threads (imaplib2, in offlineimap) then races
    # inside OpenSSL, and that command can be lost: the session hangs (1 in 4
    # STARTTLS sessions here). Mail clients seldom resume TLS sessions anyway.
    context.num_tickets = 0
    try:
        context.load_cert_chain(config.tls.cert, config.tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise MailopsError(f"cannot load TLS certificate {config.tls.cert}: {exc}") from None
    return context


class Runtime:
    """The state every session shares; `directory` and `config` swap on reload."""

    def __init__(self, config_path: Path):
        self.config_path = config_path
        self.config = load_config(config_path)
        self.directory: Directory = load_directory(self.config)
        self.tls = tls_context(self.config)
        self.authenticator = Authenticator(lambda: self.directory)
        self.committer = GroupCommit()
        # The mailbox store: the MDA delivers through its MaildirDelivery, POP3 reads it.
        self.store = Store(self.config.data_dir, self.config.hostname)
        self.maildir = self.store.delivery
        self.pop3 = Pop3Service(self)
        self.imap = ImapService(self)
        self.queue = Queue(self.config.data_dir)
        self.delivery = Delivery(self)
        self.servers: list[asyncio.AbstractServer] = []
        self.sessions: set[Session] = set()
        self.stopping = asyncio.Event()

    # ------------------------------------------------------------ listeners

    def _factory(self, listener: Listener):
        if listener.service in POP3_SERVICES:
            return self.pop3.protocol_factory(implicit_tls=listener.service in IMPLICIT_TLS)
        if listener.service in IMAP_SERVICES:
            return self.imap.protocol_factory(implicit_tls=listener.service in IMPLICIT_TLS)
        handler = SMTP_SERVICES[listener.service](self)
        implicit = listener.service in IMPLICIT_TLS
        submission = listener.service != "smtp"

        def make() -> Session:
            session = Session(
                handler,
                hostname=self.config.hostname,
                ident="mailops ESMTP",
                tls_context=None if implicit else self.tls,
                require_starttls=submission and not implicit and self.tls is not None,
                auth_required=submission,
                auth_require_tls=True,
                authenticator=self.authenticator,
                plaintext_on_loopback=self.config.plaintext_auth_on_loopback,
                data_size_limit=self.config.max_message_size,
                enable_SMTPUTF8=True,
                decode_data=False,
                timeout=300,
            )
            self.sessions.add(session)
            return session

        return make

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for listener in self.config.listeners:
            ssl_ctx = self.tls if listener.service in IMPLICIT_TLS else None
            try:
                server = await loop.create_server(
                    self._factory(listener),
                    listener.address,
                    listener.port,
                    ssl=ssl_ctx,
                    reuse_address=True,
                )
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise MailopsError(
                    f"cannot listen on {listener.address} port {listener.port} "
                    f"({listener.service}): {reason}"
                ) from None
            self.servers.append(server)
            log("listening", service=listener.service, address=listener.address, port=listener.port)

    # ------------------------------------------------------------ signals

    def reload(self) -> None:
        try:
            config = load_config(self.config_path)
            directory = load_directory(config)
            tls = tls_context(config)
        except MailopsError as exc:
            log("reload.refused", reason=exc)
            write_status(self, refused=str(exc))
            return
        if [x.model_dump() for x in config.listeners] != [
            x.model_dump() for x in self.config.listeners
        ]:
            log("reload.note", message="listener changes take effect on restart")
        if self.tls is not None and config.tls is not None:
            # Load the new certificate into the context listeners already hold,
            # so a renewed certificate is served on 465 without a restart.
            self.tls.load_cert_chain(config.tls.cert, config.tls.key)
            tls = self.tls
        self.config, self.directory, self.tls = config, directory, tls
        self.delivery.reloaded()
        log("reload.done", users=len(directory.accounts), aliases=len(directory.aliases))
        write_status(self)

    async def drain(self) -> None:
        for server in self.servers:
            server.close()
        deadline = asyncio.get_running_loop().time() + DRAIN_SECONDS
        while self._busy() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.close()
        # Deliveries in flight get the rest of the drain window; one cut short records
        # nothing, so its message stays queued and is sent again after the restart.
        remaining = deadline - asyncio.get_running_loop().time()
        await self.delivery.stop(max(remaining, 1.0))
        await self.pop3.drain(max(deadline - asyncio.get_running_loop().time(), 1.0))
        await self.imap.drain(max(deadline - asyncio.get_running_loop().time(), 1.0))
        await self.committer.close()

    def _busy(self) -> bool:
        self.sessions = {s for s in self.sessions if s.transport is not None}
        return bool(self.sessions)


def drop_privileges(user: str | None) -> None:
    if user is None or os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise MailopsError(f"user '{user}' does not exist (create it, or remove 'user')") from None
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    log("privileges.dropped", user=user)


# ---------------------------------------------------------------- status for `mailops apply`

STATUS_NAME = "runtime-status.json"


def write_status(runtime: Runtime, refused: str | None = None) -> None:
    """Say what this process serves, in <data_dir>/runtime-status.json: its pid,
    when, the Python prefix it runs from, the sha256 of every config file it
    loaded and the addresses it listens on. Written at start and after each
    reload (a refused reload only adds why); `mailops apply` verifies a change
    by waiting for it (deploy/agent/verify.py)."""
    config = runtime.config
    target = config.data_dir / STATUS_NAME
    if refused is not None:
        try:
            status = json.loads(target.read_text())
        except (OSError, ValueError):
            status = {}
        status.update(refused=refused, refused_at=time.time())
    else:
        status = {
            "pid": os.getpid(),
            "at": time.time(),
            "prefix": sys.prefix,
            "files": _loaded_digests(runtime),
            "listening": sorted(
                {tuple(s.getsockname()[:2]) for server in runtime.servers for s in server.sockets}
            ),
        }
    try:
        tmp = target.with_name(f".{STATUS_NAME}.{os.getpid()}")
        tmp.write_text(json.dumps(status, indent=1) + "\n")
        os.replace(tmp, target)
    except OSError as exc:
        log("status.unwritable", path=target, error=exc.strerror)


def _loaded_digests(runtime: Runtime) -> dict[str, str]:
    config = runtime.config
    paths = [runtime.config_path, config.passwd_file, config.aliases_file]
    paths += [config.tls.cert, config.tls.key] if config.tls else []
    paths += [d.dkim_key for d in config.domains.values() if d.dkim_key]
    paths += [r.password_file for r in config.relays.values() if r.password_file]
    digests = {}
    for path in paths:
        with contextlib.suppress(OSError):
            resolved = Path(path).resolve()
            digests[str(resolved)] = hashlib.sha256(resolved.read_bytes()).hexdigest()
    return digests


async def serve(config_path: Path) -> None:
    capture_library_logs()
    runtime = Runtime(config_path)
    runtime.queue.recover()
    swept = await asyncio.to_thread(sweep_stale_tmp, runtime.config.data_dir)
    if swept:
        log("maildir.tmp_swept", files=swept)
    await runtime.start()
    drop_privileges(runtime.config.user)
    pid_file = runtime.config.pid_file
    if pid_file:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{os.getpid()}\n")
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, runtime.reload)
    loop.add_signal_handler(signal.SIGUSR1, runtime.delivery.flush)  # `mailops queue flush`
    runtime.delivery.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stopping.set)
    log("started", hostname=runtime.config.hostname, pid=os.getpid())
    write_status(runtime)
    await runtime.stopping.wait()
    log("stopping", sessions=len(runtime.sessions))
    await runtime.drain()
    if pid_file:
        with contextlib.suppress(OSError):
            pid_file.unlink()
    log("stopped")
