"""Logs: one line per event, `key=value`, never a secret.

`log("smtp.accepted", id=..., client=...)` → `ts=… event=smtp.accepted id=… client=…`.
Values with spaces or quotes are quoted. Passwords never reach this module:
callers pass only what may be shown.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import Any, TextIO

_stream: list[TextIO] = [sys.stderr]


def set_stream(stream: TextIO) -> None:
    _stream[0] = stream


def _value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\r\t'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r") + '"'
    return text


def format_event(event: str, fields: dict[str, Any]) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    parts = [f"ts={stamp}", f"event={event}"]
    parts += [f"{key}={_value(v)}" for key, v in fields.items() if v is not None]
    return " ".join(parts)


def log(event: str, **fields: Any) -> None:
    stream = _stream[0]
    stream.write(format_event(event, fields) + "\n")
    stream.flush()


class _LibraryHandler(logging.Handler):
    """Library log records (aiosmtpd's "mail.log") as key=value lines too."""

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = repr(record.exc_info[1])
        log(f"library.{record.levelname.lower()}", **fields)


def capture_library_logs(level: int = logging.WARNING) -> None:
    """Send library warnings through `log`; silence their deprecation chatter."""
    root = logging.getLogger()
    root.handlers[:] = [_LibraryHandler()]
    root.setLevel(level)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
