"""The CLI commands other than validate (whose tests live in tests/spec/)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from mailops.passwords import verify_password
from mailops.spec.schema import schema_text

ROOT = Path(__file__).resolve().parent.parent


def mailops(*args, stdin=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "mailops", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )


def test_version():
    result = mailops("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("mailops ")


def test_hash_password_from_stdin_verifies_and_never_echoes():
    result = mailops("hash-password", "--stdin", stdin="s3cret pass\n")
    assert result.returncode == 0, result.stderr
    stored = result.stdout.strip()
    assert verify_password(stored, "s3cret pass")
    assert "s3cret" not in result.stdout + result.stderr


def test_hash_password_without_terminal_or_stdin_flag_says_how():
    result = mailops("hash-password", stdin="")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "mailops: error: no terminal to prompt on; use --stdin to read the password"
    )


def test_hash_password_refuses_empty():
    result = mailops("hash-password", "--stdin", stdin="\n")
    assert result.returncode == 1
    assert "empty" in result.stderr
    assert "Traceback" not in result.stderr


def test_init_writes_a_spec_that_validates_and_refuses_to_overwrite(tmp_path):
    result = mailops("init", str(tmp_path / "mail"))
    assert result.returncode == 0, result.stderr
    spec = tmp_path / "mail" / "mailops.yaml"
    assert "# mailops spec" in spec.read_text()
    check = mailops("validate", "--strict", str(spec))
    assert check.returncode == 0, check.stderr
    again = mailops("init", str(tmp_path / "mail"))
    assert again.returncode == 1
    assert "already exists (use --force to overwrite it)" in again.stderr
    assert mailops("init", "--force", str(tmp_path / "mail")).returncode == 0


def test_committed_schema_is_current():
    committed = (ROOT / "schemas" / "mailops.schema.json").read_text()
    assert committed == schema_text(), (
        "schemas/mailops.schema.json is stale: run 'mailops schema --out "
        "schemas/mailops.schema.json'"
    )


def test_schema_documents_fields_and_forbids_unknown_keys(tmp_path):
    out = tmp_path / "s.json"
    result = mailops("schema", "--out", str(out))
    assert result.returncode == 0, result.stderr
    schema = json.loads(out.read_text())
    host = schema["$defs"]["Host"]
    assert host["additionalProperties"] is False
    assert "EHLO" in host["properties"]["fqdn"]["description"]
    assert set(schema["required"]) == {"version", "hosts", "domains"}


def test_schema_accepts_the_examples():
    import jsonschema
    import yaml

    schema = json.loads(schema_text())
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_unknown_command_is_a_usage_error():
    result = mailops("frobnicate")
    assert result.returncode == 2
    assert "No such command" in result.stderr
    assert "Traceback" not in result.stderr


def hash_password_on_a_terminal(first: str, second: str):
    """Run `mailops hash-password` on a pty, answer both prompts; (exit status, output)."""
    import pexpect

    child = pexpect.spawn(
        sys.executable,
        ["-m", "mailops", "hash-password"],
        encoding="utf-8",
        timeout=30,
        env={**os.environ, "NO_COLOR": "1"},
    )
    child.expect("Password: ")
    child.sendline(first)
    child.expect("Again: ")
    child.sendline(second)
    child.expect(pexpect.EOF)
    output = child.before
    child.close()
    return child.exitstatus, output


def test_hash_password_prompts_twice_without_echo():
    status, output = hash_password_on_a_terminal("typed secret", "typed secret")
    assert status == 0
    assert "typed secret" not in output  # no echo
    stored = output.strip().splitlines()[-1]
    assert verify_password(stored, "typed secret")


def test_hash_password_mismatch_hashes_nothing():
    status, output = hash_password_on_a_terminal("one", "two")
    assert status == 1
    assert "the two passwords differ; nothing was hashed" in output
    assert "{ARGON2ID}" not in output


def test_importing_the_cli_loads_no_heavy_library():
    """Each command imports what it uses: the SSH, terminal drawing, crypto and
    spec libraries load when a command needs them, not with the CLI."""
    heavy = ("paramiko", "rich", "cryptography", "argon2", "pydantic", "yaml", "dns", "jinja2")
    probe = f"import sys, mailops.cli; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
