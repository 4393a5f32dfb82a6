"""Servers that misbehave: every oddity is a finding on the step where it
happened — never a traceback — and flaky ones are retried and said so."""

from __future__ import annotations

import asyncio

from mailops.audit.probes import imap, pop3, smtp
from mailops.audit.probes.base import Target, run_probe
from tests.audit.specs import small_context


async def probe_against(handler, body, service: str, ctx) -> list:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        target = Target("mx1", "mx1.example.test", "127.0.0.1", service, port)
        return await run_probe(ctx, target, body)
    finally:
        server.close()
        await server.wait_closed()


def run(handler, body, service, tmp_path, **options):
    options.setdefault("timeout", 0.3)
    options.setdefault("attempts", 2)
    ctx = small_context(tmp_path, **options)
    return asyncio.run(probe_against(handler, body, service, ctx))


def summary(findings) -> list[tuple[str, str, str]]:
    return [(f.check, f.severity, f.text) for f in findings]


def test_http_on_the_smtp_port(tmp_path):
    async def http(reader, writer):
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    findings = run(http, smtp.probe, "smtp", tmp_path)
    assert summary(findings) == [
        ("net.port", "ok", "open"),
        ("smtp.banner", "fail", "not an SMTP reply: 'HTTP/1.1 400 Bad Request'"),
    ]


def test_a_silent_server_times_out_after_retries(tmp_path):
    async def silent(reader, writer):
        await asyncio.sleep(5)

    findings = run(silent, imap.probe, "imap", tmp_path)
    assert summary(findings) == [
        ("net.port", "ok", "open"),
        ("imap.greeting", "fail", "timed out (2 attempts)"),
    ]
    assert [f.retried for f in findings] == [1, 1]


def test_a_server_that_works_on_the_second_try_says_so(tmp_path):
    calls = []

    async def flaky(reader, writer):
        calls.append(1)
        if len(calls) == 1:
            writer.transport.abort()  # a reset in the middle of the greeting
            return
        writer.write(b"+OK ready\r\n")
        await writer.drain()
        while line := await reader.readline():
            if line.startswith(b"CAPA"):
                writer.write(b"+OK\r\nUIDL\r\n.\r\n")
            elif line.startswith(b"USER"):
                writer.write(b"-ERR use STLS first\r\n")
            else:
                writer.write(b"+OK bye\r\n")
            await writer.drain()

    findings = run(flaky, pop3.probe, "pop3", tmp_path, tls="{self_signed: true}")
    assert summary(findings) == [
        ("net.port", "ok", "open"),
        ("pop3.greeting", "ok", "+OK ready"),
        ("auth.before-tls", "ok", "no USER before STLS (-ERR use STLS first)"),
        (
            "tls.handshake",
            "fail",
            "STLS not offered: passwords and mail would cross in clear",
        ),
    ]
    assert {f.retried for f in findings} == {1}


def test_nothing_listening(tmp_path):
    ctx = small_context(tmp_path, timeout=0.3, attempts=2)
    target = Target("mx1", "mx1.example.test", "127.0.0.1", "submissions", 1)
    findings = asyncio.run(run_probe(ctx, target, smtp.probe))
    assert summary(findings) == [("net.port", "fail", "connection refused (2 attempts)")]
    assert "`mailops service" in findings[0].fix and "start --host mx1`" in findings[0].fix
