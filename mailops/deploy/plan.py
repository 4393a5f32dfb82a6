"""Bundle × facts → one host's plan: files to create, update or delete (with
redacted diffs), the runtime to install, the handler to run, and notes.

Pure: no I/O. The same facts give the same plan, and a host whose facts match
the bundle gives an empty plan (nothing is sent to it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from mailops.deploy import handlers, redact
from mailops.deploy.desired import Desired
from mailops.deploy.facts import HostFacts
from mailops.deploy.layout import Layout


@dataclass
class FileChange:
    action: str  # create | update | delete
    path: str
    rel: str
    secret: bool
    old_sha: str | None
    desired: Desired | None  # None for a delete
    reasons: list[str] = field(default_factory=list)  # what differs besides content
    summary: list[str] = field(default_factory=list)  # redacted, for secrets
    diff: str = ""

    def as_dict(self) -> dict:
        return {
            "action": self.action,
            "path": self.path,
            "file": self.rel,
            "secret": self.secret,
            "reasons": self.reasons,
            "summary": self.summary,
            "diff": self.diff,
        }


@dataclass
class InstallStep:
    build: str
    version: str
    current: str | None  # the build installed now, if any
    upload: bool  # False when the release is on the host already (made, not switched)

    def describe(self) -> str:
        verb = "install" if self.current is None else "upgrade"
        was = f" (now {self.current})" if self.current else ""
        return f"{verb} runtime {self.version}{was}"


@dataclass
class HostPlan:
    layout: Layout
    desired: list[Desired]
    facts: HostFacts
    changes: list[FileChange]
    install: InstallStep | None
    handler: str | None
    notes: list[str]

    @property
    def host_id(self) -> str:
        return self.layout.host_id

    @property
    def empty(self) -> bool:
        return not self.changes and self.install is None and self.handler is None

    def as_dict(self) -> dict:
        return {
            "host": self.host_id,
            "system": self.facts.system,  # OS, Python, user on the host
            "changes": [c.as_dict() for c in self.changes],
            "install": self.install.describe() if self.install else None,
            "handler": self.handler,
            "notes": self.notes,
        }


def make_plan(
    layout: Layout,
    desired: list[Desired],
    facts: HostFacts,
    build: str,
    version: str | Callable[[], str],
) -> HostPlan:
    """`version` names the runtime `build` is of; a function giving it is only
    called when the runtime is to be installed."""
    changes = [c for d in desired if (c := _compare(d, facts)) is not None]
    changes += _deletions(desired, facts)
    install = _install_step(facts, build, version)
    changed = [c.rel for c in changes]
    toml = next((c for c in changes if c.rel == "runtime.toml"), None)
    toml_restart = toml is not None and handlers.toml_needs_restart(
        facts.contents.get(toml.path), toml.desired.data if toml.desired else b""
    )
    handler = handlers.choose(
        changed,
        toml_restart,
        install is not None or _runs_old_code(layout, facts, build),
        bool(facts.service.get("running")),
        _runtime_stale(desired, facts),
    )
    return HostPlan(
        layout, desired, facts, changes, install, handler, _notes(layout, facts, changes)
    )


def _compare(item: Desired, facts: HostFacts) -> FileChange | None:
    info = facts.files.get(item.path)
    if info is None:
        summary, _ = redact.describe(item.rel, None, item.data, item.secret)
        return FileChange("create", item.path, item.rel, item.secret, None, item, [], summary)
    reasons = []
    if info.get("mode") != item.mode:
        reasons.append(f"mode {info.get('mode', 0):04o} → {item.mode:04o}")
    for key in ("owner", "group"):
        want = getattr(item, key)
        if want is not None and info.get(key) != want:
            reasons.append(f"{key} {info.get(key)} → {want}")
    if info.get("sha256") == item.sha256 and not reasons:
        return None
    old_sha = info.get("sha256")
    summary, diff = [], ""
    if old_sha != item.sha256:
        old = facts.contents.get(item.path)
        summary, diff = redact.describe(item.rel, old, item.data, item.secret)
        if not summary and not diff:
            summary = [redact.HIDDEN] if item.secret else ["contents changed"]
    return FileChange(
        "update", item.path, item.rel, item.secret, old_sha, item, reasons, summary, diff
    )


def _deletions(desired: list[Desired], facts: HostFacts) -> list[FileChange]:
    """Files the last apply wrote that the spec no longer has (config only; mail
    is never in the manifest, so it is never deleted)."""
    wanted = {d.path for d in desired}
    out = []
    for path in (facts.manifest or {}).get("files", []):
        if path in wanted or facts.files.get(path) is None:
            continue
        rel = os.path.basename(path)
        out.append(FileChange("delete", path, rel, True, facts.sha(path), None))
    return out


def _install_step(
    facts: HostFacts, build: str, version: str | Callable[[], str]
) -> InstallStep | None:
    current = facts.install.get("current")
    if current == build:
        return None
    version = version if isinstance(version, str) else version()
    return InstallStep(build, version, current, upload=not facts.install.get("has_wanted"))


def _runs_old_code(layout: Layout, facts: HostFacts, build: str) -> bool:
    """The runtime still runs from another release than the current one (an
    apply that switched the link but was cut off before its restart)."""
    status = facts.status
    if not facts.service.get("running") or not status or "prefix" not in status:
        return False
    return os.path.basename(status["prefix"].rstrip("/")) != build


def _runtime_stale(desired: list[Desired], facts: HostFacts) -> bool:
    """The running runtime loaded other bytes than those on disk (files written
    by an apply whose reload never came, or edited by hand and not reloaded)."""
    if not facts.service.get("running"):
        return False
    loaded = (facts.status or {}).get("files")
    if loaded is None:
        return True
    by_name = {os.path.basename(p): sha for p, sha in loaded.items()}
    for item in desired:
        if not item.runtime_reads:
            continue
        seen = loaded.get(item.path, by_name.get(os.path.basename(item.path)))
        if seen is not None and seen != facts.sha(item.path):
            return True
    return False


def _notes(layout: Layout, facts: HostFacts, changes: list[FileChange]) -> list[str]:
    notes = []
    passwd = next((c for c in changes if c.rel == "passwd" and c.desired), None)
    if passwd is not None:
        old = facts.contents.get(passwd.path)
        for address in redact.removed_users(old, passwd.desired.data):
            local, _, domain = address.partition("@")
            notes.append(
                f"{address} loses login and delivery; the mailbox "
                f"{layout.data_dir}/mail/{domain}/{local} stays (mailops never deletes mail)"
            )
    if facts.swept:
        notes.append(f"removed {len(facts.swept)} temp file(s) left by an interrupted apply")
    return notes
