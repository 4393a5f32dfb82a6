"""What FETCH says about a message, without a server: the parse the store caches
(`store.mime`: ENVELOPE, BODY, BODYSTRUCTURE, part offsets) and the sections cut
from it (`imap.message`). Expected bytes are Dovecot 2.3's answers for the same
messages (see test_fetch.py for the live comparison); where we answer differently
on purpose, the test says so."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailops.runtime.imap import message as msg
from mailops.runtime.imap.message import Section
from mailops.runtime.store import Store, mime, opened
from tests.runtime.imap import mime_corpus as corpus


def parsed(data: bytes) -> bytes:
    return mime.parse_to_cache(data)


def section(data: bytes, part: tuple[int, ...] = (), text: str = "", fields=()) -> bytes:
    blob = parsed(data)
    return msg.section_bytes(Section(part, text, tuple(fields)), data, mime.cached_tree(blob))


# ====================================================================== ENVELOPE


def test_envelope_of_a_plain_message():
    assert mime.cached_envelope(parsed(corpus.SIMPLE)) == (
        b'("Mon, 7 Feb 1994 21:52:25 -0800 (PST)" "afternoon meeting" '
        b'(("Fred Foobar" NIL "foobar" "Blurdybloop.example")) '
        b'(("Fred Foobar" NIL "foobar" "Blurdybloop.example")) '
        b'(("Fred Foobar" NIL "foobar" "Blurdybloop.example")) '
        b'((NIL NIL "mooch" "owatagu.siam.edu.example")) NIL NIL NIL '
        b'"<B27397-0100000@Blurdybloop.example>")'
    )


def test_envelope_groups_quoted_names_and_encoded_words_stay_as_written():
    envelope = mime.cached_envelope(parsed(corpus.ALTERNATIVE_WITH_ATTACHMENTS))
    assert envelope == (
        b'("Tue, 1 Feb 2022 10:00:00 +0100" "=?UTF-8?Q?R=C3=A9union?= notes" '
        b'(("Doe, Jane" NIL "jane" "example.test")) (("Doe, Jane" NIL "jane" "example.test")) '
        b'(("Doe, Jane" NIL "jane" "example.test")) '
        b'((NIL NIL "bob" "example.test")("Carol (work)" NIL "carol" "example.test")) '
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL '
        b'"<prev@example.test>" "<alt.1@example.test>")'
    )
    assert b'((NIL NIL "Group" NIL)(NIL NIL "one" "example.test")("Two" NIL "two" "example.test")' \
        b"(NIL NIL NIL NIL)(NIL NIL \"three\" \"example.test\"))" in mime.cached_envelope(
            parsed(corpus.NO_CONTENT_TYPE)
        )


def test_envelope_text_for_people_is_unfolded_and_literal_when_it_changed():
    envelope = mime.cached_envelope(parsed(corpus.RFC2231_AND_ENCODED))
    # Folded subject: one space per run of white space, sent as a literal (Dovecot).
    assert envelope.startswith(b"(NIL {38}\r\n=?UTF-8?B?w6nDqMOg?= continued subject ")
    assert b'(({13}\r\nQuoted "Name" NIL "sender" "example.test"))' in envelope
    assert b'(("a comment" NIL "reply" "example.test"))' in envelope  # addr (comment)


def test_eight_bit_header_text_goes_as_literals():
    envelope = mime.cached_envelope(parsed(corpus.EIGHT_BIT))
    assert envelope == (
        "(NIL {17}\r\nGrüße aus Köln (({13}\r\nJörg Müller NIL \"joerg\" \"example.test\")) "
        "(({13}\r\nJörg Müller NIL \"joerg\" \"example.test\")) "
        "(({13}\r\nJörg Müller NIL \"joerg\" \"example.test\")) "
        "((NIL NIL {11}\r\nünïcödé \"example.test\")) NIL NIL NIL NIL)"
    ).encode()


def test_broken_addresses_are_filled_in_like_dovecot():
    envelope = mime.cached_envelope(parsed(corpus.ODD_ADDRESSES))
    assert envelope == (
        b'(NIL "odd addresses" ((NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) '
        b'((NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) '
        b'((NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) '
        b'((NIL NIL "just-local" "MISSING_DOMAIN")(NIL NIL "MISSING_MAILBOX" "route1")'
        b'(NIL NIL "MISSING_MAILBOX" "route2")) '
        b'((NIL NIL "A Group" NIL)(NIL NIL NIL NIL)(NIL NIL "B Group" NIL)'
        b'(NIL NIL "b1" "x.example")(NIL NIL NIL NIL)) '
        b'(("broken" NIL "no-at-sign" "MISSING_DOMAIN")(NIL NIL "missing" "MISSING_DOMAIN")) '
        b"NIL NIL)"
    )


def test_repeated_fields_last_string_wins_and_addresses_add_up():
    data = (
        b"To: a@b\r\nTo: c@d\r\nSubject: s1\r\nSubject: s2\r\nDate: d1\r\nDate: d2\r\n"
        b"Message-ID: <1>\r\nMessage-ID: <2>\r\n\r\nbody\r\n"
    )
    assert mime.cached_envelope(parsed(data)) == (
        b'("d2" "s2" NIL NIL NIL ((NIL NIL "a" "b")(NIL NIL "c" "d")) NIL NIL NIL "<2>")'
    )


@pytest.mark.parametrize(
    ("subject", "encoded"),
    [
        (b"plain", b'"plain"'),
        (b"", b'""'),
        (b"  ", b'""'),
        (b"trailing  ", b"{8}\r\ntrailing"),
        (b"tab\there", b"{8}\r\ntab here"),
        (b'"q" "q"', b'{7}\r\n"q" "q"'),
        (b"back\\slash", b"{10}\r\nback\\slash"),
    ],
)
def test_subject_encoding(subject, encoded):
    envelope = mime.cached_envelope(parsed(b"Subject: " + subject + b"\r\n\r\n"))
    assert envelope == b"(NIL " + encoded + b" NIL NIL NIL NIL NIL NIL NIL NIL)"


def test_strings_need_a_literal_beyond_four_escapes():
    assert mime.nstring(b'a"b\\c') == b'"a\\"b\\\\c"'
    assert mime.nstring(b'""""') == b'"\\"\\"\\"\\""'
    assert mime.nstring(b'"""""') == b'{5}\r\n"""""'
    assert mime.nstring(b"caf\xc3\xa9") == b"{5}\r\ncaf\xc3\xa9"
    assert mime.nstring_nolf(b"a\r\n\tb") == b'"a\tb"'


