"""Agent frames, and starting the agent from its one-line boot program."""

import io
import json
import subprocess
import sys

import pytest

from mailops.deploy.agent import boot, wire


def test_frames_round_trip_with_binary_blobs():
    stream = io.BytesIO(
        wire.encode({"op": "x", "n": 1}, [b"\x00\xff" * 10, b""]) + wire.encode({"op": "y"})
    )
    assert wire.receive(stream) == ({"op": "x", "n": 1}, [b"\x00\xff" * 10, b""])
    assert wire.receive(stream) == ({"op": "y"}, [])
    assert wire.receive(stream) is None  # a clean end between frames


@pytest.mark.parametrize("cut", [5, -3])
def test_a_cut_frame_is_an_error_not_a_request(cut):
    data = wire.encode({"op": "transaction"}, [b"abcdef"])
    with pytest.raises(wire.WireError):
        wire.receive(io.BytesIO(data[:cut]))


def run_agent(frames: bytes, python_prefix: str = "") -> subprocess.CompletedProcess:
    code = python_prefix + boot.BOOT
    return subprocess.run(
        [sys.executable, "-S", "-c", code],
        input=boot.agent_sources() + frames,
        capture_output=True,
        timeout=30,
    )


def test_the_agent_answers_and_refuses_unknown_requests():
    result = run_agent(wire.encode({"op": "explode"}) + wire.encode({"op": "_private"}))
    assert result.returncode == 0, result.stderr
    stream = io.BytesIO(result.stdout)
    first, second = wire.receive(stream), wire.receive(stream)
    assert first[0] == {"ok": False, "error": "unknown request 'explode'"}
    assert second[0]["ok"] is False


def test_an_old_python_says_its_version():
    pretend = "import sys; sys.version_info = (3, 9, 2, 'final', 0)\n"
    result = run_agent(b"", pretend)
    assert result.returncode == boot.TOO_OLD_EXIT
    assert result.stdout == b"mailops-agent: python 3.9.2\n"


def test_a_python_of_another_bytecode_runs_the_sources():
    """The preamble carries code compiled here and the sources; a host whose
    Python has another magic number compiles the sources instead."""
    preamble = boot.agent_sources()
    head, rest = preamble.split(b"\n", 1)
    other = json.loads(head)
    assert other["code"] > 0 and other["magic"]
    other["magic"] = "00000000"
    result = subprocess.run(
        [sys.executable, "-S", "-c", boot.BOOT],
        input=json.dumps(other).encode() + b"\n" + rest + wire.encode({"op": "explode"}),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert wire.receive(io.BytesIO(result.stdout))[0]["error"] == "unknown request 'explode'"


def test_a_facts_session_loads_only_what_facts_need(tmp_path):
    """install and transaction (and subprocess, shutil, platform…) load when a
    session asks for them: a no-op apply starts the agent quicker without."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("x\n")
    facts = {
        "op": "facts",
        "lock": True,
        "lock_key": str(tmp_path / "etc"),
        "paths": {"config": str(tmp_path / "etc"), "data": str(tmp_path), "install": "/nowhere"},
        "files": [{"path": str(tmp_path / "etc" / "passwd"), "expect": "", "content": True}],
        "manifest": str(tmp_path / "etc" / "manifest.json"),
        "service": {
            "kind": "process",
            "command": ["true"],
            "pid_file": str(tmp_path / "pid"),
            "log_file": str(tmp_path / "log"),
        },
        "status_file": str(tmp_path / "status.json"),
        "build": "b" * 16,
        "sweep": [str(tmp_path / "etc")],
    }
    check = (
        "import os, sys\n"
        "_exit = os._exit\n"
        "def report(status):\n"
        "    names = ('mailops_agent.transaction', 'mailops_agent.account', 'subprocess',\n"
        "             'shutil', 'platform', 'tempfile', 'typing', 'importlib.abc')\n"
        "    sys.stderr.write(repr(sorted(n for n in names if n in sys.modules)))\n"
        "    sys.stderr.flush()\n"
        "    _exit(status)\n"
        "os._exit = report\n"
    )
    result = run_agent(wire.encode(facts), check)
    assert result.returncode == 0, result.stderr
    answer, blobs = wire.receive(io.BytesIO(result.stdout))
    assert answer["ok"] and blobs == [b"x\n"], answer
    assert result.stderr == b"[]"
