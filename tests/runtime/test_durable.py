"""Group commit: complete files, fsync discipline, batching, failures, crash durability."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from mailops.runtime import durable
from mailops.runtime.durable import CommitError, GroupCommit, PendingFile

REPO = Path(__file__).resolve().parents[2]


class FsyncSpy:
    """Wraps os.fsync: counts file and directory fsyncs, can fail or block chosen ones."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = os.fsync
        self.files = 0
        self.dirs: Counter[tuple[int, int]] = Counter()
        self.fail: Callable[[int, os.stat_result], bool] = lambda fd, st: False
        self.gate: threading.Event | None = None  # if set, file fsyncs wait for it
        self.entered = threading.Event()
        self.lock = threading.Lock()
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        st = os.fstat(fd)
        if self.fail(fd, st):
            raise OSError(errno.EIO, "injected I/O error")
        if not stat.S_ISDIR(st.st_mode) and self.gate is not None:
            self.entered.set()
            assert self.gate.wait(10), "test never opened the gate"
        with self.lock:
            if stat.S_ISDIR(st.st_mode):
                self.dirs[(st.st_dev, st.st_ino)] += 1
            else:
                self.files += 1
        self.real(fd)

    def dir_count(self, path: Path) -> int:
        st = path.stat()
        return self.dirs[(st.st_dev, st.st_ino)]


def folders(root: Path, *names: str) -> list[Path]:
    made = []
    for name in names:
        (root / name).mkdir(parents=True)
        made.append(root / name)
    return made


def pending(tmp: Path, final: Path, name: str, data: bytes, mode: int = 0o600) -> PendingFile:
    return PendingFile(tmp / name, final / name, data, mode)


def fails_for_size(size: int) -> Callable[[int, os.stat_result], bool]:
    # The files are open write-only, so the spy recognises the victim by its size.
    def check(fd: int, st: os.stat_result) -> bool:
        return stat.S_ISREG(st.st_mode) and st.st_size == size

    return check


def fails_for_dir(path: Path) -> Callable[[int, os.stat_result], bool]:
    target = path.stat()

    def check(fd: int, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino)

    return check


# ----------------------------------------------------------------- complete files


def test_files_appear_complete_with_exact_mode(tmp_path: Path) -> None:
    tmp, new = folders(tmp_path, "tmp", "new")
    files = [
        pending(tmp, new, "a", b"first message\r\n", 0o600),
        pending(tmp, new, "b", os.urandom(300_000), 0o640),  # several write() calls' worth
        pending(tmp, new, "empty", b"", 0o644),
    ]
    old_umask = os.umask(0o077)  # the mode must not depend on the process umask
    try:
        asyncio.run(commit_all([files]))
    finally:
        os.umask(old_umask)
    for file in files:
        assert file.final_path.read_bytes() == file.data
        assert stat.S_IMODE(file.final_path.stat().st_mode) == file.mode
    assert list(tmp.iterdir()) == []


def test_each_file_and_each_directory_fsynced_once_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp, box1, box2 = folders(tmp_path, "tmp", "box1", "box2")
    spy = FsyncSpy(monkeypatch)
    group = GroupCommit()

    async def scenario() -> None:
        await group.commit(
            [
                pending(tmp, box1, "m1", b"one"),
                pending(tmp, box1, "m2", b"two"),
                pending(tmp, box2, "m3", b"three"),
            ]
        )
        await group.close()

    asyncio.run(scenario())
    assert group.batches == 1
    assert spy.files == 3
    assert spy.dir_count(box1) == 1
    assert spy.dir_count(box2) == 1
    assert spy.dir_count(tmp) == 0  # a name in tmp/ needs no durability


def test_concurrent_callers_share_batches_and_directory_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp, new = folders(tmp_path, "tmp", "new")
    spy = FsyncSpy(monkeypatch)
    group = GroupCommit()
    messages = {f"m{i}": f"message {i}\r\n".encode() * (i + 1) for i in range(50)}

    async def scenario() -> None:
        await asyncio.gather(
            *(group.commit([pending(tmp, new, name, data)]) for name, data in messages.items())
        )
        await group.close()

    asyncio.run(scenario())
    assert 1 <= group.batches < len(messages)
    assert spy.files == len(messages)
    assert spy.dir_count(new) == group.batches
    assert {p.name: p.read_bytes() for p in new.iterdir()} == messages


