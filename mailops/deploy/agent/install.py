"""The runtime's virtual environment on the host.

Each build of mailops gets its own release folder, `<install>/releases/<build>`,
made from uploaded wheels with `pip install --no-index` (the host needs no
internet, only Python). pip itself comes as one of the wheels and runs from
it, so the host needs no pip or ensurepip either. A release is complete when
its marker file exists; `<install>/current` is a symlink to the release in
use, switched atomically by the transaction, which keeps the previous one
for rollback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from . import files, lock
from .errors import AgentFailure

MARKER = "mailops-build.json"
KEEP_RELEASES = 3


class InstallError(AgentFailure):
    pass


def release_dir(install_dir: Path, build: str) -> Path:
    return install_dir / "releases" / build


def current_build(install_dir: Path) -> str | None:
    try:
        return json.loads((install_dir / "current" / MARKER).read_text())["build"]
    except (OSError, ValueError, KeyError):
        return None


def has_release(install_dir: Path, build: str) -> bool:
    return (release_dir(install_dir, build) / MARKER).exists()


def install(request: dict, blobs: list[bytes]) -> dict:
    """Make the release unless it is there; one maker at a time per install folder
    (hosts that share one, like several on one machine, wait for each other)."""
    install_dir = Path(request["install_dir"])
    with lock.blocking(f"install:{install_dir}"):
        return _install(install_dir, request, blobs)


def _install(install_dir: Path, request: dict, blobs: list[bytes]) -> dict:
    import shutil

    build = request["build"]
    release = release_dir(install_dir, build)
    if has_release(install_dir, build):
        return {"release": str(release), "made": False}
    wheel_dir = install_dir / "wheels" / build
    shutil.rmtree(wheel_dir, ignore_errors=True)
    wheel_dir.mkdir(parents=True, mode=0o755)
    for name, data in zip(request["wheels"], blobs, strict=True):
        (wheel_dir / Path(name).name).write_bytes(data)
    shutil.rmtree(release, ignore_errors=True)  # a release a killed session left half-made
    try:
        _run([sys.executable, "-m", "venv", "--without-pip", str(release)])
        pip = next(wheel_dir.glob("pip-*.whl"))
        _run(
            [
                str(release / "bin" / "python"),
                f"{pip}/pip",
                "install",
                "--quiet",
                "--no-index",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--no-warn-script-location",
                "--find-links",
                str(wheel_dir),
                request["requirement"],
            ]
        )
    except InstallError:
        shutil.rmtree(release, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(wheel_dir, ignore_errors=True)
    files.write_now(release / MARKER, json.dumps({"build": build}).encode() + b"\n", 0o644)
    return {"release": str(release), "made": True}


def _run(command: list[str]) -> None:
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit code {result.returncode}"
        raise InstallError(f"{Path(command[0]).name} {command[1]} failed: {detail}")


def point_current(install_dir: Path, target: str | None) -> str | None:
    """Point `current` at `target` (a path relative to the install folder, or None
    to remove the link), atomically; return what it pointed at before."""
    link = install_dir / "current"
    previous = os.readlink(link) if link.is_symlink() else None
    if target is None:
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        return previous
    tmp = install_dir / f".current{files.TMP_MARK}{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    files.fsync_dir(install_dir)
    return previous


def release_link(build: str) -> str:
    return os.path.join("releases", build)


def prune(install_dir: Path) -> None:
    """Keep the newest few releases (the current one always)."""
    import shutil

    releases = install_dir / "releases"
    if not releases.is_dir():
        return
    current = os.path.realpath(install_dir / "current")
    found = sorted(releases.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in found[KEEP_RELEASES:]:
        if os.path.realpath(old) != current:
            shutil.rmtree(old, ignore_errors=True)
