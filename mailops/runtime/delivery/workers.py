"""The delivery scheduler: moves the durable queue, within limits, restart-safe.

Every queue entry is in one of three places: waiting (in `_due`, keyed by when
its next attempt is due), in a *pass* (an attempt at its pending recipients,
split into one job per destination and at most 100 recipients), or gone
(delivered and bounced). Jobs wait in per-destination lines and start while the
destination has fewer than `per_destination` and the whole runtime fewer than
`concurrency` jobs running, taking destinations in turn so one slow domain
cannot hold up the rest.

When every job of a pass has an answer, the pass is *finished*, in this order:
1. DSNs for failed recipients (and a delay warning, once) are committed to
   disk (Maildir or queue) — before anything is forgotten;
2. then the entry is deleted if no recipient is left, or its state records the
   finished recipients and the next attempt.
The entry is deleted only after the remote `250` (and the DSNs) are recorded.
A crash anywhere repeats at most the attempt in flight: the worst case is a
duplicate, never a loss. `kill -9` and restart: every entry is read back from
disk and retried when due.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mailops.runtime.config import RuntimeConfig
from mailops.runtime.delivery.batch import Batched, each
from mailops.runtime.delivery.bounce import Action, Report, build_dsn, dsn_files
from mailops.runtime.delivery.client import Outcome, Pool, deliver
from mailops.runtime.delivery.deleter import Deleter
from mailops.runtime.delivery.dkim import Signer
from mailops.runtime.delivery.local import deliver_local
from mailops.runtime.delivery.retry import Schedule
from mailops.runtime.delivery.router import Destination, RouteError, Router, destination
from mailops.runtime.directory import Directory
from mailops.runtime.durable import CommitError, GroupCommit, PendingFile
from mailops.runtime.log import log
from mailops.runtime.queue import CorruptEntry, NoSuchEntry, Queue, QueueEntry
from mailops.runtime.store.maildir import MaildirDelivery

RESCAN_SECONDS = 300.0  # look for entries nobody told us about (another process, a restore)
RESCAN_PIECE = 256  # entries read per thread trip of a rescan; the first start at once
MAX_RECIPIENTS_PER_JOB = 100  # RFC 5321 §4.5.3.1.8: every server takes at least 100
MAX_PASSES = 20_000  # entries being attempted at once; the rest wait in `_due`


@dataclass(eq=False)
class _Pass:
    entry: QueueEntry
    jobs_left: int = 0
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    aborted: bool = False  # the entry vanished or a job was cancelled: record nothing


@dataclass(eq=False)
class _Job:
    attempt: _Pass
    dest: Destination
    recipients: list[str]


@dataclass
class Deps:
    """What the scheduler needs from the runtime; `config`/`directory` follow reloads."""

    config: Callable[[], RuntimeConfig]
    directory: Callable[[], Directory]
    queue: Queue
    maildir: MaildirDelivery
    committer: GroupCommit


class Scheduler:
    def __init__(
        self,
        deps: Deps,
        router: Router,
        pool: Pool,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.deps = deps
        self.router = router
        self.pool = pool
        self.clock = clock
        self.signer = Signer()
        self._due: dict[str, float] = {}  # queue id → when its next attempt is due
        self._known: dict[str, QueueEntry] = {}  # envelope and state, as last read or written
        self._deleter = Deleter(deps.queue)
        # The envelope is known when a pass begins: an attempt reads just the message.
        self._read: Batched[str, bytes] = Batched(each(deps.queue.message), name="mailops-reader")
        self._heap: list[tuple[float, str]] = []  # (due, id); stale pairs are skipped
        self._passes: dict[str, _Pass] = {}
        self._lines: dict[str, deque[_Job]] = {}  # destination key → jobs waiting
        self._running: dict[str, int] = {}  # destination key → jobs running
        self._total = 0
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._main: asyncio.Task | None = None
        self._rescan_now = True

    # ------------------------------------------------------------ control

    def start(self) -> None:
        self._main = asyncio.create_task(self._run(), name="mailops-delivery")

    def queued(self, queue_id: str) -> None:
        """A new entry was committed: attempt it now."""
        if queue_id not in self._passes:
            self._set_due(queue_id, self.clock())
            self._wake.set()

    def flush(self) -> None:
        """Everything waiting is due now (SIGUSR1, `mailops queue flush`)."""
        now = self.clock()
        for queue_id in list(self._due):
            self._set_due(queue_id, now)
        self._rescan_now = True
        log("delivery.flush", waiting=len(self._due))
        self._wake.set()

    async def stop(self, timeout: float) -> None:
        """Stop starting work; give running jobs `timeout` seconds, then cancel them.
        A cancelled job records nothing, so its recipients are tried again later."""
        self._stopping = True
        self._wake.set()
        if self._main is not None:
            await self._main
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.pool.close()

    # ------------------------------------------------------------ the loop

    async def _run(self) -> None:
        next_rescan = 0.0
        while not self._stopping:
            if self._rescan_now or self.clock() >= next_rescan:
                self._rescan_now = False
                await self._rescan()
                next_rescan = self.clock() + RESCAN_SECONDS
            self._begin_due()
            self._pump()
            delay = min(self._next_due() - self.clock(), next_rescan - self.clock())
            self._wake.clear()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(delay, RESCAN_SECONDS))

    async def _rescan(self) -> None:
        """Read the queue's entries in pieces, and start the due ones of each piece
        while the next is read: after a restart with a deep queue, delivery begins
        within milliseconds rather than after every header has been read."""
        queue = self.deps.queue
        try:
            ids, states = await asyncio.to_thread(queue.listing)
            for start in range(0, len(ids), RESCAN_PIECE):
                if self._stopping:
                    return
                piece = ids[start : start + RESCAN_PIECE]
                for entry in await asyncio.to_thread(queue.entries, piece, states):
                    if entry.id not in self._due and entry.id not in self._passes:
                        self._known[entry.id] = entry
                        self._set_due(entry.id, entry.next_attempt)
                self._begin_due()
                self._pump()
        except OSError as exc:
            log("delivery.rescan_failed", error=exc.strerror or exc)

    def _set_due(self, queue_id: str, when: float) -> None:
        self._due[queue_id] = when
        heapq.heappush(self._heap, (when, queue_id))

    def _next_due(self) -> float:
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # superseded or started
        return self._heap[0][0] if self._heap else float("inf")

    def _begin_due(self) -> None:
        now = self.clock()
        while len(self._passes) < MAX_PASSES and self._next_due() <= now:
            _, queue_id = heapq.heappop(self._heap)
            del self._due[queue_id]
            placeholder = _Pass(QueueEntry(queue_id, "", ("",), 0, 0.0))
            self._passes[queue_id] = placeholder
            self._spawn(self._begin(queue_id))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ a pass

    async def _begin(self, queue_id: str) -> None:
        entry = self._known.pop(queue_id, None)
        try:
            if entry is None:
                entry = await asyncio.to_thread(self.deps.queue.entry, queue_id)
        except (NoSuchEntry, CorruptEntry):
            self._passes.pop(queue_id, None)  # delivered by someone else, or moved aside
            self._wake.set()
            return
        except OSError as exc:
            log("delivery.unreadable", id=queue_id, error=exc.strerror or exc)
            self._passes.pop(queue_id, None)
            self._set_due(queue_id, self.clock() + self.schedule().base)
            return
        attempt = _Pass(entry)
        self._passes[queue_id] = attempt
        jobs = self._jobs(attempt)
        if not jobs:  # every recipient finished earlier; only the deletion was lost
            await self._finish(attempt)
            return
        attempt.jobs_left = len(jobs)
        for job in jobs:
            self._lines.setdefault(job.dest.key, deque()).append(job)
        self._pump()

    def _jobs(self, attempt: _Pass) -> list[_Job]:
        config = self.deps.config()
        groups: dict[Destination, list[str]] = {}
        for rcpt in attempt.entry.pending:
            groups.setdefault(destination(attempt.entry.sender, rcpt, config), []).append(rcpt)
        jobs = []
        for dest, rcpts in groups.items():
            for i in range(0, len(rcpts), MAX_RECIPIENTS_PER_JOB):
                jobs.append(_Job(attempt, dest, rcpts[i : i + MAX_RECIPIENTS_PER_JOB]))
        return jobs

    def _pump(self) -> None:
        """Start waiting jobs, one destination at a time in turn, within the limits."""
        if self._stopping:
            return
        limits = self.deps.config().delivery
        progress = True
        while progress and self._total < limits.concurrency and self._lines:
            progress = False
            for key in list(self._lines):
                if self._total >= limits.concurrency:
                    break
                if self._running.get(key, 0) >= limits.per_destination:
                    continue
                line = self._lines[key]
                job = line.popleft()
                if not line:
                    del self._lines[key]
                self._running[key] = self._running.get(key, 0) + 1
                self._total += 1
                self._spawn(self._run_job(job))
                progress = True

    async def _run_job(self, job: _Job) -> None:
        # The job's place within the limits is given up once, when it ends or as soon
        # as its message is sent and only the reply is awaited: the limits count
        # sessions at work, and a pipelining session carries the next message then.
        placed = True

        def make_way() -> None:
            nonlocal placed
            if placed:
                placed = False
                self._leave(job.dest.key)

        try:
            outcomes = await self._attempt(job, make_way)
        except asyncio.CancelledError:
            job.attempt.aborted = True
            raise
        except Exception as exc:  # a bug of ours: the recipients wait, nothing is lost
            log("delivery.internal_error", id=job.attempt.entry.id, error=repr(exc))
            outcomes = dict.fromkeys(
                job.recipients, Outcome.local("deferred", "4.3.0", "internal error, will retry")
            )
        finally:
            make_way()
        attempt = job.attempt
        attempt.outcomes.update(outcomes)
        attempt.jobs_left -= 1
        if attempt.jobs_left == 0:
            await self._finish(attempt)

    def _leave(self, key: str) -> None:
        self._running[key] -= 1
        if not self._running[key]:
            del self._running[key]
        self._total -= 1
        self._pump()

    async def _attempt(self, job: _Job, on_sent: Callable[[], None]) -> dict[str, Outcome]:
        entry = job.attempt.entry
        try:
            message = await self._read(entry.id)
        except (NoSuchEntry, CorruptEntry):
            job.attempt.aborted = True
            return {}
        if job.dest.kind == "local":
            return await deliver_local(
                self.deps, entry.sender, job.recipients, message, announce=self.announce
            )
        try:
            targets = await self.router.targets(job.dest)
        except RouteError as exc:
            state = "failed" if exc.permanent else "deferred"
            return dict.fromkeys(job.recipients, Outcome.local(state, exc.status, exc.text))
        signed = self.signer.sign(message, entry.sender, self.deps.config())
        return await deliver(self.pool, targets, entry.sender, job.recipients, signed, on_sent)

    # ------------------------------------------------------------ finishing

    def schedule(self) -> Schedule:
        config = self.deps.config()
        return Schedule(
            config.delivery.retry_base,
            config.delivery.retry_max,
            config.queue.lifetime,
            config.queue.delay_warning,
        )

    async def _finish(self, attempt: _Pass) -> None:
        entry = attempt.entry
        try:
            if not attempt.aborted:
                await self._settle(attempt)
        except Exception as exc:  # a disk error while recording: try again later
            log("delivery.record_failed", id=entry.id, error=repr(exc))
            self._set_due(entry.id, self.clock() + self.schedule().base)
        finally:
            self._passes.pop(entry.id, None)
            self._wake.set()

    async def _settle(self, attempt: _Pass) -> None:
        entry, now, schedule = attempt.entry, self.clock(), self.schedule()
        outcomes = attempt.outcomes
        expired = schedule.expired(entry.created, now)
        # Past the lifetime, what is still deferred fails with its last temporary reason.
        gives_up = ("failed", "deferred") if expired else ("failed",)
        failed = [r for r, o in outcomes.items() if o.state in gives_up]
        deferred = [r for r, o in outcomes.items() if o.state == "deferred" and r not in failed]
        delivered = [r for r, o in outcomes.items() if o.state == "delivered"]
        warn = bool(deferred) and schedule.warn_delay(entry.created, now, entry.delay_warned)
        retry_at = schedule.next_attempt(entry.created, entry.attempts + 1, now)
        notified = await self._notify(attempt, failed, deferred if warn else [], retry_at)
        if not notified:  # the DSN is not on disk: keep those recipients, bounce them later
            deferred += failed
            failed, warn = [], False
            retry_at = max(retry_at, now + schedule.base)  # past expiry: not in a tight loop
        _log_outcomes(entry, outcomes, failed, expired)
        done = delivered + failed
        try:
            await self._record(entry, outcomes, done, deferred, retry_at, warn)
        except NoSuchEntry:
            log("delivery.entry_gone", id=entry.id, reason="deleted while being delivered")

    async def _record(self, entry, outcomes, done, deferred, retry_at, warn) -> None:
        if not deferred:
            await self._deleter.delete(entry.id)
            return
        reason = outcomes[deferred[0]].diagnostic
        await asyncio.to_thread(
            self.deps.queue.record_attempt, entry.id, reason, retry_at,
            done=done, delay_warned=warn,
        )  # fmt: skip
        # What the state file now says, so the next attempt need not read it back.
        self._known[entry.id] = dataclasses.replace(
            entry,
            attempts=entry.attempts + 1,
            next_attempt=retry_at,
            last_error=reason,
            done=tuple(dict.fromkeys((*entry.done, *done))),
            delay_warned=entry.delay_warned or warn,
        )
        self._set_due(entry.id, retry_at)

    async def _notify(self, attempt, failed, delayed, retry_at) -> bool:
        """Commit the DSNs for `failed` and `delayed` recipients; False if that failed."""
        entry = attempt.entry
        if not entry.sender or not (failed or delayed):
            if failed:  # RFC 5321 §6.1: never a bounce to the null sender
                log("delivery.bounce_not_sent", id=entry.id, reason="null sender", n=len(failed))
            return True
        try:
            _, message = await asyncio.to_thread(self.deps.queue.read, entry.id)
        except (NoSuchEntry, CorruptEntry):
            return True
        files = []
        for action, rcpts in (("failed", failed), ("delayed", delayed)):
            if rcpts:
                files += self._dsn(entry, message, action, rcpts, attempt.outcomes, retry_at)
        try:
            await self.deps.committer.commit(files)
        except CommitError as exc:
            log("delivery.bounce_failed", id=entry.id, error=exc)
            return False
        self.announce(files)
        return True

    def announce(self, files: list[PendingFile]) -> None:
        """Queue entries we committed ourselves (DSNs, forwards) are due at once."""
        for pending in files:
            if pending.final_path.parent == self.deps.queue.path:
                self.queued(pending.final_path.name.removesuffix(".msg"))

    def _dsn(self, entry, message, action: Action, rcpts, outcomes, retry_at) -> list:
        config = self.deps.config()
        dsn = build_dsn(
            hostname=config.hostname,
            to=entry.sender,
            original=message,
            arrival=entry.created,
            reports=[Report(r, outcomes[r]) for r in rcpts],
            action=action,
            now=self.clock(),
            retry_until=entry.created + config.queue.lifetime,
        )
        files, problem = dsn_files(
            dsn, entry.sender, self.deps.directory(), self.deps.maildir, self.deps.queue
        )
        log("delivery.dsn", id=entry.id, action=action, to=entry.sender, rcpts=len(rcpts),
            dropped=problem)  # fmt: skip
        return files


def _log_outcomes(entry: QueueEntry, outcomes: dict[str, Outcome], failed, expired) -> None:
    for rcpt, outcome in outcomes.items():
        state = "bounced" if rcpt in failed else outcome.state
        log(
            f"delivery.{state}",
            id=entry.id,
            rcpt=rcpt,
            remote=outcome.remote,
            status=outcome.status,
            expired="yes" if expired and rcpt in failed and outcome.state == "deferred" else None,
            attempts=entry.attempts + 1,
            diagnostic=outcome.diagnostic,
        )
