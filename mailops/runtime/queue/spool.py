"""The durable outbound queue under `<data>/queue/`.

Layout:

    queue/<id>.msg      one committed entry: a JSON header line, then the raw message
    queue/<id>.state    retry state (attempts, next attempt, last error), replaced whole
    queue/tmp/          entries and states being written; never listed
    queue/corrupt/      entries whose header cannot be read, moved aside for a human

An entry holds envelope and message in one file so that accepting a message costs
one file fsync (shared with the other copies of the same transaction through the
group commit). The entry is immutable: retry state changes with every attempt and
lives in its own small file, so a crash while recording an attempt can never damage
the message.

Ids are `<µs since the epoch, 14 hex digits>-<40 random bits>`: they sort by
creation, cannot collide between processes, and are safe as file names.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailops.runtime.durable import PendingFile, ensure_dirs, fsync_dir, write_durable
from mailops.runtime.log import log

FORMAT_VERSION = 1
ENTRY_SUFFIX = ".msg"
STATE_SUFFIX = ".state"
DIR_MODE = 0o700
FILE_MODE = 0o600
# The header line holds the envelope; thousands of recipients still fit easily. A
# longer first line is a damaged file, not a header to read into memory.
MAX_HEADER_BYTES = 4 * 1024 * 1024
STALE_TMP_SECONDS = 24 * 3600

_ID = re.compile(r"[0-9a-f]{14}-[0-9a-f]{10}")
_id_lock = threading.Lock()
_last_id_us = 0


class QueueError(Exception):
    """A queue operation on a particular entry failed."""


class NoSuchEntry(QueueError):
    def __init__(self, queue_id: str) -> None:
        super().__init__(f"no queue entry {queue_id}")
        self.id = queue_id


class CorruptEntry(QueueError):
    """The entry's header could not be read; the file was moved to queue/corrupt/."""


@dataclass(frozen=True)
class QueueEntry:
    id: str
    sender: str  # '' is the null sender (bounces)
    recipients: tuple[str, ...]
    size: int  # of the message alone, without the header line
    created: float  # Unix time of prepare()
    attempts: int = 0
    next_attempt: float = 0.0  # Unix time; a new entry is due at once (= created)
    last_error: str | None = None
    source: dict[str, Any] | None = None  # who gave it to us: client, helo, auth
    done: tuple[str, ...] = ()  # recipients delivered or bounced already (never retried)
    delay_warned: bool = False  # the sender has been told that delivery is delayed

    @property
    def pending(self) -> tuple[str, ...]:
        """Recipients still to deliver, in envelope order."""
        finished = set(self.done)
        return tuple(r for r in self.recipients if r not in finished)


