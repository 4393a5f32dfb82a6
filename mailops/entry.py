"""The `mailops` command's entry point, which may start the in-sync memo's
check (deploy/memo.py) before the command line is even loaded.

A no-op `mailops apply SPEC` spends most of its time in two things that need
not wait for each other: loading the command line (typer) and asking the hosts
(importing paramiko, logging in, the agent's answer). On a machine with more
than one core, a child process forked here asks the hosts while this one loads
the command line; the apply command then takes the child's answer instead of
asking itself. Only the plain forms `apply SPEC`, with `--yes` or `-y`, start
one: any other command line is parsed as usual and nothing runs ahead of it.

The child writes nothing but its answer, on a pipe, and closes its sessions
(releasing the hosts' locks) before it answers. A child whose answer is not
wanted is killed at exit.
"""

from __future__ import annotations

import os
import sys

_early: tuple[str, int, int] | None = None  # (spec's absolute path, child's pid, pipe)


def main() -> None:
    spec = plain_apply(sys.argv[1:])
    if spec and hasattr(os, "fork") and (os.cpu_count() or 1) > 1:
        _start(spec)
    from mailops.cli import main as cli_main

    cli_main()


def plain_apply(argv: list[str]) -> str | None:
    """SPEC when the command line is `apply SPEC` with at most --yes / -y."""
    if not argv or argv[0] != "apply":
        return None
    rest = [a for a in argv[1:] if a not in ("--yes", "-y")]
    if len(rest) != 1 or rest[0].startswith("-"):
        return None
    return rest[0]


def _start(spec: str) -> None:
    global _early
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(spec, write_end)  # never returns
    os.close(write_end)
    _early = (os.path.abspath(spec), pid, read_end)
    import atexit

    atexit.register(_stop)


def _child(spec: str, out: int) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # nothing from here may reach the user's terminal
        os.dup2(devnull, 2)
        import json
        from pathlib import Path

        from mailops.deploy import memo

        noted = memo.replay(Path(spec), None)
        answer = noted and noted.as_json()
        os.write(out, json.dumps(answer).encode())
    finally:
        os._exit(0)  # not the parent's atexit handlers, nor its buffered output


def early_replay(spec, hosts: list[str] | None):
    """(True, the child's answer: memo.InSync or None) when a child was started
    for this spec and this choice of hosts; (False, None) otherwise."""
    global _early
    if _early is None:
        return False, None
    path, pid, read_end = _early
    _early = None
    if hosts or os.path.abspath(spec) != path:
        _kill(pid)
        os.close(read_end)
        return False, None
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return True, _answer(b"".join(chunks))


def _answer(data: bytes):
    import json

    from mailops.deploy.memo import InSync

    try:
        answer = json.loads(data)
        return None if answer is None else InSync.from_json(answer)
    except (ValueError, KeyError, TypeError):  # the child died before it answered
        return None


def _stop() -> None:
    if _early is not None:
        _kill(_early[1])


def _kill(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
