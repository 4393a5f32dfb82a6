"""Batched thread trips (queue reads and deletions) and shared route lookups: many
concurrent requests, few trips, and each request still gets its own answer."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from mailops.runtime.delivery.batch import Batched, each
from mailops.runtime.delivery.deleter import Deleter
from mailops.runtime.delivery.resolver import MxRecord
from mailops.runtime.delivery.router import Destination, Router
from mailops.runtime.queue import NoSuchEntry, Queue
from tests.runtime.delivery_fakes import FakeDns, config


def test_requests_made_together_share_a_trip_and_keep_their_own_results():
    threads = set()

    def square(n: int) -> int:
        threads.add(threading.get_ident())
        if n == 13:
            raise ValueError("unlucky")
        return n * n

    async def scenario():
        batched = Batched(each(square), name="test")
        results = await asyncio.gather(*(batched(n) for n in range(40)), return_exceptions=True)
        return results, batched.trips

    results, trips = asyncio.run(scenario())
    assert trips == 1
    assert threading.get_ident() not in threads  # the work ran in a thread
    assert isinstance(results[13], ValueError)
    assert [r for n, r in enumerate(results) if n != 13] == [n * n for n in range(40) if n != 13]


def test_a_request_made_during_a_trip_goes_in_the_next():
    started, release = threading.Event(), threading.Event()

    def slow(keys):
        started.set()
        release.wait(5)
        return [k.upper() for k in keys]

    async def scenario():
        batched = Batched(slow, name="test")
        first = asyncio.ensure_future(batched("a"))
        await asyncio.to_thread(started.wait, 5)
        later = [asyncio.ensure_future(batched(k)) for k in "bc"]
        await asyncio.sleep(0)
        release.set()
        return await first, await asyncio.gather(*later), batched.trips

    assert asyncio.run(scenario()) == ("A", ["B", "C"], 2)


def test_deleter_removes_durably_in_one_trip_and_reports_missing_entries(tmp_path):
    queue = Queue(tmp_path)
    ids = []
    for n in range(5):
        queue_id, pending = queue.prepare("a@here.test", ["b@far.test"], b"m%d" % n)
        pending.tmp_path.write_bytes(pending.data)
        pending.tmp_path.rename(pending.final_path)
        ids.append(queue_id)

    async def scenario():
        deleter = Deleter(queue)
        results = await asyncio.gather(
            *(deleter.delete(i) for i in [*ids, ids[0]]), return_exceptions=True
        )
        return results, deleter._batched.trips

    results, trips = asyncio.run(scenario())
    assert results[:5] == [None] * 5
    assert isinstance(results[5], NoSuchEntry)  # the second deletion of ids[0]
    assert trips == 1
    assert queue.list() == []


@pytest.mark.parametrize("cancel_first", [False, True])
def test_jobs_starting_together_share_one_route_lookup(tmp_path, cancel_first):
    dns = FakeDns(mx={"far.test": [MxRecord(10, "mx.far.test")]},
                  addresses={"mx.far.test": ["192.0.2.7"]})  # fmt: skip
    policies: list[str] = []

    async def policy(domain):
        policies.append(domain)
        await asyncio.sleep(0.05)  # an MTA-STS fetch takes a while
        return None

    conf = config(tmp_path)
    router = Router(dns, lambda: conf, policy=policy, rng=random.Random(1))
    dest = Destination("mx", "far.test")

    async def scenario():
        jobs = [asyncio.ensure_future(router.targets(dest)) for _ in range(20)]
        await asyncio.sleep(0.01)
        if cancel_first:  # one job cancelled mid-lookup takes nobody's answer with it
            jobs[0].cancel()
        return await asyncio.gather(*jobs[1:])

    answers = asyncio.run(scenario())
    assert {tuple(t.address for t in a) for a in answers} == {("192.0.2.7",)}
    assert dns.asked.count("MX far.test") == 1
    assert policies == ["far.test"]
