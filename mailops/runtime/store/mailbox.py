"""The store API that POP3 and IMAP sessions use; they never see a file path.

    store = Store(data_dir, hostname)
    mailbox = store.open("example.test", "alice")        # in a thread: may scan
    view = mailbox.select("INBOX")                        # a session's snapshot
    for message in view.messages: ... view.open(message.uid) ...
    view.store_flags([uid], {"\\Seen"}, "+"); view.expunge([uid])
    changes = view.refresh()                              # what others changed
    store.release(mailbox)

Calls are synchronous and thread-safe (one lock per user). Anything that may scan a
folder (open, select, refresh, status) can take a while on a big or cold folder, so
asyncio code runs it with `asyncio.to_thread`; reading one message is cheap.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from mailops.runtime.durable import PendingFile, ensure_dirs, fsync_dir
from mailops.runtime.log import log
from mailops.runtime.store import files, names
from mailops.runtime.store import flags as flagmod
from mailops.runtime.store.folder import Changes, FolderState, MessageGone, Parser
from mailops.runtime.store.index import (
    FolderRow,
    Index,
    Message,
    next_uidvalidity,
    open_index,
)
from mailops.runtime.store.maildir import (
    DIR_MODE,
    MaildirDelivery,
    QuotaExceeded,
    escape_hostname,
    mailbox_path,
    unique_name,
)
from mailops.runtime.store.notify import Notifier

FlagMode = Literal["+", "-", "="]
IDLE_MAILBOXES = 32  # unused mailboxes kept open for the next login
DELETED_PREFIX = "..mailops-deleted-"  # never a folder name: its first level is empty


class StoreError(Exception):
    """An operation the store refuses; the message can be shown to the user."""


class NoSuchFolder(StoreError):
    pass


class FolderExists(StoreError):
    pass


class OverQuota(StoreError):
    pass


@dataclass(frozen=True)
class FolderInfo:
    name: str
    special_use: str | None
    subscribed: bool
    has_children: bool


@dataclass(frozen=True)
class FolderStatus:
    messages: int
    recent: int
    unseen: int
    uidnext: int
    uidvalidity: int
    highestmodseq: int
    size: int  # sum of RFC822.SIZE (STATUS=SIZE)


@dataclass
class ViewChanges:
    """What a view learnt in one refresh, in the view's own terms."""

    expunged: list[int] = field(default_factory=list)  # sequence numbers, ascending, old view
    added: list[Message] = field(default_factory=list)
    changed: list[Message] = field(default_factory=list)  # flags changed, still present

    def __bool__(self) -> bool:
        return bool(self.expunged or self.added or self.changed)


# =============================================================================== Store


