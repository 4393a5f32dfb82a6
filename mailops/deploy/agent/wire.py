"""Frames between mailops and its agent, in both directions.

A frame is one line of JSON (the header) followed by the raw bytes of its
blobs, whose sizes the header lists. File contents travel as blobs, so a 20 MB
wheel is neither base64-encoded nor parsed as JSON.
"""

from __future__ import annotations

import io
import json

# No `typing` here: the agent imports this module at start-up, and typing
# alone would take a tenth of that. Values are JSON: dicts, lists, scalars.


class WireError(Exception):
    """The stream ended in the middle of a frame, or a header is not JSON."""

    def __init__(self, message: str, line: bytes = b""):
        super().__init__(message)
        self.line = line


def encode(message: dict[str, object], blobs: list[bytes] | tuple[bytes, ...] = ()) -> bytes:
    header = dict(message, blobs=[len(b) for b in blobs])
    line = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    return b"".join([line, b"\n", *blobs])


def receive(stream: io.BufferedIOBase) -> tuple[dict, list[bytes]] | None:
    """The next frame, or None when the stream ended cleanly between frames."""
    line = stream.readline()
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise WireError("the stream ended inside a frame header", line)
    try:
        header = json.loads(line)
    except ValueError:
        raise WireError(f"not a frame header: {line[:80]!r}", line) from None
    blobs = [_read_exact(stream, size) for size in header.pop("blobs", [])]
    return header, blobs


def _read_exact(stream: io.BufferedIOBase, size: int) -> bytes:
    parts, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise WireError("the stream ended inside a frame's data")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)
