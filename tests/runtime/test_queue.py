"""Outbound queue: round trip, ordering, retry state, deletion, crash leftovers, corruption."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import time
from pathlib import Path

import pytest

from mailops.runtime import log as runtime_log
from mailops.runtime.durable import GroupCommit, PendingFile
from mailops.runtime.queue import CorruptEntry, NoSuchEntry, Queue, new_queue_id
from mailops.runtime.queue.spool import is_queue_id

RAW = b"Subject: raw\r\n\r\n\x00\xff\xfe\x80 8-bit \xc3\xa9, NUL\x00, and no newline at the end"
SOURCE = {"client": "203.0.113.5", "helo": "mta.example.net", "auth": None}


def commit(*files: PendingFile) -> None:
    async def scenario() -> None:
        group = GroupCommit()
        await group.commit(files)
        await group.close()

    asyncio.run(scenario())


def enqueue(queue: Queue, message: bytes = RAW, **kw) -> str:
    sender = kw.pop("sender", "bob@example.org")
    recipients = kw.pop("recipients", ["carol@example.net"])
    queue_id, file = queue.prepare(sender, recipients, message, **kw)
    commit(file)
    return queue_id


def test_round_trip_keeps_envelope_and_bytes(tmp_path: Path) -> None:
    queue = Queue(tmp_path)
    recipients = ["carol@example.net", "jörg@例え.jp", "dave@example.com"]
    before = time.time()
    queue_id = enqueue(queue, sender="", recipients=recipients, source=SOURCE)

    [listed] = queue.list()
    entry, message = queue.read(queue_id)
    assert message == RAW
    assert listed == entry
    assert entry.id == queue_id
    assert entry.sender == ""
    assert entry.recipients == tuple(recipients)
    assert entry.size == len(RAW)
    assert before <= entry.created <= time.time()
    assert (entry.attempts, entry.next_attempt, entry.last_error) == (0, entry.created, None)
    assert entry.source == SOURCE


def test_one_file_per_entry_private_and_nothing_left_in_tmp(tmp_path: Path) -> None:
    queue = Queue(tmp_path)
    queue_id = enqueue(queue)
    stored = tmp_path / "queue" / f"{queue_id}.msg"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    header, _, body = stored.read_bytes().partition(b"\n")
    assert json.loads(header)["v"] == 1
    assert body == RAW
    assert list((tmp_path / "queue" / "tmp").iterdir()) == []


def test_ids_sort_by_creation_and_are_safe_file_names(tmp_path: Path) -> None:
    ids = [new_queue_id() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(is_queue_id(i) and "/" not in i and not i.startswith(".") for i in ids)

    queue = Queue(tmp_path)
    committed = [enqueue(queue, message=f"message {n}".encode()) for n in range(5)]
    assert [entry.id for entry in queue.list()] == committed


def test_record_attempt_updates_list_but_never_the_entry_file(tmp_path: Path) -> None:
    queue = Queue(tmp_path)
    queue_id = enqueue(queue)
    stored = tmp_path / "queue" / f"{queue_id}.msg"
    old = stored.stat().st_mtime_ns - 5_000_000_000
    os.utime(stored, ns=(old, old))  # a rewrite would move the mtime forward
    before = stored.read_bytes()

    queue.record_attempt(queue_id, "451 4.3.0 try later", 1_900_000_000.5)
    queue.record_attempt(queue_id, "421 4.7.0 busy", 1_900_000_600.0)

    [entry] = queue.list()
    assert entry.attempts == 2
    assert entry.next_attempt == 1_900_000_600.0
    assert entry.last_error == "421 4.7.0 busy"
    assert stored.read_bytes() == before
    assert stored.stat().st_mtime_ns == old
    queue.record_attempt(queue_id, None, 1_900_001_000.0)
    assert queue.read(queue_id)[0].last_error is None


def test_delete_removes_entry_and_state(tmp_path: Path) -> None:
    queue = Queue(tmp_path)
    kept = enqueue(queue)
    gone = enqueue(queue)
    queue.record_attempt(gone, "451 later", time.time() + 60)

    queue.delete(gone)

    assert [entry.id for entry in queue.list()] == [kept]
    assert sorted(p.name for p in (tmp_path / "queue").glob(f"{gone}*")) == []
    with pytest.raises(NoSuchEntry):
        queue.read(gone)
    with pytest.raises(NoSuchEntry):
        queue.delete(gone)
    with pytest.raises(NoSuchEntry):
        queue.record_attempt(gone, "x", 0.0)
    assert not (tmp_path / "queue" / f"{gone}.state").exists()


def test_ids_that_are_not_queue_ids_are_refused(tmp_path: Path) -> None:
    queue = Queue(tmp_path)
    (tmp_path / "secret.msg").write_bytes(b"{}\nnot yours")
    for bad in ("../secret", "../../etc/passwd", "", "x" * 25):
        with pytest.raises(NoSuchEntry):
            queue.read(bad)
        with pytest.raises(NoSuchEntry):
            queue.delete(bad)
    assert (tmp_path / "secret.msg").exists()


def test_prepare_needs_recipients(tmp_path: Path) -> None:
    queue = Queue(tmp_path)
    with pytest.raises(ValueError):
        queue.prepare("bob@example.org", [], b"x")
    with pytest.raises(ValueError):
        queue.prepare("bob@example.org", "carol@example.net", b"x")  # a str, not a list


# ------------------------------------------------------------ crash leftovers


def test_half_written_entries_are_never_listed_and_recover_sweeps_old_ones(
    tmp_path: Path,
) -> None:
    queue = Queue(tmp_path)
    committed = enqueue(queue)
    # What a crash leaves: files in tmp/ that never got linked into the queue.
    _, stale = queue.prepare("bob@example.org", ["x@example.net"], b"half")
    _, fresh = queue.prepare("bob@example.org", ["y@example.net"], b"half")
    stale.tmp_path.write_bytes(stale.data[:10])
    fresh.tmp_path.write_bytes(fresh.data)
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale.tmp_path, (two_days_ago, two_days_ago))
    orphan_state = tmp_path / "queue" / f"{new_queue_id()}.state"
    orphan_state.write_bytes(b'{"v":1,"attempts":3}')
    entry_file = tmp_path / "queue" / f"{committed}.msg"
    os.utime(entry_file, (two_days_ago, two_days_ago))  # old, but committed

    assert [entry.id for entry in queue.list()] == [committed]
    assert queue.recover() == 2

    assert not stale.tmp_path.exists()
    assert fresh.tmp_path.exists()  # may still be in the middle of a commit
    assert not orphan_state.exists()
    assert queue.read(committed)[1] == RAW


# ------------------------------------------------------------------ corruption


@pytest.mark.parametrize(
    "content",
    [
        b"{not json\nmessage",
        b"no header line at all",
        b'["a list"]\nmessage',
        b'{"v":2,"id":"ID","sender":"","recipients":["a@b"],"created":1}\nmessage',
        b'{"v":1,"id":"ID","sender":"","recipients":[],"created":1}\nmessage',
        b'{"v":1,"id":"00000000000000-0000000000","sender":"","recipients":["a@b"],"created":1}\n',
        b'{"v":1,"id":"ID","sender":null,"recipients":["a@b"],"created":1}\nmessage',
        b'{"v":1,"id":"ID","sender":"","recipients":["a@b"],"created":"now"}\nmessage',
    ],
)
def test_corrupt_entry_is_moved_aside_with_a_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    logged = io.StringIO()
    monkeypatch.setattr(runtime_log, "_stream", [logged])
    queue = Queue(tmp_path)
    good = enqueue(queue)
    bad = new_queue_id()
    content = content.replace(b'"ID"', f'"{bad}"'.encode())
    (tmp_path / "queue" / f"{bad}.msg").write_bytes(content)

    assert [entry.id for entry in queue.list()] == [good]

    moved = tmp_path / "queue" / "corrupt" / f"{bad}.msg"
    assert moved.read_bytes() == content  # kept for a human, byte for byte
    assert not (tmp_path / "queue" / f"{bad}.msg").exists()
    [line] = logged.getvalue().splitlines()
    assert "event=queue.entry_corrupt" in line and f"id={bad}" in line and "reason=" in line
    assert [entry.id for entry in queue.list()] == [good]  # and not listed again


def test_reading_a_corrupt_entry_raises_and_moves_it_aside(tmp_path: Path) -> None:
    queue = Queue(tmp_path)
    bad = new_queue_id()
    (tmp_path / "queue" / f"{bad}.msg").write_bytes(b"\x00\x01garbage\nbody")
    with pytest.raises(CorruptEntry):
        queue.read(bad)
    assert (tmp_path / "queue" / "corrupt" / f"{bad}.msg").exists()


def test_corrupt_retry_state_starts_over(tmp_path: Path) -> None:
    queue = Queue(tmp_path)
    queue_id = enqueue(queue)
    (tmp_path / "queue" / f"{queue_id}.state").write_bytes(b"{truncated")
    [entry] = queue.list()
    assert entry.attempts == 0
    queue.record_attempt(queue_id, "451 later", 5.0)
    assert queue.list()[0].attempts == 1


def test_message_reads_just_the_message(tmp_path: Path) -> None:
    queue = Queue(tmp_path)
    queue_id = enqueue(queue)
    queue.record_attempt(queue_id, "451 later", time.time() + 60)
    assert queue.message(queue_id) == RAW
    queue.delete(queue_id)
    with pytest.raises(NoSuchEntry):
        queue.message(queue_id)
    with pytest.raises(NoSuchEntry):
        queue.message("../secret")