class Store:
    """Every user's mailboxes under `<data_dir>/mail/`; one per runtime process."""

    def __init__(self, data_dir: Path, hostname: str, *, parser: Parser | None = None) -> None:
        self.data_dir = data_dir
        self.mail_root = data_dir / "mail"
        self.host = escape_hostname(hostname)
        self.delivery = MaildirDelivery(data_dir, hostname)
        self.notifier = Notifier()
        self.parser = parser if parser is not None else _default_parser()
        self._lock = threading.Lock()
        self._open: dict[str, Mailbox] = {}
        self._refs: dict[str, int] = {}
        self._leases: set[tuple[str, str]] = set()
        self._idle: dict[str, None] = {}  # open but unused mailboxes, oldest first

    def open(self, domain: str, user: str, quota: int | None = None) -> Mailbox:
        """The user's mailbox, created on first use; pair every open with `release`."""
        address = f"{user}@{domain}"
        with self._lock:
            self._idle.pop(address, None)
            mailbox = self._open.get(address)
            if mailbox is None:
                mailbox = Mailbox(self, domain, user, mailbox_path(self.data_dir, domain, user))
                self._open[address] = mailbox
            self._refs[address] = self._refs.get(address, 0) + 1
        try:
            mailbox.start(quota)
        except BaseException:
            self.release(mailbox)
            raise
        return mailbox

    def release(self, mailbox: Mailbox) -> None:
        """Done with a mailbox. The last few unused ones stay open (index loaded, folders
        listed), so a client that polls every few minutes logs in without a reload."""
        evicted: list[Mailbox] = []
        with self._lock:
            refs = self._refs.get(mailbox.address, 0) - 1
            if refs > 0:
                self._refs[mailbox.address] = refs
                return
            self._refs.pop(mailbox.address, None)
            self._idle.pop(mailbox.address, None)
            self._idle[mailbox.address] = None  # most recently used last
            while len(self._idle) > IDLE_MAILBOXES:
                address = next(iter(self._idle))
                del self._idle[address]
                evicted.append(self._open.pop(address))
        for old in evicted:
            old.close()

    def close(self) -> None:
        """Close every mailbox (at shutdown)."""
        with self._lock:
            mailboxes = list(self._open.values())
            self._open.clear()
            self._refs.clear()
            self._idle.clear()
        for mailbox in mailboxes:
            mailbox.close()

    def acquire_lease(self, address: str, kind: str) -> bool:
        """An exclusive lease (POP3 holds "pop3" on a mailbox); False when already held."""
        with self._lock:
            if (address, kind) in self._leases:
                return False
            self._leases.add((address, kind))
            return True

    def release_lease(self, address: str, kind: str) -> None:
        with self._lock:
            self._leases.discard((address, kind))

    def delivered(self, committed: Iterable[PendingFile]) -> None:
        """MDA hook, after the group commit: wake sessions on the INBOXes that got mail.

        The new files are indexed by the next refresh of their folder, the same path a
        message dropped into new/ by any other program takes.
        """
        for pending in committed:
            box = pending.final_path.parent.parent
            if pending.final_path.parent.name != "new" or box.parent.parent != self.mail_root:
                continue  # a queue entry, not a mailbox copy
            address = f"{box.name}@{box.parent.name}"
            self.notifier.publish((address, names.INBOX))


def _default_parser() -> Parser | None:
    try:
        from mailops.runtime.store.mime import parse_to_cache
    except ImportError:  # pragma: no cover - mime is part of the package
        return None
    return parse_to_cache


# ============================================================================= Mailbox


