"""File work of the store: listing Maildir directories, measuring messages, writing new ones.

Everything here is synchronous and may block on the disk; the store runs it in a
worker thread when a folder is large.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mailops.runtime.durable import fsync_dir
from mailops.runtime.store.flags import split_name

CHUNK = 1 << 20
_ARRIVAL = re.compile(r"^(\d+)\.M(\d+)")


@dataclass(frozen=True, slots=True)
class Facts:
    size: int
    vsize: int  # with bare LF counted as CRLF
    eol: bool  # ends with LF, or is empty
    mtime: int


def list_messages(directory: Path) -> dict[str, str]:
    """base name → file name of every message file in a cur/ or new/ directory."""
    found: dict[str, str] = {}
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return found
    with entries:
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue  # editors' and tools' temporary files, never messages
            found[split_name(name)[0]] = name
    return found


def dir_mtime(directory: Path) -> int:
    try:
        return os.stat(directory).st_mtime_ns
    except FileNotFoundError:
        return 0


def measure(path: str, keep_limit: int = CHUNK) -> tuple[Facts, bytes | None] | None:
    """Sizes of a message file, and its bytes when it is at most `keep_limit` long.

    None when the file vanished meanwhile (expunged or renamed by someone else). Plain
    `os` calls on a str path: this runs once per message when a folder is indexed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError):
        return None
    try:
        stat = os.fstat(fd)
        if stat.st_size > keep_limit:
            with os.fdopen(os.dup(fd), "rb") as handle:
                return _measure_chunks(handle, int(stat.st_mtime)), None
        data = os.read(fd, stat.st_size + 1)
    finally:
        os.close(fd)
    vsize = len(data) + data.count(b"\n") - data.count(b"\r\n")
    facts = Facts(len(data), vsize, not data or data[-1] == 0x0A, int(stat.st_mtime))
    return facts, data


def read_fd(fd: int, size: int | None = None) -> bytes:
    """All of an open file, from where it stands. `size`, when known, is what it should
    hold: one read of a byte more takes it all and shows that nothing follows (a short
    read of a regular file means its end); without it, the file is asked its size."""
    if size is None:
        size = os.fstat(fd).st_size
    data = os.read(fd, size + 1)
    if len(data) <= size:
        return data
    parts = [data]  # longer than expected: read on to the end
    while chunk := os.read(fd, CHUNK):
        parts.append(chunk)
    return b"".join(parts)


def _measure_chunks(handle, mtime: int) -> Facts:
    size = bare = 0
    last = b""
    while chunk := handle.read(CHUNK):
        bare += chunk.count(b"\n") - chunk.count(b"\r\n")
        if last == b"\r" and chunk.startswith(b"\n"):
            bare -= 1  # a CRLF split between two chunks
        size += len(chunk)
        last = chunk[-1:]
    return Facts(size, size + bare, size == 0 or last == b"\n", mtime)


def arrival_key(name: str, mtime: int) -> tuple[int, int, str]:
    """Order of arrival: the time in a Maildir name (`secs.M<usec>…`), else the mtime."""
    match = _ARRIVAL.match(name)
    if match:
        return int(match.group(1)), int(match.group(2)), name
    return mtime, 0, name


# ------------------------------------------------------------------- writing

_counter = itertools.count(1)


def write_message(folder: Path, base: str, filename: str, data: bytes, mtime: int | None) -> None:
    """Put a new message durably at `folder/cur/filename`, never replacing a file.

    Written in tmp/, fsync'd, linked into cur/, and cur/ fsync'd: once this returns the
    message survives a crash, as a `250` does for SMTP.
    """
    tmp = folder / "tmp" / f"{base}.{next(_counter)}"
    final = folder / "cur" / filename
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.link(tmp, final)  # link, not rename: refuses to replace an existing file
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    fsync_dir(final.parent)


def link_message(source: Path, folder: Path, filename: str) -> None:
    """Copy a message into another folder: a hard link when possible, else a copy."""
    final = folder / "cur" / filename
    try:
        os.link(source, final)
    except OSError:
        data = source.read_bytes()
        write_message(
            folder, filename.partition(":")[0], filename, data, int(source.stat().st_mtime)
        )
        return
    fsync_dir(final.parent)


def list_sizes(folder: Path) -> list[int]:
    """Sizes of the message files in a folder's cur/ and new/ (for quota accounting)."""
    sizes = []
    for sub in ("cur", "new"):
        with contextlib.suppress(FileNotFoundError), os.scandir(folder / sub) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    sizes.append(entry.stat(follow_symlinks=False).st_size)
    return sizes


def remove_files(paths: list[Path]) -> list[Path]:
    """Unlink message files; returns the directories to fsync. Missing files are fine."""
    dirs: set[Path] = set()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        dirs.add(path.parent)
    return sorted(dirs)
