"""`mailops audit` exit codes: 1 when something fails (as a finding, never a
traceback), 2 for usage errors. The all-green run is in test_lab.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mailops.errors import UsageError
from tests.audit.specs import small_context


def mailops(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mailops", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )


def test_nothing_answering_is_findings_and_exit_1(tmp_path):
    spec = small_context(tmp_path).loaded.path
    dead = "127.0.0.1:1"  # nothing answers DNS there
    done = mailops(
        "audit", str(spec), "--resolver", dead, "--authoritative", dead, "--only", "dns",
        "--timeout", "0.2",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "dns.resolver" in done.stdout
    assert "does not answer: timed out (3 attempts)" in done.stdout
    assert "fix: pass --resolver with a resolver that answers" in done.stdout
    assert "audit FAILED: 0 ok, 0 warning(s), 2 failure(s)" in done.stdout


def test_usage_errors_exit_2(tmp_path):
    spec = small_context(tmp_path).loaded.path
    done = mailops("audit", str(spec), "--host", "nosuch")
    assert done.returncode == 2
    assert "no host 'nosuch' in" in done.stderr


def test_usage_errors_are_caught_before_anything_is_asked(tmp_path):
    with pytest.raises(UsageError, match=r"unknown --only everything \(one of: dns, probes"):
        small_context(tmp_path, only=["everything"])
    with pytest.raises(UsageError, match=r"no domain 'other\.test'"):
        small_context(tmp_path, domains=["other.test"])
    with pytest.raises(UsageError, match="is not a DNS server address"):
        small_context(tmp_path, authoritative=["ns1.example.org"])