class Mailbox:
    """One user's folders. Shared by all of the user's sessions; every call takes its lock."""

    def __init__(self, store: Store, domain: str, user: str, path: Path) -> None:
        self.store = store
        self.domain = domain
        self.user = user
        self.address = f"{user}@{domain}"
        self.path = path
        self.quota: int | None = None
        self.lock = threading.RLock()
        self._index: Index | None = None
        self._states: dict[str, FolderState] = {}  # by folder name

    # ------------------------------------------------------------- lifecycle

    def start(self, quota: int | None) -> None:
        with self.lock:
            self.quota = quota
            if self._index is not None:
                return
            ensure_dirs(self.path / "tmp", DIR_MODE)
            for sub in ("cur", "new"):
                ensure_dirs(self.path / sub, DIR_MODE)
            index, salvaged = open_index(self.path)
            self._index = index
            try:
                self._discover(salvaged)
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        with self.lock:
            if self._index is not None:
                self._index.close()
            self._index = None
            self._states.clear()

    @property
    def index(self) -> Index:
        if self._index is None:
            raise StoreError("mailbox is closed")
        return self._index

    def _discover(self, salvaged: list[FolderRow] | None) -> None:
        """Match index rows with the folder directories on disk, both ways."""
        rows = {row.directory: row for row in self.index.folders()}
        first_use = not rows
        on_disk = {"": names.INBOX} | self._folder_dirs()
        avoid = [row.uidvalidity for row in salvaged or ()]
        missing = [d for d in on_disk if d not in rows]
        with self.index.transaction():
            for directory, row in rows.items():
                if directory not in on_disk:
                    self.index.drop_folder(row.id)  # removed by another tool
            if missing:
                first = next_uidvalidity(self.path, avoid, len(missing))
                for offset, directory in enumerate(sorted(missing)):
                    name = on_disk[directory]
                    role = names.SPECIAL_USE.get(name)
                    self.index.add_folder(name, directory, first + offset, role)
        if salvaged is not None:
            log("store.index_rebuilt", mailbox=self.address, folders=len(on_disk))
        if first_use:
            for name in names.SPECIAL_USE:
                with contextlib.suppress(FolderExists):
                    self._create(name)
            with self.index.transaction():
                for name in (names.INBOX, *names.SPECIAL_USE):
                    self.index.subscribe(name, True)

    def _folder_dirs(self) -> dict[str, str]:
        found: dict[str, str] = {}
        with os.scandir(self.path) as entries:
            for entry in entries:
                name = names.name_of_directory(entry.name)
                if name is None or name == names.INBOX or not entry.is_dir():
                    continue
                if os.path.isdir(os.path.join(entry.path, "cur")):
                    found[entry.name] = name
        return found

    # ---------------------------------------------------------------- folders

    def _row(self, name: str) -> FolderRow:
        name = _checked(name)
        for row in self.index.folders():
            if row.name == name:
                return row
        raise NoSuchFolder(f"no folder named {name!r}")

    def _state(self, name: str) -> FolderState:
        name = _checked(name)
        state = self._states.get(name)
        if state is None:
            state = FolderState(self.index, self.path, self._row(name), self.store.parser)
            self._states[name] = state
        return state

    def folders(self) -> list[FolderInfo]:
        with self.lock:
            rows = self.index.folders()
            subscribed = self.index.subscriptions()
            all_names = {row.name for row in rows}
            return [
                FolderInfo(
                    row.name,
                    row.special_use,
                    row.name in subscribed,
                    any(other.startswith(row.name + names.DELIMITER) for other in all_names),
                )
                for row in rows
            ]

    def create_folder(self, name: str) -> None:
        """Create a folder (and any missing parents); FolderExists when it is there."""
        name = _checked(name)
        with self.lock:
            for parent in names.parent_names(name):
                if parent != names.INBOX:
                    with contextlib.suppress(FolderExists):
                        self._create(parent)
            self._create(name)

    def _create(self, name: str) -> None:
        if name == names.INBOX or any(r.name == name for r in self.index.folders()):
            raise FolderExists(f"folder {name!r} already exists")
        directory = names.directory_of(name)
        folder = self.path / directory
        for sub in ("cur", "new", "tmp"):
            ensure_dirs(folder / sub, DIR_MODE)
        marker = folder / "maildirfolder"  # Maildir++: "this is a folder, not a Maildir"
        if not marker.exists():
            marker.touch(0o600)
            fsync_dir(folder)
        uidvalidity = next_uidvalidity(self.path)
        with self.index.transaction():
            self.index.add_folder(name, directory, uidvalidity, names.SPECIAL_USE.get(name))

    def delete_folder(self, name: str) -> None:
        """Delete a folder and the mail in it (an explicit user request, IMAP DELETE)."""
        name = _checked(name)
        if name == names.INBOX:
            raise StoreError("INBOX cannot be deleted")
        with self.lock:
            row = self._row(name)
            source = self.path / row.directory
            # Rename first, so a crash never leaves a half-deleted folder visible.
            graveyard = self.path / f"{DELETED_PREFIX}{time.time_ns()}"
            os.rename(source, graveyard)
            fsync_dir(self.path)
            self._states.pop(name, None)
            with self.index.transaction():
                self.index.drop_folder(row.id)
            size = sum(files.list_sizes(graveyard))
            shutil.rmtree(graveyard, ignore_errors=True)
            self.store.delivery.release(self.domain, self.user, size)
        log("store.folder_deleted", mailbox=self.address, folder=name)
        self.store.notifier.publish((self.address, name))

    def rename_folder(self, old: str, new: str) -> None:
        """Rename a folder and its children; renaming INBOX moves its mail (RFC 3501)."""
        old, new = _checked(old), _checked(new)
        with self.lock:
            if any(r.name == new for r in self.index.folders()) or new == names.INBOX:
                raise FolderExists(f"folder {new!r} already exists")
            if old == names.INBOX:
                self._rename_inbox(new)
                return
            rows = [r for r in self.index.folders() if r.name == old]
            if not rows:
                raise NoSuchFolder(f"no folder named {old!r}")
            children = [r for r in self.index.folders() if r.name.startswith(old + names.DELIMITER)]
            for parent in names.parent_names(new):
                if parent != names.INBOX and not any(
                    r.name == parent for r in self.index.folders()
                ):
                    self._create(parent)
            for row in rows + children:
                self._move_folder(row, new + row.name[len(old) :])
            fsync_dir(self.path)

    def _move_folder(self, row: FolderRow, new_name: str) -> None:
        directory = names.directory_of(new_name)
        os.rename(self.path / row.directory, self.path / directory)
        self._states.pop(row.name, None)
        old_name = row.name
        row.name, row.directory = new_name, directory
        with self.index.transaction():
            self.index.save_folder(row)
        self.store.notifier.publish((self.address, old_name))

    def _rename_inbox(self, new: str) -> None:
        self._create(new)
        inbox = self._state(names.INBOX)
        inbox.refresh()
        self._move(inbox, list(inbox.messages), self._state(new))

    def subscribe(self, name: str, on: bool = True) -> None:
        """Subscriptions may name folders that do not exist (RFC 3501 §6.3.6)."""
        name = _checked(name)
        with self.lock, self.index.transaction():
            self.index.subscribe(name, on)

    def folder_for(self, special_use: str) -> str:
        """The folder with a special-use role (e.g. "\\Sent"), created when missing."""
        with self.lock:
            for row in self.index.folders():
                if row.special_use == special_use:
                    return row.name
            for name, role in names.SPECIAL_USE.items():
                if role == special_use:
                    self._create(name)
                    return name
        raise StoreError(f"unknown special-use role {special_use!r}")

    # ------------------------------------------------------------- messages

    def select(self, name: str, *, readonly: bool = False, origin: object = None) -> FolderView:
        """A session's view of a folder, refreshed now. `origin` identifies the session
        in notifications (it is not told of its own changes)."""
        with self.lock:
            state = self._state(name)
            self._refresh(state)
            return FolderView(self, state, readonly, origin)

    def status(self, name: str) -> FolderStatus:
        with self.lock:
            state = self._state(name)
            self._refresh(state)
            messages = state.messages.values()
            return FolderStatus(
                messages=len(state.messages),
                recent=sum(1 for uid in state.messages if uid >= state.row.first_recent_uid),
                unseen=sum(1 for m in messages if flagmod.SEEN not in m.flags),
                uidnext=state.row.uidnext,
                uidvalidity=state.row.uidvalidity,
                highestmodseq=state.row.highestmodseq,
                size=sum(m.vsize for m in messages),
            )

    def append(
        self,
        name: str,
        data: bytes,
        flags: Iterable[str] = (),
        internal_date: int | None = None,
    ) -> tuple[int, int]:
        """Store a new message durably in a folder: (UIDVALIDITY, UID) for APPENDUID."""
        wanted = frozenset(flagmod.canonical(f) for f in flags)
        self._reserve(len(data))
        try:
            with self.lock:
                state = self._state(name)
                base = unique_name(self.store.host, len(data))
                filename = flagmod.file_name(base, wanted)
                files.write_message(state.path, base, filename, data, internal_date)
                crlf = data.count(b"\r\n")
                template = Message(
                    0,
                    base,
                    wanted,
                    0,
                    len(data),
                    len(data) + data.count(b"\n") - crlf,
                    not data or data.endswith(b"\n"),
                    internal_date if internal_date is not None else int(time.time()),
                )
                cache = {0: self.store.parser(data)} if self.store.parser else {}
                (uid,) = state.adopt([(base, filename, template)], cache)
                uidvalidity = state.row.uidvalidity
        except BaseException:
            self.store.delivery.release(self.domain, self.user, len(data))
            raise
        self._publish(state.row.name, None)
        return uidvalidity, uid

    def _reserve(self, size: int) -> None:
        over = self.store.delivery.reserve(self.domain, self.user, size, self.quota)
        if isinstance(over, QuotaExceeded):
            raise OverQuota(f"mailbox is full ({over.used} of {over.quota} bytes used)")

    def _refresh(self, state: FolderState, force: bool = False, origin: object = None) -> Changes:
        changes = state.refresh(force)
        if changes.expunged:
            log("store.expunged_outside", mailbox=self.address, count=len(changes.expunged))
        if changes:
            self._publish(state.row.name, origin)
        return changes

    def _publish(self, folder: str, origin: object) -> None:
        self.store.notifier.publish((self.address, folder), origin)

    def _copy(self, source: FolderState, uids: list[int], dest: FolderState) -> list[int]:
        entries = []
        total = sum(source.messages[uid].size for uid in uids if uid in source.messages)
        self._reserve(total)
        placed = 0
        try:
            for uid in uids:
                message = source.messages.get(uid)
                if message is None:
                    continue
                base = unique_name(self.store.host, message.size)
                filename = flagmod.file_name(base, message.flags)
                files.link_message(source.file_path(uid), dest.path, filename)
                placed += message.size
                entries.append((base, filename, message))
        finally:
            if placed < total:
                self.store.delivery.release(self.domain, self.user, total - placed)
        cache = source.cached([m.uid for _, _, m in entries]) if entries else {}
        return dest.adopt(entries, cache) if entries else []

    def _move(self, source: FolderState, uids: list[int], dest: FolderState) -> list[int]:
        """Move messages: link into the destination, fsync, then unlink the source."""
        entries, moved = [], []
        for uid in uids:
            message = source.messages.get(uid)
            if message is None:
                continue
            base = message.key if message.key not in dest.by_key else None
            base = base or unique_name(self.store.host, message.size)
            filename = flagmod.file_name(base, message.flags)
            files.link_message(source.file_path(uid), dest.path, filename)
            entries.append((base, filename, message))
            moved.append(uid)
        if not moved:
            return []
        cache = source.cached(moved)
        new_uids = dest.adopt(entries, cache)
        for directory in files.remove_files([source.file_path(uid) for uid in moved]):
            fsync_dir(directory)
        with self.index.transaction():
            source.forget_moved(moved)
        self._publish(source.row.name, None)
        return new_uids


