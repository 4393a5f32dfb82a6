"""The command table: which handler runs a command, and in which states it may.

Command modules register their handlers with `@command(...)`; the session looks
names up here. A handler is `async def handler(session, cmd) -> str | None`: it
writes untagged responses with `session.untagged(...)` and returns the text of the
tagged OK ("[READ-WRITE] SELECT completed"), or None for "<NAME> completed". It
raises `No` for a tagged NO and `parse.BadCommand` for a tagged BAD.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailops.runtime.imap.parse import Command
    from mailops.runtime.imap.session import Session

NOT_AUTHENTICATED = "not authenticated"
AUTHENTICATED = "authenticated"
SELECTED = "selected"

ANY = frozenset({NOT_AUTHENTICATED, AUTHENTICATED, SELECTED})
AUTH = frozenset({AUTHENTICATED, SELECTED})
ONLY_SELECTED = frozenset({SELECTED})
ONLY_NOT_AUTHENTICATED = frozenset({NOT_AUTHENTICATED})

Handler = Callable[["Session", "Command"], Awaitable[str | None]]


class No(Exception):
    """A tagged NO: `code` is the response code without brackets (e.g. "TRYCREATE")."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


@dataclass(frozen=True, slots=True)
class Entry:
    handler: Handler
    states: frozenset[str]


COMMANDS: dict[str, Entry] = {}


def command(*names: str, states: frozenset[str]) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for name in names:
            COMMANDS[name] = Entry(handler, states)
        return handler

    return register
