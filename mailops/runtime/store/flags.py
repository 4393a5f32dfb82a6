"""Message flags, kept in two places that must agree: the Maildir file name and the index.

A file in cur/ is named `<base>:2,<letters>` (https://cr.yp.to/proto/maildir.html):
D draft, F flagged, P passed (forwarded), R replied, S seen, T trashed. These map to
IMAP's system flags; the name is the truth for them, so a flag set by mutt shows in
IMAP and one set by IMAP shows in mutt. Keywords (`$Junk`, `Work`) have no letter and
live in the index only. Letters we do not know (Dovecot's a–z keyword letters) are
kept in the name untouched when we rename the file.
"""

from __future__ import annotations

SEEN = "\\Seen"
ANSWERED = "\\Answered"
FLAGGED = "\\Flagged"
DELETED = "\\Deleted"
DRAFT = "\\Draft"
FORWARDED = "$Forwarded"

LETTERS: dict[str, str] = {
    "D": DRAFT,
    "F": FLAGGED,
    "P": FORWARDED,
    "R": ANSWERED,
    "S": SEEN,
    "T": DELETED,
}
LETTER_OF = {flag.lower(): letter for letter, flag in LETTERS.items()}
SYSTEM_FLAGS = frozenset({SEEN, ANSWERED, FLAGGED, DELETED, DRAFT})
_CANONICAL = {flag.lower(): flag for flag in (*SYSTEM_FLAGS, FORWARDED)}

INFO_SEPARATOR = ":2,"


def canonical(flag: str) -> str:
    """System flags and $Forwarded are case-insensitive; keywords keep their spelling."""
    return _CANONICAL.get(flag.lower(), flag)


def split_name(filename: str) -> tuple[str, str]:
    """(base, info letters) of a Maildir file name; letters are "" when there is no info."""
    base, sep, info = filename.partition(":")
    if sep and info.startswith("2,"):
        return base, info[2:]
    return base, ""


_NO_FLAGS: frozenset[str] = frozenset()


def flags_from_letters(letters: str) -> frozenset[str]:
    if not letters:
        return _NO_FLAGS  # most messages: one shared empty set
    return frozenset(LETTERS[ch] for ch in letters if ch in LETTERS)


def file_name(base: str, flags: frozenset[str], old_letters: str = "") -> str:
    """The cur/ name of a message with `flags`, keeping letters we do not interpret."""
    keep = {ch for ch in old_letters if ch not in LETTERS}
    mine = {LETTER_OF[f.lower()] for f in flags if f.lower() in LETTER_OF}
    return base + INFO_SEPARATOR + "".join(sorted(keep | mine))


def with_letters(flags: frozenset[str], letters: str) -> frozenset[str]:
    """Index flags brought in line with a file name: letter flags from the name, keywords kept."""
    keywords = {f for f in flags if f.lower() not in LETTER_OF}
    return frozenset(keywords) | flags_from_letters(letters)


def encode(flags: frozenset[str]) -> str:
    """Flags as stored in the index: sorted, space separated (flags never hold spaces)."""
    return " ".join(sorted(flags))


def decode(text: str) -> frozenset[str]:
    return frozenset(text.split())


def valid_keyword(flag: str) -> bool:
    """An IMAP flag-keyword (atom) or system flag; nothing that could corrupt storage."""
    if not flag or len(flag) > 200:
        return False
    if flag.startswith("\\"):
        return flag in SYSTEM_FLAGS or canonical(flag) in SYSTEM_FLAGS
    return all(0x21 <= ord(ch) <= 0x7E and ch not in '(){%*"\\]' for ch in flag)
