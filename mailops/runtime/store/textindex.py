"""The text index: what IMAP SEARCH's string keys need, kept so that a search does not
read every message.

One SQLite file per user beside the store's index (`TEXT_INDEX_FILE`). `index.py`
never touches it, and it may be deleted at any time: searches build it again. Per
folder, known by its UIDVALIDITY (a folder whose UIDs were reset starts afresh):

- `msgs_<n>`: a row per message with its sent day, the values of the ADDRESS_FIELDS
  and which of the two texts below are held. FROM, TO, CC, BCC, SUBJECT and SENT*
  are answered from this small table alone.
- `head_<n>` and `body_<n>`: header lines and body text in `mailtext`'s normal form,
  each with an FTS5 index (`headfts_<n>`, `bodyfts_<n>`, external content) using the
  trigram tokenizer. A phrase query of a string's trigrams, in order, finds the
  texts that contain it exactly, for strings of three characters or more. The
  tokenizer is case-sensitive over text that `normalize` already folded, so its own
  folding can never make it disagree with a scan. Shorter strings are looked for
  in the stored text with instr().

The parts fill lazily, for the messages a search needs them for: a cold SEARCH FROM
reads only the headers, and the first BODY or TEXT search pays for the body index.
Messages found expunged are dropped. Text cut at MAX_HEADER/MAX_BODY characters is
marked, and the index's misses there are checked by reading the message.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from mailops.runtime.log import log
from mailops.runtime.store.folder import MessageGone
from mailops.runtime.store.mailtext import (
    ADDRESS_FIELDS,
    EMPTY_HEAD,
    Document,
    Head,
    body_of,
    head_of,
    lines_have,
    structure_of,
)

if TYPE_CHECKING:
    from mailops.runtime.store.mailbox import FolderView, Mailbox

TEXT_INDEX_FILE = "mailops-text.sqlite"
SCHEMA_VERSION = 1
TRIGRAM = 3  # the shortest string the trigram index looks up
BATCH = 500  # messages read at once (their cache entries in one query)
# Messages indexed per transaction: a commit costs FTS5 a segment flush, so a cold
# index is built in few of them; a crash loses at most one.
COMMIT_EVERY = 2000
BULK = 1000  # messages to index at once from which a bigger page cache pays
BULK_CACHE_KB = 32768  # SQLite page cache then (default: 2 MB)

# What a message's row says it holds (msgs_<n>.parts).
ROW = 0  # the row itself: sent day and address fields
HEAD, HEAD_CUT, BODY, BODY_CUT = 1, 2, 4, 8
_CUT = {HEAD: HEAD_CUT, BODY: BODY_CUT}


class FolderText(Protocol):
    """What SEARCH asks about the content of a view's messages. Each method takes
    candidate UIDs and returns those that match; needles are in normal form. Messages
    already expunged (still numbered in the view) have no content: they match none."""

    def header(self, name: str, needle: str, uids: set[int]) -> set[int]: ...

    def body(self, needle: str, uids: set[int]) -> set[int]: ...

    def text(self, needle: str, uids: set[int]) -> set[int]: ...

    def sent(self, uids: set[int]) -> dict[int, int]:
        """uid → sent day (an ordinal) of the candidates whose Date: field has one."""
        ...


def folder_text(view: FolderView) -> FolderText:
    """How SEARCH reads a view's messages: through the text index, or by reading the
    messages when the index cannot be opened."""
    try:
        return IndexedText(index_of(view.mailbox), view)
    except sqlite3.Error as exc:
        log("store.textindex_unavailable", path=view.mailbox.path, error=exc)
        return ScannedText(view)


# ====================================================================== scanning


class ScannedText:
    """FolderText by reading every candidate: the reference the index must agree
    with, and the fallback when the index cannot be used."""

    KEEP = 64  # documents kept for the next key of the same program

    def __init__(self, view: FolderView) -> None:
        self.view = view
        self._documents: dict[int, Document] = {}

    def _each(self, uids: set[int]) -> Iterator[tuple[int, Document]]:
        wanted = sorted(uids & self.view.present())
        yield from ((uid, self._documents[uid]) for uid in wanted if uid in self._documents)
        fresh = [uid for uid in wanted if uid not in self._documents]
        for uid, data, blob in _read(self.view, fresh, structure=True):
            doc = _document(self.view, uid, data, blob)
            if len(self._documents) < self.KEEP:
                self._documents[uid] = doc
            yield uid, doc

    def header(self, name: str, needle: str, uids: set[int]) -> set[int]:
        return {uid for uid, doc in self._each(uids) if doc.head.has(name, needle)}

    def body(self, needle: str, uids: set[int]) -> set[int]:
        return {uid for uid, doc in self._each(uids) if needle in doc.body}

    def text(self, needle: str, uids: set[int]) -> set[int]:
        return {uid for uid, doc in self._each(uids) if doc.has_text(needle)}

    def sent(self, uids: set[int]) -> dict[int, int]:
        return {uid: doc.head.sent for uid, doc in self._each(uids) if doc.head.sent is not None}


def _read(
    view: FolderView, uids: list[int], structure: bool
) -> Iterator[tuple[int, bytes, bytes | None]]:
    """(uid, bytes, cache blob or None) of the messages that can still be read; the
    blob (with the MIME structure) only when `structure` is wanted."""
    for start in range(0, len(uids), BATCH):
        chunk = uids[start : start + BATCH]
        blobs = _cached(view, chunk) if structure else {}
        for uid in chunk:
            try:
                data = view.read(uid)
            except MessageGone:
                continue
            except OSError as exc:  # unreadable (permissions, I/O): searched as gone
                log("store.textindex_unreadable", folder=view.name, uid=uid, error=exc)
                continue
            yield uid, data, blobs.get(uid)


def _cached(view: FolderView, uids: list[int]) -> dict[int, bytes]:
    """The store's cache blobs (MIME structure) of messages; none when making them
    fails, so that each message is parsed on its own (and fails on its own)."""
    try:
        return view.cached(uids)
    except Exception as exc:
        log("store.textindex_no_cache", folder=view.name, error=repr(exc))
        return {}


def _document(view: FolderView, uid: int, data: bytes, blob: bytes | None) -> Document:
    """All the text of a message, decoded as the index decodes it: header and body
    each on its own, so that one that fails leaves the other searchable there too."""
    head = _decoded(view, uid, head_of, data) or EMPTY_HEAD
    body = _decoded(view, uid, _body, data, blob) or ("", False)
    return Document(head, body[0])


def _decoded(view: FolderView, uid: int, decode: Callable[..., Any], *args: Any) -> Any:
    """decode(*args), or None for a message that breaks the decoder: it must not break
    every search of its folder, so it is logged and searched as one without text."""
    try:
        return decode(*args)
    except Exception as exc:
        log("store.textindex_undecodable", folder=view.name, uid=uid, error=repr(exc))
        return None


# ====================================================================== indexed


class IndexedText:
    """FolderText from the text index, filled for the view's messages as needed."""

    def __init__(self, index: TextIndex, view: FolderView) -> None:
        self.index = index
        self.view = view
        self._scan = ScannedText(view)
        self._folder = 0
        self._live: set[int] = set()  # the view's messages still in the folder
        self._started = False
        self._broken = False

    # ----------------------------------------------------------- FolderText

    def header(self, name: str, needle: str, uids: set[int]) -> set[int]:
        return self._guarded("header", name, needle, uids)

    def body(self, needle: str, uids: set[int]) -> set[int]:
        return self._guarded("body", needle, uids)

    def text(self, needle: str, uids: set[int]) -> set[int]:
        return self._guarded("text", needle, uids)

    def sent(self, uids: set[int]) -> dict[int, int]:
        return self._guarded("sent", uids)

    def _guarded(self, name: str, *args: Any) -> Any:
        """Answer from the index; when SQLite fails, by reading the messages (and a
        damaged file is thrown away, to be built again by a later search)."""
        if not self._broken:
            try:
                with self.index.lock:
                    return getattr(self, "_" + name)(*args)
            except sqlite3.OperationalError as exc:  # busy, disk full: next time, maybe
                log("store.textindex_unavailable", path=self.index.path, error=exc)
                self._broken = True
            except sqlite3.DatabaseError as exc:
                log("store.textindex_corrupt", path=self.index.path, error=exc)
                self._broken = True
                self.index.reset()
        return getattr(self._scan, name)(*args)

    # ----------------------------------------------------------- keeping current

    @property
    def _held(self) -> Held:
        return self.index.held(self._folder)

    def _start(self) -> None:
        """Find the folder's tables and forget the messages expunged since last time."""
        view, index = self.view, self.index
        self._folder = index.folder(view.uidvalidity)
        current = view.present()
        gone = index.held(self._folder).rows - current
        if gone:
            index.remove(self._folder, gone)
        self._live = {m.uid for m in view.messages} & current
        self._started = True

    def _need(self, parts: int) -> None:
        """Index the row and `parts` (HEAD and/or BODY) of every live message that
        lacks them; each message is read once for all it lacks."""
        if not self._started:
            self._start()
        held = self._held
        missing = sorted(self._live - self._candidates(self._live, parts))
        if not missing:
            return
        with self.index.bulk(len(missing)):
            for start in range(0, len(missing), COMMIT_EVERY):
                chunk = missing[start : start + COMMIT_EVERY]
                self.index.fill(self._folder, self._documents(chunk, parts, held))

    def _documents(self, uids: list[int], parts: int, held: Held) -> Iterator[Entry]:
        """What the index lacks of these messages, decoded."""
        view = self.view
        for uid, data, blob in _read(view, uids, structure=bool(parts & BODY)):
            head = body = None
            lines = bool(parts & HEAD) and uid not in held.parts[HEAD]
            if lines or uid not in held.rows:
                head = _decoded(view, uid, _indexed_head, data, lines) or EMPTY_HEAD
            if parts & BODY and uid not in held.parts[BODY]:
                body = _decoded(view, uid, _indexed_body, data, blob) or ("", False)
            yield Entry(uid, head, lines, body)

    def _candidates(self, uids: set[int], parts: int) -> set[int]:
        """The candidates whose row and `parts` the index holds (others are expunged)."""
        held = self._held
        found = uids & held.rows
        for part in (HEAD, BODY):
            if parts & part:
                found &= held.parts[part]
        return found

    # ----------------------------------------------------------- the queries

    def _sent(self, uids: set[int]) -> dict[int, int]:
        self._need(ROW)
        sent = self._held.sent
        return {uid: sent[uid] for uid in self._candidates(uids, ROW) if uid in sent}

    def _header(self, name: str, needle: str, uids: set[int]) -> set[int]:
        if name in ADDRESS_FIELDS:
            self._need(ROW)
            return self._candidates(uids, ROW) & self.index.fields(self._folder, name, needle)
        self._need(HEAD)
        uids = self._candidates(uids, HEAD)
        # Messages with a `name` field whose value may hold the needle, then the exact
        # test on their stored header lines.
        probe = needle if len(needle) >= TRIGRAM else f"\n{name}: "
        maybe = self.index.match(self._folder, HEAD, probe, uids)
        hits = {
            uid
            for uid, lines in self.index.texts(self._folder, HEAD, maybe)
            if lines_have(lines, name, needle)
        }
        return hits | self._recheck(uids - hits, HEAD, lambda c: self._scan.header(name, needle, c))

    def _body(self, needle: str, uids: set[int]) -> set[int]:
        self._need(BODY)
        uids = self._candidates(uids, BODY)
        hits = self.index.match(self._folder, BODY, needle, uids) if needle else uids
        return hits | self._recheck(uids - hits, BODY, lambda c: self._scan.body(needle, c))

    def _text(self, needle: str, uids: set[int]) -> set[int]:
        self._need(HEAD | BODY)
        uids = self._candidates(uids, HEAD | BODY)
        if not needle:
            return uids
        hits = self.index.match(self._folder, HEAD, needle, uids)
        hits |= self.index.match(self._folder, BODY, needle, uids - hits)
        misses = uids - hits
        return hits | self._recheck(misses, HEAD | BODY, lambda c: self._scan.text(needle, c))

    def _recheck(
        self, misses: set[int], parts: int, scan: Callable[[set[int]], set[int]]
    ) -> set[int]:
        """Misses among messages whose text the index holds only in part, by reading."""
        held = self._held
        partial = set()
        for part in (HEAD, BODY):
            if parts & part:
                partial |= misses & held.cut[part]
        return scan(partial) if partial else set()


