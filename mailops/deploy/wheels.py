"""Wheels of mailops and its dependencies, made on this machine from what is
installed here, for hosts that have no internet access.

mailops's own wheel is built from its package folder, with a version that
names the build (`0.1.0+b<hash of the package's files>`), so a host runs
exactly the code of the machine that applied, and "is the runtime current?"
is one string comparison. Dependencies are packed from their installed files
(the RECORD each installer keeps), so the host gets the very versions tested
here, and nothing is downloaded. Both are deterministic zips, cached under
~/.cache/mailops/wheels. The host must match this machine's Python minor
version and architecture, since the compiled dependencies are this machine's.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mailops
from mailops.deploy.errors import DeployError

if TYPE_CHECKING:  # importlib.metadata and zipfile load only when wheels are made
    import importlib.metadata as md

ZIP_DATE = (1980, 1, 1, 0, 0, 0)
SKIP_DIST_INFO = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"}
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?")


@dataclass(frozen=True)
class Wheelhouse:
    build: str  # the build id: hash of mailops's package files
    version: str  # mailops's version in its wheel
    paths: tuple[Path, ...]

    @property
    def requirement(self) -> str:
        return f"mailops=={self.version}"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mailops" / "wheels"


def _package_files() -> list[Path]:
    """Every file of the package but bytecode (os.walk skips __pycache__
    folders instead of listing them: every command that talks to a host
    hashes the package)."""
    root = Path(mailops.__file__).parent
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            path = os.path.join(folder, name)
            if not name.endswith((".pyc", ".pyo")) and os.path.isfile(path):
                found.append(Path(path))
    return sorted(found)


_build_lock = threading.Lock()


def build_id() -> str:
    """Hash of every file of the mailops package (names and bytes). Made once
    per process: hosts' threads that ask together wait for the first."""
    with _build_lock:
        return _build_id()


@functools.cache
def _build_id() -> str:
    root = Path(mailops.__file__).parent
    digest = hashlib.sha256()
    for path in _package_files():
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_version() -> str:
    return f"{mailops.__version__}+b{build_id()}"


def platform_tag() -> dict:
    """What the host must match to run these wheels."""
    return {
        "implementation": sys.implementation.name,
        "python": ".".join(str(v) for v in sys.version_info[:2]),
        "machine": os.uname().machine,
    }


def mismatch(system: dict) -> str | None:
    """Why the host cannot run wheels made here (None if it can)."""
    here = platform_tag()
    there = {
        "implementation": system.get("implementation"),
        "python": ".".join(str(system.get("python", "")).split(".")[:2]),
        "machine": system.get("machine"),
    }
    if there == here:
        return None
    return (
        f"the host runs {there['implementation']} {there['python']} on {there['machine']}, "
        f"but the runtime's wheels are made here for {here['implementation']} "
        f"{here['python']} on {here['machine']}; apply from a machine that matches"
    )


def wheelhouse() -> Wheelhouse:
    """mailops's wheel, its dependencies' and pip's (which installs them on the host)."""
    import importlib.metadata as md

    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [_mailops_wheel(folder)]
    for dist in [*_dependencies("mailops"), md.distribution("pip")]:
        paths.append(_installed_wheel(dist, folder))
    return Wheelhouse(build_id(), build_version(), tuple(paths))


# ---------------------------------------------------------------- dependency closure


def _dependencies(root: str) -> list[md.Distribution]:
    """Installed distributions mailops needs, transitively. A requirement counts
    when it is installed here: the host matches this machine, so a marker that
    holds here holds there (extras only when asked for)."""
    import importlib.metadata as md

    found: dict[str, md.Distribution] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        for text in _distribution(name).requires or []:
            match = _NAME.match(text)
            if match is None or not _wanted(text, extras):
                continue
            dep = _canonical(match.group(1))
            try:
                dist = md.distribution(dep)
            except md.PackageNotFoundError:
                continue
            wanted = frozenset(e.strip() for e in (match.group(2) or "[]")[1:-1].split(",") if e)
            if dep not in found or wanted:
                found[dep] = dist
                todo.append((dep, wanted))
    return [found[k] for k in sorted(found)]