def test_max_batch_bounds_batches_but_never_splits_a_call(tmp_path: Path) -> None:
    tmp, new = folders(tmp_path, "tmp", "new")
    group = GroupCommit(max_batch=4)
    big_call = [pending(tmp, new, f"big{i}", b"x") for i in range(10)]
    singles = [[pending(tmp, new, f"s{i}", b"y")] for i in range(20)]

    async def scenario() -> None:
        await group.commit(big_call)  # larger than max_batch: one batch all the same
        assert group.batches == 1
        await asyncio.gather(*(group.commit(call) for call in singles))
        await group.close()

    asyncio.run(scenario())
    assert group.batches >= 1 + 20 // 4
    assert len(list(new.iterdir())) == 30


def test_empty_commit_returns_at_once(tmp_path: Path) -> None:
    group = GroupCommit()

    async def scenario() -> None:
        await group.commit([])
        await group.close()

    asyncio.run(scenario())
    assert group.batches == 0


# ------------------------------------------------------------------------ failures


def test_failed_file_fsync_fails_only_its_call_and_leaves_none_of_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp, new = folders(tmp_path, "tmp", "new")
    spy = FsyncSpy(monkeypatch)
    spy.fail = fails_for_size(4242)
    group = GroupCommit()
    doomed = [pending(tmp, new, "a1", b"fine"), pending(tmp, new, "a2", b"F" * 4242)]
    bystander = [pending(tmp, new, "b1", b"other session")]

    results = asyncio.run(commit_all([doomed, bystander], group))

    assert group.batches == 1  # both calls really shared the batch that failed
    assert isinstance(results[0], CommitError)
    assert results[0].error.errno == errno.EIO
    assert results[1] is None
    assert sorted(p.name for p in new.iterdir()) == ["b1"]
    assert list(tmp.iterdir()) == []


def test_link_failure_unlinks_files_of_the_call_already_in_place(tmp_path: Path) -> None:
    tmp, box = folders(tmp_path, "tmp", "box")
    gone = tmp_path / "removed-mailbox" / "new"  # its directory vanished meanwhile
    doomed = [pending(tmp, box, "a1", b"first copy"), pending(tmp, gone, "a2", b"second")]
    bystander = [pending(tmp, box, "b1", b"other")]

    results = asyncio.run(commit_all([doomed, bystander]))

    assert isinstance(results[0], CommitError)
    assert results[0].error.errno == errno.ENOENT
    assert results[0].path == gone / "a2"
    assert results[1] is None
    assert sorted(p.name for p in box.iterdir()) == ["b1"]  # a1 was placed, then undone
    assert list(tmp.iterdir()) == []


def test_directory_fsync_failure_fails_every_call_with_a_file_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp, good, bad = folders(tmp_path, "tmp", "good", "bad")
    spy = FsyncSpy(monkeypatch)
    spy.fail = fails_for_dir(bad)
    calls = [
        [pending(tmp, good, "a1", b"a"), pending(tmp, bad, "a2", b"a")],  # spans both
        [pending(tmp, good, "b1", b"b")],
        [pending(tmp, bad, "c1", b"c")],
    ]
    group = GroupCommit()

    results = asyncio.run(commit_all(calls, group))

    assert group.batches == 1
    assert [type(r) for r in results] == [CommitError, type(None), CommitError]
    assert sorted(p.name for p in good.iterdir()) == ["b1"]
    assert list(bad.iterdir()) == []
    assert list(tmp.iterdir()) == []


def test_existing_final_file_is_never_replaced(tmp_path: Path) -> None:
    tmp, new = folders(tmp_path, "tmp", "new")
    (new / "taken").write_bytes(b"stored earlier")

    results = asyncio.run(commit_all([[pending(tmp, new, "taken", b"intruder")]]))

    assert isinstance(results[0], CommitError)
    assert results[0].error.errno == errno.EEXIST
    assert (new / "taken").read_bytes() == b"stored earlier"
    assert list(tmp.iterdir()) == []


def test_foreign_tmp_file_is_neither_written_nor_removed(tmp_path: Path) -> None:
    tmp, new = folders(tmp_path, "tmp", "new")
    (tmp / "busy").write_bytes(b"another writer's file")

    results = asyncio.run(commit_all([[pending(tmp, new, "busy", b"mine")]]))

    assert isinstance(results[0], CommitError)
    assert (tmp / "busy").read_bytes() == b"another writer's file"
    assert list(new.iterdir()) == []


# ------------------------------------------------------- close and cancellation


def test_close_commits_everything_queued(tmp_path: Path) -> None:
    tmp, new = folders(tmp_path, "tmp", "new")
    group = GroupCommit()

    async def scenario() -> list[asyncio.Task[None]]:
        tasks = [
            asyncio.create_task(group.commit([pending(tmp, new, f"m{i}", b"x" * i)]))
            for i in range(30)
        ]
        await asyncio.sleep(0)  # every task has queued its call
        await group.close()
        with pytest.raises(RuntimeError):
            await group.commit([pending(tmp, new, "late", b"too late")])
        return tasks

    tasks = asyncio.run(scenario())
    assert all(task.done() and task.exception() is None for task in tasks)
    assert len(list(new.iterdir())) == 30


