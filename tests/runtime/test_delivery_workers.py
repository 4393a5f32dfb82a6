"""The scheduler over a real queue, Maildir and group commit, with the network
replaced: what is recorded, retried, bounced and deleted, and when."""

from __future__ import annotations

import asyncio
import email

import pytest

from mailops.runtime.config import DomainConfig
from mailops.runtime.delivery import workers
from mailops.runtime.delivery.client import Outcome
from mailops.runtime.delivery.router import Target
from mailops.runtime.delivery.workers import Deps, Scheduler
from mailops.runtime.directory import Account, Directory
from mailops.runtime.durable import GroupCommit
from mailops.runtime.queue import Queue
from mailops.runtime.store.maildir import MaildirDelivery
from tests.runtime.delivery_fakes import config

MESSAGE = b"From: alice@here.test\r\nSubject: w\r\n\r\nbody\r\n"


class Router:
    async def targets(self, dest):
        return [Target(f"mx.{dest.name}", "192.0.2.1")]


class Pool:
    async def close(self):
        pass


@pytest.fixture
def world(tmp_path, monkeypatch):
    conf = config(
        tmp_path,
        delivery={"retry_base": 0.05, "retry_max": 0.05},
        queue={"lifetime": 60, "delay_warning": 30},
    )
    directory = Directory(
        {"here.test": DomainConfig(role="mailbox")},
        accounts={"alice@here.test": Account("alice@here.test", "")},
    )
    answers: dict[str, list[str]] = {}  # recipient → states to answer, in turn
    calls: list[list[str]] = []

    async def fake_deliver(pool, targets, sender, recipients, message, on_sent=None):
        calls.append(list(recipients))
        out = {}
        for rcpt in recipients:
            state = answers[rcpt].pop(0)
            code = {"delivered": 250, "deferred": 451, "failed": 550}[state]
            out[rcpt] = Outcome.reply(code, f"{code // 100}.0.0 said so", targets[0].host)
        return out

    monkeypatch.setattr(workers, "deliver", fake_deliver)
    return conf, directory, answers, calls


async def run_until_idle(conf, directory, setup=None, timeout=10.0):
    committer = GroupCommit()
    queue = Queue(conf.data_dir)
    deps = Deps(lambda: conf, lambda: directory, queue,
                MaildirDelivery(conf.data_dir, conf.hostname), committer)  # fmt: skip
    if setup:
        _queue_id, pending = queue.prepare(*setup)
        await committer.commit([pending])
    scheduler = Scheduler(deps, Router(), Pool())
    scheduler.start()
    deadline = asyncio.get_running_loop().time() + timeout
    while queue.list() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # anything more it would do (a second DSN, say) shows now
    await scheduler.stop(1)
    await committer.close()
    return queue


def inbox(conf, user="alice"):
    box = conf.data_dir / "mail" / "here.test" / user / "new"
    return [p.read_bytes() for p in sorted(box.glob("*"))] if box.exists() else []


def test_partial_delivery_retries_only_the_rest_even_across_a_restart(world):
    conf, directory, answers, calls = world
    answers.update({"b@far.test": ["delivered"], "c@far.test": ["deferred", "deferred"]})
    setup = ("alice@here.test", ["b@far.test", "c@far.test"], MESSAGE)

    async def first_pass():
        # Stop right after the first answers are recorded, as a crash or restart would.
        committer = GroupCommit()
        queue = Queue(conf.data_dir)
        deps = Deps(lambda: conf, lambda: directory, queue,
                    MaildirDelivery(conf.data_dir, conf.hostname), committer)  # fmt: skip
        _queue_id, pending = queue.prepare(*setup)
        await committer.commit([pending])
        scheduler = Scheduler(deps, Router(), Pool())
        scheduler.start()
        while not queue.list() or not queue.list()[0].attempts:
            await asyncio.sleep(0.01)
        await scheduler.stop(1)
        await committer.close()
        return queue.list()

    [entry] = asyncio.run(first_pass())
    assert entry.done == ("b@far.test",) and entry.pending == ("c@far.test",)
    assert entry.last_error == "smtp; 451 4.0.0 said so"
    answers["c@far.test"] = ["deferred", "delivered"]
    queue = asyncio.run(run_until_idle(conf, directory))
    assert queue.list() == []
    assert calls[0] == ["b@far.test", "c@far.test"]
    assert all(call == ["c@far.test"] for call in calls[1:])  # b never again
    assert inbox(conf) == []  # no bounce for anyone


