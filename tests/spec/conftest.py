"""Shared helpers for the spec tests: running the real CLI in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

MEMORY_LIMIT = 2 * 1024**3  # a runaway child fails with MemoryError instead of eating the machine


def _limit_memory() -> None:  # pragma: no cover - runs in the child
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _command(args) -> list[str]:
    return [sys.executable, "-m", "mailops", *map(str, args)]


def _options(cwd: Path | None, columns: int) -> dict:
    return {
        "cwd": cwd,
        "env": {**os.environ, "NO_COLOR": "1", "COLUMNS": str(columns), "TERM": "dumb"},
        "preexec_fn": _limit_memory if sys.platform.startswith("linux") else None,
    }


def run_mailops(
    *args: str | Path, cwd: Path | None = None, timeout: float = 30, columns: int = 200
) -> subprocess.CompletedProcess[str]:
    """`python -m mailops ARGS` as a user would run it: text out, exit code, no colour."""
    return subprocess.run(
        _command(args),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        **_options(cwd, columns),
    )


def run_mailops_many(
    runs: dict[str, list[str | Path]], folder: Path, timeout: float = 30
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Several `python -m mailops` runs at once (each start-up takes a second); output
    goes to files in `folder`, so no child blocks on a full pipe. A run that outlives
    `timeout` is killed and reported with return code None."""
    started = {}
    for name, args in runs.items():
        with (folder / f"{name}.out").open("wb") as out, (folder / f"{name}.err").open("wb") as err:
            started[name] = subprocess.Popen(
                _command(args), stdout=out, stderr=err, **_options(None, 200)
            )
    deadline = time.monotonic() + timeout
    results = {}
    for name, process in started.items():
        try:
            code = process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
        text = {
            kind: (folder / f"{name}.{kind}").read_text(errors="replace") for kind in ("out", "err")
        }
        if code is None:
            text["err"] += f"\n[killed after {timeout} s]"
        results[name] = subprocess.CompletedProcess(
            process.args,
            code,
            text["out"],
            text["err"],  # type: ignore[arg-type]
        )
    return results


@pytest.fixture
def mailops() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_mailops


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[[str | bytes, str], Path]:
    """Write spec text (or raw bytes) to a file in tmp_path and return its path."""

    def write(content: str | bytes, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return write
