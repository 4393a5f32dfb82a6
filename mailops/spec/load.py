"""Spec file → Spec, or every problem in it as `FILE:LINE:COL: error: MESSAGE`.

Steps: read and decode → YAML to data with positions (source.py) → normalise
the names used as keys (domains as A-labels, local parts lowercased) → merge
`defaults` under each host → pydantic validation → cross-checks (check.py).
Every finding is mapped back to the key or value it is about.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import gc
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mailops.errors import SpecError, UsageError
from mailops.spec import check, names
from mailops.spec.diagnostics import Diagnostic, Severity
from mailops.spec.model import UNION_TAGS, Defaults, Spec
from mailops.spec.source import Pos, PosNode, SourceProblem, decode, parse

Loc = tuple[Any, ...]


@dataclass
class LoadedSpec:
    spec: Spec
    path: Path
    positions: PosNode
    diagnostics: list[Diagnostic] = field(default_factory=list)  # warnings only

    @property
    def base_dir(self) -> Path:
        """Relative paths in the spec are relative to this folder."""
        return self.path.parent


def load_spec(path: str | Path) -> LoadedSpec:
    """Load and validate; raise SpecError carrying every error and warning."""
    loaded, diagnostics = check_spec(path)
    if loaded is None:
        raise SpecError(diagnostics)
    return loaded


def check_spec(path: str | Path) -> tuple[LoadedSpec | None, list[Diagnostic]]:
    """Load and validate; return the spec (None when there are errors) and all findings."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder, not a spec file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    return check_text(raw, str(path))


def check_text(raw: bytes | str, filename: str) -> tuple[LoadedSpec | None, list[Diagnostic]]:
    # A large spec allocates hundreds of thousands of objects and no cycles; the
    # cyclic collector would walk them all again and again (a third of the time).
    with _collector_paused():
        return _check_text(raw, filename)


@contextlib.contextmanager
def _collector_paused():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_text(raw: bytes | str, filename: str) -> tuple[LoadedSpec | None, list[Diagnostic]]:
    report = _Reporter(filename)
    try:
        text = decode(raw) if isinstance(raw, bytes) else raw
        data, positions = parse(text)
    except SourceProblem as problem:
        return None, [report.at(problem.pos, "error", problem.message)]
    report.root = positions
    if not isinstance(data, dict):
        kind = _kind(data)
        report.add(
            (),
            "error",
            f"a spec must be a mapping of keys (version, hosts, domains, …), got {kind}",
        )
        return None, report.done()

    _normalise_keys(data, positions, report)
    spec = _validate(data, positions, report)
    if spec is not None:
        for finding in check.check(spec):
            report.finding(finding)
    diagnostics = report.done()
    if spec is None or any(d.severity == "error" for d in diagnostics):
        return None, diagnostics
    return LoadedSpec(spec, Path(filename), positions, diagnostics), diagnostics


# ---------------------------------------------------------------- reporting


MAX_MESSAGE = 400


class _Reporter:
    def __init__(self, filename: str):
        self.filename = filename
        self.root: PosNode | None = None
        self.items: list[Diagnostic] = []

    def at(self, pos: Pos, severity: Severity, message: str) -> Diagnostic:
        if len(message) > MAX_MESSAGE:  # a huge bad value is not worth echoing whole
            message = message[: MAX_MESSAGE - 1] + "…"
        return Diagnostic(self.filename, pos.line, pos.col, severity, message)

    def locate(self, loc: Loc, at_key: bool = False) -> Pos:
        node = self.root
        if node is None:
            return Pos(1, 1)
        complete = True
        for step in loc:
            nxt = node.child(step)
            if nxt is None:
                complete = False
                break
            node = nxt
        if at_key or not complete:
            return node.key or node.value
        return node.value

    def add(self, loc: Loc, severity: Severity, message: str, at_key: bool = False) -> None:
        self.items.append(self.at(self.locate(loc, at_key), severity, message))

    def finding(self, f: check.Finding) -> None:
        message = f.message
        if f.first is not None:
            first = self.locate(f.first, at_key=True)
            message += f" (first defined at line {first.line})"
        self.add(f.path, f.severity, message, f.at_key)  # type: ignore[arg-type]

    def done(self) -> list[Diagnostic]:
        return sorted(set(self.items), key=lambda d: (d.line, d.col, d.severity, d.message))


# ---------------------------------------------------------------- key normalisation