def _checked(name: str) -> str:
    try:
        return names.normalize(name)
    except names.InvalidFolderName as exc:
        raise StoreError(str(exc)) from None


# ============================================================================ FolderView


class FolderView:
    """A session's numbered snapshot of a folder (sequence number n = messages[n-1]).

    The snapshot changes only in `refresh`, so sequence numbers stay put between
    refreshes as IMAP requires; with `expunges=False` vanished messages stay numbered
    until a later refresh that may report them (no EXPUNGE during FETCH, RFC 3501 §7.4.1).
    """

    def __init__(self, mailbox: Mailbox, state: FolderState, readonly: bool, origin: object):
        self.mailbox = mailbox
        self.readonly = readonly
        self.origin = origin
        self._state = state
        self.name = state.row.name
        self.messages: list[Message] = list(state.messages.values())
        self._seen_modseq = state.row.highestmodseq
        self._held = False  # the snapshot still numbers messages that are gone
        self.recent: set[int] = set()
        self._claim_recent(self.messages)

    @property
    def uidvalidity(self) -> int:
        return self._state.row.uidvalidity

    @property
    def uidnext(self) -> int:
        return self._state.row.uidnext

    @property
    def highestmodseq(self) -> int:
        return self._state.row.highestmodseq

    def _claim_recent(self, messages: list[Message]) -> None:
        row = self._state.row
        fresh = [m.uid for m in messages if m.uid >= row.first_recent_uid]
        self.recent.update(fresh)
        if fresh and not self.readonly:
            row.first_recent_uid = max(fresh) + 1  # no other session will see them \Recent
            with self.mailbox.index.transaction():
                self.mailbox.index.save_folder(row)

    def key(self) -> tuple[str, str]:
        """The notification key of this folder (for `store.notifier.subscribe`)."""
        return (self.mailbox.address, self.name)

    # ------------------------------------------------------------- refresh

    def refresh(self, expunges: bool = True) -> ViewChanges:
        """Look at the folder again and report what changed since the last refresh."""
        with self.mailbox.lock:
            self._check_open()
            self.mailbox._refresh(self._state, origin=self.origin)
            return self._diff(expunges)

    def _diff(self, expunges: bool) -> ViewChanges:
        state = self._state
        current = state.messages
        changes = ViewChanges()
        last_uid = self.messages[-1].uid if self.messages else 0
        if (
            state.row.highestmodseq == self._seen_modseq
            and not (self._held and expunges)
            and (not current or next(reversed(current)) <= last_uid)
        ):
            return changes
        self._held = False
        kept: list[Message] = []
        for seq, message in enumerate(self.messages, 1):
            now = current.get(message.uid)
            if now is None:
                if expunges:
                    changes.expunged.append(seq)
                    self.recent.discard(message.uid)
                    continue
                self._held = True  # gone, but still numbered until expunges may be sent
                kept.append(message)
            elif now.modseq > self._seen_modseq and now.flags != message.flags:
                changes.changed.append(now)
                kept.append(now)
            else:
                kept.append(now)
        changes.added = [m for uid, m in current.items() if uid > last_uid]
        self._claim_recent(changes.added)
        self.messages = kept + changes.added
        self._seen_modseq = state.row.highestmodseq
        return changes

    def _check_open(self) -> None:
        if self._state is not self.mailbox._states.get(self.name):
            raise NoSuchFolder(f"folder {self.name!r} was deleted or renamed")

    # ------------------------------------------------------------- reading

    def open(self, uid: int) -> BinaryIO:
        """The message's bytes as a binary file; MessageGone when it was expunged."""
        fd = self._open_fd(uid)
        try:
            # Unbuffered: callers read big chunks, a buffer only adds copies.
            return open(fd, "rb", buffering=0)
        except BaseException:
            os.close(fd)  # a directory by a message's name, say: the file object never owned it
            raise

    def read(self, uid: int, size: int | None = None) -> bytes:
        """The message's bytes; MessageGone when it was expunged. `size`, what the index
        says the file holds (`Message.size`), saves asking the file system: then the
        message takes an open, one read and a close, and no file object (for a small
        message, a third less time than `open(uid).read()`)."""
        fd = self._open_fd(uid)
        try:
            return files.read_fd(fd, size)
        finally:
            os.close(fd)

    def _open_fd(self, uid: int) -> int:
        with self.mailbox.lock:
            for attempt in range(2):
                try:
                    return os.open(self._state.file_name(uid), os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    if attempt == 0:
                        # Its flags were changed by another program: rescan, try its new name.
                        self.mailbox._refresh(self._state, force=True)
        raise MessageGone(uid)

    def expunged_since(self, modseq: int) -> list[int]:
        """UIDs expunged from this folder after `modseq`, ascending (QRESYNC's VANISHED)."""
        with self.mailbox.lock:
            return self.mailbox.index.expunged_since(self._state.row.id, modseq)

    def cached(self, uids: Iterable[int]) -> dict[int, bytes]:
        """The cached parse (header, envelope, body structure) of messages; see `mime`."""
        with self.mailbox.lock:
            return self._state.cached(list(uids))

    def present(self) -> set[int]:
        """The UIDs in the folder now. The snapshot may still number messages that
        another session expunged; their content is gone (SEARCH, the text index)."""
        with self.mailbox.lock:
            return set(self._state.messages)

    # ------------------------------------------------------------- changing

    def store_flags(
        self,
        uids: Iterable[int],
        flags: Iterable[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> tuple[list[Message], list[int]]:
        """Add (+), remove (-) or replace (=) flags: (messages now, UIDs refused by
        UNCHANGEDSINCE, RFC 7162). Messages whose flags did not change are included."""
        self._writable()
        given = frozenset(flagmod.canonical(f) for f in flags)
        with self.mailbox.lock:
            state = self._state
            updates: dict[int, frozenset[str]] = {}
            refused: list[int] = []
            for uid in uids:
                message = state.messages.get(uid)
                if message is None:
                    continue
                if unchanged_since is not None and message.modseq > unchanged_since:
                    refused.append(uid)
                    continue
                updates[uid] = _apply(message.flags, given, mode)
            changes = state.set_flags(updates)
            if changes:
                # The caller reports its own changes now; the next refresh need not.
                mine = set(changes.changed)
                self.messages = [
                    state.messages.get(m.uid, m) if m.uid in mine else m for m in self.messages
                ]
                self.mailbox._publish(self.name, self.origin)
            return [state.messages[u] for u in updates if u in state.messages], refused

    def expunge(self, uids: Iterable[int]) -> list[int]:
        """Remove exactly these messages for good; returns the UIDs removed. The view
        reports them, with their sequence numbers, at its next refresh."""
        self._writable()
        with self.mailbox.lock:
            state = self._state
            sizes = {uid: state.messages[uid].size for uid in uids if uid in state.messages}
            changes = state.expunge(sizes)
        self.mailbox.store.delivery.release(
            self.mailbox.domain, self.mailbox.user, sum(sizes[u] for u in changes.expunged)
        )
        if changes:
            log(
                "store.expunged",
                mailbox=self.mailbox.address,
                folder=self.name,
                count=len(changes.expunged),
            )
            self.mailbox._publish(self.name, self.origin)
        return changes.expunged

    def copy(self, uids: Iterable[int], dest: str) -> tuple[int, list[tuple[int, int]]]:
        """Copy messages into another folder: (its UIDVALIDITY, [(uid, new uid)])."""
        with self.mailbox.lock:
            target = self.mailbox._state(dest)
            wanted = [uid for uid in uids if uid in self._state.messages]
            new = self.mailbox._copy(self._state, wanted, target)
            pairs = list(zip(wanted, new, strict=True))
            validity = target.row.uidvalidity
        self.mailbox._publish(target.row.name, None)
        return validity, pairs

    def move(self, uids: Iterable[int], dest: str) -> tuple[int, list[tuple[int, int]]]:
        """Move messages into another folder (RFC 6851): (its UIDVALIDITY, pairs)."""
        self._writable()
        with self.mailbox.lock:
            target = self.mailbox._state(dest)
            if target is self._state:
                raise StoreError("cannot move messages into the folder they are in")
            wanted = [uid for uid in uids if uid in self._state.messages]
            new = self.mailbox._move(self._state, wanted, target)
            pairs = list(zip(wanted, new, strict=True))
            validity = target.row.uidvalidity
        self.mailbox._publish(target.row.name, None)
        return validity, pairs

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError("folder is open read-only")


def _apply(current: frozenset[str], given: frozenset[str], mode: FlagMode) -> frozenset[str]:
    if mode == "+":
        return current | given
    if mode == "-":
        return current - given
    return given


@contextlib.contextmanager
def opened(store: Store, domain: str, user: str, quota: int | None = None) -> Iterator[Mailbox]:
    """`with opened(store, domain, user) as mailbox:` — open and always release."""
    mailbox = store.open(domain, user, quota)
    try:
        yield mailbox
    finally:
        store.release(mailbox)
