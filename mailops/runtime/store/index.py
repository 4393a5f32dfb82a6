"""The per-user index: one SQLite database (WAL) beside the user's Maildir.

It remembers what the Maildir cannot: per folder UIDVALIDITY, UIDNEXT and
HIGHESTMODSEQ; per message its UID, MODSEQ, keywords, sizes, internal date, and a
cache of its parsed header, envelope and body structure. The Maildir stays the truth
for which messages exist, their bytes and their system flags; the index can always be
rebuilt from it, at the price of new UIDs (a new UIDVALIDITY).

Durability: synchronous=FULL makes every commit reach the disk before it returns, so
a UID or MODSEQ that a client was shown is never handed out again after a crash.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from mailops.runtime.durable import write_durable
from mailops.runtime.log import log
from mailops.runtime.store import flags as flagmod

INDEX_FILE = "mailops-index.sqlite"
UIDVALIDITY_FILE = "mailops-uidvalidity"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE folders (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    directory TEXT NOT NULL UNIQUE,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    highestmodseq INTEGER NOT NULL,
    first_recent_uid INTEGER NOT NULL,
    special_use TEXT
);
CREATE TABLE messages (
    folder INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    key TEXT NOT NULL,
    filename TEXT NOT NULL,
    flags TEXT NOT NULL,
    modseq INTEGER NOT NULL,
    size INTEGER NOT NULL,
    vsize INTEGER NOT NULL,
    eol INTEGER NOT NULL,
    internal_date INTEGER NOT NULL,
    PRIMARY KEY (folder, uid)
) WITHOUT ROWID;
CREATE TABLE cache (
    folder INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (folder, uid)
) WITHOUT ROWID;
CREATE TABLE expunged (
    folder INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (folder, uid)
) WITHOUT ROWID;
CREATE TABLE subscriptions (name TEXT PRIMARY KEY);
"""


class IndexCorrupt(Exception):
    """The index file cannot be used; the store rebuilds it from the Maildir."""


class Message(NamedTuple):
    """One message as the index knows it. Immutable: a change makes a new one (`_replace`).

    A named tuple rather than a dataclass: a folder loads thousands at once, and
    building tuples is several times cheaper.
    """

    uid: int
    key: str  # the Maildir base name: unique in its folder, stable for the message's life
    flags: frozenset[str]
    modseq: int
    size: int  # bytes in the file
    vsize: int  # bytes with every line ending as CRLF (IMAP RFC822.SIZE)
    eol: bool  # the file ends with a line break (or is empty)
    internal_date: int  # seconds since the epoch: when it arrived


@dataclass(slots=True)
class FolderRow:
    id: int
    name: str
    directory: str  # "" for INBOX, ".Name" otherwise (relative to the user's Maildir)
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    first_recent_uid: int
    special_use: str | None


class Stored(NamedTuple):
    """A message with the file that holds it ("cur/<name>" or "new/<name>")."""

    message: Message
    filename: str


