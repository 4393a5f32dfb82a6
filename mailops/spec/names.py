"""Names in mail and DNS: domain names (IDN → A-label), local parts (RFC 5321
dot-atom), DNS labels. Each check returns the normalised name or raises
ValueError with a message that says what would be valid."""

from __future__ import annotations

import re

_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# RFC 5322 atext, without the characters that mail software commonly mangles is
# not our call to make: accept the full dot-atom set.
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM_RE = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*$")
# Service-style labels such as _dmarc or s2026._domainkey are allowed in record names.
_RECORD_LABEL_RE = re.compile(r"^(?:\*|_?[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?|_?[a-z0-9])$")


def domain(name: str, what: str = "domain name") -> str:
    """A domain as lowercase A-labels without a trailing dot (IDN allowed)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must not be empty")
    text = name.strip().rstrip(".").lower()
    try:
        ascii_name = text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError:
        raise ValueError(f"{what} {name!r} is not a valid internationalised name") from None
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or len(labels) < 2:
        raise ValueError(
            f"{what} {name!r} must be a fully qualified name with at least two labels, "
            "like example.org"
        )
    for label in labels:
        if not _LABEL_RE.match(label):
            raise ValueError(
                f"{what} {name!r} has an invalid label {label!r}: labels are 1–63 letters, "
                "digits or '-', not starting or ending with '-'"
            )
    if labels[-1].isdigit():
        raise ValueError(f"{what} {name!r} looks like an IP address, not a name")
    return ascii_name


def dns_name(name: str, what: str = "DNS name") -> str:
    """A name as DNS has it, where labels may also start with '_' (`_spf.example.com`)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must not be empty")
    text = name.strip().rstrip(".").lower()
    labels = text.split(".")
    if len(text) > 253 or len(labels) < 2 or not all(_RECORD_LABEL_RE.match(x) for x in labels):
        raise ValueError(
            f"{what} {name!r} is not valid: use labels of letters, digits, '-' and a "
            "leading '_', like _spf.example.com"
        )
    return text


def local_part(name: str) -> str:
    """A local part as RFC 5321 dot-atom, lowercased (addresses compare case-insensitively)."""
    if not isinstance(name, str):
        raise ValueError(f"local part must be a string, got {name!r}")
    text = name.lower()
    if not text:
        raise ValueError("local part must not be empty")
    if len(text) > 64:
        raise ValueError(f"local part {name!r} is longer than 64 characters")
    if not _DOT_ATOM_RE.match(text):
        raise ValueError(
            f"local part {name!r} is not a valid dot-atom: use letters, digits and "
            "!#$%&'*+/=?^_`{|}~- separated by single dots"
        )
    return text


def address(text: str) -> str:
    """`local@domain`, normalised (lowercased, domain as A-label)."""
    if not isinstance(text, str) or text.count("@") != 1:
        raise ValueError(f"{text!r} is not an address of the form local@domain")
    local, _, dom = text.rpartition("@")
    return f"{local_part(local)}@{domain(dom)}"


def record_name(name: str) -> str:
    """A name relative to a zone ('@', 'www', '_dmarc', 'a.b'), or absolute with a dot."""
    if name == "@":
        return name
    body = name[:-1] if name.endswith(".") else name
    labels = body.lower().split(".")
    if not body or any(not _RECORD_LABEL_RE.match(label) for label in labels):
        raise ValueError(
            f"record name {name!r} is not valid: use '@', a relative name like 'www' or "
            "'_dmarc', or an absolute name ending in '.'"
        )
    return name.lower()