_SOME_ADDRESSES = [*corpus._ADDRESSES[:18], "x@y.z", "Ann Lee <a@l.example>", "A  B <a@b>"]


@given(st.lists(st.sampled_from(_SOME_ADDRESSES), min_size=1, max_size=4))
def test_the_fast_address_path_agrees_with_the_grammar(addresses):
    value = ", ".join(addresses).encode()
    fast = mime._simple_addresses(value)
    if fast is not None:
        assert fast == mime._Addresses(value).parse()


# ============================================================= BODYSTRUCTURE


def test_bodystructure_with_extension_data():
    assert mime.cached_bodystructure(parsed(corpus.ALTERNATIVE_WITH_ATTACHMENTS)) == (
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 33 1 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "utf-8") "<html@example.test>" "the HTML part" "7bit" 28 0'
        b' NIL NIL ("en" "fr") "http://example.test/a.html") "alternative" ("boundary" "inner")'
        b' NIL NIL NIL)("application" "pdf" ("name" "notes.pdf") NIL NIL "base64" 12'
        b' "Q2hlY2sgSW50ZWdyaXR5IQ==" ("attachment" ("filename" "notes.pdf" "size" "12")) NIL NIL)'
        b'("image" "png" NIL NIL NIL "base64" 12 NIL ("inline" NIL) NIL NIL)'
        b' "mixed" ("boundary" "outer-boundary") NIL NIL NIL'
    )
    assert mime.cached_body(parsed(corpus.ALTERNATIVE_WITH_ATTACHMENTS)) == (
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 33 1)'
        b'("text" "html" ("charset" "utf-8") "<html@example.test>" "the HTML part" "7bit" 28 0)'
        b' "alternative")("application" "pdf" ("name" "notes.pdf") NIL NIL "base64" 12)'
        b'("image" "png" NIL NIL NIL "base64" 12) "mixed"'
    )