def _rekey(mapping: dict, pos: PosNode, normalise, what: str, report: _Reporter, where=""):
    """Replace the keys of `mapping` (and of its position node) by normalised ones."""
    if not isinstance(mapping, dict) or not isinstance(pos.children, dict):
        return
    new_data: dict = {}
    new_pos: dict = {}
    for key, value in mapping.items():
        try:
            new_key = normalise(key) if isinstance(key, str) else key
        except ValueError:
            new_key = key  # pydantic reports the bad name at its key
        child = pos.children[key]
        if new_key in new_data:
            first = new_pos[new_key].key or new_pos[new_key].value
            report.items.append(
                report.at(
                    child.key or child.value,
                    "error",
                    f"{what} '{key}'{where} is defined twice (names are case-insensitive; "
                    f"first defined at line {first.line})",
                )
            )
            continue
        new_data[new_key] = value
        new_pos[new_key] = child
    mapping.clear()
    mapping.update(new_data)
    pos.children = new_pos


def _normalise_keys(data: dict, positions: PosNode, report: _Reporter) -> None:
    domains = data.get("domains")
    if isinstance(domains, dict):
        pos = positions.child("domains")
        _rekey(domains, pos, names.domain, "domain", report)
        for dname, domain in domains.items():
            if not isinstance(domain, dict):
                continue
            dpos = pos.child(dname)
            for part in ("users", "aliases"):
                if part in domain and dpos.child(part) is not None:
                    _rekey(
                        domain[part], dpos.child(part), str.lower, part[:-1], report, f" of {dname}"
                    )
    zones = (data.get("dns") or {}).get("zones") if isinstance(data.get("dns"), dict) else None
    if isinstance(zones, dict):
        zpos = positions.child("dns").child("zones")
        _rekey(zones, zpos, names.domain, "zone", report)


# ---------------------------------------------------------------- defaults


def _merge(base: Any, base_pos: PosNode, over: Any, over_pos: PosNode) -> tuple[Any, PosNode]:
    """`over` on top of `base`: mappings merge key by key (tls is taken whole)."""
    if not isinstance(base, dict) or not isinstance(over, dict):
        return over, over_pos
    merged = dict(base)
    children = dict(base_pos.children or {})  # type: ignore[arg-type]
    for key, value in over.items():
        child = over_pos.children[key]  # type: ignore[index]
        if key in merged and key != "tls":
            merged[key], children[key] = _merge(merged[key], children[key], value, child)
        else:
            merged[key], children[key] = value, child
    return merged, PosNode(over_pos.value, over_pos.key, children)


def _apply_defaults(data: dict, positions: PosNode, report: _Reporter) -> bool:
    """Merge `defaults` under each host; False when the defaults themselves are broken."""
    defaults, hosts = data.get("defaults"), data.get("hosts")
    if defaults is None or not isinstance(hosts, dict):
        return True
    try:
        Defaults.model_validate(defaults)
    except ValidationError as exc:
        _report_validation(exc, ("defaults",), report)
        return False  # merging broken defaults would repeat each error once per host
    dpos = positions.child("defaults")
    hpos = positions.child("hosts")
    for hid, host in list(hosts.items()):
        if isinstance(host, dict):
            hosts[hid], hpos.children[hid] = _merge(  # type: ignore[index]
                copy.deepcopy(defaults), dpos, host, hpos.child(hid)
            )
    return True


# ---------------------------------------------------------------- validation


def _validate(data: dict, positions: PosNode, report: _Reporter) -> Spec | None:
    """The Spec, or None after reporting why not."""
    defaults_ok = _apply_defaults(data, positions, report)
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        _report_validation(exc, (), report)
        errors = exc.errors()
    if defaults_ok:  # with broken defaults every host would draw follow-on findings
        _check_the_rest(data, positions, errors, report)
    return None


def _check_the_rest(data: dict, positions: PosNode, errors, report: _Reporter) -> None:
    """Cross-check what is valid, so one run shows every problem: cut each invalid
    part out of a copy (the smallest part whose removal leaves the rest valid:
    an optional key, a list entry, a whole host or domain), validate again, and
    report the findings that do not merely follow from a cut part."""
    rest, pos = copy.deepcopy(data), copy.deepcopy(positions)
    rest["version"] = 1  # its own error is reported; it says nothing about the rest
    cut: list[Loc] = []
    damaged: set[str] = set()
    for _round in range(4):
        locs = [_clean_loc(tuple(e["loc"])) for e in errors]
        done = [(_cut(rest, pos, loc), "[key]" in loc) for loc in locs]
        if not any(c for c, _ in done):
            return
        cut += [c for c, _ in done if c]
        damaged |= {tag for c, by_key in done if c for tag in _damage(c, by_key)}
        _purge(rest, pos)
        try:
            partial = Spec.model_validate(rest)
            break
        except ValidationError as exc:
            errors = exc.errors()
    else:
        return
    partial_report = _Reporter(report.filename)
    partial_report.root = pos
    for finding in check.check(partial):
        related = any(_prefix(c, finding.path) or _prefix(finding.path, c) for c in cut)
        if not related and not damaged.intersection(finding.depends):
            partial_report.finding(finding)
    report.items += partial_report.items


