"""Many small blocking file operations, one thread trip.

Handing a call to a thread costs a wake-up and a hand-over of the GIL each way:
more than reading a 2 KiB queue file from the page cache, or unlinking one. On a
busy queue the delivery workers read and delete hundreds of entries a second,
so `Batched` gathers the requests made while its thread is away and does them
all in its next trip, in order. It is still a thread trip, so the event loop
never waits for a slow disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# `work` gets the keys of one trip and returns, for each, its result or the
# exception that request is to raise.
Work = Callable[[list[K]], Sequence[V | BaseException]]


class Batched(Generic[K, V]):
    def __init__(self, work: Work, *, name: str) -> None:
        self._work = work
        self._name = name
        self._waiting: list[tuple[K, asyncio.Future[V]]] = []
        self._task: asyncio.Task | None = None
        self.trips = 0  # thread trips so far: for tests and benchmarks

    async def __call__(self, key: K) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self._name)
        return await future

    async def _run(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            self.trips += 1
            try:
                results = await asyncio.to_thread(self._work, [key for key, _ in batch])
            except Exception as exc:  # the whole trip failed: so did every request in it
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue  # the caller was cancelled
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)


def each(function: Callable[[K], V]) -> Work:
    """`work` that calls `function` on each key, keeping each one's exception."""

    def work(keys: list[K]) -> list[V | BaseException]:
        results: list[V | BaseException] = []
        for key in keys:
            try:
                results.append(function(key))
            except Exception as exc:
                results.append(exc)
        return results

    return work
