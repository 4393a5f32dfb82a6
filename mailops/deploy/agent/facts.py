"""Facts about a host, gathered in one request: the system, every managed file's
hash and mode, the installed runtime, the service and what the runtime loaded.

Reading only: facts never write a managed file (a no-op apply leaves every
mtime as it was). The exceptions are the lock file and the removal of temp
files a killed session left behind.
"""

from __future__ import annotations

import json
import os
import pwd
import sys
from pathlib import Path

from . import files, install, service, verify

MAX_CONTENT = 1 << 20  # files larger than this are not sent back for diffs


def system() -> dict:
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return {
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "machine": os.uname().machine,
        "os": _os_name(),
        "user": user,
        "uid": uid,
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return os.uname().sysname


def read_manifest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def gather(request: dict) -> tuple[dict, list[bytes]]:
    manifest = read_manifest(Path(request["manifest"]))
    wanted = {f["path"]: f for f in request["files"]}
    paths = list(wanted) + [p for p in (manifest or {}).get("files", []) if p not in wanted]
    described, contents, blobs = {}, [], []
    for path in paths:
        info = files.describe(Path(path))
        described[path] = info
        want = wanted.get(path)
        if _send_content(want, info):
            contents.append(path)
            blobs.append(Path(path).read_bytes())
    install_dir = Path(request["paths"]["install"])
    control = service.controller(request["service"])
    result = {
        "system": system(),
        "files": described,
        "contents": contents,
        "manifest": manifest,
        "install": {
            "current": install.current_build(install_dir),
            "has_wanted": install.has_release(install_dir, request["build"]),
        },
        "service": control.state(),
        "status": verify.read_status(Path(request["status_file"])),
        "swept": files.sweep([Path(d) for d in request.get("sweep", [])]),
    }
    return result, blobs


def _send_content(want: dict | None, info: dict | None) -> bool:
    """Old contents go back only where the plan shows a diff: requested, present,
    different from what will be written, and not huge."""
    if not want or not want.get("content") or not info or info.get("sha256") is None:
        return False
    return info["sha256"] != want.get("expect") and info["size"] <= MAX_CONTENT