def _damage(loc: Loc, by_key: bool) -> set[str]:
    """What a cut part leaves incomplete, in the terms of Finding.depends. A cut
    made for a bad *name* (by_key) may hide the name another part refers to."""
    kind = {"hosts": "host", "relays": "relay"}.get(loc[0])
    if kind and len(loc) > 1:
        return {f"{kind}:{loc[1]}"} | ({f"{kind}-ids"} if by_key and len(loc) == 2 else set())
    if loc[0] == "domains" and (len(loc) == 2 or (len(loc) > 3 and loc[2] in ("users", "aliases"))):
        return {f"addresses:{loc[1]}"}
    return set()


_CUT = object()


def _prefix(short: Loc, long: Loc) -> bool:
    return long[: len(short)] == short


def _cut(data: Any, pos: PosNode, loc: Loc) -> Loc | None:
    """Mark the smallest removable part at or above `loc`; None when there is none."""
    loc = tuple(step for step in loc if step != "[key]")
    for depth in range(len(loc), 0, -1):
        parent, step = loc[: depth - 1], loc[depth - 1]
        container = _get(data, parent)
        if isinstance(container, list) and isinstance(step, int) and step < len(container):
            container[step] = _CUT
            return loc[:depth]
        if isinstance(container, dict) and step in container and not _required(parent, step):
            del container[step]
            node = _get_pos(pos, parent)
            if node is not None and isinstance(node.children, dict):
                node.children.pop(step, None)
            return loc[:depth]
    return None


def _get(data: Any, loc: Loc) -> Any:
    for step in loc:
        if (isinstance(data, dict) and step in data) or (
            isinstance(data, list) and isinstance(step, int) and 0 <= step < len(data)
        ):
            data = data[step]
        else:
            return None
    return data


def _get_pos(node: PosNode | None, loc: Loc) -> PosNode | None:
    for step in loc:
        node = node.child(step) if node is not None else None
    return node


def _purge(data: Any, pos: PosNode | None) -> None:
    """Drop list entries marked _CUT, from the data and the positions alike."""
    if isinstance(data, dict):
        for key, value in data.items():
            _purge(value, pos.child(key) if pos else None)
    elif isinstance(data, list):
        keep = [i for i, value in enumerate(data) if value is not _CUT]
        if pos is not None and isinstance(pos.children, list) and len(keep) != len(data):
            pos.children = [pos.children[i] for i in keep if i < len(pos.children)]
        data[:] = [data[i] for i in keep]
        for i, value in enumerate(data):
            _purge(value, pos.child(i) if pos else None)


def _required(loc: Loc, key: Any) -> bool:
    """Is `key` a required field of the model at `loc`?"""
    model = _model_at(loc)
    return model is not None and key in model.model_fields and model.model_fields[key].is_required()


def _report_validation(exc: ValidationError, prefix: Loc, report: _Reporter) -> None:
    for err in exc.errors(include_url=False):
        loc = _clean_loc(prefix + tuple(err["loc"]))
        message, at_key = _message(err, loc)
        report.add(loc, "error", message, at_key)


def _clean_loc(loc: Loc) -> Loc:
    return tuple(step for step in loc if step not in UNION_TAGS)


