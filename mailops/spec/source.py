"""YAML text → plain Python data, plus a tree that remembers where every key and
value stood in the file, so that any later finding can name its line and column.

The scalar types follow YAML 1.2's core schema rather than PyYAML's YAML 1.1
defaults: `yes`, `no`, `on`, `off` stay strings, `1:20` is not sixty-based
arithmetic and `2026-01-01` is not a date. A mail spec is full of such strings.

The tree is built straight from the parser's events: PyYAML's node graph
(`compose`) costs several times more than parsing, and a spec with ten
thousand users must load in well under a second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

try:  # libyaml's parser is several times faster; the pure-Python one is the fallback
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]


class Pos(NamedTuple):
    line: int  # 1-based
    col: int  # 1-based


@dataclass
class PosNode:
    """Where a value stood (`value`), where its key stood (`key`, for mapping
    entries), and the same for its children (dict for mappings, list for lists)."""

    value: Pos
    key: Pos | None = None
    children: dict[Any, PosNode] | list[PosNode] | None = None

    def child(self, step: Any) -> PosNode | None:
        if isinstance(self.children, dict):
            return self.children.get(step)
        if isinstance(self.children, list) and isinstance(step, int):
            return self.children[step] if 0 <= step < len(self.children) else None
        return None


@dataclass
class SourceProblem(Exception):
    """A problem found while reading the file itself (encoding, YAML, shape)."""

    message: str
    pos: Pos = field(default_factory=lambda: Pos(1, 1))


_TAG = "tag:yaml.org,2002:"
_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_BOOLS = frozenset({"true", "True", "TRUE", "false", "False", "FALSE"})
_MAX_DEPTH = 64
_MAX_ALIASED_NODES = 100_000  # stops "billion laughs" expansion


class _Merge:
    """The `<<` key (merge a mapping into this one)."""


MERGE = _Merge()


def _pos(mark: yaml.Mark) -> Pos:
    return Pos(mark.line + 1, mark.column + 1)


def _number(text: str) -> Any:
    if _INT_RE.match(text):
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)
    lowered = text.lower()
    if lowered.endswith(".inf"):
        return float("-inf") if lowered.startswith("-") else float("inf")
    if lowered == ".nan":
        return float("nan")
    return float(text)


def _plain(text: str) -> Any:
    """A plain (unquoted, untagged) scalar under the YAML 1.2 core schema."""
    if text in _NULLS:
        return None
    first = text[0]
    if first in "-+0123456789." and (_INT_RE.match(text) or _FLOAT_RE.match(text)):
        return _number(text)
    if text in _BOOLS:
        return text[0] in "tT"
    if text == "<<":
        return MERGE
    return text


def _scalar(event: yaml.ScalarEvent) -> Any:
    tag, text = event.tag, event.value
    if tag is None or tag == "!":
        return _plain(text) if event.implicit[0] else text
    if tag == _TAG + "str":
        return text
    if tag == _TAG + "null" and text in _NULLS:
        return None
    if tag == _TAG + "bool" and text in _BOOLS:
        return text[0] in "tT"
    if tag == _TAG + "int" and _INT_RE.match(text):
        return _number(text)
    if tag == _TAG + "float" and (_INT_RE.match(text) or _FLOAT_RE.match(text)):
        return float(_number(text))
    raise SourceProblem(f"unsupported YAML tag {tag!r}", _pos(event.start_mark))


class _Frame:
    """A mapping or list being built, with its pending key (mappings)."""

    __slots__ = ("anchor", "data", "key", "key_pos", "merged", "pos", "size")

    def __init__(self, data: Any, pos: PosNode, anchor: str | None):
        self.data, self.pos, self.anchor = data, pos, anchor
        self.key: Any = _NO_KEY
        self.key_pos: Pos | None = None
        self.merged: set = set()  # keys that came from `<<` and may be overridden
        self.size = 1


_NO_KEY = object()


class _Builder:
    def __init__(self) -> None:
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, PosNode, int]] = {}
        self.aliased = 0
        self.root: tuple[Any, PosNode] | None = None

    def open(self, event: yaml.CollectionStartEvent, data: Any, children: Any) -> None:
        here = _pos(event.start_mark)
        if event.tag not in (None, "!", _TAG + "map", _TAG + "seq"):
            raise SourceProblem(f"unsupported YAML tag {event.tag!r}", here)
        if len(self.stack) >= _MAX_DEPTH:
            raise SourceProblem(f"nesting is deeper than {_MAX_DEPTH} levels", here)
        self.stack.append(_Frame(data, PosNode(here, children=children), event.anchor))

    def close(self) -> None:
        frame = self.stack.pop()
        if frame.key is not _NO_KEY:  # pragma: no cover - the parser guarantees pairs
            raise SourceProblem("a key has no value", frame.key_pos or frame.pos.value)
        self.emit(frame.data, frame.pos, frame.anchor, frame.size)

    def alias(self, event: yaml.AliasEvent) -> None:
        here = _pos(event.start_mark)
        if event.anchor not in self.anchors:
            raise SourceProblem(f"unknown alias *{event.anchor}", here)
        data, pos, size = self.anchors[event.anchor]
        self.aliased += size
        if self.aliased > _MAX_ALIASED_NODES:
            raise SourceProblem("aliases expand to too many values", here)
        self.emit(data, PosNode(pos.value, None, pos.children), None, size)

    def emit(self, value: Any, pos: PosNode, anchor: str | None, size: int = 1) -> None:
        if anchor is not None:
            self.anchors[anchor] = (value, pos, size)
        if not self.stack:
            self.root = (value, pos)
            return
        frame = self.stack[-1]
        frame.size += size
        if isinstance(frame.data, list):
            frame.data.append(value)
            frame.pos.children.append(pos)  # type: ignore[union-attr]
        elif frame.key is _NO_KEY:
            self._take_key(frame, value, pos)
        else:
            self._put(frame, value, pos)

    def _take_key(self, frame: _Frame, key: Any, pos: PosNode) -> None:
        if pos.children is not None:
            raise SourceProblem("a mapping key must be a plain value", pos.value)
        if key is None or isinstance(key, bool | float):
            raise SourceProblem(
                "a key must be a name, not null, true/false or a fraction", pos.value
            )
        frame.key, frame.key_pos = key, pos.value

    def _put(self, frame: _Frame, value: Any, pos: PosNode) -> None:
        key, data, children = frame.key, frame.data, frame.pos.children
        frame.key = _NO_KEY
        if key is MERGE:
            self._merge(frame, value, pos)
            return
        if key in data and key not in frame.merged:
            first = children[key].key or children[key].value  # type: ignore[index]
            raise SourceProblem(
                f"duplicate key {key!r} (first defined at line {first.line})", frame.key_pos
            )
        frame.merged.discard(key)
        pos.key = frame.key_pos
        data[key] = value
        children[key] = pos  # type: ignore[index]

    def _merge(self, frame: _Frame, value: Any, pos: PosNode) -> None:
        sources = (
            list(zip(value, pos.children, strict=True))
            if isinstance(value, list)
            else [(value, pos)]
        )
        for source, source_pos in sources:
            if not isinstance(source, dict):
                raise SourceProblem("'<<' must name a mapping", source_pos.value)
            for key, item in source.items():
                if key not in frame.data:
                    frame.data[key] = item
                    frame.pos.children[key] = source_pos.children[key]  # type: ignore[index]
                    frame.merged.add(key)


def _build(events) -> tuple[Any, PosNode] | None:
    builder = _Builder()
    stack = builder.stack
    documents = 0
    for event in events:
        kind = type(event)
        if kind is yaml.ScalarEvent:
            mark = event.start_mark
            here = Pos(mark.line + 1, mark.column + 1)
            if event.tag is None:
                value = _plain(event.value) if event.implicit[0] else event.value
            else:
                value = _scalar(event)
            if stack and event.anchor is None and _fast_put(stack[-1], value, here):
                continue
            builder.emit(value, PosNode(here), event.anchor)
        elif kind is yaml.MappingStartEvent:
            builder.open(event, {}, {})
        elif kind is yaml.SequenceStartEvent:
            builder.open(event, [], [])
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            builder.close()
        elif kind is yaml.AliasEvent:
            builder.alias(event)
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise SourceProblem(
                    "only one YAML document is allowed in a spec (remove the extra '---')",
                    _pos(event.start_mark),
                )
    return builder.root


def _fast_put(frame: _Frame, value: Any, here: Pos) -> bool:
    """The common case of `_Builder.emit` for a plain scalar, inline: most events
    of a large spec are keys and values of mappings. False: take the slow path."""
    data = frame.data
    if type(data) is not dict:
        return False
    key = frame.key
    if key is _NO_KEY:
        if type(value) is not str:
            return False
        frame.key, frame.key_pos = value, here
    elif key is MERGE or key in data:
        return False
    else:
        data[key] = value
        frame.pos.children[key] = PosNode(here, frame.key_pos)  # type: ignore[index]
        frame.key = _NO_KEY
    frame.size += 1
    return True


def decode(raw: bytes) -> str:
    """UTF-8 (with or without BOM), or a SourceProblem naming the bad byte's place."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line_start = before.rfind(b"\n") + 1
        # The column counts characters, as an editor shows them, not bytes.
        col = len(before[line_start:].decode("utf-8", "replace")) + 1
        raise SourceProblem(
            f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x}); save it as UTF-8",
            Pos(before.count(b"\n") + 1, col),
        ) from None


