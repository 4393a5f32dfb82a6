"""`mailops validate` as a user runs it (a child process): exit codes, text and
JSON output, and errors that are one line, never a traceback."""

from __future__ import annotations

import json
import re

ALICE_HASH = (
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$QKSllZvDekJeHMsO/vUinw"
    "$SIw/XMHYx7L+bXhh8RaGcIStO9FrJbGHEIqL4PHqOSQ"
)

VALID = f"""\
version: 1
hosts:
  mx1:
    fqdn: mx1.example.org
    ipv4: 203.0.113.10
    tls:
      self_signed: true
domains:
  example.org:
    mailbox_host: mx1
    mx:
      - {{host: mx1, priority: 10}}
    users:
      alice:
        password_hash: "{ALICE_HASH}"
    aliases:
      postmaster: alice
"""
# no postmaster: one warning, at the domain's key (line 9)
WARNING = VALID.replace("    aliases:\n      postmaster: alice\n", "")
NO_POSTMASTER = (
    "domain example.org has no postmaster address; RFC 5321 requires one "
    "(add an alias such as 'postmaster: alice')"
)
# two errors: a bad address (5:11) and a priority out of range (12:31)
ERRORS = VALID.replace("ipv4: 203.0.113.10", "ipv4: 203.0.113.999").replace(
    "{host: mx1, priority: 10}", "{host: mx1, priority: 70000}"
)
BAD_IPV4 = "ipv4 must be an IPv4 address like 203.0.113.10, got '203.0.113.999'"
BAD_MX = "priority must be 0–65535, got 70000"

LINE = re.compile(
    r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<severity>error|warning): (?P<msg>.+)$"
)


def lines(text: str) -> list[str]:
    return text.splitlines()


