"""YAML text → plain Python data, plus a tree that remembers where every key and
value stood in the file, so that any later finding can name its line and column.

The scalar types follow YAML 1.2's core schema rather than PyYAML's YAML 1.1
defaults: `yes`, `no`, `on`, `off` stay strings, `1:20` is not sixty-based
arithmetic and `2026-01-01` is not a date. A mail spec is full of such strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

try:  # libyaml's parser is several times faster; the pure-Python one is the fallback
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


@dataclass(frozen=True)
class Pos:
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
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class _CoreSchemaLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """A loader whose implicit types are YAML 1.2 core: null, bool, int, float, str."""

    yaml_implicit_resolvers: ClassVar[dict] = {}


def _add_resolver(tag: str, regexp: str, first: str) -> None:
    _CoreSchemaLoader.add_implicit_resolver(_TAG + tag, re.compile(regexp), list(first))


_CoreSchemaLoader.add_implicit_resolver(
    _TAG + "null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_add_resolver("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF")
_add_resolver("int", _INT_RE.pattern, "-+0123456789")
_add_resolver("float", _FLOAT_RE.pattern, "-+0123456789.")
_add_resolver("merge", r"^<<$", "<")


def _pos(mark: yaml.Mark) -> Pos:
    return Pos(mark.line + 1, mark.column + 1)


def _scalar(node: yaml.ScalarNode) -> Any:
    tag, text = node.tag, node.value
    if tag == _TAG + "null":
        return None
    if tag == _TAG + "bool":
        return text.lower() == "true"
    if tag == _TAG + "int":
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)
    if tag == _TAG + "float":
        lowered = text.lower()
        if lowered.endswith(".inf"):
            return float("-inf") if lowered.startswith("-") else float("inf")
        if lowered == ".nan":
            return float("nan")
        return float(text)
    if tag == _TAG + "str":
        return text
    raise SourceProblem(f"unsupported YAML tag {tag!r}", _pos(node.start_mark))


def _build(node: yaml.Node, depth: int = 0) -> tuple[Any, PosNode]:
    if depth > 64:
        raise SourceProblem("nesting is deeper than 64 levels", _pos(node.start_mark))
    here = _pos(node.start_mark)
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node), PosNode(here)
    if isinstance(node, yaml.SequenceNode):
        values, positions = [], []
        for item in node.value:
            value, pos = _build(item, depth + 1)
            values.append(value)
            positions.append(pos)
        return values, PosNode(here, children=positions)
    if isinstance(node, yaml.MappingNode):
        return _build_mapping(node, here, depth)
    raise SourceProblem("unsupported YAML node", here)  # pragma: no cover


def _build_mapping(node: yaml.MappingNode, here: Pos, depth: int) -> tuple[dict, PosNode]:
    data: dict[Any, Any] = {}
    children: dict[Any, PosNode] = {}
    merged: set[Any] = set()  # keys that came from `<<` and may be overridden
    for key_node, value_node in node.value:
        if key_node.tag == _TAG + "merge":
            _merge_into(data, children, merged, value_node, depth)
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            raise SourceProblem("a mapping key must be a plain value", _pos(key_node.start_mark))
        key = _scalar(key_node)
        if key is None or isinstance(key, bool | float):
            raise SourceProblem(f"{key_node.value!r} cannot be a key", _pos(key_node.start_mark))
        if key in data and key not in merged:
            first = children[key].key or children[key].value
            raise SourceProblem(
                f"duplicate key {key!r} (first defined at line {first.line})",
                _pos(key_node.start_mark),
            )
        merged.discard(key)
        value, pos = _build(value_node, depth + 1)
        pos.key = _pos(key_node.start_mark)
        data[key] = value
        children[key] = pos
    return data, PosNode(here, children=children)


def _merge_into(data, children, merged, value_node, depth) -> None:
    sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
    for source in sources:
        if not isinstance(source, yaml.MappingNode):
            raise SourceProblem("'<<' must name a mapping", _pos(source.start_mark))
        value, pos = _build(source, depth + 1)
        for key, item in value.items():
            if key not in data:
                data[key] = item
                children[key] = pos.children[key]  # type: ignore[index]
                merged.add(key)


def decode(raw: bytes) -> str:
    """UTF-8 (with or without BOM), or a SourceProblem naming the bad byte's place."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise SourceProblem(
            f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x}); save it as UTF-8",
            Pos(line, col),
        ) from None


def parse(text: str) -> tuple[Any, PosNode]:
    """Parse one YAML document. Raises SourceProblem with a position."""
    if "\t" in text:
        # YAML forbids tabs in indentation and libyaml's message for it is cryptic.
        for lineno, line in enumerate(text.splitlines(), 1):
            indent = len(line) - len(line.lstrip(" \t"))
            if "\t" in line[:indent]:
                raise SourceProblem("tab used for indentation; use spaces", Pos(lineno, 1))
    try:
        node = yaml.compose(text, Loader=_CoreSchemaLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if "expected a single document" in str(exc):
            problem = "only one YAML document is allowed in a spec (remove the extra '---')"
        pos = _pos(mark) if mark else Pos(1, 1)
        raise SourceProblem(f"YAML syntax: {problem}", pos) from None
    except yaml.YAMLError as exc:
        raise SourceProblem(f"YAML syntax: {exc}") from None
    except RecursionError:
        raise SourceProblem("the YAML nests too deeply") from None
    if node is None:
        raise SourceProblem("the file is empty; a spec starts with 'version: 1'")
    return _build(node)
