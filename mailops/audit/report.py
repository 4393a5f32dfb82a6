"""An audit's findings for people (a rich table per host, domain and zone), for
scripts (JSON) and for CI (JUnit XML: one test case per finding, failures as
failures, warnings passing with their text in system-out)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from itertools import groupby

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mailops.audit.findings import counts, sort_key
from mailops.audit.run import AuditResult

MARKS = {"ok": ("✔", "green"), "warn": ("!", "yellow"), "fail": ("✘", "bold red")}


def print_table(console: Console, result: AuditResult, show_ok: bool = True) -> None:
    ordered = sorted(result.findings, key=sort_key)
    for group, items in groupby(ordered, key=lambda f: f.group):
        shown = [f for f in items if show_ok or f.severity != "ok"]
        if not shown:
            continue
        table = Table(title=group or "audit", title_justify="left", expand=False, show_lines=False)
        table.add_column("", no_wrap=True)
        table.add_column("check", no_wrap=True)
        table.add_column("subject", overflow="fold")
        table.add_column("finding", overflow="fold")
        for finding in shown:
            mark, style = MARKS[finding.severity]
            text = Text(finding.text)
            if finding.retried:
                text.append(
                    f"  (needed {finding.retried} retr{'y' if finding.retried == 1 else 'ies'})",
                    "dim",
                )
            if finding.fix and finding.severity != "ok":
                text.append("\nfix: " + finding.fix, "cyan")
            table.add_row(Text(mark, style), finding.check, finding.subject, text)
        console.print(table)
    console.print(summary_line(result), markup=False)


def summary_line(result: AuditResult) -> str:
    n = counts(result.findings)
    verdict = "FAILED" if result.failed else "passed"
    return (
        f"audit {verdict}: {n['ok']} ok, {n['warn']} warning(s), {n['fail']} failure(s) "
        f"in {result.seconds:.2f} s"
    )


def json_text(result: AuditResult) -> str:
    return json.dumps(result.as_dict(), ensure_ascii=False, indent=2)


def junit_xml(result: AuditResult) -> bytes:
    n = counts(result.findings)
    root = ET.Element(
        "testsuites",
        name="mailops audit",
        tests=str(len(result.findings)),
        failures=str(n["fail"]),
        time=f"{result.seconds:.3f}",
    )
    for group, items in groupby(sorted(result.findings, key=sort_key), key=lambda f: f.group):
        found = list(items)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=group or "audit",
            tests=str(len(found)),
            failures=str(sum(f.failed for f in found)),
        )
        for finding in found:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"mailops.audit.{finding.check}",
                name=f"{finding.check} {finding.subject}",
            )
            if finding.severity == "fail":
                failure = ET.SubElement(case, "failure", message=finding.text, type=finding.check)
                failure.text = f"fix: {finding.fix}" if finding.fix else finding.text
            elif finding.severity == "warn":
                out = ET.SubElement(case, "system-out")
                out.text = f"warning: {finding.text}" + (
                    f"\nfix: {finding.fix}" if finding.fix else ""
                )
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
