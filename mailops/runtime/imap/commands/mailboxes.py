"""Commands on folders as a whole: CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE,
LIST (with LIST-EXTENDED, SPECIAL-USE, CHILDREN, LIST-STATUS), LSUB, STATUS, APPEND."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailops.runtime.imap import pack
from mailops.runtime.imap.dispatch import AUTH, No, command
from mailops.runtime.imap.parse import BadCommand, Command, Reader
from mailops.runtime.store import (
    DELIMITER,
    INBOX,
    FolderExists,
    FolderInfo,
    InvalidFolderName,
    NoSuchFolder,
    OverQuota,
    StoreError,
    names,
)
from mailops.runtime.store import flags as flagmod

if TYPE_CHECKING:
    from mailops.runtime.imap.session import Session

STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE")
_SELECTION = {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}
_RETURNS = {"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"}


def _name(s: Session, name: str) -> str:
    """A client's folder name, checked; trailing delimiter dropped (RFC 3501 §6.3.3)."""
    name = name.removesuffix(DELIMITER) if name != DELIMITER else name
    try:
        return names.normalize(name)
    except InvalidFolderName as exc:
        raise No(str(exc), "CANNOT") from None


def _mailbox(s: Session):
    assert s.mailbox is not None
    return s.mailbox


# ----------------------------------------------------------------- create & co


@command("CREATE", states=AUTH)
async def create(s: Session, cmd: Command) -> str | None:
    name = _name(s, cmd.args.mailbox())
    cmd.args.end()
    if name == INBOX:
        raise No("INBOX always exists", "ALREADYEXISTS")
    try:
        await asyncio.to_thread(_mailbox(s).create_folder, name)
    except FolderExists:
        raise No(f"Mailbox {name!r} already exists", "ALREADYEXISTS") from None
    except StoreError as exc:
        raise No(str(exc), "CANNOT") from None
    return None


@command("DELETE", states=AUTH)
async def delete(s: Session, cmd: Command) -> str | None:
    name = _name(s, cmd.args.mailbox())
    cmd.args.end()
    if name == INBOX:
        raise No("INBOX cannot be deleted", "CANNOT")
    if s.view is not None and s.view.name == name:
        s.unselect()  # the selected folder goes away: this session is back to authenticated
    try:
        await asyncio.to_thread(_mailbox(s).delete_folder, name)
    except NoSuchFolder:
        raise No(f"No mailbox named {name!r}", "NONEXISTENT") from None
    except StoreError as exc:
        raise No(str(exc), "CANNOT") from None
    return None


@command("RENAME", states=AUTH)
async def rename(s: Session, cmd: Command) -> str | None:
    old = _name(s, cmd.args.mailbox())
    cmd.args.sp()
    new = _name(s, cmd.args.mailbox())
    cmd.args.end()
    selected = s.view.name if s.view is not None else None
    if old != INBOX and selected and (selected == old or selected.startswith(old + DELIMITER)):
        s.unselect()
    try:
        await asyncio.to_thread(_mailbox(s).rename_folder, old, new)
    except NoSuchFolder:
        raise No(f"No mailbox named {old!r}", "NONEXISTENT") from None
    except FolderExists:
        raise No(f"Mailbox {new!r} already exists", "ALREADYEXISTS") from None
    except StoreError as exc:
        raise No(str(exc), "CANNOT") from None
    return None


@command("SUBSCRIBE", "UNSUBSCRIBE", states=AUTH)
async def subscribe(s: Session, cmd: Command) -> str | None:
    name = _name(s, cmd.args.mailbox())
    cmd.args.end()
    await asyncio.to_thread(_mailbox(s).subscribe, name, cmd.name == "SUBSCRIBE")
    return None


# ----------------------------------------------------------------- LIST


@dataclass
class ListRequest:
    reference: str
    patterns: list[str]
    selection: set[str]
    returns: set[str]
    status_items: list[str] | None


def _list_request(args: Reader) -> ListRequest:
    selection: set[str] = set()
    if args.peek() == b"(":  # LIST-EXTENDED selection options (RFC 5258)
        selection = {a.upper() for a in args.parenthesized(args.atom)}
        unknown = selection - _SELECTION
        if unknown:
            raise BadCommand(f"unknown LIST selection option {sorted(unknown)[0]}")
        args.sp()
    reference = args.mailbox()
    args.sp()
    if args.peek() == b"(":
        patterns = args.parenthesized(args.list_mailbox)
    else:
        patterns = [args.list_mailbox()]
    returns: set[str] = set()
    status_items = None
    if args.maybe_sp():
        args.expect(b"RETURN ")
        returns, status_items = _return_options(args)
    args.end()
    if "RECURSIVEMATCH" in selection and selection == {"RECURSIVEMATCH"}:
        raise BadCommand("RECURSIVEMATCH needs another selection option")
    if "SUBSCRIBED" in selection:
        returns.add("SUBSCRIBED")
    return ListRequest(reference, patterns, selection, returns, status_items)


def _return_options(args: Reader) -> tuple[set[str], list[str] | None]:
    returns: set[str] = set()
    status_items: list[str] | None = None

    def option() -> str:
        nonlocal status_items
        name = args.atom().upper()
        if name == "STATUS":  # LIST-STATUS (RFC 5819)
            args.sp()
            status_items = _status_items(args)
        elif name not in _RETURNS:
            raise BadCommand(f"unknown LIST return option {name}")
        return name

    returns.update(args.parenthesized(option))
    return returns, status_items


