"""Agent frames, and starting the agent from its one-line boot program."""

import io
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
