"""Small helpers shared by the deploy tests: apply in-process, mail checks, mtimes."""

from __future__ import annotations

import os
import smtplib
import ssl
import sys
import time
from pathlib import Path

from mailops import cli
from mailops.deploy.apply import Options, apply_all, load_targets, plan_all
from mailops.deploy.executor import Outcome


def apply(spec: Path, check: bool = False, **options) -> list[Outcome]:
    timeout = options.pop("verify_timeout", 60.0)
    targets = load_targets(spec, options.pop("hosts", None))
    return apply_all(
        targets,
        Options(verify_timeout=timeout, **options),
        lambda host, stage: None,
        lambda outcomes: True,
        check=check,
    )


def plan(spec: Path, **options) -> list[Outcome]:
    targets = load_targets(spec, options.pop("hosts", None))
    return plan_all(targets, Options(**options), lambda host, stage: None)


def run_cli(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """`mailops ARGS` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["mailops", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def by_host(outcomes: list[Outcome]) -> dict[str, Outcome]:
    return {o.host_id: o for o in outcomes}


def send(port: int, to: str, subject: str = "deploy test") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("sender@remote.example", [to], f"Subject: {subject}\r\n\r\nhello\r\n")


def arrived(data: Path, address: str, subject: str, timeout: float = 10) -> bool:
    local, _, domain = address.partition("@")
    folder = data / "mail" / domain / local / "new"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.is_dir():
            for path in folder.iterdir():
                if f"Subject: {subject}".encode() in path.read_bytes():
                    return True
        time.sleep(0.05)
    return False


def login_works(port: int, user: str, password: str) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the hosts' certificates are self-signed
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.starttls(context=context)
        try:
            client.login(user, password)
        except smtplib.SMTPAuthenticationError:
            return False
    return True


# Not managed files: the runtime's own log, mail and queue change as mail flows.
UNMANAGED = {"mailops.log"}


def mtimes(folder: Path) -> dict[str, int]:
    """Every file under `folder` (backups, mail and queue aside) → its mtime in ns."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in ("backups", "mail", "queue")]
        for name in filenames:
            if name in UNMANAGED:
                continue
            path = os.path.join(dirpath, name)
            out[path] = os.stat(path).st_mtime_ns
    return out


def banner(port: int) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        return client.ehlo()[1].decode()


def runtime_pid(data: Path) -> int:
    return int((data / "mailops.pid").read_text())


def tmp_files(folder: Path) -> list[Path]:
    """Temp files an interrupted write would leave (the agent's marker)."""
    return [p for p in folder.rglob("*") if ".mailops-tmp-" in p.name]


def contents(folder: Path) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in UNMANAGED
    }
