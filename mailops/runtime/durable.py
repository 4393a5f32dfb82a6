"""Group commit: put the files of many concurrent SMTP transactions on disk together.

A `250 OK` to DATA promises that the message survives a crash, so every file of it
(Maildir copies, a queue entry) must be written, fsync'd, linked into place and its
directory fsync'd before the reply. One fsync costs a journal commit (hundreds of µs
on ext4); done per message that caps a server at a few hundred messages a second.
`GroupCommit` lets concurrent sessions share that cost: callers enqueue their files,
one batcher takes everything queued so far, does the disk work in a small thread pool
(fsync releases the GIL and concurrent fsyncs join one journal commit), fsyncs each
directory once per batch and then wakes every caller. While one batch is on disk the
next one gathers.

Failure semantics. A batch is only a way of sharing fsyncs; callers in it stay
independent. A call fails (`CommitError`) when one of *its own* files cannot be
written, fsync'd or linked, or when the fsync of a directory holding one of its files
fails; every other call in the batch succeeds. A failed call leaves none of its files
in place: its temporary files are removed and files already linked are unlinked again,
so the SMTP layer can answer 4xx with nothing half-delivered.

Cancellation. A call cancelled before its batch starts writes nothing. Once the batch
is on disk it completes regardless, so a cancelled caller's files may be committed;
like a lost `250`, the client retries and the worst case is a duplicate, never a loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mailops.runtime.log import log

# link() is how a file is put in place: unlike rename() it refuses to replace an
# existing file, so a name collision can never overwrite a stored message, and undoing
# a failed call can never remove somebody else's file. Filesystems without hard links
# answer one of these; there we fall back to rename() (names are unique anyway).
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}

# POSIX_FADV_DONTNEED starts writeback of a file's dirty pages at once (Linux). Doing it
# for every file of a batch before the first fsync lets the kernel allocate and write
# all of them together, so the fsyncs that follow share journal commits: measured 1.3x
# to 1.7x more files per second on ext4 with 20 writers. Not on macOS; skipped there.
_HAS_FADVISE = hasattr(os, "posix_fadvise")


@dataclass(frozen=True)
class PendingFile:
    """One file to make durable: written at `tmp_path`, then linked to `final_path`."""

    tmp_path: Path  # must be on the same filesystem as final_path, and must not exist
    final_path: Path  # must not exist: nothing is ever overwritten
    data: bytes
    mode: int = 0o600


class CommitError(Exception):
    """The files of one `commit()` call could not be made durable; none of them is left."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(f"cannot commit {path}: {_reason(error)}")
        self.path = path
        self.error = error
        self.__cause__ = error


# --------------------------------------------------------------------------- helpers