def test_valid_spec_exits_0(mailops, write_spec):
    path = write_spec(VALID)
    result = mailops("validate", path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert lines(result.stdout) == [
        f"{path}: valid — 1 host(s), 1 domain(s), 1 user(s), 0 warning(s)"
    ]


def test_valid_spec_with_strict_exits_0(mailops, write_spec):
    assert mailops("validate", "--strict", write_spec(VALID)).returncode == 0


def test_warnings_exit_0_and_are_printed(mailops, write_spec):
    path = write_spec(WARNING)
    result = mailops("validate", path)
    assert result.returncode == 0
    assert lines(result.stderr) == [f"{path}:9:3: warning: {NO_POSTMASTER}"]
    assert lines(result.stdout) == [
        f"{path}: valid — 1 host(s), 1 domain(s), 1 user(s), 1 warning(s)"
    ]


def test_warnings_with_strict_exit_1(mailops, write_spec):
    path = write_spec(WARNING)
    result = mailops("validate", "--strict", path)
    assert result.returncode == 1
    assert f"{path}:9:3: warning: {NO_POSTMASTER}" in lines(result.stderr)


def test_errors_exit_2_with_one_line_each(mailops, write_spec):
    path = write_spec(ERRORS)
    result = mailops("validate", path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert lines(result.stderr) == [
        f"{path}:5:11: error: {BAD_IPV4}",
        f"{path}:12:31: error: {BAD_MX}",
        f"{path}: 2 error(s), 0 warning(s)",
    ]
    for line in lines(result.stderr)[:-1]:
        match = LINE.match(line)
        assert match and match["file"] == str(path) and match["severity"] == "error"


def test_errors_with_strict_still_exit_2(mailops, write_spec):
    assert mailops("validate", "--strict", write_spec(ERRORS)).returncode == 2


def test_relative_path_is_reported_as_given(mailops, write_spec, tmp_path):
    write_spec(ERRORS, "mail.yaml")
    result = mailops("validate", "mail.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert lines(result.stderr)[0] == f"mail.yaml:5:11: error: {BAD_IPV4}"


def test_long_messages_are_not_wrapped_on_a_narrow_terminal(mailops, write_spec):
    path = write_spec(WARNING)
    result = mailops("validate", path, columns=30)
    assert lines(result.stderr) == [f"{path}:9:3: warning: {NO_POSTMASTER}"]


def test_markup_like_text_in_messages_is_printed_as_is(mailops, write_spec):
    path = write_spec(
        VALID.replace("    ipv4: 203.0.113.10\n", '    "[bold]x": 1\n    ipv4: 203.0.113.10\n')
    )
    result = mailops("validate", path)
    assert result.returncode == 2
    assert lines(result.stderr)[0].startswith(f"{path}:5:5: error: unknown key '[bold]x' in host")


def test_path_with_brackets_is_printed_as_is(mailops, tmp_path):
    folder = tmp_path / "[bold]prod"
    folder.mkdir()
    path = folder / "spec.yaml"
    path.write_text(ERRORS)
    result = mailops("validate", path)
    assert result.returncode == 2
    assert lines(result.stderr)[0] == f"{path}:5:11: error: {BAD_IPV4}"


def test_secret_literal_is_never_echoed(mailops, write_spec):
    text = VALID.replace(
        "domains:\n",
        "relays:\n  r1:\n    host: smtp.relay.example\n    username: u\n"
        "    password: hunter2-very-secret\ndomains:\n",
    )
    result = mailops("validate", write_spec(text))
    assert result.returncode == 2
    assert "hunter2" not in result.stdout + result.stderr


# ---------------------------------------------------------------- --json


def test_json_valid(mailops, write_spec):
    result = mailops("validate", "--json", write_spec(VALID))
    assert result.returncode == 0
    assert json.loads(result.stdout) == {
        "valid": True,
        "errors": 0,
        "warnings": 0,
        "diagnostics": [],
    }


def test_json_warnings_strict(mailops, write_spec):
    path = write_spec(WARNING)
    result = mailops("validate", "--json", "--strict", path)
    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "valid": True,
        "errors": 0,
        "warnings": 1,
        "diagnostics": [
            {
                "file": str(path),
                "line": 9,
                "column": 3,
                "severity": "warning",
                "message": NO_POSTMASTER,
            }
        ],
    }


def test_json_errors(mailops, write_spec):
    path = write_spec(ERRORS)
    result = mailops("validate", "--json", path)
    assert result.returncode == 2
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert report == {
        "valid": False,
        "errors": 2,
        "warnings": 0,
        "diagnostics": [
            {"file": str(path), "line": 5, "column": 11, "severity": "error", "message": BAD_IPV4},
            {"file": str(path), "line": 12, "column": 31, "severity": "error", "message": BAD_MX},
        ],
    }


def test_json_for_a_file_that_is_not_yaml(mailops, write_spec):
    path = write_spec(b"\xff\xfe\x00garbage")
    result = mailops("validate", "--json", path)
    assert result.returncode == 2
    assert json.loads(result.stdout) == {
        "valid": False,
        "errors": 1,
        "warnings": 0,
        "diagnostics": [
            {
                "file": str(path),
                "line": 1,
                "column": 1,
                "severity": "error",
                "message": "the file is not UTF-8 text (byte 0xff); save it as UTF-8",
            }
        ],
    }


# ---------------------------------------------------------------- files that cannot be read


def test_missing_file_is_one_line_exit_2(mailops, tmp_path):
    path = tmp_path / "nope.yaml"
    result = mailops("validate", path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert lines(result.stderr) == [
        f"mailops: error: {path}: cannot read: No such file or directory"
    ]


def test_folder_is_one_line_exit_2(mailops, tmp_path):
    result = mailops("validate", tmp_path)
    assert result.returncode == 2
    assert lines(result.stderr) == [f"mailops: error: {tmp_path}: is a folder, not a spec file"]


def test_missing_argument_is_a_usage_error(mailops):
    result = mailops("validate")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Missing argument" in result.stderr
