"""`mailops serve` as a process: reload on SIGHUP, clean stop on SIGTERM, clear
errors at start, and `mailops queue list` on what it queued."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time

import pytest

from mailops.passwords import hash_password
from tests.integration.mailserver import mail_server

pytestmark = pytest.mark.integration

MESSAGE = b"Subject: serve\r\n\r\nbody\r\n"


def rcpt_code(server, address: str) -> int:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        client.ehlo("client.example")
        client.mail("x@remote.example")
        return client.rcpt(address)[0]


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sighup_reloads_users_and_refuses_a_bad_config(tmp_path):
    with mail_server(tmp_path / "srv") as server:
        assert rcpt_code(server, "carol@example.test") == 550
        passwd = server.root / "etc" / "passwd"
        carol = hash_password("carol-pw", b"carolsaltcarolsa")
        passwd.write_text(passwd.read_text() + f"carol@example.test:{carol}::::::\n")
        server.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "event=reload.done" in server.log())
        assert rcpt_code(server, "carol@example.test") == 250

        # A broken runtime.toml is refused; the running config keeps serving.
        good = server.config.read_text()
        server.config.write_text(good + "\nthis is not toml\n")
        server.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "event=reload.refused" in server.log())
        assert rcpt_code(server, "carol@example.test") == 250
        assert server.proc.poll() is None
        server.config.write_text(good)


def test_sigterm_stops_cleanly_and_keeps_the_queue(tmp_path):
    with mail_server(tmp_path / "srv") as server:
        with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as client:
            client.starttls(context=server.client_context())
            client.login("alice@example.test", "alice-pw")
            client.sendmail("alice@example.test", ["dave@elsewhere.example"], MESSAGE)
        pid_file = server.data / "mailops.pid"
        assert pid_file.read_text().strip() == str(server.proc.pid)
        assert server.stop() == 0
        assert not pid_file.exists()
        assert "event=stopped" in server.log()
        listing = subprocess.run(
            [
                sys.executable,
                "-m",
                "mailops",
                "queue",
                "list",
                "--json",
                "--config",
                str(server.config),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert listing.returncode == 0, listing.stderr
        entries = json.loads(listing.stdout)
        assert [(e["sender"], e["recipients"]) for e in entries] == [
            ("alice@example.test", ["dave@elsewhere.example"])
        ]


def test_sigterm_lets_a_session_in_flight_finish(tmp_path):
    with mail_server(tmp_path / "srv") as server:
        client = smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10)
        client.ehlo("client.example")
        client.mail("x@remote.example")
        client.rcpt("bob@example.test")
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # The listener is closed to new clients, but this session may finish.
        code, _ = client.data(MESSAGE)
        assert code == 250
        client.quit()
        assert server.proc.wait(timeout=30) == 0
        assert any(m.endswith(MESSAGE) for m in server.messages("bob"))


def run_serve(config) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mailops", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_missing_config_is_one_clear_line(tmp_path):
    result = run_serve(tmp_path / "nope.toml")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"mailops: error: {tmp_path / 'nope.toml'}: cannot read: No such file or directory"
    )


def test_port_in_use_is_one_clear_line(tmp_path):
    with mail_server(tmp_path / "srv") as server:
        result = run_serve(server.config)  # same ports, already taken
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mailops: error: cannot listen on 127.0.0.1 port ")
    assert "Address already in use" in last
