"""The three outputs of one result: table, JSON and JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from rich.console import Console

from mailops.audit import report
from mailops.audit.findings import fail, ok, warn
from mailops.audit.run import AuditResult

RESULT = AuditResult(
    [
        fail(
            "dns.mx",
            "a.test MX",
            "lacks MX 10 mx1.a.test.",
            "publish: a.test. 60 IN MX 10 mx1.a.test.",
            "domain a.test",
        ),
        ok("dns.spf", "a.test TXT", "TXT ...", "domain a.test"),
        warn(
            "drift.queue", "mx1 queue", "1 message(s) waiting", "look at the queue", "host mx1"
        ).with_retries(1),
    ],
    1.5,
)


def test_json_has_summary_and_findings():
    data = json.loads(report.json_text(RESULT))
    assert data["ok"] is False
    assert data["summary"] == {"ok": 1, "warn": 1, "fail": 1}
    assert data["findings"][0] == {
        "check": "dns.mx",
        "subject": "a.test MX",
        "severity": "fail",
        "text": "lacks MX 10 mx1.a.test.",
        "fix": "publish: a.test. 60 IN MX 10 mx1.a.test.",
        "group": "domain a.test",
        "retried": 0,
    }


def test_junit_reports_failures_as_failures_and_warnings_as_output():
    root = ET.fromstring(report.junit_xml(RESULT))
    assert (root.get("tests"), root.get("failures")) == ("3", "1")
    suites = {s.get("name"): s for s in root}
    failure = suites["domain a.test"].find("testcase/failure")
    assert failure is not None
    assert failure.get("message") == "lacks MX 10 mx1.a.test."
    assert failure.text == "fix: publish: a.test. 60 IN MX 10 mx1.a.test."
    out = suites["host mx1"].find("testcase/system-out")
    assert out is not None and out.text == "warning: 1 message(s) waiting\nfix: look at the queue"


def test_table_shows_fix_and_retries():
    console = Console(record=True, width=160)
    report.print_table(console, RESULT)
    text = console.export_text()
    assert "fix: publish: a.test. 60 IN MX 10 mx1.a.test." in text
    assert "(needed 1 retry)" in text
    assert "audit FAILED: 1 ok, 1 warning(s), 1 failure(s)" in text