def _indexed_head(data: bytes, lines: bool) -> Head:
    return head_of(data, limit=True, lines=lines)


def _indexed_body(data: bytes, blob: bytes | None) -> tuple[str, bool]:
    return body_of(data, structure_of(data, blob), limit=True)


def _body(data: bytes, blob: bytes | None) -> tuple[str, bool]:
    return body_of(data, structure_of(data, blob))


# ============================================================== the SQLite file

_SCHEMA = """
CREATE TABLE folders (id INTEGER PRIMARY KEY, uidvalidity INTEGER NOT NULL UNIQUE);
"""
_FOLDER_TABLES = """
CREATE TABLE msgs_{n} (
    uid INTEGER PRIMARY KEY,
    sent INTEGER,
    parts INTEGER NOT NULL,
    hfrom TEXT, hto TEXT, hcc TEXT, hbcc TEXT, hsubject TEXT
);
CREATE TABLE head_{n} (uid INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE body_{n} (uid INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE VIRTUAL TABLE headfts_{n} USING fts5(text, content='head_{n}', content_rowid='uid',
    tokenize='trigram case_sensitive 1', detail=full, columnsize=0);
CREATE VIRTUAL TABLE bodyfts_{n} USING fts5(text, content='body_{n}', content_rowid='uid',
    tokenize='trigram case_sensitive 1', detail=full, columnsize=0);
"""
_TABLES = ("msgs", "head", "body", "headfts", "bodyfts")
_TEXT_TABLE = {HEAD: "head", BODY: "body"}
_QUERY_CHUNK = 500  # bound parameters per statement, well under SQLite's limit


