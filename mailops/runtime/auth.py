"""Password logins for submission, IMAP and POP3, shared by all three.

Hash verification (argon2id takes tens of milliseconds on purpose) runs in a
thread so the event loop keeps serving other sessions. Failed logins are
counted per client IP and slowed down: each recent failure adds a delay, so
guessing gets expensive while a user who mistypes once barely notices.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mailops.passwords import hash_password, verify_password
from mailops.runtime.directory import Account, Directory

FAILURE_WINDOW = 900.0  # seconds a failure is remembered
DELAY_PER_FAILURE = 0.5  # seconds of delay each remembered failure adds
MAX_DELAY = 8.0


_DUMMY: list[str] = []


def _dummy_hash() -> str:
    if not _DUMMY:
        _DUMMY.append(hash_password("mailops: no such user"))
    return _DUMMY[0]


class Authenticator:
    def __init__(self, directory: Callable[[], Directory], clock=time.monotonic):
        self._directory = directory  # a getter, so a reload is seen at once
        self._clock = clock
        self._failures: dict[str, list[float]] = {}

    def failures(self, client_ip: str) -> int:
        now = self._clock()
        recent = [t for t in self._failures.get(client_ip, []) if now - t < FAILURE_WINDOW]
        if recent:
            self._failures[client_ip] = recent
        else:
            self._failures.pop(client_ip, None)
        return len(recent)

    def delay_for(self, client_ip: str) -> float:
        return min(MAX_DELAY, DELAY_PER_FAILURE * self.failures(client_ip))

    async def login(self, client_ip: str, username: str, password: str) -> Account | None:
        """The account when the password is right; None (after a delay) when not."""
        account = self._directory().account(username.strip())
        # Unknown users cost a verification too, so timing does not tell who exists.
        stored = account.password_hash if account and account.can_login else _dummy_hash()
        ok = await asyncio.to_thread(verify_password, stored, password)
        ok = ok and account is not None and account.can_login
        if ok:
            return account
        delay = self.delay_for(client_ip)
        self._failures.setdefault(client_ip, []).append(self._clock())
        await asyncio.sleep(delay + DELAY_PER_FAILURE)
        return None