def test_a_permanent_failure_bounces_to_the_local_sender_and_deletes(world):
    conf, directory, answers, _ = world
    answers.update({"b@far.test": ["failed"], "c@far.test": ["delivered"]})
    queue = asyncio.run(
        run_until_idle(conf, directory, ("alice@here.test", ["b@far.test", "c@far.test"], MESSAGE))
    )
    assert queue.list() == []
    [dsn] = inbox(conf)
    parsed = email.message_from_bytes(dsn)
    assert parsed.get_content_type() == "multipart/report"
    assert b"Final-Recipient: rfc822; b@far.test" in dsn
    assert b"c@far.test" not in dsn  # only the failed recipient is reported


def test_nothing_bounces_to_the_null_sender(world):
    conf, directory, answers, _ = world
    answers["b@far.test"] = ["failed"]
    queue = asyncio.run(run_until_idle(conf, directory, ("", ["b@far.test"], MESSAGE)))
    assert queue.list() == []
    assert inbox(conf) == []


def test_a_deep_queue_starts_going_out_before_it_has_all_been_read(world, monkeypatch):
    import threading

    conf, directory, _, _ = world
    first_sent = threading.Event()
    pieces: list[bool] = []  # per piece the scheduler read: was mail moving by then?
    real_entries = Queue.entries

    def entries(self, ids, states):
        if threading.current_thread() is not threading.main_thread():  # not the test's list()
            # The first piece is read at once; the later ones wait until mail moves.
            pieces.append(first_sent.wait(5) if pieces else False)
        return real_entries(self, ids, states)

    async def fake_deliver(pool, targets, sender, recipients, message, on_sent=None):
        first_sent.set()
        return {r: Outcome.reply(250, "2.0.0 ok", targets[0].host) for r in recipients}

    monkeypatch.setattr(workers, "RESCAN_PIECE", 2)
    monkeypatch.setattr(Queue, "entries", entries)
    monkeypatch.setattr(workers, "deliver", fake_deliver)

    async def scenario():
        committer = GroupCommit()
        queue = Queue(conf.data_dir)
        for n in range(6):
            _, pending = queue.prepare("alice@here.test", [f"r{n}@far.test"], MESSAGE)
            await committer.commit([pending])
        await committer.close()
        return await run_until_idle(conf, directory)

    queue = asyncio.run(scenario())
    assert queue.list() == []
    assert pieces == [False, True, True]


def test_a_message_awaiting_only_its_reply_makes_way_for_the_next(tmp_path, monkeypatch):
    """With one session allowed per destination, the second message starts while the
    first waits for its final reply: the session that sent the first carries it."""
    conf = config(tmp_path, delivery={"per_destination": 1, "concurrency": 1})
    directory = Directory(
        {"here.test": DomainConfig(role="mailbox")},
        accounts={"alice@here.test": Account("alice@here.test", "")},
    )
    started: list[str] = []
    second_started = asyncio.Event()

    async def fake_deliver(pool, targets, sender, recipients, message, on_sent=None):
        started.append(recipients[0])
        if len(started) == 2:
            second_started.set()
            return {recipients[0]: Outcome.reply(250, "2.0.0 ok", "mx")}
        on_sent()  # the message is out; its reply comes once the next one has started
        await asyncio.wait_for(second_started.wait(), 5)
        return {recipients[0]: Outcome.reply(250, "2.0.0 ok", "mx")}

    monkeypatch.setattr(workers, "deliver", fake_deliver)

    async def scenario():
        committer = GroupCommit()
        queue = Queue(conf.data_dir)
        for rcpt in ("b@far.test", "c@far.test"):
            _, pending = queue.prepare("alice@here.test", [rcpt], MESSAGE)
            await committer.commit([pending])
        await committer.close()
        return await run_until_idle(conf, directory)

    queue = asyncio.run(scenario())
    assert sorted(started) == ["b@far.test", "c@far.test"]
    assert queue.list() == []
    assert inbox(conf) == []  # no bounce: the first did not time out waiting