class Entry(NamedTuple):
    """What to add to the index for one message: its head (for a new row, and its
    lines when `lines`), and its body (text, cut?) when not None."""

    uid: int
    head: Head | None
    lines: bool
    body: tuple[str, bool] | None


class Held:
    """What the index holds for one folder, kept in memory so that a search does not
    read ten thousand rows to learn it: the messages with a row, their sent days, and
    per text part the messages that have it and those whose text was cut."""

    def __init__(self, rows: Iterable[tuple[int, int | None, int]]) -> None:
        self.rows: set[int] = set()
        self.sent: dict[int, int] = {}
        self.parts: dict[int, set[int]] = {HEAD: set(), BODY: set()}
        self.cut: dict[int, set[int]] = {HEAD: set(), BODY: set()}
        for uid, sent, parts in rows:
            self.add(uid, sent)
            for part in (HEAD, BODY):
                if parts & part:
                    self.add_part(uid, part, bool(parts & _CUT[part]))

    def add(self, uid: int, sent: int | None) -> None:
        self.rows.add(uid)
        if sent is not None:
            self.sent[uid] = sent

    def add_part(self, uid: int, part: int, cut: bool) -> None:
        self.parts[part].add(uid)
        if cut:
            self.cut[part].add(uid)

    def discard(self, uid: int) -> None:
        self.rows.discard(uid)
        self.sent.pop(uid, None)
        for part in (HEAD, BODY):
            self.parts[part].discard(uid)
            self.cut[part].discard(uid)


