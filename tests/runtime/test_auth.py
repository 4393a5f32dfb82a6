import asyncio

from mailops.passwords import hash_password
from mailops.runtime import auth
from mailops.runtime.auth import Authenticator
from mailops.runtime.config import DomainConfig
from mailops.runtime.directory import Account, Directory

HASH = hash_password("right", b"0123456789abcdef")


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(monkeypatch):
    slept: list[float] = []

    async def fake_sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr(auth.asyncio, "sleep", fake_sleep)
    directory = Directory(
        domains={"example.org": DomainConfig(role="mailbox")},
        accounts={
            "alice@example.org": Account("alice@example.org", HASH),
            "nologin@example.org": Account("nologin@example.org", ""),
        },
    )
    clock = Clock()
    return Authenticator(lambda: directory, clock=clock), clock, slept


def test_right_password_logs_in_without_delay(monkeypatch):
    authenticator, _, slept = make(monkeypatch)
    account = asyncio.run(authenticator.login("192.0.2.1", " Alice@Example.org ", "right"))
    assert account is not None and account.address == "alice@example.org"
    assert slept == []


def test_failures_are_counted_per_ip_and_slow_down(monkeypatch):
    authenticator, clock, slept = make(monkeypatch)
    for _ in range(3):
        assert asyncio.run(authenticator.login("192.0.2.1", "alice@example.org", "wrong")) is None
    assert slept == [0.5, 1.0, 1.5]
    assert authenticator.failures("192.0.2.1") == 3
    assert authenticator.failures("192.0.2.2") == 0  # another client is not punished
    clock.now += auth.FAILURE_WINDOW + 1
    assert authenticator.failures("192.0.2.1") == 0  # forgotten after the window


def test_unknown_and_nologin_users_fail_like_a_wrong_password(monkeypatch):
    authenticator, _, slept = make(monkeypatch)
    assert asyncio.run(authenticator.login("192.0.2.9", "nobody@example.org", "right")) is None
    assert asyncio.run(authenticator.login("192.0.2.9", "nologin@example.org", "")) is None
    assert slept == [0.5, 1.0]


def test_delay_is_capped(monkeypatch):
    authenticator, _, _ = make(monkeypatch)
    for _ in range(17):  # 16 failures reach the cap
        asyncio.run(authenticator.login("192.0.2.1", "alice@example.org", "wrong"))
    assert authenticator.delay_for("192.0.2.1") == auth.MAX_DELAY