def test_bodystructure_of_an_attached_message():
    assert mime.cached_bodystructure(parsed(corpus.NESTED_RFC822)) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 26 0 NIL NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL "forwarded" "7bit" 349 ("Tue, 1 Feb 2022 09:00:00 +0000"'
        b' "inner" (("Inner Sender" NIL "inner" "example.test")) (("Inner Sender" NIL "inner"'
        b' "example.test")) (("Inner Sender" NIL "inner" "example.test")) ((NIL NIL "forwarder"'
        b' "example.test")) NIL NIL NIL "<inner@example.test>") (("text" "plain" ("charset"'
        b' "us-ascii") NIL NIL "7bit" 10 0 NIL NIL NIL NIL)("text" "html" ("charset" "us-ascii")'
        b' NIL NIL "7bit" 12 0 NIL NIL NIL NIL) "alternative" ("boundary" "b2") NIL NIL NIL) 17'
        b' NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL'
    )


def test_rfc2231_continuations_are_joined_not_decoded():
    assert mime.cached_body(parsed(corpus.RFC2231_AND_ENCODED)) == (
        b'("application" "x-stuff" ("title*" "us-ascii\'en\'This%20is%20even%20more%20'
        b"%2A%2A%2Afun%2A%2A%2A%20isn't it!\") NIL NIL \"7bit\" 5) \"mixed\""
    )
    assert b'("attachment" ("filename*" "UTF-8\'\'%C3%A9t%C3%A9.txt"))' in (
        mime.cached_bodystructure(parsed(corpus.RFC2231_AND_ENCODED))
    )


def test_digest_parts_default_to_messages_and_empty_multiparts_get_one_part():
    digest = mime.cached_body(parsed(corpus.DIGEST))
    assert digest.startswith(b'("message" "rfc822" NIL NIL NIL "7bit" 45 (NIL "one" ')
    assert digest.endswith(b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 0) "digest"')
    assert mime.cached_bodystructure(parsed(corpus.EMPTY_BODY_MULTIPART)) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed"'
        b' ("boundary" "nothing") NIL NIL NIL'
    )


def test_sizes_count_crlf_and_lines_count_line_feeds():
    assert mime.cached_body(parsed(corpus.BARE_LF)) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 8 1)'
        b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 14 1) "mixed"'
    )
    assert mime.cached_body(parsed(corpus.NO_FINAL_NEWLINE)).endswith(b'"7bit" 9 0')


def test_a_lone_plain_ascii_part_gets_dovecots_fixed_form():
    """Dovecot answers the first fetch with the case as written and later ones with
    this form (it caches only a "plain 7-bit" bit); we always give the later form."""
    assert mime.cached_bodystructure(parsed(corpus.SIMPLE)) == (
        b'"text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 55 1 NIL NIL NIL NIL'
    )
    html = b"Content-Type: TEXT/HTML\r\n\r\nx\r\n"
    expected = b'"TEXT" "HTML" ("charset" "us-ascii") NIL NIL "7bit" 3 1'
    assert mime.cached_body(parsed(html)) == expected


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (b"text", b'"text" "" ("charset" "us-ascii") NIL NIL "7bit" 3 1'),
        (b"foo", b'"foo" "" NIL NIL NIL "7bit" 3'),
        (b"foo/", b'"" "" NIL NIL NIL "7bit" 3'),
        (b"TEXT/Html ; Charset = \"UTF-8\" (c); x=y", b'"TEXT" "Html" ("Charset" "UTF-8" "x" "y")'
         b' NIL NIL "7bit" 3 1'),
        (b"text/plain; =x", b'"text" "plain" ("" "x" "charset" "us-ascii") NIL NIL "7bit" 3 1'),
    ],
)
def test_odd_content_types_read_as_dovecot_reads_them(content_type, expected):
    data = b"MIME-Version: 1.0\r\nContent-Type: " + content_type + b"\r\n\r\nx\r\n"
    assert mime.cached_body(parsed(data)) == expected


