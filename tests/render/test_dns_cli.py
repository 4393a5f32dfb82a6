"""`mailops dns` end to end: files, exit codes, notes, serials, refusals."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dns.zone
import pytest

from mailops.cli import main
from mailops.render import dkim, dns_output

FIXTURE = Path(__file__).parent / "data" / "two-domains.yaml"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def mailops(capsys, monkeypatch):
    """Run the CLI's entry point in-process (fast), exit code and output captured."""

    def run(*args: str | Path) -> Result:
        monkeypatch.setattr(sys, "argv", ["mailops", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def test_the_installed_command_prints_one_line_errors(tmp_path):
    """One real process, to see what a user sees: no traceback, exit code 2."""
    result = subprocess.run(
        [sys.executable, "-m", "mailops", "dns", tmp_path / "missing.yaml"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("mailops: error: ")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "spec" / FIXTURE.name
    path.parent.mkdir()
    shutil.copy(FIXTURE, path)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def serial_of(zone_file: Path) -> int:
    zone = dns.zone.from_text(zone_file.read_text(), origin="example.org.", relativize=False)
    return zone.find_rdataset("example.org.", "SOA")[0].serial


def test_out_writes_zone_records_and_web_files(mailops, spec, tmp_path):
    out = tmp_path / "out"
    result = mailops("dns", spec, "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert sorted(snapshot(out)) == [
        "example.net.records.txt",
        "example.net/config-v1.1.xml",
        "example.org.records.txt",
        "example.org.zone",
        "example.org/config-v1.1.xml",
        "example.org/mta-sts.txt",
    ]
    made = [line for line in result.stderr.splitlines() if line.startswith("note: made DKIM key")]
    assert len(made) == 3
    keys = sorted(p.name for p in (spec.parent / "keys" / "dkim").iterdir())
    assert keys == ["example.net.s1.key", "example.org.ed2026.key", "example.org.s2026.key"]
    assert result.stderr.splitlines()[-1] == f"wrote 6 file(s) to {out}"


def test_second_run_is_byte_identical_and_keeps_keys(mailops, spec, tmp_path):
    out = tmp_path / "out"
    assert mailops("dns", spec, "--out", out).returncode == 0
    first, keys = snapshot(out), snapshot(spec.parent / "keys")
    again = mailops("dns", spec, "--out", out)
    assert again.returncode == 0
    assert "made DKIM key" not in again.stderr
    assert snapshot(out) == first
    assert snapshot(spec.parent / "keys") == keys


def test_serial_moves_only_when_records_change(mailops, spec, tmp_path):
    out = tmp_path / "out"
    zone_file = out / "example.org.zone"
    assert mailops("dns", spec, "--out", out).returncode == 0
    # Pretend the zone was first written long ago: same records keep that serial.
    zone_file.write_text(zone_file.read_text().replace(str(serial_of(zone_file)), "2020010105"))
    assert mailops("dns", spec, "--out", out).returncode == 0
    assert serial_of(zone_file) == 2020010105
    spec.write_text(spec.read_text().replace("pct: 50", "pct: 75"))
    assert mailops("dns", spec, "--out", out).returncode == 0
    today = dt.datetime.now(dt.UTC).date()
    assert serial_of(zone_file) == dns_output.next_serial(2020010105, today)
    assert "pct=75" in zone_file.read_text()


def test_stdout_by_default(mailops, spec):
    result = mailops("dns", spec)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# example.net: DNS records for mail")
    assert "\n$ORIGIN example.org.\n" in result.stdout
    assert "note: reverse DNS: ask the owner of 203.0.113.10" in result.stderr


def test_zone_option_and_formats(mailops, spec):
    zone = mailops("dns", spec, "--zone", "example.org", "--format", "zone")
    assert zone.returncode == 0
    assert zone.stdout.startswith("; example.org: written by mailops")
    assert "example.net" not in zone.stdout.split("$ORIGIN")[0]
    as_json = mailops("dns", spec, "--format", "json", "--zone", "example.net")
    assert as_json.returncode == 0
    assert '"zone": "example.net"' in as_json.stdout and '"example.org"' not in as_json.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--zone", "example.com"], "mailops: error: no zone example.com in the spec"),
        (["--format", "zone"], "mailops: error: no zone file for example.net"),
    ],
)
def test_usage_errors_exit_2_before_any_key_is_made(mailops, spec, args, message):
    result = mailops("dns", spec, *args)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [line for line in result.stderr.splitlines() if line]
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.stderr
    assert not (spec.parent / "keys").exists()


def test_bad_format_is_a_usage_error(mailops, spec):
    result = mailops("dns", spec, "--format", "bind")
    assert result.returncode == 2


def test_spec_error_exits_2(mailops, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nhosts: {}\n")
    result = mailops("dns", bad)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_unwritable_out_is_one_clear_error_and_writes_nothing(mailops, spec, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = mailops("dns", spec, "--out", blocker / "out")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [
        f"mailops: error: cannot create the --out folder {blocker / 'out'}: Not a directory"
    ]
    assert "Traceback" not in result.stderr
    assert blocker.read_text() == "not a folder"
    result = mailops("dns", spec, "--out", blocker)
    assert result.returncode == 1
    assert f"mailops: error: --out {blocker} exists and is not a folder" in result.stderr


def test_wrong_type_key_is_refused_and_kept(mailops, spec):
    key_dir = spec.parent / "keys" / "dkim"
    key_dir.mkdir(parents=True)
    path = key_dir / "example.org.s2026.key"  # the spec asks rsa-2048
    dkim.create_key_file(path, dkim.generate_key("ed25519"))
    before = path.read_bytes()
    result = mailops("dns", spec)
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"mailops: error: DKIM key {path} is ed25519 but the selector asks for rsa-2048"
        )
    )
    assert path.read_bytes() == before


def test_domain_in_no_zone_is_printed_as_records_with_a_note(mailops, tmp_path):
    spec = tmp_path / "local.yaml"
    spec.write_text(
        "version: 1\n"
        "hosts:\n"
        "  local: {fqdn: mail.example.test, ipv4: 127.0.0.1, tls: {self_signed: true}}\n"
        "domains:\n"
        "  example.test:\n"
        "    mailbox_host: local\n"
        "    mx: [{host: local, priority: 10}]\n"
        "    aliases: {postmaster: a@elsewhere.example}\n"
    )
    result = mailops("dns", spec)
    assert result.returncode == 0, result.stderr
    assert "note: domain example.test lies in no zone of dns.zones" in result.stderr
    assert result.stdout.startswith("# example.test: DNS records for mail")
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["mail", "A", "3600", "127.0.0.1"] in lines
    assert ["@", "MX", "3600", "10", "mail.example.test."] in lines