def new_queue_id() -> str:
    """A fresh id: increasing within this process, unique across processes."""
    global _last_id_us
    with _id_lock:
        # Never repeat or go back within a process, even if the clock does.
        now = max(time.time_ns() // 1000, _last_id_us + 1)
        _last_id_us = now
    return f"{now:014x}-{secrets.token_hex(5)}"


def is_queue_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


class Queue:
    """The outbound queue of one data directory (see module doc for the layout).

    `prepare` is cheap and pure; the entry exists once `GroupCommit.commit` of its
    file returns. The other methods do blocking file I/O: on the event loop, run
    them in a thread. One delivery worker at a time handles a given entry.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "queue"
        # As a string too: the delivery workers read and delete hundreds of entries a
        # second, and pathlib's joins cost more than the system calls they feed.
        self._dir = str(self.path)
        self.tmp = self.path / "tmp"
        self.corrupt = self.path / "corrupt"
        ensure_dirs(self.tmp, DIR_MODE)
        ensure_dirs(self.corrupt, DIR_MODE)

    def prepare(
        self,
        sender: str,
        recipients: Sequence[str],
        message: bytes,
        *,
        source: dict[str, Any] | None = None,
    ) -> tuple[str, PendingFile]:
        """A new entry's id and the file to commit for it."""
        if isinstance(recipients, str) or not recipients:
            raise ValueError("a queue entry needs a sequence of one or more recipients")
        queue_id = new_queue_id()
        header = {
            "v": FORMAT_VERSION,
            "id": queue_id,
            "sender": sender,
            "recipients": list(recipients),
            "created": time.time(),
            "source": source,
        }
        # ensure_ascii: the line is pure ASCII and JSON never writes a raw newline,
        # so the first b"\n" of the file always ends the header.
        line = json.dumps(header, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        name = queue_id + ENTRY_SUFFIX
        return queue_id, PendingFile(self.tmp / name, self.path / name, line + b"\n" + message)

    def list(self) -> builtins.list[QueueEntry]:
        """Every committed entry, oldest first, reading only headers and states."""
        return self.entries(*self.listing())

    def listing(self) -> tuple[builtins.list[str], set[str]]:
        """The ids of committed entries, oldest first, and the ids that have a state
        file: one directory scan. `entries` reads them, in as many pieces as wanted."""
        return self._ids()

    def entries(self, ids: Sequence[str], states: set[str]) -> builtins.list[QueueEntry]:
        """The entries of `ids` (from `listing`) still there, reading only headers and states."""
        entries = []
        for queue_id in ids:
            try:
                # Most entries have no state yet (never attempted): the listing says
                # which do, so the others cost no failed open.
                entry, _ = self._load(queue_id, with_message=False, state=queue_id in states)
                entries.append(entry)
            except (NoSuchEntry, CorruptEntry):
                continue  # delivered meanwhile, or moved aside (and logged)
            except OSError as exc:
                # One unreadable file must not hide the rest of the queue.
                log("queue.entry_unreadable", id=queue_id, error=exc.strerror or exc)
        return entries

    def entry(self, queue_id: str) -> QueueEntry:
        """One entry's envelope and retry state, without reading its message."""
        return self._load(queue_id, with_message=False)[0]

    def read(self, queue_id: str) -> tuple[QueueEntry, bytes]:
        """The entry and its message bytes, exactly as accepted."""
        entry, message = self._load(queue_id, with_message=True)
        assert message is not None
        return entry, message

    def message(self, queue_id: str) -> bytes:
        """The message bytes alone, for a caller that knows the entry already: the
        delivery workers read the envelope once, then the message for each attempt."""
        self._check_id(queue_id)
        try:
            with open(self._file(queue_id, ENTRY_SUFFIX), "rb", buffering=0) as handle:
                data = handle.readall()
        except FileNotFoundError:
            raise NoSuchEntry(queue_id) from None
        header, newline, message = data.partition(b"\n")
        if not newline or not header.startswith(b"{"):
            self._move_aside(queue_id, "no header line")
            raise CorruptEntry(f"queue entry {queue_id} has no header line; moved aside")
        return message

    def delete(self, queue_id: str, *, sync: bool = True) -> None:
        """Remove a delivered entry and its state, durably.

        `sync=False` leaves the directory fsync to the caller, who can then make many
        deletions durable with one `fsync_dir(queue.path)` (the delivery workers do).
        """
        self._check_id(queue_id)
        try:
            os.unlink(self._file(queue_id, ENTRY_SUFFIX))
        except FileNotFoundError:
            raise NoSuchEntry(queue_id) from None
        # The entry first: a crash between the two leaves an orphan state, which
        # recover() removes, and never a state-less entry that loses its retry count.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._file(queue_id, STATE_SUFFIX))
        if sync:
            fsync_dir(self.path)

    def record_attempt(
        self,
        queue_id: str,
        error: str | None,
        next_attempt: float,
        *,
        done: Sequence[str] = (),
        delay_warned: bool = False,
    ) -> None:
        """Count a delivery attempt and when to try again; the entry file is untouched.

        `done` adds recipients that are finished (delivered, or bounced): a retry
        never sends to them again. `delay_warned` records that the sender was told.
        """
        self._check_id(queue_id)
        if not self._entry_path(queue_id).exists():
            raise NoSuchEntry(queue_id)
        state = self._read_state(queue_id)
        finished = dict.fromkeys(_str_list(state, "done"))
        finished.update(dict.fromkeys(done))
        state.update(
            v=FORMAT_VERSION,
            attempts=_int_field(state, "attempts") + 1,
            next_attempt=float(next_attempt),
            last_error=error,
            done=list(finished),
            delay_warned=delay_warned or state.get("delay_warned") is True,
        )
        data = json.dumps(state, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        write_durable(self._state_path(queue_id), data, tmp_dir=self.tmp, mode=FILE_MODE)

    def recover(self, *, stale_after: float = STALE_TMP_SECONDS) -> int:
        """Startup sweep: drop stale temporary files and orphan states; returns how many.

        Only files that are not committed entries are removed: a tmp file older than
        `stale_after` seconds was abandoned by a crash (a commit takes milliseconds),
        and a state whose entry is gone belonged to a delivered message.
        """
        removed = self._remove_stale_tmp(time.time() - stale_after)
        removed += self._remove_orphan_states()
        return removed

    # ------------------------------------------------------------------ internals

    def _remove_stale_tmp(self, cutoff: float) -> int:
        removed = 0
        with os.scandir(self.tmp) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
                        log("queue.tmp_removed", file=entry.name)
        if removed:
            fsync_dir(self.tmp)
        return removed

    def _remove_orphan_states(self) -> int:
        removed = 0
        with os.scandir(self.path) as entries:
            for entry in entries:
                queue_id = entry.name.removesuffix(STATE_SUFFIX)
                if (
                    entry.name.endswith(STATE_SUFFIX)
                    and is_queue_id(queue_id)
                    and not self._entry_path(queue_id).exists()
                ):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
                        log("queue.orphan_state_removed", id=queue_id)
        if removed:
            fsync_dir(self.path)
        return removed

    def _file(self, queue_id: str, suffix: str) -> str:
        return f"{self._dir}/{queue_id}{suffix}"

    def _entry_path(self, queue_id: str) -> Path:
        return self.path / (queue_id + ENTRY_SUFFIX)

    def _state_path(self, queue_id: str) -> Path:
        return self.path / (queue_id + STATE_SUFFIX)

    def _check_id(self, queue_id: str) -> None:
        # Ids become file names: anything else (say '../x') is refused, not looked up.
        if not is_queue_id(queue_id):
            raise NoSuchEntry(queue_id)

    def _ids(self) -> tuple[builtins.list[str], set[str]]:
        """The ids of committed entries, sorted, and the ids that have a state file."""
        ids, states = [], set()
        with os.scandir(self.path) as entries:
            for entry in entries:
                stem, dot, suffix = entry.name.partition(".")
                if not dot or not is_queue_id(stem):
                    continue
                if "." + suffix == ENTRY_SUFFIX:
                    ids.append(stem)
                elif "." + suffix == STATE_SUFFIX:
                    states.add(stem)
        return sorted(ids), states

    def _load(
        self, queue_id: str, *, with_message: bool, state: bool = True
    ) -> tuple[QueueEntry, bytes | None]:
        """The entry (and its message); `state=False` when its state file is known
        not to exist."""
        self._check_id(queue_id)
        try:
            handle = open(self._entry_path(queue_id), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise NoSuchEntry(queue_id) from None
        with handle:
            line = handle.readline(MAX_HEADER_BYTES + 1)
            total = os.fstat(handle.fileno()).st_size
            message = handle.read() if with_message else None
        try:
            header = _parse_header(line, queue_id)
        except ValueError as exc:
            self._move_aside(queue_id, str(exc))
            raise CorruptEntry(f"queue entry {queue_id} is corrupt ({exc}); moved aside") from None
        state = self._read_state(queue_id) if state else {}
        entry = QueueEntry(
            id=queue_id,
            sender=header["sender"],
            recipients=tuple(header["recipients"]),
            size=total - len(line),
            created=header["created"],
            attempts=_int_field(state, "attempts"),
            next_attempt=_float_field(state, "next_attempt", header["created"]),
            last_error=_str_field(state, "last_error"),
            source=header["source"],
            done=tuple(_str_list(state, "done")),
            delay_warned=state.get("delay_warned") is True,
        )
        return entry, message

    def _read_state(self, queue_id: str) -> dict[str, Any]:
        try:
            data = self._state_path(queue_id).read_bytes()
        except FileNotFoundError:
            return {}
        try:
            state = json.loads(data)
            if not isinstance(state, dict):
                raise ValueError("not an object")
        except ValueError:
            # The state is only a retry schedule: start it over rather than block the
            # entry; the next record_attempt replaces the file.
            log("queue.state_corrupt", id=queue_id, action="reset")
            return {}
        return state

    def _move_aside(self, queue_id: str, reason: str) -> None:
        """Keep a damaged entry for a human, out of the delivery workers' way."""
        for path in (self._entry_path(queue_id), self._state_path(queue_id)):
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, self.corrupt / path.name)
        fsync_dir(self.corrupt)
        fsync_dir(self.path)
        log("queue.entry_corrupt", id=queue_id, reason=reason, moved_to=self.corrupt)


def _parse_header(line: bytes, queue_id: str) -> dict[str, Any]:
    """The envelope of an entry; ValueError (with a short reason) if it is damaged."""
    if not line.endswith(b"\n"):
        raise ValueError("no header line")
    try:
        header = json.loads(line)
    except ValueError:
        raise ValueError("header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    if header.get("v") != FORMAT_VERSION:
        raise ValueError(f"unknown format version {header.get('v')!r}")
    if header.get("id") != queue_id:
        raise ValueError("id in header does not match file name")
    recipients = header.get("recipients")
    if not isinstance(header.get("sender"), str):
        raise ValueError("sender missing")
    if not (
        isinstance(recipients, list) and recipients and all(isinstance(r, str) for r in recipients)
    ):
        raise ValueError("recipients missing")
    created = header.get("created")
    if not isinstance(created, int | float) or isinstance(created, bool):
        raise ValueError("created missing")
    if not isinstance(header.get("source"), dict | None):
        raise ValueError("source is not an object")
    header["created"] = float(created)
    return header


def _int_field(state: dict[str, Any], key: str) -> int:
    value = state.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float_field(state: dict[str, Any], key: str, default: float) -> float:
    value = state.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default


def _str_field(state: dict[str, Any], key: str) -> str | None:
    value = state.get(key)
    return value if isinstance(value, str) else None


def _str_list(state: dict[str, Any], key: str) -> list[str]:
    value = state.get(key)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
