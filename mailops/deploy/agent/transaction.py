"""One apply on one host, run to its end on the host: stage every file, back up
what they replace, rename them into place, run the handler, verify, and on a
failed verification put every old file back and run the handler again.

The request carries everything (files as blobs), so once it has arrived the
host needs nothing more from mailops: a connection lost from here on does not
stop the transaction halfway (SIGHUP is ignored, progress events to a closed
pipe are dropped). The outcome is always the old files or the new ones.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from . import account, files, install, service, verify
from .errors import AgentFailure

KEEP_BACKUPS = 10


class StaleFacts(AgentFailure):
    pass


def run(request: dict, blobs: list[bytes], event) -> dict:
    control = service.controller(request["service"])
    _check_unchanged(request)
    _prepare(request)
    event("writing")
    staged = _stage(request, blobs)
    try:
        backup = _backup(request)
    except BaseException:
        files.remove([tmp for tmp, _ in staged])  # nothing was replaced yet
        raise
    undo = _commit(request, staged)
    handler = request.get("handler")
    event(handler or "verifying")
    since = time.time()
    try:
        if request.get("daemon_reload"):
            control.daemon_reload()
        service.run_handler(control, handler)
        problems, warnings = _verify(request["verify"], control, since, handler)
    except (service.ServiceError, OSError) as exc:
        problems, warnings = [_say(exc)], []
    if not problems:
        if undo["link_changed"]:
            install.prune(Path(request["install_dir"]))  # only now: rollback needs the old one
        _prune_backups(Path(request["backups_dir"]))
        return {"status": "applied", "backup": str(backup), "warnings": warnings}
    event("rolling back")
    return _roll_back(request, control, undo, backup, problems)


def _check_unchanged(request: dict) -> None:
    """Nothing changed since the facts the plan was made from (the lock is held
    since then, so only a hand edit can cause this)."""
    for item in request["writes"] + request["deletes"]:
        info = files.describe(Path(item["path"]))
        now = info["sha256"] if info else None
        if now != item.get("old_sha"):
            raise StaleFacts(f"{item['path']} changed since the plan was made; plan again")


def _prepare(request: dict) -> None:
    user = request.get("account")
    if user:
        account.ensure_user(user, request["account_home"])
    for d in request["dirs"]:
        files.ensure_dir(Path(d["path"]), d["mode"], d.get("owner"), d.get("group"))


def _stage(request: dict, blobs: list[bytes]) -> list[tuple[Path, Path]]:
    staged = []
    try:
        for item in request["writes"]:
            path = Path(item["path"])
            data = blobs[item["blob"]]
            staged.append(
                (files.stage(path, data, item["mode"], item.get("owner"), item.get("group")), path)
            )
    except BaseException:
        files.remove([tmp for tmp, _ in staged])
        raise
    return staged


def _backup(request: dict) -> Path:
    """Copy every file about to be replaced or deleted; index.json says which
    paths did not exist before (rollback removes those)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    root = Path(request["backups_dir"]) / f"{stamp}-{time.time_ns() % 10**6:06d}"
    root.mkdir(parents=True, mode=0o700)
    existed, created = [], []
    paths = [w["path"] for w in request["writes"]] + [d["path"] for d in request["deletes"]]
    if _manifest_changes(request):
        paths.append(request["manifest_path"])
    for path in paths:
        if Path(path).exists():
            files.copy_into_backup(Path(path), root)
            existed.append(path)
        else:
            created.append(path)
    index = {"existed": existed, "created": created, "install_current": None}
    if request.get("install_switch"):
        link = Path(request["install_dir"]) / "current"
        index["install_current"] = str(Path(link).readlink()) if link.is_symlink() else None
    files.write_now(root / "index.json", json.dumps(index, indent=1).encode(), 0o600)
    return root


def _commit(request: dict, staged: list[tuple[Path, Path]]) -> dict:
    undo = {"link_changed": False, "previous_link": None}
    files.commit(staged)
    files.remove([Path(d["path"]) for d in request["deletes"]])
    if _manifest_changes(request):
        files.write_now(Path(request["manifest_path"]), _manifest_bytes(request), 0o644)
    build = request.get("install_switch")
    if build:
        install_dir = Path(request["install_dir"])
        undo["previous_link"] = install.point_current(install_dir, install.release_link(build))
        undo["link_changed"] = True
    return undo


def _manifest_bytes(request: dict) -> bytes:
    return json.dumps(request["manifest"], indent=1, sort_keys=True).encode() + b"\n"


def _manifest_changes(request: dict) -> bool:
    """The manifest is rewritten only when the list of managed files changes."""
    try:
        return Path(request["manifest_path"]).read_bytes() != _manifest_bytes(request)
    except FileNotFoundError:
        return True


def _verify(spec: dict, control, since: float, handler: str | None):
    request = dict(spec, since=since if handler else None)
    return verify.wait_verified(request, control, float(spec["timeout"]))


def _roll_back(request, control, undo, backup: Path, problems: list[str]) -> dict:
    index = json.loads((backup / "index.json").read_text())
    restored = [
        (files.stage(Path(p), _backup_bytes(backup, p), *_old_meta(backup, p)), Path(p))
        for p in index["existed"]
    ]
    files.commit(restored)
    files.remove([Path(p) for p in index["created"]])
    if undo["link_changed"]:
        install.point_current(Path(request["install_dir"]), undo["previous_link"])
    handler = request.get("handler")
    again = _restore_service(request, control, handler, undo)
    return {
        "status": "rolled_back",
        "backup": str(backup),
        "problems": problems,
        "old_serving": not again,
        "old_problems": again,
        "warnings": [],
    }


def _restore_service(request, control, handler, undo) -> list[str]:
    """Bring back what ran before: reload the old files into a runtime that
    refused the new ones, start the old runtime after a failed restart. When
    nothing ran before (handler "start"), stop whatever the failed start left."""
    since = time.time()
    try:
        if request.get("daemon_reload"):
            control.daemon_reload()
        if handler == "start" or (undo["link_changed"] and undo["previous_link"] is None):
            control.stop()
            return ["nothing was running before this apply; nothing runs now"]
        service.run_handler(control, "restart" if handler == "restart" else "reload")
        old = dict(request["verify"], files=request["old_hashes"], prefix=None)
        again, _ = _verify(old, control, since, "reload")
        return again
    except (service.ServiceError, OSError) as exc:
        return [_say(exc)]


def _say(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def _backup_bytes(backup: Path, path: str) -> bytes:
    return (backup / path.lstrip("/")).read_bytes()


def _old_meta(backup: Path, path: str) -> tuple[int, str, str]:
    """Mode and owner of the old file: copy_into_backup kept both on the copy."""
    info = files.describe(backup / path.lstrip("/")) or {}
    return info.get("mode", 0o600), info.get("owner"), info.get("group")


def _prune_backups(folder: Path) -> None:
    if not folder.is_dir():
        return
    for old in sorted(folder.iterdir())[:-KEEP_BACKUPS]:
        shutil.rmtree(old, ignore_errors=True)
