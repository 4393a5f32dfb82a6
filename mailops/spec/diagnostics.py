"""Diagnostics: one finding about a spec, with the file, line and column it is about."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Diagnostic:
    """`PATH:LINE:COL: severity: message`. Lines and columns count from 1."""

    file: str
    line: int
    col: int
    severity: Severity
    message: str

    def format(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}"

    def as_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.col,
            "severity": self.severity,
            "message": self.message,
        }


def errors(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.severity == "error"]


def warnings(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.severity == "warning"]
