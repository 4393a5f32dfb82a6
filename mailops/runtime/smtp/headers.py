"""Header lines the MTA adds: Received, and Message-ID/Date for submissions."""

from __future__ import annotations

import email.utils
import re
import secrets

_HEADER_END = re.compile(rb"\r\n\r\n|\n\n")


def header_block(message: bytes) -> bytes:
    """The header section (without the blank line); all of it if there is no body."""
    match = _HEADER_END.search(message)
    return message[: match.start()] if match else message


def has_header(message: bytes, name: str) -> bool:
    pattern = re.compile(rb"(?im)^" + re.escape(name.encode()) + rb"[ \t]*:")
    return pattern.search(header_block(message)) is not None


def received(
    *, helo: str, client_ip: str, hostname: str, protocol: str, queue_id: str, rcpt: str | None
) -> bytes:
    """RFC 5321 §4.4 trace header. `for` names the recipient only when there is
    one, so a copy does not tell its reader who else got the message."""
    helo = re.sub(r"[^\x21-\x7e]", "?", helo)[:255] or "unknown"
    line = f"Received: from {helo} ([{client_ip}])\r\n\tby {hostname} (mailops) with {protocol}"
    line += f" id {queue_id}"
    if rcpt:
        line += f"\r\n\tfor <{rcpt}>"
    return (line + f"; {email.utils.formatdate(localtime=False, usegmt=True)}\r\n").encode()


def submission_headers(message: bytes, hostname: str) -> bytes:
    """Message-ID and Date for a submitted message that lacks them (RFC 6409 §8)."""
    added = b""
    if not has_header(message, "Message-ID"):
        added += f"Message-ID: <{secrets.token_hex(12)}@{hostname}>\r\n".encode()
    if not has_header(message, "Date"):
        added += f"Date: {email.utils.formatdate(localtime=False, usegmt=True)}\r\n".encode()
    return added


def bare_line_ending(data: bytes) -> bool:
    """A CR or LF that is not part of CRLF: the raw material of SMTP smuggling
    (RFC 5321 §2.3.8). Such messages are refused, as Postfix does."""
    stripped = data.replace(b"\r\n", b"")
    return b"\n" in stripped or b"\r" in stripped


_RETURN_PATH = re.compile(rb"(?im)^return-path[ \t]*:.*(?:\r\n[ \t].*)*\r\n")


def without_return_path(message: bytes) -> bytes:
    """The message without Return-Path fields in its header: only the final delivery
    writes one (RFC 5321 §4.4), so one that came with the message is dropped, as
    Postfix's cleanup does; otherwise the mailbox copy would carry two."""
    head = header_block(message)
    if b"return-path" not in head.lower():
        return message
    end = len(head) + 2 if len(head) < len(message) else len(head)
    return _RETURN_PATH.sub(b"", message[:end]) + message[end:]