def test_content_fields_count_only_in_mime_parts():
    assert mime.cached_body(parsed(b"Content-Transfer-Encoding: BASE64\r\n\r\nx\r\n")) == (
        b'"text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1'
    )
    mime_data = b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: BASE64\r\n\r\nx\r\n"
    assert b'"BASE64" 3 1' in mime.cached_body(parsed(mime_data))


# ================================================================ boundaries


def test_the_longest_matching_boundary_wins():
    data = (
        b'Content-Type: multipart/mixed; boundary="a"\r\n\r\n--a\r\n'
        b'Content-Type: multipart/mixed; boundary="ab"\r\n\r\n'
        b"--ab\r\n\r\nin ab\r\n--ab--\r\n--a--\r\n"
    )
    assert mime.cached_body(parsed(data)) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0) "mixed") "mixed"'
    )


def test_a_boundary_line_ends_a_header_and_takes_its_line_break():
    data = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\n\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: y\r\n--b--\r\n"
    )
    # The empty enclosed message keeps the line break in its parent (Dovecot's sizes).
    assert mime.cached_body(parsed(data)) == (
        b'("message" "rfc822" NIL NIL NIL "7bit" 2 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)'
        b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) 1)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 12 (NIL "y" NIL NIL NIL NIL NIL NIL NIL NIL)'
        b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) 1) "mixed"'
    )
    assert section(data, (1,)) == b"\r\n"
    assert section(data, (1,), msg.HEADER) == b""
    assert section(data, (2,), msg.HEADER) == b"Subject: y"


def test_a_cut_short_attached_message_still_encloses_an_empty_one():
    data = (
        b'Content-Type: multipart/digest; boundary="d"\r\n\r\n'
        b"--d\r\nSender: x\r\nno colon\r\n--d--\r\n"
    )
    assert mime.cached_body(parsed(data)) == (
        b'("message" "rfc822" NIL NIL NIL "7bit" 0 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)'
        b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) 0) "digest"'
    )
    assert section(data, (1,), msg.MIME) == b"Sender: x\r\nno colon"
    assert section(data, (1, 1)) == b""


def test_a_last_delimiter_without_line_end_starts_no_part():
    data = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nonly\r\n--x"
    assert mime.cached_body(parsed(data)) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 0) "mixed"'
    )


def test_parsing_never_fails():
    empty_boundary = b"Content-Type: multipart/x; boundary=\r\n\r\n--\r\n"
    for data in [b"", b"\r\n", b"--", b"\x00\xff" * 10, empty_boundary]:
        blob = parsed(data)
        assert mime.is_current(blob)
        assert mime.cached_header(blob) == data[: len(mime.cached_header(blob))]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_any_bytes_parse_into_consistent_offsets(data):
    blob = parsed(data)
    tree = mime.cached_tree(blob)

    def check(node):
        assert 0 <= node["start"] <= node["start"] + node["header_size"] <= len(data)
        assert node["start"] + node["header_size"] + node["body_size"] <= len(data)
        for child in node.get("parts", []) + ([node["body"]] if "body" in node else []):
            check(child)

    check(tree)


# =================================================================== sections