def _offset_pos(text: str, index: int) -> Pos:
    line_start = text.rfind("\n", 0, index) + 1
    return Pos(text.count("\n", 0, index) + 1, index - line_start + 1)


def _tab_indent(text: str, line: int) -> bool:
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return False
    row = lines[line - 1]
    return "\t" in row[: len(row) - len(row.lstrip(" \t"))]


def parse(text: str) -> tuple[Any, PosNode]:
    """Parse one YAML document. Raises SourceProblem with a position."""
    try:
        root = _build(yaml.parse(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = _pos(mark) if mark else Pos(1, 1)
        if _tab_indent(text, pos.line):
            # YAML forbids tabs in indentation, and libyaml's message says so cryptically.
            raise SourceProblem("tab used for indentation; use spaces", Pos(pos.line, 1)) from None
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark and exc.context_mark != mark:
            problem += f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
        raise SourceProblem(f"YAML syntax: {problem}", pos) from None
    except yaml.reader.ReaderError as exc:
        what = (
            f"unacceptable character #x{exc.character:04x}"
            if isinstance(exc.character, int)
            else "unacceptable character"
        )
        raise SourceProblem(
            f"YAML syntax: {what}: {exc.reason}", _offset_pos(text, exc.position)
        ) from None
    except yaml.YAMLError as exc:
        raise SourceProblem(f"YAML syntax: {str(exc).splitlines()[0]}") from None
    if root is None:
        raise SourceProblem("the file is empty; a spec starts with 'version: 1'")
    return root
