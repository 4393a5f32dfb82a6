"""The delivery side of one runtime, assembled: what server.py starts and stops."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailops.runtime.delivery import authres
from mailops.runtime.delivery.client import Pool, verified_context
from mailops.runtime.delivery.mtasts import MtaSts
from mailops.runtime.delivery.resolver import Dns, make_resolver
from mailops.runtime.delivery.router import Router
from mailops.runtime.delivery.workers import Deps, Scheduler
from mailops.runtime.log import log

if TYPE_CHECKING:
    from mailops.runtime.server import Runtime


class Delivery:
    def __init__(self, runtime: Runtime) -> None:
        config = runtime.config
        self.runtime = runtime
        self.dns = Dns(make_resolver(config.resolver))
        self.mtasts = MtaSts(
            self.dns, config.data_dir / "mta-sts", verified_context(config.delivery.ca_file)
        )
        self.router = Router(self.dns, lambda: self.runtime.config, policy=self._policy)
        self.pool = Pool(
            config.hostname,
            ca_file=config.delivery.ca_file,
            connect_timeout=config.delivery.connect_timeout,
            command_timeout=config.delivery.command_timeout,
            listen=[x.address for x in config.listeners if x.service == "smtp"],
        )
        deps = Deps(
            config=lambda: self.runtime.config,
            directory=lambda: self.runtime.directory,
            queue=runtime.queue,
            maildir=runtime.maildir,
            committer=runtime.committer,
        )
        self.scheduler = Scheduler(deps, self.router, self.pool)

    async def _policy(self, domain: str):
        return await self.mtasts.policy(domain) if self.runtime.config.delivery.mta_sts else None

    def start(self) -> None:
        self.scheduler.start()
        log("delivery.started", resolver=",".join(self.runtime.config.resolver or ["system"]))

    def reloaded(self) -> None:
        """runtime.toml changed: new resolver servers take effect now."""
        self.dns.resolver = make_resolver(self.runtime.config.resolver)
        self.dns.forget_failures()

    def queued(self, queue_id: str) -> None:
        self.scheduler.queued(queue_id)

    def flush(self) -> None:
        self.scheduler.flush()

    async def stop(self, timeout: float) -> None:
        await self.scheduler.stop(timeout)

    async def authentication_results(
        self, message: bytes, *, client_ip: str, helo: str, sender: str
    ) -> bytes:
        """The Authentication-Results header (SPF, DKIM) for a message received on 25."""
        return await authres.header(
            message, self.runtime.config.hostname, self.dns,
            client_ip=client_ip, helo=helo, sender=sender,
        )  # fmt: skip

    def without_forged_results(self, message: bytes) -> bytes:
        """`message` less the Authentication-Results headers that claim to be ours."""
        return authres.strip_forged(message, self.runtime.config.hostname)
