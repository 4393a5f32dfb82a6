"""Deleting delivered queue entries in batches that share one directory fsync.

Each deletion must become durable (else a crash brings the entry back and the
message goes out twice), and a directory fsync costs a journal commit. Like the
group commit on the way in, concurrent deliveries hand in their deletions and
one thread trip unlinks everything handed in so far, then fsyncs the queue
directory once for all of them before anyone is told it is done.
"""

from __future__ import annotations

import contextlib

from mailops.runtime.delivery.batch import Batched
from mailops.runtime.durable import fsync_dir
from mailops.runtime.queue import NoSuchEntry, Queue


class Deleter:
    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._batched: Batched[str, None] = Batched(self._delete, name="mailops-queue-deleter")

    async def delete(self, queue_id: str) -> None:
        """Return once the entry is durably gone; NoSuchEntry if it was not there."""
        await self._batched(queue_id)

    def _delete(self, ids: list[str]) -> list[NoSuchEntry | None]:
        results: list[NoSuchEntry | None] = []
        for queue_id in ids:
            try:
                self.queue.delete(queue_id, sync=False)
                results.append(None)
            except NoSuchEntry as exc:
                results.append(exc)
        # An OSError here fails the whole trip: none of its deletions is known durable.
        with contextlib.suppress(FileNotFoundError):
            fsync_dir(self.queue.path)
        return results
