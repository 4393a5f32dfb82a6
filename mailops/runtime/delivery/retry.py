"""The retry schedule: exponential backoff, never past the queue lifetime.

After attempt n (1, 2, …) the next one waits `base · 2^(n-1)` seconds, at most
`cap`. The last attempt is made when the lifetime runs out, so a message
bounces for what its final try found, not for a stale error from hours ago.
"""

from __future__ import annotations

from dataclasses import dataclass


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after the `attempts`-th failed attempt (attempts ≥ 1)."""
    exponent = min(max(attempts, 1) - 1, 60)  # 2^60 s is forever; keeps the float finite
    return min(base * 2.0**exponent, cap)


@dataclass(frozen=True)
class Schedule:
    base: float
    cap: float
    lifetime: float
    delay_warning: float

    def next_attempt(self, created: float, attempts: int, now: float) -> float:
        """When to try again after `attempts` failures; the expiry time at the latest."""
        return min(now + backoff(attempts, self.base, self.cap), created + self.lifetime)

    def expired(self, created: float, now: float) -> bool:
        return now >= created + self.lifetime

    def warn_delay(self, created: float, now: float, warned: bool) -> bool:
        """Tell the sender once, and only if the message will not bounce anyway soon."""
        due = now >= created + self.delay_warning
        return not warned and due and self.delay_warning < self.lifetime