def test_cancelled_call_is_skipped_if_waiting_and_committed_if_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp, new = folders(tmp_path, "tmp", "new")
    spy = FsyncSpy(monkeypatch)
    spy.gate = threading.Event()
    group = GroupCommit()

    async def scenario() -> None:
        on_disk = asyncio.create_task(group.commit([pending(tmp, new, "on-disk", b"a")]))
        assert await asyncio.to_thread(spy.entered.wait, 10)  # its batch is on disk now
        waiting = asyncio.create_task(group.commit([pending(tmp, new, "waiting", b"b")]))
        await asyncio.sleep(0)  # queued behind the blocked batch
        waiting.cancel()
        on_disk.cancel()
        await asyncio.gather(waiting, on_disk, return_exceptions=True)
        spy.gate.set()
        await group.close()

    asyncio.run(scenario())
    assert [p.name for p in new.iterdir()] == ["on-disk"]
    assert list(tmp.iterdir()) == []
    assert group.batches == 1


# -------------------------------------------------------------------- helpers


def test_ensure_dirs_creates_parents_with_mode_and_fsyncs_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = FsyncSpy(monkeypatch)
    old_umask = os.umask(0o022)
    try:
        durable.ensure_dirs(tmp_path / "a" / "b" / "c", 0o700)
    finally:
        os.umask(old_umask)
    for path in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    # Each new directory's entry is made durable in its parent.
    assert spy.dir_count(tmp_path) == 1
    assert spy.dir_count(tmp_path / "a") == 1
    assert spy.dir_count(tmp_path / "a" / "b") == 1
    durable.ensure_dirs(tmp_path / "a" / "b" / "c", 0o700)  # exists: nothing to sync
    assert sum(spy.dirs.values()) == 3


async def commit_all(
    calls: list[list[PendingFile]], group: GroupCommit | None = None
) -> list[BaseException | None]:
    """Commit every call concurrently (one batch if they fit); each call's outcome."""
    group = group or GroupCommit()
    results = await asyncio.gather(*(group.commit(c) for c in calls), return_exceptions=True)
    await group.close()
    return list(results)


# --------------------------------------------------------------- crash durability

WRITER = textwrap.dedent(
    """
    import asyncio, itertools, sys
    from pathlib import Path
    from mailops.runtime.durable import GroupCommit, PendingFile

    root = Path(sys.argv[1])
    tmp, new = root / "tmp", root / "new"

    def content(n):
        return (b"%d:" % n) * (50 + n * 7919 % 3000)

    async def main():
        group = GroupCommit()
        numbers = itertools.count()

        async def session():
            while True:
                n = next(numbers)
                await group.commit([PendingFile(tmp / str(n), new / str(n), content(n))])
                sys.stdout.write(f"{n}\\n")
                sys.stdout.flush()

        await asyncio.gather(*(session() for _ in range(8)))

    asyncio.run(main())
    """
)


def expected_content(n: int) -> bytes:
    return (b"%d:" % n) * (50 + n * 7919 % 3000)


def test_acknowledged_files_survive_sigkill_at_random_moments(tmp_path: Path) -> None:
    started = time.monotonic()
    for run in range(5):
        root = tmp_path / f"run{run}"
        new = folders(root, "tmp", "new")[1]
        delay = random.uniform(0.02, 0.5)
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root)],
            stdout=subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            assert child.stdout is not None
            first = child.stdout.readline()  # the writer is up and committing
            assert first.endswith(b"\n"), f"writer died before its first commit: {first!r}"
            time.sleep(delay)
        finally:
            child.send_signal(signal.SIGKILL)
            output = first + child.communicate(timeout=10)[0]
        # A line cut off by the kill (no newline) was never fully acknowledged.
        acknowledged = [int(line) for line in output.split(b"\n")[:-1]]
        assert acknowledged, "the child never acknowledged anything"
        for n in acknowledged:
            path = new / str(n)
            assert path.exists(), f"run {run} (kill after {delay:.3f}s): acked {n} is missing"
            assert path.read_bytes() == expected_content(n), f"run {run}: acked {n} damaged"
        # Files never acknowledged may exist, but only whole.
        for path in new.iterdir():
            assert path.read_bytes() == expected_content(int(path.name)), f"{path} is partial"
    assert time.monotonic() - started < 15
