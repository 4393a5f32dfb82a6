"""The YAML layer (mailops.spec.source): YAML 1.2 core scalars, merge keys,
1-based positions of keys, values and list items, and the problems it refuses."""

from __future__ import annotations

import math

import pytest

from mailops.spec.load import check_text
from mailops.spec.source import Pos, SourceProblem, decode, parse


def value(text: str):
    """The value of `v: TEXT`."""
    data, _ = parse(f"v: {text}\n")
    return data["v"]


def problem(text: str) -> tuple[str, Pos]:
    with pytest.raises(SourceProblem) as info:
        parse(text)
    return info.value.message, info.value.pos


# ---------------------------------------------------------------- scalars


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # YAML 1.1 booleans are plain strings in 1.2 core
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("n", "n"),
        ("Yes", "Yes"),
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        ("False", False),
        # integers: octal is 0o, hex is 0x; a leading zero is decimal
        ("0o17", 15),
        ("0x1f", 31),
        ("0x1F", 31),
        ("017", 17),
        ("+12", 12),
        ("-7", -7),
        ("0o8", "0o8"),
        ("0b101", "0b101"),
        ("1_000", "1_000"),
        # no sexagesimal numbers, no timestamps
        ("1:20", "1:20"),
        ("190:20:30", "190:20:30"),
        ("2026-01-01", "2026-01-01"),
        ("2026-01-01T10:00:00Z", "2026-01-01T10:00:00Z"),
        # nulls
        ("~", None),
        ("null", None),
        ("Null", None),
        ("NULL", None),
        ("", None),
        ("  # just a comment", None),
        ("nil", "nil"),
        # floats
        ("12.5", 12.5),
        ("1e3", 1000.0),
        (".5", 0.5),
        (".inf", math.inf),
        ("-.inf", -math.inf),
        ("+.Inf", math.inf),
        # quoting and explicit tags
        ("'123'", "123"),
        ('"true"', "true"),
        ('"~"', "~"),
        ("!!str 12", "12"),
        ("!!int 12", 12),
        ("!!bool true", True),
        ("!!null ''", None),
    ],
)
def test_core_schema_scalars(text, expected):
    got = value(text)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize("text", [".nan", ".NaN", ".NAN"])
def test_nan(text):
    assert math.isnan(value(text))


def test_explicit_tag_with_a_value_it_cannot_hold_is_refused():
    assert problem("v: !!int ten\n") == ("unsupported YAML tag 'tag:yaml.org,2002:int'", Pos(1, 4))


def test_unknown_tags_are_refused_where_they_stand():
    assert problem("a:\n  b: !custom x\n") == ("unsupported YAML tag '!custom'", Pos(2, 6))
    message, pos = problem("a: !!python/object:os.system {}\n")
    assert message == "unsupported YAML tag 'tag:yaml.org,2002:python/object:os.system'"
    assert pos == Pos(1, 4)


def test_keys_follow_the_same_schema():
    data, _ = parse('"1": quoted\n2: plain\nyes: still a string\n')
    assert data == {"1": "quoted", 2: "plain", "yes": "still a string"}


@pytest.mark.parametrize("key", ["~", "true", "1.5", ".inf"])
def test_keys_that_are_not_names_are_refused(key):
    assert problem(f"a: 1\n{key}: x\n") == (
        "a key must be a name, not null, true/false or a fraction",
        Pos(2, 1),
    )


def test_collection_as_key_is_refused():
    assert problem("a: 1\n? [x, y]\n: 1\n") == ("a mapping key must be a plain value", Pos(2, 3))


# ---------------------------------------------------------------- positions


NESTED = """\
top: 1
hosts:
  mx1:
    fqdn: mx1.example.org
    services: [smtp, imap]
    listen:
      - 127.0.0.1
      - {addr: "::1"}
"""


