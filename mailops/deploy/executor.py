"""One host through plan and apply: connect, start the agent, gather facts,
plan, and (for apply) upload the runtime and run the transaction.

The session stays open from facts to transaction, so the host's lock is held
from the moment its facts are read until its apply has finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailops.deploy import facts as host_facts
from mailops.deploy import wheels
from mailops.deploy.desired import desired_dirs
from mailops.deploy.errors import DeployError
from mailops.deploy.plan import HostPlan, make_plan
from mailops.deploy.session import AgentSession
from mailops.deploy.targets import Target

Progress = Callable[[str, str], None]  # (host id, stage)


@dataclass
class Outcome:
    host_id: str
    status: str  # in sync | changes | applied | rolled back | failed | error
    message: str = ""
    plan: HostPlan | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("in sync", "changes", "applied")

    def as_dict(self) -> dict:
        out = {
            "host": self.host_id,
            "status": self.status,
            "message": self.message,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }
        if self.plan is not None:
            out["plan"] = self.plan.as_dict()
        return out


class HostRun:
    def __init__(self, target: Target, progress: Progress, accept_new_host_keys: bool = False):
        self.target = target
        self.progress = progress
        self.accept_new = accept_new_host_keys
        self.session: AgentSession | None = None
        self.started = time.monotonic()

    @property
    def host_id(self) -> str:
        return self.target.host_id

    def stage(self, name: str) -> None:
        self.progress(self.host_id, name)

    def open(self) -> AgentSession:
        if self.session is None:
            self.stage("connecting")
            connection = self.target.connect(self.accept_new)
            try:
                self.session = AgentSession(
                    connection, self.target.login_user, self.target.needs_root
                )
            except BaseException:
                connection.close()
                raise
        return self.session

    def plan(self, lock: bool) -> HostPlan:
        session = self.open()
        self.stage("facts")
        build = wheels.build_id()
        t = self.target
        found = host_facts.gather(session, t.layout, t.desired, build, lock)
        problem = wheels.mismatch(found.system)
        desired = t.settle(found.contents)
        plan = make_plan(t.layout, desired, found, build, wheels.build_version)
        if plan.install is not None and problem:
            raise DeployError(f"{self.host_id}: cannot install the runtime: {problem}")
        return plan

    def apply(self, plan: HostPlan, house: Callable[[], wheels.Wheelhouse], timeout: float):
        session = self.open()
        if plan.install is not None and plan.install.upload:
            built = house()
            self.stage("uploading runtime")
            session.call(
                "install",
                {
                    "install_dir": plan.layout.install_dir,
                    "build": built.build,
                    "wheels": [p.name for p in built.paths],
                    "requirement": built.requirement,
                },
                [p.read_bytes() for p in built.paths],
                on_event=self.stage,
            )
        request, blobs = transaction_request(plan, timeout)
        result, _ = session.call("transaction", request, blobs, on_event=self.stage)
        return result

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def transaction_request(plan: HostPlan, verify_timeout: float) -> tuple[dict, list[bytes]]:
    layout, facts = plan.layout, plan.facts
    writes, blobs = [], []
    for change in plan.changes:
        item = change.desired
        if item is None:
            continue
        writes.append(
            {
                "path": item.path,
                "mode": item.mode,
                "owner": item.owner,
                "group": item.group,
                "blob": len(blobs),
                "old_sha": change.old_sha,
            }
        )
        blobs.append(item.data)
    deletes = [{"path": c.path, "old_sha": c.old_sha} for c in plan.changes if c.desired is None]
    build = wheels.build_id()
    reads = [d for d in plan.desired if d.runtime_reads]
    request = {
        "writes": writes,
        "deletes": deletes,
        "dirs": desired_dirs(plan.desired, layout),
        "account": layout.run_user,
        "account_home": layout.data_dir,
        "manifest_path": layout.manifest,
        "manifest": {
            "host": layout.host_id,
            "build": build,
            "files": [d.path for d in plan.desired],
        },
        "install_dir": layout.install_dir,
        "install_switch": build if plan.install else None,
        "handler": plan.handler,
        "daemon_reload": layout.service == "systemd"
        and any(c.rel.startswith("systemd/") for c in plan.changes),
        "service": layout.service_spec(),
        "backups_dir": layout.backups_dir,
        "verify": {
            "status_file": layout.status_file,
            "files": {d.path: d.sha256 for d in reads},
            "listeners": [list(x) for x in layout.listeners],
            "fqdn": layout.fqdn,
            "timeout": verify_timeout,
            "prefix": f"{layout.release_prefix}/{build}",
        },
        "old_hashes": {d.path: facts.sha(d.path) for d in reads if facts.sha(d.path)},
    }
    return request, blobs
