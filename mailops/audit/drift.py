"""Drift: does the host still hold what `apply` would put there?

The answer comes from deploy itself — the same rendering (`make_target`), the
same facts over the same agent, the same plan — so "audit says in sync" and
"plan shows nothing to do" can never disagree. A plan with changes is drift;
each change becomes a finding with the command that undoes it. Queue and disk
come from hoststats.py.

Plain sync code (paramiko, subprocesses): run.py runs one host per thread.
"""

from __future__ import annotations

from mailops.audit.context import AuditContext, host_group
from mailops.audit.findings import Finding, fail, ok, warn
from mailops.audit.hoststats import HostStats, StatsError, read_stats
from mailops.deploy.executor import HostRun
from mailops.deploy.plan import FileChange, HostPlan
from mailops.deploy.targets import Target, make_target
from mailops.errors import MailopsError

QUEUE_WARN_AGE = 3600.0
QUEUE_FAIL_AGE = 86400.0
DISK_WARN = (0.10, 1 << 30)  # share free, bytes free: below either → warning
DISK_FAIL = (0.03, 256 << 20)


def host_drift(ctx: AuditContext, host_id: str) -> list[Finding]:
    group = host_group(host_id)
    try:
        target = make_target(ctx.loaded, host_id)
    except MailopsError as exc:
        return [fail("drift.connect", host_id, f"cannot render the host's files: {exc}", "", group)]
    run = HostRun(target, lambda _host, _stage: None)
    try:
        plan = run.plan(lock=False)
        stats = _stats(run, target)
    except Exception as exc:  # deploy errors, and whatever paramiko raises on the way
        text = str(exc) if isinstance(exc, MailopsError) else f"{type(exc).__name__}: {exc}"
        return [fail("drift.connect", host_id, text, _connect_fix(ctx, target), group)]
    finally:
        run.close()
    findings = _files(ctx, plan) + _runtime(ctx, plan) + _service(ctx, plan)
    if isinstance(stats, HostStats):
        findings += [_queue(ctx, host_id, target, stats), _disk(ctx, host_id, target, stats)]
    else:
        findings.append(warn("drift.queue", f"{host_id} queue", stats, "", group))
    return findings


def _stats(run: HostRun, target: Target) -> HostStats | str:
    session = run.open()
    try:
        return read_stats(
            session.connection, target.layout.data_dir, target.login_user, target.needs_root
        )
    except (StatsError, OSError) as exc:
        return str(exc)


def _connect_fix(ctx: AuditContext, target: Target) -> str:
    if target.ssh is None:
        return ""
    return f"check that {ctx.spec_command('plan', target.host_id)} can reach the host"


# ---------------------------------------------------------------- files


def _files(ctx: AuditContext, plan: HostPlan) -> list[Finding]:
    host_id, group = plan.host_id, host_group(plan.host_id)
    apply = ctx.spec_command("apply", host_id)
    if not plan.changes:
        count = len(plan.desired)
        return [
            ok("drift.file", f"{host_id} files", f"all {count} managed files as rendered", group)
        ]
    out = []
    for change in plan.changes:
        subject = f"{host_id} {change.path}"
        if change.action == "create":
            out.append(
                fail("drift.file", subject, "missing on the host", f"{apply} writes it", group)
            )
        elif change.action == "delete":
            text = "left over from an earlier apply: the spec no longer has it"
            out.append(warn("drift.file", subject, text, f"{apply} removes it", group))
        else:
            text = "differs from the rendered file" + _detail(change)
            out.append(fail("drift.file", subject, text, f"{apply} restores it", group))
    return out


def _detail(change: FileChange) -> str:
    """What differs, without secrets (deploy's redaction): modes, passwd entries,
    and the first changed lines of plain files."""
    parts = list(change.reasons) + list(change.summary)
    if change.diff:
        lines = [
            line.rstrip("\n")
            for line in change.diff.splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---"))
        ]
        # '-' lines are what the host has that the spec does not: the hand edit.
        edits = [f"on the host: {line[1:].strip()!r}" for line in lines if line.startswith("-")]
        parts += edits[:2] or [f"missing: {line[1:].strip()!r}" for line in lines[:2]]
    return f" ({'; '.join(parts)})" if parts else ""


# ---------------------------------------------------------------- runtime and service


def _runtime(ctx: AuditContext, plan: HostPlan) -> list[Finding]:
    host_id, group = plan.host_id, host_group(plan.host_id)
    subject = f"{host_id} runtime"
    step = plan.install
    if step is None:
        current = plan.facts.install.get("current")
        return [ok("drift.runtime", subject, f"build {current} (this mailops)", group)]
    apply = ctx.spec_command("apply", host_id)
    if step.current is None:
        text = f"no runtime installed by mailops under {plan.layout.install_dir}"
        return [fail("drift.runtime", subject, text, f"{apply} installs it", group)]
    text = f"runs build {step.current}; this mailops would install {step.version}"
    return [warn("drift.runtime", subject, text, f"{apply} upgrades it", group)]


def _service(ctx: AuditContext, plan: HostPlan) -> list[Finding]:
    host_id, group = plan.host_id, host_group(plan.host_id)
    subject = f"{host_id} service"
    state = plan.facts.service
    if not state.get("running"):
        start = ctx.spec_command("service", host_id, "start")
        return [fail("drift.service", subject, "the runtime is not running", start, group)]
    out = [ok("drift.service", subject, f"running (pid {state.get('pid')})", group)]
    if plan.handler in ("reload", "restart") and not plan.changes and plan.install is None:
        # Nothing to write, yet the runtime serves other bytes than those on disk
        # (an edit not reloaded) or runs an older release than the one installed.
        action = plan.handler
        out.append(
            warn(
                "drift.reload",
                subject,
                "the runtime does not serve the files on disk (a change that was never "
                f"loaded, or an older release): it needs a {action}",
                ctx.spec_command("service", host_id, action),
                group,
            )
        )
    return out


# ---------------------------------------------------------------- queue and disk


def _queue(ctx: AuditContext, host_id: str, target: Target, stats: HostStats) -> Finding:
    subject, group = f"{host_id} queue", host_group(host_id)
    if not stats.queue:
        return ok("drift.queue", subject, "empty", group)
    age = stats.oldest_age or 0.0
    text = f"{stats.queue} message(s) waiting, the oldest for {_duration(age)}"
    if age < QUEUE_WARN_AGE:
        return ok("drift.queue", subject, text, group)
    fix = (
        f"on the host: `mailops queue list --config {target.layout.runtime_toml}` shows "
        "why delivery fails (last error per message)"
    )
    if age < QUEUE_FAIL_AGE:
        return warn("drift.queue", subject, text, fix, group)
    return fail("drift.queue", subject, text, fix, group)


def _disk(ctx: AuditContext, host_id: str, target: Target, stats: HostStats) -> Finding:
    subject, group = f"{host_id} {target.layout.data_dir}", host_group(host_id)
    if stats.free is None or not stats.size:
        return warn("drift.disk", subject, "could not read the free space", "", group)
    share = stats.free / stats.size
    text = f"{_size(stats.free)} free of {_size(stats.size)} ({share:.0%})"
    fix = (
        "free space (old mail, logs) or grow the disk: below a few percent the runtime "
        "can no longer accept mail"
    )
    if share < DISK_FAIL[0] or stats.free < DISK_FAIL[1]:
        return fail("drift.disk", subject, text, fix, group)
    if share < DISK_WARN[0] or stats.free < DISK_WARN[1]:
        return warn("drift.disk", subject, text, fix, group)
    return ok("drift.disk", subject, text, group)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
