"""Maildir++ mailboxes on disk: `<data>/mail/<domain>/<user>/{cur,new,tmp}`.

For now this is the MDA side: building the file a delivery stores, with a unique
Maildir name, and checking the quota. The files themselves are made durable by the
group commit (`mailops.runtime.durable`), together with every other copy of the same
SMTP transaction. The store proper (UID index, flags, folders, the API the IMAP and
POP3 servers use) will grow on the `Maildir` class.

Names follow the Maildir spec (https://cr.yp.to/proto/maildir.html) with the
Maildir++ size field: `<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>`. The size lets the
quota be summed from directory listings alone, as Dovecot and Courier do.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mailops.runtime.durable import PendingFile, ensure_dirs

MAX_DOMAIN_BYTES = 253  # longest DNS name
MAX_USER_BYTES = 255  # longest file name (NAME_MAX); far beyond any real local part
DIR_MODE = 0o700
FILE_MODE = 0o600

# The Maildir spec asks for '/' and ':' in the host name to be written as octal escapes
# ('/' would make a path, ':' starts the flags of a name in cur/). ',' separates the
# Maildir++ fields (',S=') and is escaped the same way so sizes parse unambiguously.
_HOST_ESCAPES = str.maketrans({"/": "\\057", ":": "\\072", ",": "\\054"})

# One counter per process: with the pid it makes names unique even for deliveries in
# the same microsecond. itertools.count is safe to share between threads.
_deliveries = itertools.count(1)


class InvalidMailboxName(ValueError):
    """A domain or user name that cannot be a mailbox directory."""


@dataclass(frozen=True)
class QuotaExceeded:
    """The message does not fit: `used` bytes are stored, `quota` are allowed."""

    used: int
    quota: int


def mailbox_path(data_dir: Path, domain: str, user: str) -> Path:
    """The mailbox directory of `user@domain`, refusing names that could leave data_dir.

    Names are used as given: the address directory hands over canonical (lower-case)
    names, so one mailbox never gets two spellings.
    """
    _check_name("domain", domain, MAX_DOMAIN_BYTES)
    _check_name("user", user, MAX_USER_BYTES)
    return data_dir / "mail" / domain / user


def _check_name(kind: str, name: str, max_bytes: int) -> None:
    if not name:
        raise InvalidMailboxName(f"empty {kind} name")
    # '.' and '..' would climb the tree; any leading dot would also make a hidden
    # directory that Maildir++ reserves for folders ('.Sent').
    if name.startswith("."):
        raise InvalidMailboxName(f"{kind} name may not start with '.': {name!r}")
    if "/" in name or "\\" in name:
        raise InvalidMailboxName(f"{kind} name may not contain '/' or '\\': {name!r}")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise InvalidMailboxName(f"{kind} name may not contain control characters: {name!r}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidMailboxName(f"{kind} name is not valid text: {name!r}") from None
    if size > max_bytes:
        raise InvalidMailboxName(f"{kind} name is longer than {max_bytes} bytes")


def escape_hostname(hostname: str) -> str:
    return (hostname or "localhost").translate(_HOST_ESCAPES)


def unique_name(escaped_host: str, size: int) -> str:
    """A Maildir file name no other delivery, in this or another process, will use."""
    secs, usecs = divmod(time.time_ns() // 1000, 1_000_000)
    return f"{secs}.M{usecs}P{os.getpid()}Q{next(_deliveries)}.{escaped_host},S={size}"


def size_from_name(name: str) -> int | None:
    """The `,S=<size>` of a Maildir++ name (before any ':2,flags'), if it has one."""
    for field in name.partition(":")[0].split(",")[1:]:
        if field.startswith("S=") and field[2:].isdigit():
            return int(field[2:])
    return None


class Maildir:
    """One Maildir++ mailbox (its INBOX; folders are `.Name` subdirectories)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path / "tmp"
        self.new = path / "new"
        self.cur = path / "cur"

    def create(self) -> None:
        """Create the mailbox (and missing parents) durably; cheap when it exists."""
        for sub in (self.cur, self.new, self.tmp):
            ensure_dirs(sub, DIR_MODE)

    def usage(self) -> int:
        """Bytes stored in cur/ and new/ of the INBOX and every `.Folder`, from the names'
        sizes (stat where missing): the quota covers all of a user's folders."""
        total = 0
        try:
            with os.scandir(self.path) as entries:
                folders = [Path(e.path) for e in entries if e.name[:1] == "." and e.is_dir()]
        except FileNotFoundError:
            folders = []
        subs = [self.cur, self.new] + [f / s for f in folders for s in ("cur", "new")]
        for sub in subs:
            try:
                entries = os.scandir(sub)
            except FileNotFoundError:
                continue
            with entries:
                for entry in entries:
                    total += _stored_size(entry)
        return total


def _stored_size(entry: os.DirEntry[str]) -> int:
    if entry.name.startswith("."):
        return 0
    size = size_from_name(entry.name)
    if size is not None:
        return size
    try:
        return entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        return 0  # moved or expunged while we were listing


