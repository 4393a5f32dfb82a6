"""The Authentication-Results header of inbound mail (RFC 8601), and forged ones.

Mail received on port 25 gets one header naming this host (its authserv-id)
with the SPF result for the MAIL FROM (or HELO) identity and the DKIM result of
each signature, one per folded line:

    Authentication-Results: mx1.example.org;
        spf=pass smtp.mailfrom=alice@example.net;
        dkim=pass header.d=example.net header.s=s1 header.b=AbCdEfGh

Readers and filters trust such a header because it names their own server, so
one that a sender wrote into the message with this host's name is a forgery:
RFC 8601 §5 has the receiving MTA remove those. Headers of other hosts stay.
"""

from __future__ import annotations

import asyncio
import re

from mailops.runtime.delivery import dkim, spf
from mailops.runtime.delivery.resolver import Dns

_NAME = b"authentication-results"
_UNSAFE = re.compile(r"[^\x21-\x7e]|[;()\"\\]")  # what may not appear in a bare value


async def header(
    message: bytes, hostname: str, dns: Dns, *, client_ip: str, helo: str, sender: str
) -> bytes:
    """The header line (folded, CRLF-terminated) for `message` as it arrived."""
    if dkim.signed(message):  # both look things up in DNS: at the same time
        checked, signatures = await asyncio.gather(
            spf.check(dns, client_ip, sender, helo), dkim.verdicts(message, dns)
        )
    else:  # most mail: no task to start for DKIM
        checked, signatures = await spf.check(dns, client_ip, sender, helo), ["dkim=none"]
    verdicts = signatures
    if checked is not None:  # None: mail from this machine, not checked
        result, identity = checked
        prop, _, value = identity.partition("=")
        verdicts = [f"spf={result} {prop}={_UNSAFE.sub('', value) or 'unknown'}", *verdicts]
    body = ";\r\n\t".join(verdicts)
    return f"Authentication-Results: {hostname};\r\n\t{body}\r\n".encode()


def strip_forged(message: bytes, hostname: str) -> bytes:
    """`message` without the Authentication-Results fields whose authserv-id is
    `hostname` (any case); everything else byte for byte as it was."""
    end = message.find(b"\r\n\r\n")
    head = message[: end + 2] if end >= 0 else message  # with its last line's CRLF
    if _NAME not in head.lower():
        return message
    fields = _fields(head)
    ours = hostname.lower().rstrip(".").encode()
    kept = [f for f in fields if _authserv_id(f) != ours]
    if len(kept) == len(fields):
        return message
    return b"".join(kept) + message[len(head) :]


def _fields(head: bytes) -> list[bytes]:
    """The header fields, each with its continuation lines and line ends."""
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _authserv_id(field: bytes) -> bytes | None:
    """The authserv-id of an Authentication-Results field, lowercase; None for
    any other field."""
    name, colon, value = field.partition(b":")
    if not colon or name.strip().lower() != _NAME:
        return None
    text = _skip_cfws(value.replace(b"\r\n", b"").replace(b"\n", b""))
    end = re.search(rb"[;\s(]", text)
    return text[: end.start() if end else len(text)].lower().rstrip(b".")


def _skip_cfws(text: bytes) -> bytes:
    """`text` from its first character that is neither white space nor inside a
    comment (comments nest, RFC 5322 §3.2.2)."""
    depth, index = 0, 0
    while index < len(text):
        char = text[index : index + 1]
        if char == b"\\" and depth:
            index += 2
            continue
        if char == b"(":
            depth += 1
        elif char == b")" and depth:
            depth -= 1
        elif not depth and not char.isspace():
            break
        index += 1
    return text[index:]