def _pattern_regex(reference: str, pattern: str) -> re.Pattern[str]:
    if reference and not pattern.startswith(DELIMITER):
        pattern = reference + pattern  # RFC 3501 §6.3.8: the reference is a prefix
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "%":
            parts.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            parts.append(re.escape(ch))
    regex = "".join(parts)
    # INBOX is case-insensitive, also as the first level of a pattern.
    if pattern[:5].upper() == INBOX:
        regex = "(?i:INBOX)" + "".join(parts[5:])
    return re.compile(regex + r"\Z", re.DOTALL)


def _listing(folders: list[FolderInfo]) -> dict[str, FolderInfo | None]:
    """Every folder, plus the parents that only exist because a child does (None)."""
    known: dict[str, FolderInfo | None] = {f.name: f for f in folders}
    for folder in folders:
        for parent in names.parent_names(folder.name):
            known.setdefault(parent, None)
    return known


def _attributes(name: str, info: FolderInfo | None, listing, request: ListRequest) -> list[str]:
    attrs: list[str] = []
    if info is None:
        attrs.append("\\NonExistent" if request.selection or request.returns else "\\Noselect")
    children = any(other.startswith(name + DELIMITER) for other in listing)
    attrs.append("\\HasChildren" if children else "\\HasNoChildren")
    if info is not None and info.special_use:
        attrs.append(info.special_use)
    if "SUBSCRIBED" in request.returns and info is not None and info.subscribed:
        attrs.append("\\Subscribed")
    return attrs


@command("LIST", states=AUTH)
async def list_command(s: Session, cmd: Command) -> str | None:
    request = _list_request(cmd.args)
    if request.patterns == [""]:  # RFC 3501 §6.3.8: the delimiter and the root
        s.untagged(b'LIST (\\Noselect) "%s" ""' % DELIMITER.encode())
        return None
    folders = await asyncio.to_thread(_mailbox(s).folders)
    listing = _listing(folders)
    regexes = [_pattern_regex(request.reference, p) for p in request.patterns]
    for name in sorted(listing, key=lambda n: (n != INBOX, n)):
        info = listing[name]
        if not any(r.match(name) for r in regexes):
            continue
        if "SUBSCRIBED" in request.selection and not (info and info.subscribed):
            continue
        if "SPECIAL-USE" in request.selection and not (info and info.special_use):
            continue
        attrs = _attributes(name, info, listing, request)
        s.untagged(_list_line("LIST", attrs, name, s.utf8))
        if request.status_items is not None and info is not None:
            await _status(s, name, request.status_items)
    return None


def _list_line(kind: str, attrs: list[str], name: str, utf8: bool) -> bytes:
    head = f'{kind} ({" ".join(attrs)}) "{DELIMITER}" '.encode()
    return head + pack.mailbox(name, utf8)


@command("LSUB", states=AUTH)
async def lsub(s: Session, cmd: Command) -> str | None:
    reference = cmd.args.mailbox()
    cmd.args.sp()
    regex = _pattern_regex(reference, cmd.args.list_mailbox())
    cmd.args.end()
    folders = await asyncio.to_thread(_mailbox(s).folders)
    for folder in sorted(folders, key=lambda f: (f.name != INBOX, f.name)):
        if folder.subscribed and regex.match(folder.name):
            s.untagged(_list_line("LSUB", [], folder.name, s.utf8))
    return None


# ----------------------------------------------------------------- STATUS


def _status_items(args: Reader) -> list[str]:
    items = [a.upper() for a in args.parenthesized(args.atom)]
    for item in items:
        if item not in STATUS_ITEMS:
            raise BadCommand(f"unknown STATUS item {item}")
    return items


@command("STATUS", states=AUTH)
async def status(s: Session, cmd: Command) -> str | None:
    name = _name(s, cmd.args.mailbox())
    cmd.args.sp()
    items = _status_items(cmd.args)
    cmd.args.end()
    await _status(s, name, items)
    return None


async def _status(s: Session, name: str, items: list[str]) -> None:
    try:
        info = await asyncio.to_thread(_mailbox(s).status, name)
    except NoSuchFolder:
        raise No(f"No mailbox named {name!r}", "NONEXISTENT") from None
    values = {
        "MESSAGES": info.messages,
        "RECENT": info.recent,
        "UIDNEXT": info.uidnext,
        "UIDVALIDITY": info.uidvalidity,
        "UNSEEN": info.unseen,
        "HIGHESTMODSEQ": info.highestmodseq,
        "SIZE": info.size,
    }
    body = " ".join(f"{item} {values[item]}" for item in items)
    s.untagged(b"STATUS " + pack.mailbox(name, s.utf8) + f" ({body})".encode())


# ----------------------------------------------------------------- APPEND


@command("APPEND", states=AUTH)
async def append(s: Session, cmd: Command) -> str | None:
    args = cmd.args
    name = _name(s, args.mailbox())
    args.sp()
    flags: list[str] = []
    if args.peek() == b"(":
        flags = args.flag_list()
        args.sp()
    internal_date = None
    if args.peek() == b'"':
        internal_date = args.date_time()
        args.sp()
    if args.maybe(b"UTF8 ("):  # RFC 6855 §4: APPEND UTF8 (~{n}...)
        data = args.string()
        args.expect(b")")
    else:
        data = args.string()
    args.end()
    for flag in flags:
        if flag.lower() == "\\recent" or not flagmod.valid_keyword(flag):
            raise BadCommand(f"invalid flag {flag}")
    if not data:
        raise No("An empty message cannot be stored", "CANNOT")
    try:
        validity, uid = await asyncio.to_thread(
            _mailbox(s).append, name, data, flags, internal_date
        )
    except NoSuchFolder:
        raise No(f"No mailbox named {name!r}", "TRYCREATE") from None
    except OverQuota as exc:
        raise No(str(exc), "OVERQUOTA") from None
    return f"[APPENDUID {validity} {uid}] APPEND completed"