def _message(err: dict, loc: Loc) -> tuple[str, bool]:
    """The user-facing message for one pydantic error, and whether to point at the key."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    is_key = bool(loc) and loc[-1] == "[key]"
    loc = loc[:-1] if is_key else loc
    subject = _key_subject(loc) if is_key else _who(loc)
    if kind == "missing":
        return f"missing required key '{loc[-1]}' in {describe(loc[:-1])}", True
    if kind == "extra_forbidden":
        return _unknown_key(loc), True
    if kind in ("value_error", "assertion_error"):
        text = str(ctx.get("error", err["msg"]))
        if text.startswith(("must", "is ", "needs")):
            text = f"{subject} {text}"
        # A problem with a whole mapping is at its key (its first line may be any child).
        return text, is_key or not _is_field(loc) or isinstance(value, dict)
    if kind == "literal_error":
        return (
            f"{subject} must be one of {_choices(ctx.get('expected', ''))}, got {_show(value)}",
            False,
        )
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{subject} must be a mapping of keys, got {_kind(value)}", False
    if kind == "list_type":
        return f"{subject} must be a list, got {_kind(value)}", False
    if kind in ("string_type",):
        return f"{subject} must be a string, got {_kind(value)}", False
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{subject} must be a whole number, got {_show(value)}", False
    if kind in ("bool_type", "bool_parsing"):
        return f"{subject} must be true or false, got {_show(value)}", False
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return f"{subject} must have at least {n} entr{'y' if n == 1 else 'ies'}", False
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "subaddress":
        return (
            f"subaddress must be one of + - _ = (or null to turn it off), got {_show(value)}",
            False,
        )
    return f"{subject}: {err['msg']}", False


def _who(loc: Loc) -> str:
    """The subject of a sentence about the value at `loc`: a field's own name
    ("priority"), a list entry ("services entry 2") or a thing ("host 'mx1'")."""
    if not loc:
        return "the spec"
    if isinstance(loc[-1], int) and not _model_keys(loc):
        return f"{_who(loc[:-1])} entry {loc[-1] + 1}"
    if _is_field(loc):
        return str(loc[-1])
    return describe(loc)


def _key_subject(loc: Loc) -> str:
    """The subject of a sentence about a mapping key (a name the user chose)."""
    kind = {"hosts": "host id", "relays": "relay id"}.get(loc[-2] if len(loc) > 1 else "")
    return f"{kind} '{loc[-1]}'" if kind else f"key '{loc[-1]}'"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return _kind(value)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "…"
    return str(value)


def _choices(expected: str) -> str:
    return expected.replace("'", "").replace(" or ", ", ")


def describe(loc: Loc) -> str:
    """A reader's name for the thing at `loc`: "host 'mx1'", "'ports' of host 'mx1'"."""
    p = list(loc)
    base, rest = "the spec", p
    if len(p) >= 2 and p[0] in ("hosts", "relays"):
        base, rest = f"{p[0][:-1]} '{p[1]}'", p[2:]
    elif len(p) >= 2 and p[0] == "domains":
        dname = p[1]
        if len(p) >= 4 and p[2] in ("users", "aliases"):
            kind = "user" if p[2] == "users" else "alias"
            base, rest = f"{kind} '{p[3]}@{dname}'", p[4:]
        elif len(p) >= 4 and p[2] == "mx" and isinstance(p[3], int):
            base, rest = f"MX entry {p[3] + 1} of domain {dname}", p[4:]
        else:
            base, rest = f"domain {dname}", p[2:]
    elif len(p) >= 3 and p[:2] == ["dns", "zones"]:
        zone = p[2]
        if len(p) >= 5 and p[3] == "extra_records":
            base, rest = f"extra record {p[4] + 1} of zone {zone}", p[5:]
        else:
            base, rest = f"zone {zone}", p[3:]
    elif p and p[0] == "defaults":
        base, rest = "defaults", p[1:]
    if not rest:
        return base
    path = "".join(f"[{s + 1}]" if isinstance(s, int) else f".{s}" for s in rest).lstrip(".")
    return f"'{path}'" if base == "the spec" else f"'{path}' of {base}"


# Words people reach for, by the key they mean (checked before spelling matches).
_MEANT = {
    "hostname": "fqdn", "mx_host": "fqdn", "name": "fqdn", "server": "fqdn",
    "ip": "ipv4", "address": "ipv4", "ipv4_address": "ipv4", "ip6": "ipv6",
    "mailbox": "mailbox_host", "mailboxes": "mailbox_host", "mailhost": "mailbox_host",
    "pass": "password", "passwd": "password", "hash": "password_hash",
    "alias": "aliases", "user": "users", "pref": "priority", "preference": "priority",
    "catchall": "catch_all", "catch-all": "catch_all", "selector": "selectors",
}  # fmt: skip


def _unknown_key(loc: Loc) -> str:
    key = loc[-1]
    text = f"unknown key '{key}' in {describe(loc[:-1])}"
    valid = _model_keys(loc[:-1])
    if not valid:
        return text
    meant = _MEANT.get(str(key).lower())
    if meant not in valid:
        close = difflib.get_close_matches(str(key).lower(), sorted(valid), n=1, cutoff=0.6)
        meant = close[0] if close else None
    if meant:
        return f"{text} (did you mean '{meant}'?)"
    return f"{text} (valid keys: {', '.join(sorted(valid))})"


def _is_field(loc: Loc) -> bool:
    """Does `loc` end at a field of a model (as opposed to at a model itself)?"""
    if not loc or not isinstance(loc[-1], str):
        return False
    return loc[-1] in _model_keys(loc[:-1])


def _model_keys(loc: Loc) -> set[str]:
    """The keys allowed at `loc`, when a model stands there."""
    model = _model_at(loc)
    return set(model.model_fields) if model is not None else set()


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the value at `loc`, if a model does."""
    tp: Any = Spec
    for step in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(step)  # type: ignore[arg-type]
            if info is None:
                return None
            tp = info.annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional; of a union, keep the member that can hold keys."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            structured = [
                a
                for a in members
                if (isinstance(_unwrap(a), type) and issubclass(_unwrap(a), BaseModel))
                or typing.get_origin(_unwrap(a)) in (dict, list)
            ]
            tp = (structured or members)[0]
        else:
            return tp