class TextIndex:
    """The text index file of one user. Callers hold `lock` around every call (one
    connection, used from worker threads); SQLite's locking covers other processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.db = _open(path)
        self._held: dict[int, Held] = {}
        self._version = self._data_version()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    def reset(self) -> None:
        """Throw the file away and start empty (it is only a cache of the mail)."""
        with self.lock:
            self.close()
            _remove(self.path)
            self.db = _open(self.path)
            self._held.clear()
            self._version = self._data_version()

    @contextlib.contextmanager
    def bulk(self, count: int) -> Iterator[None]:
        """A bigger page cache while `count` messages are indexed, if they are many:
        merging FTS segments rereads them. Given back afterwards, since many users'
        indexes stay open."""
        if count < BULK:
            yield
            return
        self.db.execute(f"PRAGMA cache_size = -{BULK_CACHE_KB}")
        try:
            yield
        finally:
            self.db.execute("PRAGMA cache_size = -2000")
            self.db.execute("PRAGMA shrink_memory")

    def _data_version(self) -> int:
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            self._held.clear()  # what memory says may not have been committed
            raise
        self.db.execute("COMMIT")

    # ----------------------------------------------------------- folders

    def folder(self, uidvalidity: int) -> int:
        """The number of a folder's tables, created on first use."""
        found = self.db.execute(
            "SELECT id FROM folders WHERE uidvalidity = ?", (uidvalidity,)
        ).fetchone()
        if found is not None:
            return found[0]
        with self._transaction():
            cursor = self.db.execute("INSERT INTO folders (uidvalidity) VALUES (?)", (uidvalidity,))
            n = cursor.lastrowid
            for statement in _FOLDER_TABLES.format(n=n).split(";"):
                if statement.strip():
                    self.db.execute(statement)
        assert n is not None
        return n

    def prune(self, uidvalidities: set[int]) -> None:
        """Drop the folders that are gone (deleted, or given a new UIDVALIDITY)."""
        rows = self.db.execute("SELECT id, uidvalidity FROM folders").fetchall()
        stale = [n for n, validity in rows if validity not in uidvalidities]
        if not stale:
            return
        with self._transaction():
            for n in stale:
                for table in reversed(_TABLES):
                    self.db.execute(f"DROP TABLE IF EXISTS {table}_{n}")
                self.db.execute("DELETE FROM folders WHERE id = ?", (n,))
                self._held.pop(n, None)

    # ----------------------------------------------------------- messages

    def held(self, n: int) -> Held:
        """What the index holds for folder `n` (read again when another process wrote)."""
        version = self._data_version()
        if version != self._version:
            self._held.clear()
            self._version = version
        held = self._held.get(n)
        if held is None:
            rows = self.db.execute(f"SELECT uid, sent, parts FROM msgs_{n}")
            held = self._held[n] = Held(rows)
        return held

    def fill(self, n: int, entries: Iterable[Entry]) -> None:
        """Add what the entries carry: rows for new messages, header lines, bodies."""
        held = self.held(n)
        with self._transaction():
            for entry in entries:
                uid, head = entry.uid, entry.head
                if head is not None and uid not in held.rows:
                    fields = [head.fields[name] for name in ADDRESS_FIELDS]
                    self.db.execute(
                        f"INSERT OR IGNORE INTO msgs_{n} (uid, sent, parts, hfrom, hto, hcc,"
                        " hbcc, hsubject) VALUES (?, ?, 0, ?, ?, ?, ?, ?)",
                        (uid, head.sent, *fields),
                    )
                    held.add(uid, head.sent)
                if entry.lines and head is not None:
                    self._add_text(n, held, HEAD, uid, head.lines, head.partial)
                if entry.body is not None:
                    self._add_text(n, held, BODY, uid, *entry.body)

    def _add_text(self, n: int, held: Held, part: int, uid: int, text: str, cut: bool) -> None:
        table = _TEXT_TABLE[part]
        cursor = self.db.execute(
            f"INSERT OR IGNORE INTO {table}_{n} (uid, text) VALUES (?, ?)", (uid, text)
        )
        if cursor.rowcount == 1:  # 0: indexed meanwhile by another process
            self.db.execute(f"INSERT INTO {table}fts_{n} (rowid, text) VALUES (?, ?)", (uid, text))
            flags = part | (_CUT[part] if cut else 0)
            self.db.execute(f"UPDATE msgs_{n} SET parts = parts | ? WHERE uid = ?", (flags, uid))
        held.add_part(uid, part, cut)

    def remove(self, n: int, uids: Iterable[int]) -> None:
        """Forget messages (expunged)."""
        held = self.held(n)
        with self._transaction():
            for uid in uids:
                for part, table in _TEXT_TABLE.items():
                    if uid in held.parts[part]:
                        # External content: the FTS index is told the text it forgets.
                        self.db.execute(
                            f"INSERT INTO {table}fts_{n} ({table}fts_{n}, rowid, text)"
                            f" SELECT 'delete', uid, text FROM {table}_{n} WHERE uid = ?",
                            (uid,),
                        )
                        self.db.execute(f"DELETE FROM {table}_{n} WHERE uid = ?", (uid,))
                self.db.execute(f"DELETE FROM msgs_{n} WHERE uid = ?", (uid,))
                held.discard(uid)

    # ----------------------------------------------------------- queries

    def fields(self, n: int, name: str, needle: str) -> set[int]:
        """Messages with a field `name` (one of ADDRESS_FIELDS) that contains `needle`."""
        column = "h" + name
        if not needle:
            rows = self.db.execute(f"SELECT uid FROM msgs_{n} WHERE {column} IS NOT NULL")
        else:
            rows = self.db.execute(
                f"SELECT uid FROM msgs_{n} WHERE instr({column}, ?) > 0", (needle,)
            )
        return {uid for (uid,) in rows}

    def match(self, n: int, part: int, needle: str, uids: set[int]) -> set[int]:
        """The candidates whose text (HEAD or BODY) contains `needle`."""
        if not uids:
            return set()
        table = _TEXT_TABLE[part]
        if len(needle) < TRIGRAM:  # no trigram to look up: search the stored text
            return {uid for uid, text in self.texts(n, part, uids) if needle in text}
        phrase = '"' + needle.replace('"', '""') + '"'
        rows = self.db.execute(
            f"SELECT rowid FROM {table}fts_{n} WHERE {table}fts_{n} MATCH ?", (phrase,)
        )
        return {uid for (uid,) in rows} & uids

    def texts(self, n: int, part: int, uids: set[int]) -> Iterator[tuple[int, str]]:
        """(uid, stored text) of the candidates."""
        table = _TEXT_TABLE[part]
        wanted = sorted(uids)
        for start in range(0, len(wanted), _QUERY_CHUNK):
            chunk = wanted[start : start + _QUERY_CHUNK]
            marks = ",".join("?" * len(chunk))
            yield from self.db.execute(
                f"SELECT uid, text FROM {table}_{n} WHERE uid IN ({marks})", chunk
            )


