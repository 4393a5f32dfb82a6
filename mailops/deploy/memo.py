"""The in-sync memo: a no-op apply that needs neither the spec model nor a render.

A plan is a function of the render's inputs (the spec's bytes, the files the
render read, mailops's own build) and of the host's facts. When an apply finds
every host in sync, this module notes those inputs and, per host, how to reach
it, the facts request and the facts' fingerprint. The next `apply --yes` with
the same inputs asks each host for its facts with the same request; when
every answer has the same fingerprint, the plan would be the same empty plan,
and the command is done without loading the spec model or rendering (most of a
no-op apply's time). The facts request takes the host's lock, as apply's does.

Anything else (another input, other facts, an error, an unreachable host) is a
miss, and the full path runs and has the last word: the memo only ever
shortens the way to "in sync", it never changes a host.

Nothing secret is kept. Files the render read are known by their stat
signature, not their bytes; a render that read an environment variable (a
secret's value, usually) makes no memo; the facts request carries no desired
hashes (they would be digests of secrets).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from mailops import inputs
from mailops.deploy import wheels
from mailops.deploy.connection import LocalConnection, SSHConnection, SSHTarget
from mailops.deploy.facts import facts_digest, facts_request
from mailops.deploy.session import AgentSession
from mailops.errors import MailopsError
from mailops.files import write_atomic
from mailops.spec.diagnostics import Diagnostic

VERSION = 1
# A host slower than this to answer goes the full way, which waits longer.
CONNECT_TIMEOUT = 5.0


def memo_path(spec: Path, hosts: list[str] | None) -> Path:
    """One memo per spec file and choice of hosts."""
    key = f"{spec.resolve()}\0{','.join(sorted(hosts)) if hosts else '*'}"
    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    return wheels.cache_dir().parent / "in-sync" / f"{name}.json"


def _spec_digest(spec: Path) -> str:
    return hashlib.sha256(spec.read_bytes()).hexdigest()


# ---------------------------------------------------------------- replay


@dataclass
class InSync:
    hosts: int
    warnings: list[Diagnostic]  # the spec's, which the full path would show

    def as_json(self) -> dict:
        return {"hosts": self.hosts, "warnings": _warnings_json(self.warnings)}

    @classmethod
    def from_json(cls, data: dict) -> InSync:
        return cls(data["hosts"], _warnings_from_json(data["warnings"]))


def _warnings_json(warnings: list[Diagnostic]) -> list[dict]:
    return [asdict(d) for d in warnings]


def _warnings_from_json(data: list[dict]) -> list[Diagnostic]:
    return [Diagnostic(**w) for w in data]


def replay(spec: Path, hosts: list[str] | None, parallel: int | None = None) -> InSync | None:
    """The hosts found in sync as the memo says, or None: the full path must
    run (no memo, other inputs, other facts, any error). `parallel` hosts at
    a time (default: all)."""
    try:
        memo = json.loads(memo_path(spec, hosts).read_bytes())
        if not _inputs_unchanged(memo, spec):
            return None
        warnings = _warnings_from_json(memo["warnings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    entries = memo["hosts"]
    with ThreadPoolExecutor(max_workers=max(1, parallel or len(entries))) as pool:
        answers = list(pool.map(_same_facts, entries))
    return InSync(len(entries), warnings) if entries and all(answers) else None


def _inputs_unchanged(memo: dict, spec: Path) -> bool:
    return (
        memo["version"] == VERSION
        and memo["build"] == wheels.build_id()
        and memo["spec"] == _spec_digest(spec)
        and all(inputs.unchanged(path, sig) for path, sig in memo["files"].items())
    )


def _same_facts(entry: dict) -> bool:
    try:
        session = _open(entry)
    except Exception:  # unreachable, unknown key, …: the full path says why
        return False
    try:
        result, _ = session.call("facts", entry["request"])
        return facts_digest(result) == entry["facts"]
    except Exception:  # the lock is taken, the host is gone, …: as above
        return False
    finally:
        session.close()


def _open(entry: dict) -> AgentSession:
    ssh = entry["ssh"]
    if ssh is None:
        connection = LocalConnection(entry["host"])
    else:
        target = SSHTarget(
            **{
                **ssh,
                "identity_file": Path(ssh["identity_file"]) if ssh["identity_file"] else None,
                "known_hosts": Path(ssh["known_hosts"]),
            }
        )
        # New host keys are never accepted here: the full path asks for that.
        connection = SSHConnection(target, accept_new_host_keys=False, timeout=CONNECT_TIMEOUT)
    try:
        return AgentSession(connection, entry["login_user"], entry["needs_root"])
    except BaseException:
        connection.close()
        raise


# ---------------------------------------------------------------- record


def record(
    spec: Path, hosts: list[str] | None, warnings: list[Diagnostic], targets, outcomes
) -> bool:
    """Note an apply that found every host in sync (targets and outcomes in the
    same order). False when no memo can be made: a variable was read, an
    input file changed too recently to be told apart from its next change."""
    path = memo_path(spec, hosts)
    files = {name: inputs.signature(name) for name in inputs.files()}
    if inputs.variables() or None in files.values():
        _forget(path)
        return False
    build = wheels.build_id()
    memo = {
        "version": VERSION,
        "build": build,
        "spec": _spec_digest(spec),
        "files": files,
        "warnings": _warnings_json(warnings),
        "hosts": [_host_entry(t, o, build) for t, o in zip(targets, outcomes, strict=True)],
    }
    try:
        write_atomic(path, json.dumps(memo, indent=1).encode(), 0o600)
    except MailopsError:  # a cache that cannot be written costs speed, not the apply
        return False
    return True


def _forget(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _host_entry(target, outcome, build: str) -> dict:
    request = facts_request(target.layout, target.desired, build, lock=True)
    # Without desired hashes or contents: the answer is the same in sync, and
    # the hash of a secret file (a relay's password) has no place on disk.
    request["files"] = [{"path": f["path"]} for f in request["files"]]
    ssh = target.ssh
    return {
        "host": target.host_id,
        "ssh": None if ssh is None else {k: _plain(v) for k, v in asdict(ssh).items()},
        "login_user": target.login_user,
        "needs_root": target.needs_root,
        "request": request,
        "facts": outcome.plan.facts.digest,
    }


def _plain(value):
    return str(value) if isinstance(value, Path) else value
