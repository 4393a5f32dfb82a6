"""`mailops service SPEC start|stop|status|restart|reload`: the runtime on each
selected host, through the same agent as apply."""

from __future__ import annotations

from dataclasses import dataclass, field

from mailops.deploy.apply import Options, in_parallel
from mailops.deploy.executor import HostRun, Progress
from mailops.deploy.targets import Target

ACTIONS = ("start", "stop", "status", "restart", "reload")


@dataclass
class ServiceResult:
    host_id: str
    ok: bool
    running: bool = False
    pid: int | None = None
    message: str = ""
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "host": self.host_id,
            "ok": self.ok,
            "running": self.running,
            "pid": self.pid,
            "message": self.message,
            "warnings": self.warnings,
        }


def _request(target: Target, action: str, timeout: float) -> dict:
    layout = target.layout
    return {
        "action": action,
        "service": layout.service_spec(),
        "lock_key": layout.config_dir,
        "status_file": layout.status_file,
        # Ports and banner only: the files on the host may differ from the spec
        # until the next apply, and that is not the service command's business.
        "verify": {
            "status_file": layout.status_file,
            "files": {},
            "listeners": [list(x) for x in layout.listeners],
            "fqdn": layout.fqdn,
            "timeout": timeout,
            "prefix": None,
        },
    }


def _one(target: Target, action: str, options: Options, progress: Progress) -> ServiceResult:
    run = HostRun(target, progress, options.accept_new_host_keys)
    try:
        session = run.open()
        run.stage(action)
        result, _ = session.call("service", _request(target, action, options.verify_timeout))
    except Exception as exc:
        return ServiceResult(target.host_id, False, message=str(exc))
    finally:
        run.close()
    state = result["state"]
    problems = result.get("problems", [])
    if action == "status":
        return ServiceResult(
            target.host_id,
            True,
            state["running"],
            state["pid"],
            _status_text(state, result.get("status")),
        )
    ok = not problems and (state["running"] or action == "stop")
    message = "; ".join(problems) or ("stopped" if not state["running"] else "running")
    return ServiceResult(
        target.host_id, ok, state["running"], state["pid"], message, result.get("warnings", [])
    )


def _status_text(state: dict, status: dict | None) -> str:
    if not state["running"]:
        return "not running"
    ports = len((status or {}).get("listening", []))
    return f"running (pid {state['pid']}, {ports} listener(s))"


def service_all(
    targets: list[Target], action: str, options: Options, progress: Progress
) -> list[ServiceResult]:
    return in_parallel(lambda t: _one(t, action, options, progress), targets, options.parallel)
