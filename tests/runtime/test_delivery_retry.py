"""The retry schedule: exponential backoff, capped, never past the lifetime."""

from __future__ import annotations

from mailops.runtime.delivery.retry import Schedule, backoff


def test_backoff_doubles_from_the_base_up_to_the_cap():
    waits = [backoff(n, 300, 3600) for n in range(1, 8)]
    assert waits == [300, 600, 1200, 2400, 3600, 3600, 3600]
    assert backoff(10_000, 1, 50) == 50  # no overflow for very old messages


def test_next_attempt_never_passes_the_lifetime():
    schedule = Schedule(base=300, cap=3600, lifetime=5 * 86400, delay_warning=4 * 3600)
    created = 1_000_000.0
    assert schedule.next_attempt(created, 1, created + 10) == created + 310
    late = created + 5 * 86400 - 100
    assert schedule.next_attempt(created, 40, late) == created + 5 * 86400
    assert not schedule.expired(created, late)
    assert schedule.expired(created, created + 5 * 86400)


def test_delay_warning_once_after_its_time_and_only_before_the_lifetime():
    schedule = Schedule(base=1, cap=2, lifetime=100, delay_warning=10)
    assert not schedule.warn_delay(0, 9, warned=False)
    assert schedule.warn_delay(0, 10, warned=False)
    assert not schedule.warn_delay(0, 50, warned=True)
    never = Schedule(base=1, cap=2, lifetime=10, delay_warning=10)
    assert not never.warn_delay(0, 20, warned=False)  # it bounces instead
