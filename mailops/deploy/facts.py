"""Facts about one host, asked for in one request (see agent/facts.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: the in-sync memo uses this module without the spec model
    from mailops.deploy.desired import Desired
    from mailops.deploy.layout import Layout
    from mailops.deploy.session import AgentSession


@dataclass
class HostFacts:
    system: dict
    files: dict[str, dict | None]  # every desired and previously managed path
    contents: dict[str, bytes]  # old bytes of files the plan shows a diff of
    manifest: dict | None  # what the last apply wrote
    install: dict  # {"current": build or None, "has_wanted": bool}
    service: dict  # {"running": bool, "pid": int or None}
    status: dict | None  # what the runtime reports it loaded
    swept: list[str] = field(default_factory=list)
    digest: str = ""  # of everything above but the contents (see facts_digest)

    def sha(self, path: str) -> str | None:
        info = self.files.get(path)
        return info.get("sha256") if info else None


def wants_content(item: Desired) -> bool:
    """Old bytes are fetched for diffs: plain files, and passwd (summarised per user)."""
    return not item.secret or item.rel == "passwd"


def facts_request(layout: Layout, desired: list[Desired], build: str, lock: bool) -> dict:
    folders = {layout.config_dir, layout.install_dir}
    folders |= {d.path.rsplit("/", 1)[0] for d in desired}
    return {
        "lock": lock,
        "lock_key": layout.config_dir,
        "paths": {
            "config": layout.config_dir,
            "data": layout.data_dir,
            "install": layout.install_dir,
        },
        "files": [
            {"path": d.path, "expect": d.sha256, "content": wants_content(d)} for d in desired
        ],
        "manifest": layout.manifest,
        "service": layout.service_spec(),
        "status_file": layout.status_file,
        "build": build,
        "sweep": sorted(folders),
    }


def gather(
    session: AgentSession, layout: Layout, desired: list[Desired], build: str, lock: bool
) -> HostFacts:
    result, blobs = session.call("facts", facts_request(layout, desired, build, lock))
    return HostFacts(
        system=result["system"],
        files=result["files"],
        contents=dict(zip(result["contents"], blobs, strict=True)),
        manifest=result["manifest"],
        install=result["install"],
        service=result["service"],
        status=result["status"],
        swept=result["swept"],
        digest=facts_digest(result),
    )


def facts_digest(result: dict) -> str:
    """The facts' fingerprint, old contents aside (they come back only for files
    that differ from the desired ones): two answers with the same fingerprint
    describe the same files, runtime and service."""
    rest = {k: v for k, v in result.items() if k != "contents"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()
