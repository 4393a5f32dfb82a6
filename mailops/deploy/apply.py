"""plan and apply over every selected host, in parallel.

apply runs in two phases: every host connects, takes its lock and is planned
(phase 1); the plans are shown and confirmed once; then every host with
changes is applied (phase 2). A host that fails in either phase is reported
and the others go on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mailops.deploy import wheels
from mailops.deploy.errors import DeployError
from mailops.deploy.executor import HostRun, Outcome, Progress
from mailops.deploy.targets import Target, make_target, select_hosts
from mailops.spec.load import LoadedSpec, load_spec

Confirm = Callable[[list[Outcome]], bool]


@dataclass
class Options:
    hosts: list[str] | None = None
    parallel: int | None = None  # None: every host at once
    accept_new_host_keys: bool = False
    verify_timeout: float = 30.0


def load_targets(spec: Path | LoadedSpec, hosts: list[str] | None) -> list[Target]:
    """Render every selected host first: a spec or secret error stops the
    command before any host is touched."""
    loaded = spec if isinstance(spec, LoadedSpec) else load_spec(spec)
    return [make_target(loaded, h) for h in select_hosts(loaded, hosts)]


def in_parallel(function, items: list, parallel: int | None) -> list:
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=max(1, parallel or len(items))) as pool:
        return list(pool.map(function, items))


def _failed(run: HostRun, exc: Exception) -> Outcome:
    if isinstance(exc, DeployError):
        message = str(exc)
    else:  # paramiko and OS errors on the way: name the host, keep going
        message = f"{run.host_id}: {type(exc).__name__}: {exc}"
    run.stage("failed")
    return Outcome(run.host_id, "error", message, seconds=run.elapsed())


def _planned(run: HostRun, lock: bool) -> Outcome:
    try:
        plan = run.plan(lock)
    except Exception as exc:
        run.close()
        return _failed(run, exc)
    run.stage("in sync" if plan.empty else "planned")
    status = "in sync" if plan.empty else "changes"
    return Outcome(run.host_id, status, plan=plan, seconds=run.elapsed())


def plan_all(targets: list[Target], options: Options, progress: Progress) -> list[Outcome]:
    def one(target: Target) -> Outcome:
        run = HostRun(target, progress, options.accept_new_host_keys)
        try:
            return _planned(run, lock=False)
        finally:
            run.close()

    return in_parallel(one, targets, options.parallel)


class _Wheels:
    """Built once per command, when the first host needs them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._house: wheels.Wheelhouse | None = None

    def __call__(self) -> wheels.Wheelhouse:
        with self._lock:
            if self._house is None:
                self._house = wheels.wheelhouse()
            return self._house


def apply_all(
    targets: list[Target],
    options: Options,
    progress: Progress,
    confirm: Confirm,
    check: bool = False,
) -> list[Outcome]:
    runs = [HostRun(t, progress, options.accept_new_host_keys) for t in targets]

    def planned(run: HostRun) -> Outcome:
        outcome = _planned(run, lock=True)
        if outcome.status != "changes":
            run.close()  # nothing to apply: end the session now, in this host's thread
        return outcome

    try:
        outcomes = in_parallel(planned, runs, options.parallel)
        pending = [(r, o) for r, o in zip(runs, outcomes, strict=True) if o.status == "changes"]
        if check or not pending or not confirm(outcomes):
            return outcomes
        house = _Wheels()

        def one(item: tuple[HostRun, Outcome]) -> Outcome:
            run, planned = item
            try:
                result = run.apply(planned.plan, house, options.verify_timeout)
            except Exception as exc:
                return _failed(run, exc)
            finally:
                run.close()
            return _result(run, planned, result)

        done = dict(
            zip(
                [r.host_id for r, _ in pending],
                in_parallel(one, pending, options.parallel),
                strict=True,
            )
        )
        return [done.get(o.host_id, o) for o in outcomes]
    finally:
        in_parallel(HostRun.close, [r for r in runs if r.session is not None], options.parallel)


def _result(run: HostRun, planned: Outcome, result: dict) -> Outcome:
    warnings = result.get("warnings", [])
    if result["status"] == "applied":
        run.stage("applied")
        return Outcome(run.host_id, "applied", "", planned.plan, warnings, run.elapsed())
    run.stage("rolled back")
    problems = "; ".join(result.get("problems", []))
    if result.get("old_serving"):
        state = "the previous configuration is serving again"
    else:
        state = "the previous configuration does not answer either: " + "; ".join(
            result.get("old_problems", [])
        )
    message = f"{run.host_id}: verification failed ({problems}); rolled back, {state}"
    return Outcome(run.host_id, "rolled back", message, planned.plan, warnings, run.elapsed())
