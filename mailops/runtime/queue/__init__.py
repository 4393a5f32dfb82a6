"""The durable outbound queue (retry schedule and bounces will join it here)."""

from mailops.runtime.queue.spool import (
    CorruptEntry,
    NoSuchEntry,
    Queue,
    QueueEntry,
    QueueError,
    new_queue_id,
)

__all__ = ["CorruptEntry", "NoSuchEntry", "Queue", "QueueEntry", "QueueError", "new_queue_id"]
