"""SEARCH and UID SEARCH (RFC 3501 §6.4.4), with ESEARCH's result options (RFC 4731)
and CONDSTORE's MODSEQ key (RFC 7162 §3.1.5).

The program is parsed here (`searchkeys`) and evaluated in a worker thread, since
text keys may read the store's text index or, failing that, the messages.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from mailops.runtime.imap import pack, searchkeys
from mailops.runtime.imap.dispatch import ONLY_SELECTED, No, command
from mailops.runtime.imap.parse import BadCommand, Command, Reader, sequence_set_of
from mailops.runtime.store import textindex

if TYPE_CHECKING:
    from mailops.runtime.imap.session import Session
    from mailops.runtime.store import FolderView, Message

RETURN_OPTIONS = ("MIN", "MAX", "COUNT", "ALL")  # RFC 4731; SAVE (RFC 5182) is not offered
# Searches run in threads of their own: the first text search of a big folder builds
# its index for a while, and must not hold up the threads other commands use.
_SEARCHES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="imap-search")


@command("SEARCH", "UID SEARCH", states=ONLY_SELECTED)
async def search(s: Session, cmd: Command) -> str | None:
    options = _return_options(cmd.args)
    try:
        program = searchkeys.parse_program(cmd.args)
    except searchkeys.UnknownCharset:
        charsets = " ".join(searchkeys.CHARSETS)
        raise No("Supported charsets are UTF-8 and US-ASCII", f"BADCHARSET ({charsets})") from None
    view = s.require_view()
    loop = asyncio.get_running_loop()
    found = await loop.run_in_executor(_SEARCHES, _evaluate, view, program.key)
    if program.uses_modseq:
        s.enable_condstore()
    numbers = [m.uid for _, m in found] if cmd.uid else [seq for seq, _ in found]
    modseqs = [m.modseq for _, m in found] if program.uses_modseq else None
    if options is None:
        s.untagged(_search_response(numbers, modseqs))
    else:
        s.untagged(_esearch_response(cmd.tag, cmd.uid, options, numbers, modseqs))
    return None


def _evaluate(view: FolderView, key: searchkeys.Key) -> list[tuple[int, Message]]:
    """(sequence number, message) of the matches, in order (in a worker thread)."""
    messages = view.messages  # the snapshot: it changes only when the session refreshes
    # A program of flags, sizes and numbers never asks about content: it need not
    # open the text index (a ScannedText costs nothing until it is asked).
    cheap = key.cost == searchkeys.CHEAP
    content = textindex.ScannedText(view) if cheap else textindex.folder_text(view)
    evaluation = searchkeys.Evaluation(messages, view.recent, content)
    return [(i + 1, messages[i]) for i in evaluation.run(key)]


def _return_options(args: Reader) -> set[str] | None:
    """RETURN (…) of RFC 4731: None for the classic SEARCH response. An empty list
    means ALL."""
    if not args.maybe(b"RETURN "):
        return None
    names = {name.upper() for name in args.parenthesized(args.atom)}
    unknown = names - set(RETURN_OPTIONS)
    if unknown:
        raise BadCommand(f"unsupported SEARCH result option {sorted(unknown)[0]}")
    args.sp()
    return names or {"ALL"}


def _search_response(numbers: list[int], modseqs: list[int] | None) -> bytes:
    line = b"SEARCH" + b"".join(b" %d" % n for n in numbers)
    if modseqs:
        line += b" (MODSEQ %d)" % max(modseqs)  # the highest of those returned
    return line


def _esearch_response(
    tag: str, uid: bool, options: set[str], numbers: list[int], modseqs: list[int] | None
) -> bytes:
    line = b"ESEARCH (TAG " + pack.string(tag) + b")" + (b" UID" if uid else b"")
    if numbers and "MIN" in options:
        line += b" MIN %d" % numbers[0]
    if numbers and "MAX" in options:
        line += b" MAX %d" % numbers[-1]
    if "COUNT" in options:
        line += b" COUNT %d" % len(numbers)
    if numbers and "ALL" in options:
        line += b" ALL " + sequence_set_of(numbers).encode("ascii")
    if modseqs:
        # RFC 4731 §3.2: the highest MODSEQ of the messages returned — with only MIN
        # and/or MAX, of those one or two.
        returned = modseqs if options & {"ALL", "COUNT"} else [modseqs[0], modseqs[-1]]
        line += b" MODSEQ %d" % max(returned)
    return line