def _wanted(requirement: str, extras: frozenset[str]) -> bool:
    marker = requirement.partition(";")[2]
    named = re.findall(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
    return not named or any(_canonical(e) in {_canonical(x) for x in extras} for e in named)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distribution(name: str) -> md.Distribution:
    import importlib.metadata as md

    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        raise DeployError(f"cannot build the runtime's wheels: {name} is not installed") from None


# ---------------------------------------------------------------- zips


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _write_wheel(path: Path, entries: list[tuple[str, bytes]], dist_info: str) -> None:
    """A deterministic wheel: sorted entries, fixed dates, RECORD last."""
    import zipfile

    tmp = path.with_suffix(f".tmp{os.getpid()}")
    records = [_record_line(n, d) for n, d in entries] + [f"{dist_info}/RECORD,,"]
    entries = [*entries, (f"{dist_info}/RECORD", ("\n".join(records) + "\n").encode())]
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    os.replace(tmp, path)


def _mailops_wheel(folder: Path) -> Path:
    version = build_version()
    path = folder / f"mailops-{version}-py3-none-any.whl"
    if path.exists():
        return path
    dist = _distribution("mailops")
    root = Path(mailops.__file__).parent
    info = f"mailops-{version}.dist-info"
    entries = [
        (f"mailops/{p.relative_to(root).as_posix()}", p.read_bytes()) for p in _package_files()
    ]
    metadata = "".join(
        f"{key}: {value}\n" if key != "Version" else f"Version: {version}\n"
        for key, value in dist.metadata.items()
        if key != "Description"
    )
    entries += [
        (f"{info}/METADATA", metadata.encode()),
        (
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: mailops\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        (f"{info}/entry_points.txt", (dist.read_text("entry_points.txt") or "").encode()),
    ]
    _write_wheel(path, sorted(entries), info)
    _prune_builds(folder, keep=5)
    return path


def _prune_builds(folder: Path, keep: int) -> None:
    """Each build of mailops leaves a wheel in the cache; keep the newest few."""
    builds = sorted(folder.glob("mailops-*.whl"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in builds[keep:]:
        old.unlink(missing_ok=True)


def _installed_wheel(dist: md.Distribution, folder: Path) -> Path:
    """Re-pack an installed distribution as the wheel it came from."""
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    version = dist.version
    tags = _wheel_tags(dist.read_text("WHEEL") or "")
    path = folder / f"{name}-{version}-{tags}.whl"
    if path.exists():
        return path
    if dist.files is None:
        raise DeployError(
            f"cannot pack {dist.metadata['Name']} for the host: it was installed without a "
            "file list (RECORD); reinstall it with pip"
        )
    entries = []
    info = None
    for file in dist.files:
        rel = file.as_posix()
        if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc"):
            continue  # scripts and data outside site-packages: pip makes scripts anew
        parts = rel.split("/")
        if parts[0].endswith(".dist-info"):
            info = parts[0]
            if parts[-1] in SKIP_DIST_INFO:
                continue
        located = Path(dist.locate_file(file))
        if located.is_file():
            entries.append((rel, located.read_bytes()))
    if info is None:
        raise DeployError(f"cannot pack {dist.metadata['Name']}: no .dist-info among its files")
    _write_wheel(path, sorted(entries), info)
    return path


def _wheel_tags(wheel_file: str) -> str:
    """`py3-none-any` style from the WHEEL file's Tag lines (compressed form)."""
    tags = [
        line.split(":", 1)[1].strip() for line in wheel_file.splitlines() if line.startswith("Tag:")
    ]
    if not tags:
        return "py3-none-any"
    parts = [sorted({t.split("-")[i] for t in tags}) for i in range(3)]
    return "-".join(".".join(p) for p in parts)
