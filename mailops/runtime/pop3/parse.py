"""POP3 command lines → `Command`s: pure functions, total over any bytes.

Every input gives a `Command` or a `Bad` with a reason for the client; nothing here
raises or loops on what a client sends (tests/runtime/test_pop3_parse.py checks it
with hypothesis).
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from dataclasses import dataclass

# RFC 2449 §4 caps commands at 255 octets, but SASL initial responses and long
# passwords legitimately exceed it; this bound keeps memory use small all the same.
MAX_COMMAND_LINE = 2048
# The stream's buffer limit: a line longer than this ends the session.
MAX_LINE = 8192
MAX_MESSAGE_NUMBER_DIGITS = 10

_KEYWORD = re.compile(r"[A-Za-z]{3,4}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # upper case
    args: tuple[str, ...]
    rest: str  # the line after the keyword and its space (PASS takes spaces literally)


@dataclass(frozen=True, slots=True)
class Bad:
    reason: str


def strip_eol(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    return line


def parse_command(line: bytes) -> Command | Bad:
    line = strip_eol(line)
    if len(line) > MAX_COMMAND_LINE:
        return Bad("Line too long")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return Bad("Command is not valid UTF-8")
    if _CONTROL.search(text):
        return Bad("Command contains control characters")
    keyword, _, rest = text.partition(" ")
    if not _KEYWORD.fullmatch(keyword):
        return Bad("Unknown command")
    return Command(keyword.upper(), tuple(rest.split()), rest)


def message_number(text: str) -> int | None:
    """A message number (1, 2, …) as a client may write it; None for anything else."""
    if not text.isascii() or not text.isdigit() or len(text) > MAX_MESSAGE_NUMBER_DIGITS:
        return None
    number = int(text)
    return number if number > 0 else None


def line_count(text: str) -> int | None:
    """TOP's line count: a non-negative number."""
    if not text.isascii() or not text.isdigit() or len(text) > MAX_MESSAGE_NUMBER_DIGITS:
        return None
    return int(text)


def decode_base64(text: str) -> bytes | None:
    if text == "=":  # RFC 5034: an empty initial response
        return b""
    try:
        return b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def plain_credentials(blob: bytes) -> tuple[str, str] | None:
    """(user, password) from a SASL PLAIN response (RFC 4616); None when malformed or
    when it asks to act as another user (authzid), which is not offered."""
    parts = blob.split(b"\x00")
    if len(parts) != 3:
        return None
    try:
        authzid, authcid, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        return None
    if not authcid or (authzid and authzid != authcid):
        return None
    return authcid, password