def _open(path: Path) -> sqlite3.Connection:
    """Open the file, or start a new one when it is damaged or of another version.
    An OperationalError (busy, no space, no permission) says nothing of the file's
    health: it goes to the caller, who reads the messages instead this time."""
    try:
        return _connect(path)
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as exc:
        log("store.textindex_rebuilt", path=path, error=exc)
    _remove(path)
    return _connect(path)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA busy_timeout = 5000")
        # A rollback journal, not WAL: building the index writes mostly new pages, which
        # a rollback journal need not copy, where WAL writes every page twice. Readers
        # in other processes wait meanwhile; there are none in normal operation.
        db.execute("PRAGMA journal_mode = TRUNCATE")
        # A commit lost in a crash costs indexing a few messages again, never a wrong
        # answer: the index is a cache.
        db.execute("PRAGMA synchronous = NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.executescript(f"BEGIN;\n{_SCHEMA}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;")
        elif version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"text index schema {version}, expected {SCHEMA_VERSION}")
        db.execute("SELECT 1 FROM folders LIMIT 1").fetchall()
    except BaseException:
        db.close()
        raise
    return db


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# ============================================================== one per mailbox

_indexes: weakref.WeakKeyDictionary[Mailbox, TextIndex] = weakref.WeakKeyDictionary()
_indexes_lock = threading.Lock()


def index_of(mailbox: Mailbox) -> TextIndex:
    """The mailbox's text index, opened on first use and shared by its sessions;
    folders that no longer exist are dropped from it."""
    with _indexes_lock:
        index = _indexes.get(mailbox)
        if index is None:
            index = _indexes[mailbox] = TextIndex(mailbox.path / TEXT_INDEX_FILE)
    with mailbox.lock:
        validities = {row.uidvalidity for row in mailbox.index.folders()}
    with index.lock:
        index.prune(validities)
    return index