class MaildirDelivery:
    """Prepares deliveries into the mailboxes under `<data_dir>/mail/`.

    Quota usage is summed from disk once per mailbox, then kept up to date in memory
    for this process's deliveries (other writers to the same Maildir are not seen
    until restart). `prepare` is safe to call from several threads; the first call for
    a mailbox lists it, so on the event loop it belongs in a thread (`asyncio.to_thread`).
    """

    def __init__(self, data_dir: Path, hostname: str) -> None:
        self._data_dir = data_dir
        self._host = escape_hostname(hostname)
        self._usage: dict[Path, int] = {}
        self._lock = threading.Lock()
        # Mailboxes seen by this process, and those whose directories are known to
        # exist: prepare() runs on the event loop once per copy of every message, so
        # it skips re-validating names and re-checking directories (~100 µs).
        self._boxes: dict[tuple[str, str], Maildir] = {}
        self._created: set[Path] = set()

    def mailbox(self, domain: str, user: str) -> Maildir:
        box = self._boxes.get((domain, user))
        if box is None:
            box = Maildir(mailbox_path(self._data_dir, domain, user))
            self._boxes[(domain, user)] = box
        return box

    def prepare(
        self,
        domain: str,
        user: str,
        message: bytes,
        *,
        return_path: str,
        delivered_to: str,
        quota: int | None,
    ) -> PendingFile | QuotaExceeded:
        """The file that delivers `message` to `user@domain`, for `GroupCommit.commit`.

        `return_path` is the envelope sender as a bare address ('' for the null
        sender of bounces); `quota` is in bytes, None for no limit. The size is reserved
        against the quota at once, so concurrent deliveries cannot overshoot together;
        call `abandon` if the commit fails.
        """
        box = self.mailbox(domain, user)
        data = delivery_headers(message, return_path, delivered_to) + message
        if quota is not None:
            over = self._reserve(box, len(data), quota)
            if over is not None:
                return over
        else:
            self._add_usage(box.path, len(data))
        if box.path not in self._created:
            try:
                box.create()
            except BaseException:
                self._add_usage(box.path, -len(data))
                raise
            self._created.add(box.path)
        name = unique_name(self._host, len(data))
        return PendingFile(box.tmp / name, box.new / name, data, FILE_MODE)

    def abandon(self, pending: PendingFile) -> None:
        """Give back the quota reserved by `prepare` for a file that was not committed.

        The mailbox's directories are checked again on its next delivery, in case the
        commit failed because they were removed.
        """
        path = pending.final_path.parent.parent
        self._add_usage(path, -len(pending.data))
        self._created.discard(path)

    def reserve(self, domain: str, user: str, size: int, quota: int | None) -> QuotaExceeded | None:
        """Count `size` more bytes against a mailbox (the store's APPEND and COPY)."""
        box = self.mailbox(domain, user)
        if quota is None:
            self._add_usage(box.path, size)
            return None
        return self._reserve(box, size, quota)

    def release(self, domain: str, user: str, size: int) -> None:
        """Give back `size` bytes: messages expunged, or a reservation not used."""
        self._add_usage(self.mailbox(domain, user).path, -size)

    def usage(self, domain: str, user: str) -> int:
        """Bytes used by the mailbox as this process knows it."""
        box = self.mailbox(domain, user)
        with self._lock:
            known = self._usage.get(box.path)
        return known if known is not None else self._load_usage(box)

    def _reserve(self, box: Maildir, size: int, quota: int) -> QuotaExceeded | None:
        if quota < 0:
            raise ValueError("quota must be at least 0 bytes")
        with self._lock:
            known = box.path in self._usage
        if not known:
            self._load_usage(box)  # outside the lock: listing a big mailbox takes a while
        with self._lock:
            used = self._usage[box.path]
            if used + size > quota:
                return QuotaExceeded(used, quota)
            self._usage[box.path] = used + size
        return None

    def _load_usage(self, box: Maildir) -> int:
        scanned = box.usage()
        with self._lock:
            # Another thread may have listed it meanwhile and counted deliveries since.
            return self._usage.setdefault(box.path, scanned)

    def _add_usage(self, path: Path, size: int) -> None:
        # Mailboxes never checked against a quota are not tracked: nothing to update.
        with self._lock:
            if path in self._usage:
                self._usage[path] = max(self._usage[path] + size, 0)


def delivery_headers(message: bytes, return_path: str, delivered_to: str) -> bytes:
    """`Return-Path:` and `Delivered-To:` lines, with the line ending the message uses."""
    for value in (return_path, delivered_to):
        if any(ch in value for ch in "\r\n\x00"):
            raise ValueError(f"address contains a line break or NUL: {value!r}")
    eol = _line_ending(message)
    text = f"Return-Path: <{return_path}>{eol}Delivered-To: {delivered_to}{eol}"
    # RFC 6531: an SMTPUTF8 address is UTF-8 in the header, like in the envelope.
    return text.encode("utf-8", "surrogateescape")


def _line_ending(message: bytes) -> str:
    # Messages arrive over SMTP with CRLF and are stored as received; a message with
    # bare LF (a local tool) gets LF headers so the file stays consistent.
    newline = message.find(b"\n")
    if newline == -1 or message[:newline].endswith(b"\r"):
        return "\r\n"
    return "\n"


STALE_TMP_SECONDS = 36 * 3600  # the Maildir convention for abandoned tmp/ files


def sweep_stale_tmp(data_dir: Path, now: float | None = None) -> int:
    """Remove files left in Maildir tmp/ folders by deliveries that never finished
    (a crash before the link into new/). Such a file was never acknowledged, and
    only files older than 36 hours are touched, as the Maildir convention says,
    so a delivery in progress is never disturbed. Returns how many were removed."""
    now = time.time() if now is None else now
    removed = 0
    for tmp in (data_dir / "mail").glob("*/*/tmp"):
        removed += _sweep(tmp, now)
    for tmp in (data_dir / "mail").glob("*/*/.*/tmp"):
        removed += _sweep(tmp, now)
    return removed


def _sweep(tmp: Path, now: float) -> int:
    removed = 0
    with contextlib.suppress(OSError), os.scandir(tmp) as entries:
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and (
                    now - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP_SECONDS
                ):
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
    return removed