def test_positions_of_keys_and_values_are_one_based():
    data, pos = parse(NESTED)
    assert data["hosts"]["mx1"]["listen"][1] == {"addr": "::1"}
    assert pos.value == Pos(1, 1)
    top = pos.child("top")
    assert (top.key, top.value) == (Pos(1, 1), Pos(1, 6))
    hosts = pos.child("hosts")
    assert hosts.key == Pos(2, 1)
    mx1 = hosts.child("mx1")
    assert (mx1.key, mx1.value) == (Pos(3, 3), Pos(4, 5))
    fqdn = mx1.child("fqdn")
    assert (fqdn.key, fqdn.value) == (Pos(4, 5), Pos(4, 11))


def test_positions_of_list_items():
    _, pos = parse(NESTED)
    services = pos.child("hosts").child("mx1").child("services")
    assert services.value == Pos(5, 15)
    assert [item.value for item in services.children] == [Pos(5, 16), Pos(5, 22)]
    assert services.child(0).key is None
    listen = pos.child("hosts").child("mx1").child("listen")
    assert listen.key == Pos(6, 5)
    assert [item.value for item in listen.children] == [Pos(7, 9), Pos(8, 9)]
    addr = listen.child(1).child("addr")
    assert (addr.key, addr.value) == (Pos(8, 10), Pos(8, 16))
    assert listen.child(2) is None
    assert listen.child("x") is None


def test_positions_count_characters_not_bytes():
    _, pos = parse("name: \u00e9t\u00e9\nnext: \u2603 x\nlast: 1\n")
    assert pos.child("next").value == Pos(2, 7)
    assert pos.child("last").value == Pos(3, 7)
    _, pos = parse("a: [\u00e9\u00e9, b]\n")
    assert pos.child("a").child(1).value == Pos(1, 9)


def test_an_alias_keeps_the_positions_of_what_it_names():
    data, pos = parse("a: &x {k: 1}\nb: *x\n")
    assert data["b"] == {"k": 1}
    b = pos.child("b")
    assert b.key == Pos(2, 1)
    assert b.child("k").value == Pos(1, 11)
    assert pos.child("a").key == Pos(1, 1)  # the alias did not move the original's key


# ---------------------------------------------------------------- merge keys


def test_merge_key_fills_in_and_local_keys_win():
    data, pos = parse("base: &b {user: root, port: 22}\nmx1:\n  <<: *b\n  port: 2222\n")
    assert data["mx1"] == {"user": "root", "port": 2222}
    mx1 = pos.child("mx1")
    assert mx1.child("user").value == Pos(1, 17)  # where the merged value is written
    assert mx1.child("port").value == Pos(4, 9)


def test_merge_key_local_value_before_merge_wins():
    data, _ = parse("base: &b {user: root, port: 22}\nmx1:\n  port: 2222\n  <<: *b\n")
    assert data["mx1"] == {"port": 2222, "user": "root"}


def test_merge_of_a_list_of_mappings_earlier_wins():
    data, _ = parse("a: &a {x: 1}\nb: &b {x: 2, y: 2}\nm:\n  <<: [*a, *b]\n")
    assert data["m"] == {"x": 1, "y": 2}
    assert "<<" not in data["m"]


def test_merge_of_a_non_mapping_is_refused():
    assert problem("m:\n  <<: 1\n") == ("'<<' must name a mapping", Pos(2, 7))
    assert problem("m:\n  <<: [{x: 1}, 2]\n") == ("'<<' must name a mapping", Pos(2, 16))


def test_merged_key_given_twice_explicitly_is_a_duplicate():
    assert problem("base: &b {x: 1}\nm:\n  <<: *b\n  x: 2\n  x: 3\n") == (
        "duplicate key 'x' (first defined at line 4)",
        Pos(5, 3),
    )


# ---------------------------------------------------------------- refused input


def test_duplicate_key():
    assert problem("a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\n") == (
        "duplicate key 'c' (first defined at line 3)",
        Pos(5, 3),
    )