class Index:
    """The SQLite index of one user. Not thread-safe: the owner serializes calls."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fresh = not path.exists()
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise IndexCorrupt(str(exc)) from exc
        try:
            self._configure(fresh)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise IndexCorrupt(str(exc)) from exc

    def _configure(self, fresh: bool) -> None:
        self.db.execute("PRAGMA busy_timeout = 5000")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        # Read through a memory map: FETCH 1:* reads every cache row, and page reads
        # by system call cost as much as the rest of the work.
        self.db.execute("PRAGMA mmap_size = 268435456")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            tables = self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables and not fresh:
                raise sqlite3.DatabaseError("index has tables but no schema version")
            # executescript commits on its own, so the script carries its transaction.
            self.db.executescript(
                f"BEGIN;\n{_SCHEMA}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"
            )
        elif version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"index schema {version}, expected {SCHEMA_VERSION}")
        # Touch every table: a damaged file often opens fine and fails on first read.
        for table in ("folders", "messages", "cache", "expunged", "subscriptions"):
            self.db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------------ folders

    def folders(self) -> list[FolderRow]:
        rows = self.db.execute(
            "SELECT id, name, directory, uidvalidity, uidnext, highestmodseq,"
            " first_recent_uid, special_use FROM folders ORDER BY name"
        ).fetchall()
        return [FolderRow(*row) for row in rows]

    def add_folder(
        self, name: str, directory: str, uidvalidity: int, special_use: str | None
    ) -> FolderRow:
        """A new folder row (call inside a transaction or alone; it commits itself)."""
        modseq = initial_modseq()
        cursor = self.db.execute(
            "INSERT INTO folders (name, directory, uidvalidity, uidnext, highestmodseq,"
            " first_recent_uid, special_use) VALUES (?, ?, ?, 1, ?, 1, ?)",
            (name, directory, uidvalidity, modseq, special_use),
        )
        assert cursor.lastrowid is not None
        return FolderRow(cursor.lastrowid, name, directory, uidvalidity, 1, modseq, 1, special_use)

    def save_folder(self, row: FolderRow) -> None:
        self.db.execute(
            "UPDATE folders SET name = ?, directory = ?, uidvalidity = ?, uidnext = ?,"
            " highestmodseq = ?, first_recent_uid = ?, special_use = ? WHERE id = ?",
            (
                row.name,
                row.directory,
                row.uidvalidity,
                row.uidnext,
                row.highestmodseq,
                row.first_recent_uid,
                row.special_use,
                row.id,
            ),
        )

    def drop_folder(self, folder_id: int) -> None:
        for table in ("messages", "cache", "expunged"):
            self.db.execute(f"DELETE FROM {table} WHERE folder = ?", (folder_id,))
        self.db.execute("DELETE FROM folders WHERE id = ?", (folder_id,))

    # ----------------------------------------------------------------- messages

    def messages(self, folder_id: int) -> list[Stored]:
        rows = self.db.execute(
            "SELECT uid, key, flags, modseq, size, vsize, eol, internal_date, filename"
            " FROM messages WHERE folder = ? ORDER BY uid",
            (folder_id,),
        )
        flag_sets: dict[str, frozenset[str]] = {}  # a few distinct sets for many messages
        out = []
        for uid, key, text, ms, size, vsize, eol, date, filename in rows:
            flags = flag_sets.get(text)
            if flags is None:
                flags = flag_sets[text] = flagmod.decode(text)
            out.append(Stored(Message(uid, key, flags, ms, size, vsize, eol == 1, date), filename))
        return out

    def put_messages(self, folder_id: int, stored: Iterable[Stored]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO messages (folder, uid, key, filename, flags, modseq,"
            " size, vsize, eol, internal_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    folder_id,
                    s.message.uid,
                    s.message.key,
                    s.filename,
                    flagmod.encode(s.message.flags),
                    s.message.modseq,
                    s.message.size,
                    s.message.vsize,
                    int(s.message.eol),
                    s.message.internal_date,
                )
                for s in stored
            ),
        )

    def expunge(self, folder_id: int, uids: Iterable[int], modseq: int) -> None:
        params = [(folder_id, uid) for uid in uids]
        self.db.executemany("DELETE FROM messages WHERE folder = ? AND uid = ?", params)
        self.db.executemany("DELETE FROM cache WHERE folder = ? AND uid = ?", params)
        self.db.executemany(
            "INSERT OR REPLACE INTO expunged (folder, uid, modseq) VALUES (?, ?, ?)",
            [(folder_id, uid, modseq) for _, uid in params],
        )

    def expunged_since(self, folder_id: int, modseq: int) -> list[int]:
        rows = self.db.execute(
            "SELECT uid FROM expunged WHERE folder = ? AND modseq > ? ORDER BY uid",
            (folder_id, modseq),
        )
        return [uid for (uid,) in rows]

    # -------------------------------------------------------------------- cache

    def cached(self, folder_id: int, uids: Iterable[int]) -> dict[int, bytes]:
        wanted = list(uids)
        found: dict[int, bytes] = {}
        low, high = min(wanted, default=0), max(wanted, default=0)
        if len(wanted) > 50 and high - low < 2 * len(wanted):
            # Most of a UID range (FETCH 1:*): one range scan beats lookups by key.
            rows = self.db.execute(
                "SELECT uid, data FROM cache WHERE folder = ? AND uid BETWEEN ? AND ?",
                (folder_id, low, high),
            )
            chosen = set(wanted)
            if len(chosen) == high - low + 1:
                return dict(rows)  # every UID of the range
            return {uid: data for uid, data in rows if uid in chosen}
        for start in range(0, len(wanted), 500):  # SQLite caps bound parameters
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT uid, data FROM cache WHERE folder = ? AND uid IN ({marks})",
                (folder_id, *chunk),
            )
            found.update(rows)
        return found

    def put_cache(self, folder_id: int, items: Iterable[tuple[int, bytes]]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO cache (folder, uid, data) VALUES (?, ?, ?)",
            ((folder_id, uid, data) for uid, data in items),
        )

    # ------------------------------------------------------------ subscriptions

    def subscriptions(self) -> set[str]:
        return {name for (name,) in self.db.execute("SELECT name FROM subscriptions")}

    def subscribe(self, name: str, on: bool) -> None:
        if on:
            self.db.execute("INSERT OR IGNORE INTO subscriptions (name) VALUES (?)", (name,))
        else:
            self.db.execute("DELETE FROM subscriptions WHERE name = ?", (name,))


def initial_modseq() -> int:
    """The first MODSEQ of a new or rebuilt folder: microseconds since the epoch.

    A rebuilt index must never hand out a MODSEQ lower than one a client saw from the
    index it replaces. Counting from the clock keeps that promise as long as fewer
    than a million changes a second were made, which no mailbox comes near.
    """
    return time.time_ns() // 1000


def open_index(maildir: Path) -> tuple[Index, list[FolderRow] | None]:
    """Open the user's index; when it is unusable, set it aside and start a new one.

    Returns the index and, when it had to be replaced, the folder rows that could still
    be read from the damaged file (their UIDVALIDITY tells the rebuild what to avoid),
    or an empty list when nothing could be read.
    """
    path = maildir / INDEX_FILE
    try:
        return Index(path), None
    except IndexCorrupt as exc:
        log("store.index_corrupt", path=path, error=exc)
    salvaged = _salvage_folders(path)
    _set_aside(path)
    return Index(path), salvaged


def _salvage_folders(path: Path) -> list[FolderRow]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT id, name, directory, uidvalidity, uidnext, highestmodseq,"
                " first_recent_uid, special_use FROM folders"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []
    return [FolderRow(*row) for row in rows]


def _set_aside(path: Path) -> None:
    """Move a damaged index out of the way (kept once, for a post-mortem)."""
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(source, Path(f"{path}.broken{suffix}"))


def next_uidvalidity(maildir: Path, avoid: Iterable[int] = (), count: int = 1) -> int:
    """The first of `count` UIDVALIDITY values never used before in this Maildir.

    The clock alone could repeat a value (an index rebuilt within the second it was
    created), so the last value issued is kept in a small file beside the index and
    written durably before any of the new values is used.
    """
    marker = maildir / UIDVALIDITY_FILE
    try:
        last = int(marker.read_text().strip() or 0)
    except (OSError, ValueError):
        last = 0
    first = max(int(time.time()), last + 1, *(v + 1 for v in avoid))
    if first + count > 2**32:  # IMAP's nz-number is 32 bits; wrap far from recent values
        first = 1
    write_durable(marker, f"{first + count - 1}\n".encode(), tmp_dir=maildir / "tmp")
    return first
