"""Files on the host: hashes, staged atomic writes, backups.

A write is staged first (temp name in the target's folder, fsynced, with its
mode and owner) and only renamed into place once every file of a transaction
is staged, so a failure while writing leaves the old files untouched. Temp
names carry a fixed marker, so a later session can sweep what a killed one
left behind.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
from pathlib import Path

try:  # the builtin hash: hashlib would first load OpenSSL, slower than hashing config files
    from _sha256 import sha256
except ImportError:  # a Python built without it
    from hashlib import sha256

TMP_MARK = ".mailops-tmp-"


def sha256_of(path: Path) -> str:
    digest = sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe(path: Path) -> dict | None:
    """sha256, mode and owner of a regular file; None when there is none."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return {"sha256": None, "mode": stat.S_IMODE(info.st_mode), "kind": "not a file"}
    return {
        "sha256": sha256_of(path),
        "mode": stat.S_IMODE(info.st_mode),
        "owner": _user_name(info.st_uid),
        "group": _group_name(info.st_gid),
        "size": info.st_size,
    }


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def ids(owner: str | None, group: str | None) -> tuple[int, int]:
    """uid and gid for chown; -1 leaves that one as it is."""
    uid = pwd.getpwnam(owner).pw_uid if owner else -1
    gid = grp.getgrnam(group).gr_gid if group else -1
    return uid, gid


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path, mode: int, owner: str | None = None, group: str | None = None) -> None:
    """Make the folder (and parents) if missing; set mode and owner when asked."""
    if not path.is_dir():
        path.mkdir(parents=True, mode=mode)
        os.chmod(path, mode)  # mkdir's mode passes through the umask
    elif stat.S_IMODE(path.stat().st_mode) != mode:
        os.chmod(path, mode)
    if owner or group:
        uid, gid = ids(owner, group)
        info = path.stat()
        if (uid not in (-1, info.st_uid)) or (gid not in (-1, info.st_gid)):
            os.chown(path, uid, gid)


def stage(path: Path, data: bytes, mode: int, owner: str | None, group: str | None) -> Path:
    """Write `data` beside `path` under a temp name, fsynced, mode and owner set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}{TMP_MARK}{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if owner or group:
            os.chown(tmp, *ids(owner, group))
        os.chmod(tmp, mode)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def commit(staged: list[tuple[Path, Path]]) -> None:
    """Rename every staged file into place, then fsync each folder once."""
    folders = set()
    for tmp, path in staged:
        os.replace(tmp, path)
        folders.add(path.parent)
    for folder in folders:
        fsync_dir(folder)


def remove(paths: list[Path]) -> None:
    folders = set()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            folders.add(path.parent)
    for folder in folders:
        fsync_dir(folder)


def write_now(path: Path, data: bytes, mode: int, owner=None, group=None) -> None:
    commit([(stage(path, data, mode, owner, group), path)])


def sweep(folders: list[Path]) -> list[str]:
    """Remove temp files a killed session left in these folders (not recursive)."""
    removed = []
    for folder in folders:
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if TMP_MARK in entry.name and entry.name.startswith("."):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                        removed.append(entry.path)
    return removed


def copy_into_backup(path: Path, backup_root: Path) -> Path:
    """Copy `path` to the same absolute path under `backup_root`, metadata kept."""
    import shutil

    target = backup_root / str(path).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copy2(path, target)
    with contextlib.suppress(PermissionError):
        info = path.stat()
        os.chown(target, info.st_uid, info.st_gid)
    with open(target, "rb") as handle:
        os.fsync(handle.fileno())
    return target