def test_duplicate_key_in_flow_mapping():
    assert problem("a: {x: 1, x: 2}\n") == (
        "duplicate key 'x' (first defined at line 1)",
        Pos(1, 11),
    )


def test_duplicate_top_level_key():
    assert problem("version: 1\nhosts: {}\nversion: 1\n") == (
        "duplicate key 'version' (first defined at line 1)",
        Pos(3, 1),
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a:\n\tb: 1\n", 2),
        ("a:\n  b: 1\n  c:\n\t  - x\n", 4),
        ("a: 1\n\t# comment\n", 2),
    ],
)
def test_tab_indentation_is_refused_with_its_line(text, line):
    assert problem(text) == ("tab used for indentation; use spaces", Pos(line, 1))


def test_tab_after_a_colon_is_fine():
    data, _ = parse("a:\tb\nc: [x,\ty]\n")
    assert data == {"a": "b", "c": ["x", "y"]}


def test_tab_inside_block_scalar_content_is_kept():
    data, _ = parse("txt: |\n  one\n  \ttwo\n")
    assert data == {"txt": "one\n\ttwo\n"}


def test_two_documents_are_refused_at_the_second():
    assert problem("a: 1\n---\nb: 2\n") == (
        "only one YAML document is allowed in a spec (remove the extra '---')",
        Pos(2, 1),
    )


def test_one_explicit_document_is_fine():
    data, _ = parse("---\na: 1\n...\n")
    assert data == {"a": 1}


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "   \n"])
def test_empty_document(text):
    assert problem(text) == ("the file is empty; a spec starts with 'version: 1'", Pos(1, 1))


def test_unknown_alias():
    assert problem("a: 1\nb: *nowhere\n") == ("unknown alias *nowhere", Pos(2, 4))


def test_nesting_limit():
    message, pos = problem("a: " + "[" * 100 + "]" * 100 + "\n")
    assert message == "nesting is deeper than 64 levels"
    assert pos.line == 1


def test_alias_expansion_limit():
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    message, pos = problem("\n".join(lines) + "\n")
    assert message == "aliases expand to too many values"
    assert pos.line in range(2, 9)


def test_yaml_syntax_error_names_its_place():
    assert problem("a: 1\nb: c: d\n") == (
        "YAML syntax: mapping values are not allowed in this context",
        Pos(2, 5),
    )


# ---------------------------------------------------------------- encoding


def test_decode_strips_a_byte_order_mark():
    assert decode(b"\xef\xbb\xbfa: 1\n") == "a: 1\n"
    assert decode("a: \u00e9\n".encode()) == "a: \u00e9\n"


def test_bom_does_not_shift_positions():
    _, diagnostics = check_text(b"\xef\xbb\xbfversion: 2\n", "spec.yaml")
    assert (1, 10, "version must be one of 1, got 2") in [
        (d.line, d.col, d.message) for d in diagnostics
    ]


def test_spec_with_bom_is_valid():
    text = (
        "version: 1\n"
        "hosts:\n"
        "  mx1: {fqdn: mx1.example.org, ipv4: 127.0.0.1, tls: {self_signed: true}}\n"
        "domains:\n"
        "  example.org:\n"
        "    mailbox_host: mx1\n"
        "    mx: [{host: mx1, priority: 10}]\n"
        "    aliases: {postmaster: abuse@example.net}\n"
    )
    loaded, diagnostics = check_text(b"\xef\xbb\xbf" + text.encode(), "spec.yaml")
    assert diagnostics == []
    assert loaded is not None


def test_decode_names_the_bad_byte_and_its_place():
    with pytest.raises(SourceProblem) as info:
        decode(b"a: 1\nbb: c\xff\n")
    assert info.value.message == "the file is not UTF-8 text (byte 0xff); save it as UTF-8"
    assert info.value.pos == Pos(2, 6)
