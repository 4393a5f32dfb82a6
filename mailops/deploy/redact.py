"""Diffs that never show a secret.

Plain files get a unified diff. passwd is summarised per address (added,
removed, password changed, quota changed): hashes never appear. Every other
secret file (keys, relay passwords) only says that it changed.
"""

from __future__ import annotations

import difflib

HIDDEN = "contents hidden (secret)"


def describe(rel: str, old: bytes | None, new: bytes | None, secret: bool) -> tuple[list[str], str]:
    """(summary lines, unified diff text) for one file change."""
    if rel == "passwd":
        return passwd_summary(old, new), ""
    if secret:
        return ([] if old is None or new is None else [HIDDEN]), ""
    if old is None or new is None:
        return [], ""
    diff = difflib.unified_diff(
        old.decode(errors="replace").splitlines(keepends=True),
        new.decode(errors="replace").splitlines(keepends=True),
        fromfile=f"{rel} (on the host)",
        tofile=f"{rel} (from the spec)",
    )
    return [], "".join(diff)


def _entries(data: bytes | None) -> dict[str, tuple[str, str]]:
    """address → (password field, extra field) of a Dovecot passwd-file."""
    out = {}
    for line in (data or b"").decode(errors="replace").splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        out[fields[0]] = (fields[1] if len(fields) > 1 else "", ":".join(fields[7:]))
    return out


def passwd_summary(old: bytes | None, new: bytes | None) -> list[str]:
    before, after = _entries(old), _entries(new)
    lines = []
    for address in sorted(before.keys() | after.keys()):
        if address not in before:
            lines.append(f"{address}: added")
        elif address not in after:
            lines.append(f"{address}: removed")
        else:
            (old_pw, old_extra), (new_pw, new_extra) = before[address], after[address]
            if old_pw != new_pw:
                lines.append(f"{address}: password changed")
            if old_extra != new_extra:
                lines.append(
                    f"{address}: settings changed ({old_extra or '-'} → {new_extra or '-'})"
                )
    return lines


def removed_users(old: bytes | None, new: bytes | None) -> list[str]:
    return sorted(_entries(old).keys() - _entries(new).keys())