def fsync_dir(path: Path) -> None:
    """Make the entries of directory `path` (creations, links, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dirs(path: Path, mode: int = 0o700) -> None:
    """Create `path` and any missing parents durably, each with exactly `mode`.

    A new directory only survives a crash once its parent is fsync'd; without that a
    message fsync'd into a freshly created mailbox could vanish with the mailbox.
    Directories that already exist are left as they are (one failed mkdir each).
    """
    missing: list[Path] = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            # Created by a concurrent delivery that may not have fsync'd it yet: we
            # are about to rely on it, so make its entry durable ourselves.
            fsync_dir(directory.parent)
            continue
        os.chmod(directory, mode)  # mkdir's mode is filtered by the umask
        fsync_dir(directory.parent)


def write_durable(path: Path, data: bytes, *, tmp_dir: Path, mode: int = 0o600) -> None:
    """Replace `path` atomically and durably (small files, outside the group commit).

    Readers see the old file or the new one, never a mix. `tmp_dir` must be on the
    same filesystem; the temporary name is unique per process and call.
    """
    tmp = tmp_dir / f".{path.name}.{os.getpid()}.{next(_write_counter)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


# itertools.count is safe to share between threads (a generator is not).
_write_counter = itertools.count(1)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _place(tmp: Path, final: Path) -> None:
    """Make `tmp` appear at `final` atomically, refusing to replace an existing file."""
    try:
        os.link(tmp, final)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        os.rename(tmp, final)
        return
    # The name in tmp/ is redundant now; if unlinking it fails the stale-tmp sweep of
    # the store or queue removes it later, and the committed file is unaffected.
    with contextlib.suppress(OSError):
        os.unlink(tmp)


# --------------------------------------------------------------------- batch state


@dataclass(eq=False)
class _Call:
    """One `commit()` call: its files and the future its caller awaits."""

    files: tuple[PendingFile, ...]
    future: asyncio.Future[None]
    error: CommitError | None = None
    slots: list[_Slot] = field(default_factory=list)

    def fail(self, path: Path, exc: OSError) -> None:
        if self.error is None:  # the first error is the one worth reporting
            self.error = CommitError(path, exc)


@dataclass(eq=False)
class _Slot:
    """One file of a call as it moves through a batch (touched by one thread at a time)."""

    call: _Call
    file: PendingFile
    fd: int | None = None
    created: bool = False  # we created tmp_path, so we may remove it
    placed: bool = False  # final_path is ours, so undoing the call removes it


@dataclass(eq=False)
class _Batch:
    calls: list[_Call]
    to_write: deque[_Slot] = field(default_factory=deque)
    to_sync: deque[_Slot] = field(default_factory=deque)


# ------------------------------------------------------------ work done in threads


def _write(slot: _Slot) -> None:
    """Create the temporary file and hand its data to the kernel (no fsync yet)."""
    if slot.call.error is not None:
        return  # another file of this call failed: the call is lost, skip the work
    file = slot.file
    try:
        # O_EXCL: a leftover or foreign file at tmp_path is never written into or removed.
        slot.fd = os.open(
            file.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, file.mode
        )
        slot.created = True
        os.fchmod(slot.fd, file.mode)  # exact mode whatever the process umask
        _write_all(slot.fd, file.data)
        if _HAS_FADVISE:
            os.posix_fadvise(slot.fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError as exc:
        slot.call.fail(file.tmp_path, exc)


def _sync(slot: _Slot) -> None:
    if slot.fd is None:
        return
    fd, slot.fd = slot.fd, None
    try:
        if slot.call.error is None:
            os.fsync(fd)
    except OSError as exc:
        slot.call.fail(slot.file.tmp_path, exc)
    finally:
        os.close(fd)


def _write_and_sync(batch: _Batch) -> None:
    """One pool worker's share of a batch; several run this concurrently.

    Workers take files to write until none are left, then files to fsync. Writing all
    files before the first fsync is what lets their fsyncs share journal commits.
    """
    while True:
        try:
            slot = batch.to_write.popleft()
        except IndexError:
            break
        _write(slot)
        batch.to_sync.append(slot)
    while True:
        try:
            slot = batch.to_sync.popleft()
        except IndexError:
            return
        _sync(slot)


def _publish(batch: _Batch) -> None:
    """Link every surviving call's files into place, then fsync each directory once."""
    dirs: set[Path] = set()
    for call in batch.calls:
        if call.error is None:
            dirs.update(_place_call(call))
    broken: dict[Path, OSError] = {}
    for directory in dirs:
        try:
            fsync_dir(directory)
        except OSError as exc:
            broken[directory] = exc
    if broken:
        _fail_calls_in(batch, broken)
    for call in batch.calls:
        if call.error is not None:
            _remove_temporaries(call)


def _place_call(call: _Call) -> list[Path]:
    """Link one call's files into place, all or none; returns the directories touched."""
    for slot in call.slots:
        try:
            _place(slot.file.tmp_path, slot.file.final_path)
        except OSError as exc:
            call.fail(slot.file.final_path, exc)
            # Undo before the directory fsyncs that follow, so they make the removal
            # durable too and a crash cannot resurrect half of this call.
            return _unplace(call)
        slot.placed = True
        slot.created = False  # the tmp name is gone (or a stray for the sweep): not ours
    return [slot.file.final_path.parent for slot in call.slots]


def _unplace(call: _Call) -> list[Path]:
    """Remove the files this call already put in place; returns their directories."""
    touched = []
    for slot in call.slots:
        if slot.placed:
            with contextlib.suppress(OSError):
                os.unlink(slot.file.final_path)
            slot.placed = False
            touched.append(slot.file.final_path.parent)
    return touched


