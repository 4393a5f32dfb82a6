"""Deleting delivered queue entries in batches that share one directory fsync.

Each deletion must become durable (else a crash brings the entry back and the
message goes out twice), and a directory fsync costs a journal commit. Like the
group commit on the way in, concurrent deliveries hand in their deletions and
one thread unlinks everything handed in so far, then fsyncs the queue directory
once for all of them before anyone is told it is done.
"""

from __future__ import annotations

import asyncio
import contextlib

from mailops.runtime.durable import fsync_dir
from mailops.runtime.queue import NoSuchEntry, Queue


class Deleter:
    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._waiting: list[tuple[str, asyncio.Future[None]]] = []
        self._task: asyncio.Task | None = None

    async def delete(self, queue_id: str) -> None:
        """Return once the entry is durably gone; NoSuchEntry if it was not there."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((queue_id, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="mailops-queue-deleter")
        await future

    async def _run(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                missing = await asyncio.to_thread(self._delete, [qid for qid, _ in batch])
            except OSError as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for queue_id, future in batch:
                if future.done():
                    continue
                if queue_id in missing:
                    future.set_exception(NoSuchEntry(queue_id))
                else:
                    future.set_result(None)

    def _delete(self, ids: list[str]) -> set[str]:
        missing = set()
        for queue_id in ids:
            try:
                self.queue.delete(queue_id, sync=False)
            except NoSuchEntry:
                missing.add(queue_id)
        with contextlib.suppress(FileNotFoundError):
            fsync_dir(self.queue.path)
        return missing
