"""Folder names: what a client may call a folder, and the directory it lives in.

Names in the store API are Unicode strings with "." as the hierarchy delimiter, the
Maildir++ convention: folder "Lists.python" is the directory `.Lists.python` beside
the INBOX's cur/new/tmp. On disk each name is modified UTF-7 (RFC 3501 §5.1.3), as
Courier and Dovecot write it, so their tools and ours read the same tree.

A name can never leave the user's directory: no "/", "\\", NUL or control
characters, no empty levels ("a..b", ".a", "a."), and bounded length and depth.
"""

from __future__ import annotations

import base64
import re

INBOX = "INBOX"
DELIMITER = "."
MAX_NAME_BYTES = 240  # the directory name (with its leading dot) must stay under NAME_MAX
MAX_DEPTH = 16

# Special-use folders (RFC 6154) that every account gets on its first use.
SPECIAL_USE: dict[str, str] = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}


class InvalidFolderName(ValueError):
    """A folder name the store refuses; the message can be shown to the user."""


def normalize(name: str) -> str:
    """The canonical spelling of a valid folder name (INBOX is case-insensitive)."""
    check(name)
    head, sep, rest = name.partition(DELIMITER)
    if head.upper() == INBOX:
        return INBOX + sep + rest
    return name


def check(name: str) -> None:
    """Raise InvalidFolderName unless `name` is safe to map to a directory."""
    if not name:
        raise InvalidFolderName("folder name is empty")
    if any(ch in "/\\" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise InvalidFolderName("folder name may not contain '/', '\\' or control characters")
    levels = name.split(DELIMITER)
    if any(level == "" for level in levels):
        raise InvalidFolderName(f"folder name may not have an empty level: {name!r}")
    if len(levels) > MAX_DEPTH:
        raise InvalidFolderName(f"folder name is nested deeper than {MAX_DEPTH} levels")
    if len(directory_of_unchecked(name).encode("ascii")) > MAX_NAME_BYTES:
        raise InvalidFolderName("folder name is too long")


def directory_of(name: str) -> str:
    """The Maildir++ directory of a folder: "" for INBOX, ".Name" (mUTF-7) otherwise."""
    name = normalize(name)
    return "" if name == INBOX else directory_of_unchecked(name)


def directory_of_unchecked(name: str) -> str:
    return "." + encode_mutf7(name)


def name_of_directory(directory: str) -> str | None:
    """The folder name of a `.Name` directory, or None when it cannot be one of ours.

    Directories that do not decode as modified UTF-7 (written by a tool that does not
    encode) are taken literally, so their mail is still reachable.
    """
    if not directory.startswith(".") or directory in (".", ".."):
        return None
    raw = directory[1:]
    try:
        name = decode_mutf7(raw)
    except ValueError:
        name = raw
    try:
        check(name)
    except InvalidFolderName:
        return None
    return normalize(name)


def parent_names(name: str) -> list[str]:
    """The ancestors of a folder name, outermost first: "a.b.c" → ["a", "a.b"]."""
    levels = name.split(DELIMITER)
    return [DELIMITER.join(levels[:i]) for i in range(1, len(levels))]


# --------------------------------------------------------------- modified UTF-7

_MUTF7_RUN = re.compile(r"&|[^\x20-\x7e]+")
_MUTF7_SHIFT = re.compile(r"&([^-]*)-")


def encode_mutf7(text: str) -> str:
    """RFC 3501 §5.1.3: printable ASCII as is ("&" as "&-"), the rest as modified base64."""

    def shift(match: re.Match[str]) -> str:
        if match.group(0) == "&":
            return "&-"
        data = match.group(0).encode("utf-16-be", "surrogatepass")
        return "&" + base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",") + "-"

    return _MUTF7_RUN.sub(shift, text)


def decode_mutf7(text: str) -> str:
    """The inverse of encode_mutf7; ValueError for text that is not modified UTF-7."""
    if any(not 0x20 <= ord(ch) <= 0x7E for ch in text):
        raise ValueError("modified UTF-7 is printable ASCII")
    out: list[str] = []
    pos = 0
    for match in _MUTF7_SHIFT.finditer(text):
        if "&" in text[pos : match.start()]:
            raise ValueError("unterminated '&' shift")
        out.append(text[pos : match.start()])
        out.append(_decode_shift(match.group(1)))
        pos = match.end()
    if "&" in text[pos:]:
        raise ValueError("unterminated '&' shift")
    out.append(text[pos:])
    decoded = "".join(out)
    if encode_mutf7(decoded) != text:
        raise ValueError("not the canonical modified UTF-7 spelling")
    return decoded


def _decode_shift(chunk: str) -> str:
    if chunk == "":
        return "&"
    padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
    try:
        return base64.b64decode(padded, validate=True).decode("utf-16-be")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"bad modified base64: {chunk!r}") from exc
