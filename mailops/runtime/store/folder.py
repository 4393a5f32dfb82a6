"""One folder's shared state: the index rows in memory, kept in step with the Maildir.

Every session on a folder shares one `FolderState` (through its `Mailbox`, whose lock
guards it); each session keeps its own snapshot in a `FolderView`. Changes follow one
order so that a crash at any point leaves the Maildir right and the index repairable:
the file operation first (link, rename, unlink, with the directory fsync'd), then the
index commit. A crash in between looks, on the next scan, like a change made by
another Maildir tool, which the scan picks up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mailops.runtime.durable import fsync_dir
from mailops.runtime.store import files, mime
from mailops.runtime.store import flags as flagmod
from mailops.runtime.store.index import FolderRow, Index, Message, Stored

# A directory whose mtime is this close to the time we listed it may change again
# within the same timestamp tick unseen, so it is listed again next time.
MTIME_SLACK_NS = 1_000_000_000
# Parse headers and structure at scan time only for batches this small (new mail);
# a rebuild of a big folder leaves the cache to be filled on first use.
EAGER_CACHE_LIMIT = 200

Parser = Callable[[bytes], bytes]


class MessageGone(LookupError):
    """The message was expunged (or its file vanished) since the view was taken."""


@dataclass
class Changes:
    """What one refresh or operation changed, for views and notifications."""

    added: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    expunged: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.expunged)


class FolderState:
    def __init__(self, index: Index, root: Path, row: FolderRow, parser: Parser | None) -> None:
        self.index = index
        self.row = row
        self.path = root / row.directory if row.directory else root
        self._parser = parser
        self.messages: dict[int, Message] = {}  # uid order: UIDs only ever grow
        self.files: dict[int, str] = {}  # uid → "cur/<name>" or "new/<name>"
        self.by_key: dict[str, int] = {}
        self._cur_mtime = -1  # mtime of cur/ at the last listing we can trust
        for stored in index.messages(row.id):
            self._remember(stored.message, stored.filename)

    def _remember(self, message: Message, filename: str) -> None:
        self.messages[message.uid] = message
        self.files[message.uid] = filename
        self.by_key[message.key] = message.uid

    def _forget(self, uid: int) -> None:
        message = self.messages.pop(uid)
        self.files.pop(uid, None)
        if self.by_key.get(message.key) == uid:
            del self.by_key[message.key]

    def file_path(self, uid: int) -> Path:
        try:
            return self.path / self.files[uid]
        except KeyError:
            raise MessageGone(uid) from None

    def file_name(self, uid: int) -> str:
        """`file_path` as a str, joined without pathlib: it runs for every message read."""
        try:
            return f"{self.path}{os.sep}{self.files[uid]}"
        except KeyError:
            raise MessageGone(uid) from None

    def next_modseq(self) -> int:
        self.row.highestmodseq += 1
        return self.row.highestmodseq

    # ------------------------------------------------------------------ scanning

    def refresh(self, force: bool = False) -> Changes:
        """Bring the state in line with the Maildir; commit what changed to the index."""
        changes = Changes()
        new_files = files.list_messages(self.path / "new")
        cur_mtime = files.dir_mtime(self.path / "cur")
        known: dict[int, str] = {}
        unknown: list[str] = []  # "cur/<name>" of files the index does not know yet
        if force or cur_mtime != self._cur_mtime:
            listed_at = time.time_ns()
            cur_files = files.list_messages(self.path / "cur")
            self._diff_cur(cur_files, new_files, known, changes, unknown)
            trusted = listed_at - cur_mtime > MTIME_SLACK_NS
            self._cur_mtime = cur_mtime if trusted else -1
        for key, name in new_files.items():
            target = self._move_to_cur(name)
            uid = self.by_key.get(key)
            if uid is not None:
                known[uid] = target
            else:
                unknown.append(target)
        self._commit_scan(known, unknown, changes)
        return changes

    def _diff_cur(
        self,
        cur_files: dict[str, str],
        new_files: dict[str, str],
        known: dict[int, str],
        changes: Changes,
        unknown: list[str],
    ) -> None:
        for uid, filename in self.files.items():
            key = self.messages[uid].key
            name = cur_files.get(key)
            if name is not None:
                if filename != "cur/" + name:
                    known[uid] = "cur/" + name  # renamed by someone else: flags changed
            elif key not in new_files:
                changes.expunged.append(uid)
        unknown.extend("cur/" + name for key, name in cur_files.items() if key not in self.by_key)

    def _move_to_cur(self, name: str) -> str:
        """Move a file from new/ to cur/ (the Maildir way of saying "seen by a reader")."""
        base, letters = flagmod.split_name(name)
        target = base + flagmod.INFO_SEPARATOR + letters
        source = f"{self.path}/new/{name}"  # str paths: this runs for every new message
        try:
            # link + unlink rather than rename: never replace a file already in cur/.
            os.link(source, f"{self.path}/cur/{target}")
        except FileExistsError:
            return "new/" + name  # a same-named file in cur/: leave this one where it is
        except FileNotFoundError:
            return "new/" + name  # moved by someone else; the next scan sees where
        os.unlink(source)
        return "cur/" + target

    def _commit_scan(self, known: dict[int, str], unknown: list[str], changes: Changes) -> None:
        updated: list[Stored] = []
        modseq = 0
        for uid, filename in known.items():
            old = self.messages[uid]
            letters = flagmod.split_name(filename.partition("/")[2])[1]
            new_flags = flagmod.with_letters(old.flags, letters)
            self.files[uid] = filename
            if new_flags != old.flags:
                modseq = modseq or self.next_modseq()
                self.messages[uid] = old._replace(flags=new_flags, modseq=modseq)
                changes.changed.append(uid)
            updated.append(Stored(self.messages[uid], filename))
        added, cache = self._measure_new(unknown, changes)
        if not (updated or added or changes.expunged):
            return
        modseq = modseq or self.next_modseq()
        added = [Stored(s.message._replace(modseq=modseq), s.filename) for s in added]
        for stored in added:
            self._remember(stored.message, stored.filename)
        for uid in changes.expunged:
            self._forget(uid)
        with self.index.transaction():
            self.index.put_messages(self.row.id, updated + added)
            self.index.put_cache(self.row.id, cache)
            self.index.expunge(self.row.id, changes.expunged, modseq)
            self.index.save_folder(self.row)

    def _measure_new(
        self, unknown: list[str], changes: Changes
    ) -> tuple[list[Stored], list[tuple[int, bytes]]]:
        """Read the files the index does not know and give them UIDs, oldest first."""
        measured = []
        folder = str(self.path) + os.sep
        for filename in unknown:
            result = files.measure(folder + filename)
            if result is not None:
                measured.append((filename, *result))
        measured.sort(key=lambda item: files.arrival_key(item[0][4:], item[1].mtime))
        eager = self._parser is not None and len(measured) <= EAGER_CACHE_LIMIT
        added: list[Stored] = []
        cache: list[tuple[int, bytes]] = []
        for filename, facts, data in measured:
            uid = self.row.uidnext
            self.row.uidnext += 1
            base, letters = flagmod.split_name(filename[4:])
            message = Message(
                uid,
                base,
                flagmod.flags_from_letters(letters),
                0,
                facts.size,
                facts.vsize,
                facts.eol,
                facts.mtime,
            )
            added.append(Stored(message, filename))
            changes.added.append(uid)
            if eager and data is not None and self._parser is not None:
                cache.append((uid, self._parser(data)))
        return added, cache

    # ------------------------------------------------------------------ changes

    def set_flags(self, updates: dict[int, frozenset[str]]) -> Changes:
        """Give messages new flag sets: rename files whose letters change, then the index."""
        changes = Changes()
        renamed_dirs = False
        modseq = 0
        stored: list[Stored] = []
        for uid, wanted in updates.items():
            old = self.messages.get(uid)
            if old is None or wanted == old.flags:
                continue
            filename = self._rename_for(uid, wanted)
            if filename is None:
                continue  # the file vanished: the next refresh reports the expunge
            renamed_dirs |= filename != self.files[uid]
            self.files[uid] = filename
            modseq = modseq or self.next_modseq()
            self.messages[uid] = old._replace(flags=wanted, modseq=modseq)
            stored.append(Stored(self.messages[uid], filename))
            changes.changed.append(uid)
        if renamed_dirs:
            fsync_dir(self.path / "cur")
        if stored:
            with self.index.transaction():
                self.index.put_messages(self.row.id, stored)
                self.index.save_folder(self.row)
        return changes

    def _rename_for(self, uid: int, wanted: frozenset[str]) -> str | None:
        current = self.files[uid]
        old_letters = flagmod.split_name(current.partition("/")[2])[1]
        target = "cur/" + flagmod.file_name(self.messages[uid].key, wanted, old_letters)
        if target == current:
            return current  # only keywords changed: they live in the index
        for _attempt in range(2):
            try:
                os.rename(self.path / current, self.path / target)
                return target
            except FileNotFoundError:
                # Renamed meanwhile by another tool: find it by its base name once.
                found = self._find(self.messages[uid].key)
                if found is None:
                    return None
                current = found
        return None

    def _find(self, key: str) -> str | None:
        for sub in ("cur", "new"):
            name = files.list_messages(self.path / sub).get(key)
            if name is not None:
                return f"{sub}/{name}"
        return None

    def expunge(self, uids: Iterable[int]) -> Changes:
        """Remove messages for good: unlink the files, fsync, then drop them from the index."""
        gone = [uid for uid in dict.fromkeys(uids) if uid in self.messages]
        if not gone:
            return Changes()
        dirs = files.remove_files([self.path / self.files[uid] for uid in gone])
        for directory in dirs:
            fsync_dir(directory)
        modseq = self.next_modseq()
        for uid in gone:
            self._forget(uid)
        with self.index.transaction():
            self.index.expunge(self.row.id, gone, modseq)
            self.index.save_folder(self.row)
        return Changes(expunged=gone)

    def adopt(self, entries: list[tuple[str, str, Message]], cache: dict[int, bytes]) -> list[int]:
        """Index files just placed in cur/ (append, copy, move): returns their new UIDs.

        `entries` are (base, filename, template) where the template carries flags,
        sizes and date; `cache` maps a template's UID to its cached parse, if known.
        """
        modseq = self.next_modseq()
        stored: list[Stored] = []
        new_cache: list[tuple[int, bytes]] = []
        for base, filename, template in entries:
            uid = self.row.uidnext
            self.row.uidnext += 1
            message = template._replace(uid=uid, key=base, modseq=modseq)
            self._remember(message, "cur/" + filename)
            stored.append(Stored(message, "cur/" + filename))
            if template.uid in cache:
                new_cache.append((uid, cache[template.uid]))
        with self.index.transaction():
            self.index.put_messages(self.row.id, stored)
            self.index.put_cache(self.row.id, new_cache)
            self.index.save_folder(self.row)
        return [s.message.uid for s in stored]

    def forget_moved(self, uids: list[int]) -> None:
        """Drop messages whose files were moved to another folder (inside a transaction)."""
        modseq = self.next_modseq()
        for uid in uids:
            self._forget(uid)
        self.index.expunge(self.row.id, uids, modseq)
        self.index.save_folder(self.row)

    # -------------------------------------------------------------------- cache

    def cached(self, uids: list[int]) -> dict[int, bytes]:
        """Parsed header/envelope/structure of messages; parsed and stored when missing."""
        # Blobs in an older format than mime's current one are parsed again.
        stored = self.index.cached(self.row.id, uids)
        found = {uid: blob for uid, blob in stored.items() if mime.is_current(blob)}
        missing = [uid for uid in uids if uid not in found and uid in self.messages]
        if missing and self._parser is not None:
            fresh: list[tuple[int, bytes]] = []
            for uid in missing:
                try:
                    data = (self.path / self.files[uid]).read_bytes()
                except FileNotFoundError:
                    continue
                fresh.append((uid, self._parser(data)))
            with self.index.transaction():
                self.index.put_cache(self.row.id, fresh)
            found.update(fresh)
        return found
