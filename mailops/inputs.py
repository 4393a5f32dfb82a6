"""What a render read besides the spec: files and environment variables.

apply's in-sync memo (deploy/memo.py) must know that rendering again would
read the same things. Reads are noted for the whole process from the moment
a command starts rendering (`forget`), rather than inside a scope that a read
could escape: a memo that missed a read would no longer notice its change.

Only names are kept here, never what was read: the memo knows a file by its
`stat` signature, and it does not remember a render that read any variable,
since a variable's value (often a password) cannot be checked again without
writing it, or a digest of it, down.
"""

from __future__ import annotations

import os
import time

_files: set[str] = set()
_variables: set[str] = set()


def forget() -> None:
    """Start a new account (a command that is about to render)."""
    _files.clear()
    _variables.clear()


def note_file(path: str | os.PathLike) -> None:
    _files.add(os.path.abspath(path))


def note_variable(name: str) -> None:
    _variables.add(name)


def files() -> list[str]:
    return sorted(_files)


def variables() -> list[str]:
    return sorted(_variables)


# A file changed within this long of its signature being taken could change
# again without its signature changing (timestamps move in clock ticks): such
# a file is "racy" and no memo is made from it (git's index has the same rule).
RACY_NS = 2_000_000_000


def signature(path: str) -> list[int] | None:
    """(device, inode, size, mtime, ctime) of the file; None when it is missing
    or changed too recently to be told apart from its next change."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_NS:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def unchanged(path: str, recorded: list[int]) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns] == recorded
