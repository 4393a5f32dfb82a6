"""Retries: what is retried, how often, and what the finding then says."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from mailops.audit.dnsquery import parse_server
from mailops.audit.net import Exhausted, ProtocolError, RetryPolicy, describe, with_retries
from mailops.errors import UsageError

FAST = RetryPolicy(attempts=3, timeout=1.0, delays=(0.0,))


def flaky(failures: list[BaseException], result="done"):
    calls = []

    async def operation():
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return result

    return operation, calls


def test_a_refused_connection_is_retried_and_the_retry_counted():
    operation, calls = flaky([ConnectionRefusedError()])
    assert asyncio.run(with_retries(operation, FAST)) == ("done", 1)
    assert len(calls) == 2


def test_every_attempt_failing_says_how_many():
    operation, calls = flaky([ConnectionResetError()] * 3)
    with pytest.raises(Exhausted) as caught:
        asyncio.run(with_retries(operation, FAST))
    assert caught.value.text() == "connection reset by the server (3 attempts)"
    assert len(calls) == 3


def test_certificate_and_protocol_errors_are_not_retried():
    for error in (ssl.SSLCertVerificationError("bad"), ProtocolError("550 no")):
        operation, calls = flaky([error])
        with pytest.raises(type(error)):
            asyncio.run(with_retries(operation, FAST))
        assert len(calls) == 1


def test_a_slow_operation_times_out_and_is_retried():
    async def slow():
        await asyncio.sleep(5)

    policy = RetryPolicy(attempts=2, timeout=0.05, delays=(0.0,))
    with pytest.raises(Exhausted) as caught:
        asyncio.run(with_retries(slow, policy))
    assert describe(caught.value) == "timed out (2 attempts)"


def test_server_addresses():
    assert (parse_server("127.0.0.1:5353").address, parse_server("127.0.0.1:5353").port) == (
        "127.0.0.1",
        5353,
    )
    assert parse_server("::1").port == 53
    assert str(parse_server("[::1]:5353")) == "[::1]:5353"
    with pytest.raises(UsageError, match="not a DNS server address"):
        parse_server("ns1.example.org")
