"""What `mailops queue show|flush|bounce` do, apart from the terminal.

These run in the CLI's process, beside (or without) a running runtime. `flush`
signals the runtime (SIGUSR1, by the pid file) to try everything now. `bounce`
sends the sender a DSN for every pending recipient and deletes the entry; if the
runtime happens to be delivering that very entry at the same moment, the
recipient may get the message and the sender a bounce — never neither.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from mailops.errors import MailopsError
from mailops.runtime.config import RuntimeConfig
from mailops.runtime.delivery.bounce import Report, build_dsn, dsn_files
from mailops.runtime.delivery.client import Outcome
from mailops.runtime.directory import load_directory
from mailops.runtime.durable import CommitError, GroupCommit
from mailops.runtime.log import log
from mailops.runtime.queue import CorruptEntry, NoSuchEntry, Queue, QueueEntry
from mailops.runtime.smtp.headers import header_block
from mailops.runtime.store.maildir import MaildirDelivery


def show(config: RuntimeConfig, queue_id: str) -> tuple[QueueEntry, str]:
    """The entry and its message's header section (as text)."""
    entry, message = _read(Queue(config.data_dir), queue_id)
    return entry, header_block(message).decode("utf-8", "replace")


def delete(config: RuntimeConfig, queue_id: str) -> None:
    queue = Queue(config.data_dir)
    try:
        queue.delete(queue_id)
    except NoSuchEntry:
        raise MailopsError(f"no queue entry {queue_id} (delivered already?)") from None
    log("queue.deleted", id=queue_id, by="admin")


def bounce(config: RuntimeConfig, queue_id: str) -> int:
    """Return the pending recipients to the sender now; returns how many there were."""
    queue = Queue(config.data_dir)
    entry, message = _read(queue, queue_id)
    pending = entry.pending
    if entry.sender and pending:
        outcome = Outcome.local("failed", "5.0.0", "returned to the sender by the administrator")
        dsn = build_dsn(
            hostname=config.hostname,
            to=entry.sender,
            original=message,
            arrival=entry.created,
            reports=[Report(r, outcome) for r in pending],
            action="failed",
            now=time.time(),
        )
        maildir = MaildirDelivery(config.data_dir, config.hostname)
        files, problem = dsn_files(dsn, entry.sender, load_directory(config), maildir, queue)
        if problem:
            log("delivery.dsn", id=queue_id, action="failed", to=entry.sender, dropped=problem)
        try:
            asyncio.run(_commit(files))
        except CommitError as exc:
            raise MailopsError(f"cannot store the bounce ({exc}); entry {queue_id} kept") from None
    queue.delete(queue_id)
    log("queue.bounced", id=queue_id, by="admin", rcpts=len(pending))
    return len(pending)


def flush(config: RuntimeConfig) -> int:
    """Signal the running runtime to retry everything now; returns its pid."""
    if config.pid_file is None:
        raise MailopsError(
            "runtime.toml names no pid_file, so the runtime cannot be found; under systemd "
            "run: systemctl kill --signal=USR1 mailops"
        )
    try:
        pid = int(config.pid_file.read_text().strip())
        os.kill(pid, signal.SIGUSR1)
    except (OSError, ValueError):
        raise MailopsError(f"no runtime is running (pid file {config.pid_file})") from None
    return pid


async def _commit(files) -> None:
    committer = GroupCommit()
    try:
        await committer.commit(files)
    finally:
        await committer.close()


def _read(queue: Queue, queue_id: str):
    try:
        return queue.read(queue_id)
    except NoSuchEntry:
        raise MailopsError(f"no queue entry {queue_id} (delivered already?)") from None
    except CorruptEntry as exc:
        raise MailopsError(str(exc)) from None