@pytest.mark.parametrize(
    ("part", "text", "expected"),
    [
        ((1,), "", b"See the forwarded message."),
        ((1,), msg.MIME, b"Content-Type: text/plain\r\n\r\n"),
        ((2,), msg.MIME, b"Content-Type: message/rfc822\r\nContent-Description: forwarded\r\n\r\n"),
        ((2, 1), "", b"inner text"),
        ((2, 2), "", b"<b>inner</b>"),
        ((2, 3), "", b""),
        ((2, 1), msg.MIME, b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"),
        ((2, 1, 1), "", b"inner text"),
        ((1, 1), "", b"See the forwarded message."),
        ((1,), msg.HEADER, b""),
        ((1,), msg.TEXT, b""),
        ((3,), "", b""),
    ],
)
def test_sections_of_a_forwarded_message(part, text, expected):
    assert section(corpus.NESTED_RFC822, part, text) == expected


def test_header_and_text_of_an_attached_message():
    header = section(corpus.NESTED_RFC822, (2,), msg.HEADER)
    assert header.startswith(b"From: Inner Sender") and header.endswith(b'boundary="b2"\r\n\r\n')
    assert len(header) == 230
    assert section(corpus.NESTED_RFC822, (2,), msg.TEXT).startswith(b"--b2\r\n")
    assert len(section(corpus.NESTED_RFC822, (2,))) == 349
    fields = section(corpus.NESTED_RFC822, (2,), msg.HEADER_FIELDS, [b"SUBJECT", b"FROM"])
    assert fields == b"From: Inner Sender <inner@example.test>\r\nSubject: inner\r\n\r\n"


def test_part_one_of_a_single_part_message_is_its_body():
    body = b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
    assert section(corpus.SIMPLE, (1,)) == body
    assert section(corpus.SIMPLE, (1,), msg.MIME) == section(corpus.SIMPLE, (), msg.HEADER)
    assert section(corpus.SIMPLE, (1, 1)) == b""
    assert section(corpus.TOP_LEVEL_RFC822, (1, 1)) == b"inner body\r\n"
    assert section(corpus.TOP_LEVEL_RFC822, (1,), msg.HEADER) == (
        b"From: b@example.test\r\nSubject: the inner one\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("data", "fields", "exclude", "expected"),
    [
        (corpus.HEADER_ONLY, [b"FROM"], False, b"From: h@example.test\r\n\r\n"),
        (corpus.HEADER_ONLY, [b"X-NONE"], False, b"\r\n"),
        (corpus.HEADER_ONLY, [b"FROM"], True, b"Subject: header only\r\n"),
        (b"From: h@x\r\nSubject: no newline", [b"SUBJECT"], False, b"Subject: no newline\r\n"),
        (b"From: h@x\r\nSubject: no newline", [b"FROM"], True, b"Subject: no newline"),
        (corpus.LONG_HEADERS, [b"subject"], False, b"Subject: folded\r\n\tsubject line\r\n\r\n"),
        (corpus.SIMPLE, [b"SUBJECT", b"FROM"], True, None),
    ],
)
def test_header_fields(data, fields, exclude, expected):
    text = msg.HEADER_FIELDS_NOT if exclude else msg.HEADER_FIELDS
    found = section(data, (), text, fields)
    if expected is None:
        assert b"Subject" not in found and b"From" not in found and found.endswith(b"\r\n\r\n")
    else:
        assert found == expected
    if not exclude:  # the fast path from the cached header says the same
        pattern = msg.fields_pattern(tuple(fields))
        assert msg.cached_fields(parsed(data), pattern) == found


def test_labels():
    assert Section((1, 2), msg.HEADER_FIELDS, (b"FROM", b"X Y")).label() == (
        b'1.2.HEADER.FIELDS (FROM "X Y")'
    )
    assert Section((), msg.TEXT).label() == b"TEXT"
    assert Section((3,)).label() == b"3"
    assert Section().label() == b""


# ======================================================== what goes on the wire


def test_wire_makes_crlf_and_removes_nul():
    assert msg.wire(b"a\nb\r\nc\n", bare_lf=True) == b"a\r\nb\r\nc\r\n"
    assert msg.wire(b"a\nb", bare_lf=False) == b"a\nb"  # the index knows there is none
    assert msg.wire(b"a\0b", bare_lf=False) == b"a\x80b"


@given(st.binary(max_size=200), st.integers(0, 250), st.integers(1, 250))
def test_partial_is_a_slice_of_the_crlf_form(data, origin, count):
    sent = msg.wire(data, bare_lf=True)
    assert len(sent) == len(data) + data.count(b"\n") - data.count(b"\r\n")
    assert msg.wire(sent, bare_lf=True) == sent
    assert msg.partial(sent, origin, count) == sent[origin : origin + count]
    assert msg.partial(sent, None, None) == sent


def test_internal_date():
    assert msg.internal_date(760657945) == b'"07-Feb-1994 21:52:25 +0000"'


# ====================================================== random MIME round trip

_TEXT = st.text(alphabet="abc xyz=.!", max_size=12)


@st.composite
def entities(draw, depth=0):
    """(kind, …) trees: leaves, multiparts and attached messages, kept shallow."""
    kinds = ["leaf", "multipart", "message"] if depth < 3 else ["leaf"]
    kind = draw(st.sampled_from(kinds))
    if kind == "leaf":
        return ("leaf", draw(st.booleans()), draw(st.lists(_TEXT, max_size=3)))
    if kind == "message":
        return ("message", draw(entities(depth + 1)))
    return ("multipart", draw(st.lists(entities(depth + 1), min_size=1, max_size=3)))


class _Builder:
    """Writes a tree as a message and notes, per section number, the MIME header
    and the body each part must have."""

    def __init__(self, nl: bytes) -> None:
        self.nl = nl
        self.count = 0
        self.expected: dict[tuple[int, ...], tuple[bytes, bytes]] = {}

    def entity(self, node, path: tuple[int, ...]) -> tuple[bytes, bytes]:
        nl = self.nl
        if node[0] == "leaf":
            header = (b"Content-Type: text/plain" + nl if node[1] else b"") + nl
            return header, nl.join(line.encode() for line in node[2])
        if node[0] == "message":
            inner_header, inner_body = self.entity(node[1], path)
            return b"Content-Type: message/rfc822" + nl + nl, inner_header + inner_body
        self.count += 1
        boundary = b"=_b%03d" % self.count  # all of one length: none prefixes another
        header = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"' + nl + nl
        body = b""
        for n, child in enumerate(node[1], 1):
            child_header, child_body = self.entity(child, (*path, n))
            self.expected[(*path, n)] = (child_header, child_body)
            body += b"--" + boundary + nl + child_header + child_body + nl
        return header, body + b"--" + boundary + b"--" + nl


@settings(max_examples=150, deadline=None)
@given(st.lists(entities(1), min_size=1, max_size=3), st.sampled_from([b"\r\n", b"\n"]))
def test_every_part_reads_back_as_written(children, nl):
    builder = _Builder(nl)
    header, body = builder.entity(("multipart", children), ())
    data = b"Subject: tree" + nl + header + body
    blob = parsed(data)
    tree = mime.cached_tree(blob)
    for path, (part_header, part_body) in builder.expected.items():
        assert msg.section_bytes(Section(path), data, tree) == part_body
        assert msg.section_bytes(Section(path, msg.MIME), data, tree) == part_header
        node = msg.find_part(tree, path)
        assert node is not None and node["body_size"] == len(part_body)
    assert len(children) == len(tree["parts"])


# ========================================================== the cache in the store


def test_blobs_of_an_older_format_are_parsed_again(tmp_path):
    store = Store(tmp_path, "mx.test")
    with opened(store, "example.test", "alice") as mailbox:
        _, uid = mailbox.append("INBOX", corpus.SIMPLE)
        view = mailbox.select("INBOX")
        (row,) = [row for row in mailbox.index.folders() if row.name == "INBOX"]
        mailbox.index.put_cache(row.id, [(uid, b"MCP1\x00\x00\x00\x02hi{}")])
        (blob,) = view.cached([uid]).values()
        assert mime.is_current(blob)
        assert mime.cached_envelope(blob).startswith(b'("Mon, 7 Feb 1994')
        stored = mailbox.index.cached(row.id, [uid])[uid]
        assert stored == blob  # and written back, so the next read is direct


def test_load_cache_still_gives_values():
    header, parsed_values = mime.load_cache(parsed(corpus.SIMPLE))
    assert header.endswith(b"\r\n\r\n")
    assert parsed_values["envelope"][1] == "afternoon meeting"
    assert parsed_values["envelope"][2] == [["Fred Foobar", None, "foobar", "Blurdybloop.example"]]
    assert parsed_values["body"]["header_size"] == len(header)
