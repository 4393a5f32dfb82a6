"""Network failures as words, and retries for a flaky network.

A check retries what may pass a moment later (a refused or reset connection, a
timeout, a lost UDP answer) and never what will not (a certificate that does not
verify, a protocol answer that is simply wrong). The number of retries a result
needed is kept, so the report can say that a pass was shaky.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import dns.exception

T = TypeVar("T")


class ProtocolError(Exception):
    """The server answered, but not as the protocol or the spec says: a finding,
    not a network hiccup, so it is never retried."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    timeout: float = 5.0
    """Seconds for one attempt of one operation."""
    delays: tuple[float, ...] = (0.2, 0.6)
    """Pause before the 2nd, 3rd, … attempt (the last value repeats)."""

    def delay(self, attempt: int) -> float:
        return self.delays[min(attempt, len(self.delays) - 1)] if self.delays else 0.0


class Exhausted(Exception):
    """Every attempt failed; `cause` is the last failure."""

    def __init__(self, cause: BaseException, attempts: int):
        super().__init__(describe(cause))
        self.cause = cause
        self.attempts = attempts

    @property
    def retried(self) -> int:
        return self.attempts - 1

    def text(self) -> str:
        tries = f" ({self.attempts} attempts)" if self.attempts > 1 else ""
        return describe(self.cause) + tries


def transient(exc: BaseException) -> bool:
    """Worth another attempt? TLS errors are OSErrors too, but a certificate does
    not start verifying by itself."""
    if isinstance(exc, ssl.SSLError | ProtocolError):
        return False
    return isinstance(
        exc,
        OSError | TimeoutError | asyncio.IncompleteReadError | EOFError | dns.exception.Timeout,
    )


async def with_retries(operation: Callable[[], Awaitable[T]], policy: RetryPolicy) -> tuple[T, int]:
    """(result, retries needed); Exhausted when every attempt failed transiently.
    Each attempt is bounded by policy.timeout."""
    last: BaseException | None = None
    for attempt in range(policy.attempts):
        if attempt:
            await asyncio.sleep(policy.delay(attempt - 1))
        try:
            return await asyncio.wait_for(operation(), policy.timeout), attempt
        except Exception as exc:
            if not transient(exc):
                raise
            last = exc
    assert last is not None
    raise Exhausted(last, policy.attempts)


def describe(exc: BaseException) -> str:
    """A network failure in a few words, for a finding."""
    if isinstance(exc, Exhausted):
        return exc.text()
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not verified: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, TimeoutError | dns.exception.Timeout):
        return "timed out"
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return "the server closed the connection"
    if isinstance(exc, ProtocolError):
        return str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"
