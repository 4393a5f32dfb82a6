"""Change notification inside the process: "folder F of user U changed, look again".

A session holding a folder subscribes; whoever changes it (the MDA after a delivery,
another session's STORE or EXPUNGE, a scan that found outside changes) publishes.
The message carries no detail on purpose: the subscriber refreshes its view, which
tells it exactly what is new, gone or re-flagged, so a missed or doubled
notification can never put a session out of step. IMAP IDLE waits on this.

`publish` may be called from any thread (the store works in worker threads); each
subscription wakes on the event loop it was created on.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Hashable

FolderKey = tuple[str, str]  # (user address, folder name)


class Subscription:
    def __init__(self, notifier: Notifier, key: FolderKey, origin: Hashable | None) -> None:
        self.key = key
        self.origin = origin
        self._notifier = notifier
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._event = asyncio.Event()

    def _signal(self) -> None:
        if threading.get_ident() == self._thread:
            self._event.set()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._event.set)

    @property
    def pending(self) -> bool:
        """Whether a change was published since the last `wait` or `clear`."""
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for a change; True when one came, False on timeout. Clears the signal."""
        try:
            if timeout is None:
                await self._event.wait()
            else:
                await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True

    def close(self) -> None:
        self._notifier._remove(self)


class Notifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: dict[FolderKey, set[Subscription]] = {}

    def subscribe(self, key: FolderKey, origin: Hashable | None = None) -> Subscription:
        """Subscribe to a folder; `origin` names the subscriber so it is not told of its
        own changes. Call from the event loop that will wait on it."""
        subscription = Subscription(self, key, origin)
        with self._lock:
            self._subscriptions.setdefault(key, set()).add(subscription)
        return subscription

    def publish(self, key: FolderKey, origin: Hashable | None = None) -> None:
        with self._lock:
            targets = list(self._subscriptions.get(key, ()))
        for subscription in targets:
            if origin is None or subscription.origin != origin:
                subscription._signal()

    def subscribers(self, key: FolderKey) -> int:
        with self._lock:
            return len(self._subscriptions.get(key, ()))

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            subs = self._subscriptions.get(subscription.key)
            if subs is not None:
                subs.discard(subscription)
                if not subs:
                    del self._subscriptions[subscription.key]
