"""What an audit says: one Finding per check and subject.

Every check ends in a Finding, whatever happened — a refused connection, a
timeout, odd DNS data or a bug of ours all become findings (a traceback never
reaches the user). A failure carries the fix: the exact record to publish, the
command to run, the file to replace.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

Severity = Literal["ok", "warn", "fail"]
SEVERITIES: tuple[Severity, ...] = ("ok", "warn", "fail")


@dataclass(frozen=True)
class Finding:
    check: str
    """The check's id, stable for scripts and CI: `dns.mx`, `tls.cert`, `drift.file`, …"""
    subject: str
    """What was checked: `alpha.test MX`, `mx1 smtp 127.0.0.2:25`, `mx1 /etc/mailops/passwd`."""
    severity: Severity
    text: str
    """One line: what was found."""
    fix: str = ""
    """What to do about it (failures and warnings)."""
    group: str = ""
    """Where the report shows it: `host mx1`, `domain alpha.test`, `zone lab.test`."""
    retried: int = 0
    """Attempts beyond the first that the result needed (flaky network)."""

    @property
    def failed(self) -> bool:
        return self.severity == "fail"

    def with_retries(self, retried: int) -> Finding:
        return replace(self, retried=retried) if retried else self

    def as_dict(self) -> dict:
        return asdict(self)


def ok(check: str, subject: str, text: str, group: str = "") -> Finding:
    return Finding(check, subject, "ok", text, "", group)


def warn(check: str, subject: str, text: str, fix: str = "", group: str = "") -> Finding:
    return Finding(check, subject, "warn", text, fix, group)


def fail(check: str, subject: str, text: str, fix: str = "", group: str = "") -> Finding:
    return Finding(check, subject, "fail", text, fix, group)


def counts(findings: list[Finding]) -> dict[str, int]:
    return {s: sum(f.severity == s for f in findings) for s in SEVERITIES}


def sort_key(finding: Finding) -> tuple:
    """Report order: by group, then by check id, then subject (stable between runs)."""
    return (finding.group, finding.check, finding.subject)