def _fail_calls_in(batch: _Batch, broken: dict[Path, OSError]) -> None:
    """A directory fsync failed: whatever was linked there may not survive a crash."""
    touched: set[Path] = set()
    for call in batch.calls:
        for slot in call.slots:
            directory = slot.file.final_path.parent
            if slot.placed and directory in broken:
                call.fail(slot.file.final_path, broken[directory])
        if call.error is not None:
            touched.update(_unplace(call))
    for directory in touched:
        # Best effort: the disk just failed us. Should the removal not stick, a crash
        # leaves a complete copy behind, and the 4xx makes the client retry: a
        # duplicate at worst, never a truncated message.
        with contextlib.suppress(OSError):
            fsync_dir(directory)


def _remove_temporaries(call: _Call) -> None:
    for slot in call.slots:
        if slot.fd is not None:
            with contextlib.suppress(OSError):
                os.close(slot.fd)
            slot.fd = None
        if slot.created and not slot.placed:
            with contextlib.suppress(OSError):
                os.unlink(slot.file.tmp_path)
            slot.created = False


# ---------------------------------------------------------------------- the batcher


class GroupCommit:
    """Makes files durable in batches shared by concurrent callers (see module doc).

    Use from one event loop. `workers` threads do the file I/O; `max_batch` bounds the
    files in one batch (a single call larger than that still goes in one batch).
    """

    def __init__(self, *, max_batch: int = 256, workers: int = 2) -> None:
        if max_batch < 1 or workers < 1:
            raise ValueError("max_batch and workers must be at least 1")
        self._max_batch = max_batch
        self._workers = workers
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="mailops-commit")
        self._pending: deque[_Call] = deque()
        self._wakeup = asyncio.Event()
        self._batcher: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0  # batches written so far: for tests, benchmarks and metrics
        self.files = 0  # files committed so far

    async def commit(self, files: Sequence[PendingFile]) -> None:
        """Return once every file is durable in place; raise `CommitError` otherwise."""
        if self._closing:
            raise RuntimeError("GroupCommit is closed")
        if not files:
            return
        call = _Call(tuple(files), asyncio.get_running_loop().create_future())
        self._pending.append(call)
        if self._batcher is None or self._batcher.done():  # first call, or loop tore it down
            self._batcher = asyncio.create_task(self._run(), name="mailops-group-commit")
        self._wakeup.set()
        # If the caller is cancelled, awaiting cancels the future too; the batcher
        # then skips the call if it has not started on it (see module doc).
        await call.future

    async def close(self) -> None:
        """Commit everything already queued, then stop the batcher and the threads."""
        if self._closing and self._batcher is None:
            return
        self._closing = True
        self._wakeup.set()
        if self._batcher is not None:
            await self._batcher
            self._batcher = None
        await asyncio.to_thread(self._executor.shutdown)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._commit_batch(self._take_batch())
            if self._closing:
                return

    def _take_batch(self) -> list[_Call]:
        """Everything queued so far, oldest first, up to max_batch files."""
        calls: list[_Call] = []
        count = 0
        while self._pending:
            call = self._pending[0]
            if call.future.done():  # cancelled while waiting: write nothing for it
                self._pending.popleft()
                continue
            if calls and count + len(call.files) > self._max_batch:
                break
            calls.append(self._pending.popleft())
            count += len(call.files)
        return calls

    async def _commit_batch(self, calls: list[_Call]) -> None:
        if not calls:
            return
        batch = _Batch(calls)
        for call in calls:
            call.slots = [_Slot(call, file) for file in call.files]
            batch.to_write.extend(call.slots)
        loop = asyncio.get_running_loop()
        try:
            workers = min(self._workers, len(batch.to_write))
            await asyncio.gather(
                *(
                    loop.run_in_executor(self._executor, _write_and_sync, batch)
                    for _ in range(workers)
                )
            )
            await loop.run_in_executor(self._executor, _publish, batch)
        except BaseException as exc:
            # A bug or a dead executor, not a disk error: never leave a caller hanging,
            # and never claim success. Files may remain; callers are told it failed.
            log("commit.crashed", calls=len(calls), error=repr(exc))
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(
                        exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
                    )
            if not isinstance(exc, Exception):
                raise
            return
        self.batches += 1
        for call in calls:
            if call.error is not None:
                log("commit.failed", path=call.error.path, error=_reason(call.error.error))
            else:
                self.files += len(call.files)
            if call.future.done():
                continue  # cancelled while on disk; its files are committed all the same
            if call.error is not None:
                call.future.set_exception(call.error)
            else:
                call.future.set_result(None)
