"""The searchable text of a message (`mailtext`) and the text index (`textindex`):
decoding, the normal form, lazy filling, expunges, damage, and the index agreeing
with a scan of the messages."""

from __future__ import annotations

import sqlite3
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailops.runtime.store import Store, mailtext, opened, textindex
from mailops.runtime.store.mailtext import (
    body_of,
    decode_header,
    head_of,
    html_text,
    normalize,
    structure_of,
)
from mailops.runtime.store.textindex import (
    BODY,
    HEAD,
    TEXT_INDEX_FILE,
    Entry,
    IndexedText,
    ScannedText,
    TextIndex,
    folder_text,
)
from tests.runtime.search_corpus import CORPUS, NEEDLES

DOMAIN, USER = "example.test", "alice"


@pytest.fixture
def mailbox(tmp_path):
    with opened(Store(tmp_path, "mx.test"), DOMAIN, USER) as mb:
        yield mb


def fill(mailbox, samples=CORPUS, folder="INBOX") -> None:
    for sample in samples:
        mailbox.append(folder, sample.data, sample.flags, sample.internal_date)


def body(data: bytes) -> str:
    return body_of(data, structure_of(data, None))[0]


def uids_of(view) -> set[int]:
    return {m.uid for m in view.messages}


# ----------------------------------------------------------------- normal form


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("Hello World", "hello world"),
        ("STRASSE Straße", "strasse strasse"),  # full case folding
        ("cafe\u0301", "café"),  # NFC
        ("a \t\r\n b\u00a0\u2003c", "a b c"),  # every kind of white space, collapsed
        (" lead and trail \n", " lead and trail "),  # ends kept: " cat" is not "cat"
        ("nul\0byte", "nul byte"),
        ("   ", " "),
        ("", ""),
    ],
)
def test_normal_form(text, normal):
    assert normalize(text) == normal


@given(st.text())
def test_normal_form_is_idempotent(text):
    assert normalize(normalize(text)) == normalize(text)


# -------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"plain value", "plain value"),
        (b"=?UTF-8?B?SsO8cmdlbg==?= <j@x>", "Jürgen <j@x>"),
        (b"=?iso-8859-1?q?Caf=E9_au?= =?iso-8859-1?q?_lait?=", "Café au lait"),
        # White space between encoded words goes; around plain words it stays.
        (b"=?utf-8?q?a?=  \r\n =?utf-8?q?b?= c =?utf-8?q?d?=", "ab c d"),
        # A character split across two words is joined before decoding.
        (b"=?UTF-8?Q?=C3?= =?UTF-8?Q?=A9t=C3=A9?=", "été"),
        # Different charsets next to each other.
        (b"=?iso-8859-1?q?=E9?= =?utf-8?b?w6k=?=", "éé"),
        # Broken words stay as written; unknown charsets fall back.
        (b"=?utf-8?b?###?= and =?x-nope?q?ok?=", "=?utf-8?b?###?= and ok"),
        (b"=?utf-8?q?unterminated", "=?utf-8?q?unterminated"),
        (b"Ol\xc3\xa9 utf-8 raw", "Olé utf-8 raw"),
        (b"Ol\xe9 latin-1 raw", "Olé latin-1 raw"),
        (b"folded\r\n continued", "folded continued"),
    ],
)
def test_header_decoding(raw, text):
    assert decode_header(raw) == text


def test_charset_names_that_are_no_text_codecs_do_not_break_decoding():
    for charset in ("base64", "idna", "unicode-escape", "rot13", "bogus"):
        text = mailtext.decode_bytes(b"ab\\ud800c \xff", charset)
        text.encode("utf-8")  # no lone surrogates: the text can be stored


def test_head_fields_lines_and_sent_day():
    head = head_of(CORPUS[6].data)  # two To fields, no Date, folded Subject
    assert head.fields["to"] == "erin@example.org\nfrank@example.org"
    assert head.fields["cc"] is None  # absent, unlike an empty field
    assert head.fields["subject"] == "a folded subject line"
    assert "\nx-custom: alpha beta\n" in head.lines
    assert head.sent is None
    assert head_of(CORPUS[9].data).fields["subject"] == ""
    # The day as written in the field, whatever its zone: Dec 31 at -0800.
    assert head_of(CORPUS[1].data).sent == 738885  # date(2023, 12, 31).toordinal()
    assert head_of(CORPUS[7].data).sent is None  # "not a date"


def test_head_without_lines_decodes_only_what_the_row_needs():
    full, short = head_of(CORPUS[0].data), head_of(CORPUS[0].data, lines=False)
    assert short.fields == full.fields and short.sent == full.sent and short.lines == ""


def test_a_header_cut_for_the_index_says_so(monkeypatch):
    monkeypatch.setattr(mailtext, "MAX_HEADER", 40)
    head = head_of(CORPUS[0].data, limit=True)
    assert head.partial and len(head.lines) == 40
    assert not head_of(CORPUS[0].data).partial


# ----------------------------------------------------------------------- body


def test_body_text_of_each_kind_of_message():
    assert body(CORPUS[1].data) == "grüsse aus zürich, softbreak joined. "
    # Both alternatives count; the plain one is inside the HTML's text, so it goes.
    assert body(CORPUS[2].data) == " the zeppelin leaves at noon. htmlonlyword "
    assert body(CORPUS[3].data) == " prix: 100 € naïve customer "  # HTML made text
    assert body(CORPUS[4].data) == "see the attachment.\nname,amount widget,42"  # no PDF
    assert "\nsubject: inner subject\ninner body text." in body(CORPUS[5].data)
    assert body(CORPUS[7].data) == "привет мир "
    assert body(CORPUS[8].data) == "日本語のテキスト "
    assert body(CORPUS[11].data) == "strasse im text tab here multiple spaces next line"
    assert body(CORPUS[12].data) == "déjà vu, café. "


def test_alternatives_inside_others_are_left_out():
    def alternatives(*texts: str) -> bytes:
        parts = "".join(f"--b\nContent-Type: text/plain\n\n{t}\n" for t in texts)
        head = 'MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="b"\n\n'
        return (head + parts + "--b--\n").encode()

    assert body(alternatives("one two", "zero one two three")) == "zero one two three"
    assert body(alternatives("same", "same", "other")) == "same\nother"
    assert body(alternatives("ab", "bc")) == "ab\nbc"


def test_html_text_keeps_words_together_across_inline_tags():
    assert html_text("<p>a</p><p>b</p>cust<i>omer</i>&amp;<!-- x --><style>p{}</style>") == (
        "\na\n\nb\ncustomer&  "  # a hidden comment or style leaves a space
    )


def test_body_cut_for_the_index_says_so(monkeypatch):
    monkeypatch.setattr(mailtext, "MAX_BODY", 10)
    data = CORPUS[10].data
    assert body_of(data, structure_of(data, None), limit=True) == ("lorem ipsu", True)


# ------------------------------------------------------------ index vs scan


def check_agreement(view, content) -> None:
    """Every needle, every way of asking: the index answers as a scan does."""
    scan = ScannedText(view)
    everything = uids_of(view)
    for raw in NEEDLES:
        needle = normalize(raw)
        assert content.body(needle, everything) == scan.body(needle, everything), raw
        assert content.text(needle, everything) == scan.text(needle, everything), raw
        for name in ("from", "to", "subject", "bcc", "x-custom", "date", "nothing"):
            found = content.header(name, needle, everything)
            assert found == scan.header(name, needle, everything), (name, raw)
    assert content.sent(everything) == scan.sent(everything)


def test_the_index_answers_as_a_scan_does(mailbox):
    fill(mailbox)
    view = mailbox.select("INBOX")
    check_agreement(view, folder_text(view))
    # Exact sets for a few, so that both cannot be wrong the same way.
    everything = uids_of(view)
    text = folder_text(view)
    assert text.body("zeppelin", everything) == {3}
    assert text.text("htmlonlyword", everything) == {3}
    assert text.text("<b>", everything) == text.text("hiddenscript", everything) == set()
    assert text.header("from", "jürgen", everything) == {2}
    assert text.header("cc", "", everything) == {1}
    assert text.header("subject", "", everything) == set(range(1, 14))
    assert text.header("from", "", everything) == set(range(1, 14)) - {10}
    assert text.text("inner subject", everything) == {6}
    assert text.sent(everything)[2] == 738885 and 7 not in text.sent(everything)


def test_cut_texts_are_checked_by_reading(mailbox, monkeypatch):
    monkeypatch.setattr(mailtext, "MAX_BODY", 12)
    monkeypatch.setattr(mailtext, "MAX_HEADER", 30)
    fill(mailbox)
    view = mailbox.select("INBOX")
    check_agreement(view, folder_text(view))
    assert folder_text(view).body("farewellword", uids_of(view)) == {11}


def test_short_strings_are_found_in_the_stored_text(mailbox):
    fill(mailbox)
    view = mailbox.select("INBOX")
    text, everything = folder_text(view), uids_of(view)
    assert text.body("€", everything) == {4}
    assert text.body("42", everything) == {5}
    assert text.header("x-custom", "ph", everything) == {7}


# ------------------------------------------------------------ keeping current


def held(mailbox, view) -> textindex.Held:
    index = textindex.index_of(mailbox)
    return index.held(index.folder(view.uidvalidity))


def test_parts_are_indexed_only_when_a_search_needs_them(mailbox):
    fill(mailbox)
    view = mailbox.select("INBOX")
    everything = uids_of(view)
    folder_text(view).header("from", "bob", everything)
    state = held(mailbox, view)
    assert state.rows == everything and not state.parts[HEAD] and not state.parts[BODY]
    folder_text(view).header("x-custom", "alpha", everything)
    assert state.parts[HEAD] == everything and not state.parts[BODY]
    folder_text(view).body("zeppelin", everything)
    assert state.parts[BODY] == everything
    assert (mailbox.path / TEXT_INDEX_FILE).exists()


def test_new_mail_is_indexed_and_expunged_mail_forgotten(mailbox):
    fill(mailbox, CORPUS[:3])
    view = mailbox.select("INBOX")
    assert folder_text(view).text("zeppelin", uids_of(view)) == {3}
    fill(mailbox, CORPUS[3:])
    view.refresh()
    view.expunge([3])
    view.refresh()
    everything = uids_of(view)
    assert folder_text(view).text("zeppelin", everything) == set()
    assert folder_text(view).text("widget", everything) == {5}
    state = held(mailbox, view)
    assert 3 not in state.rows and state.parts[BODY] == everything
    rows = textindex.index_of(mailbox).db.execute("SELECT count(*) FROM body_1").fetchone()
    assert rows == (len(everything),)


def test_a_message_expunged_by_another_session_has_no_content(mailbox):
    fill(mailbox, CORPUS[:3])
    mine = mailbox.select("INBOX")
    other = mailbox.select("INBOX")
    folder_text(mine).text("zeppelin", uids_of(mine))  # indexed while it existed
    other.expunge([3])
    assert 3 in uids_of(mine)  # still numbered until this session is told
    for content in (folder_text(mine), ScannedText(mine)):
        assert content.text("zeppelin", uids_of(mine)) == set()
        assert content.header("subject", "", uids_of(mine)) == {1, 2}


def test_folders_are_kept_apart_and_dropped_with_their_folder(mailbox):
    mailbox.create_folder("Archive2")
    fill(mailbox, CORPUS[:2])
    fill(mailbox, CORPUS[2:4], folder="Archive2")
    inbox, archive = mailbox.select("INBOX"), mailbox.select("Archive2")
    assert folder_text(inbox).body("zeppelin", uids_of(inbox)) == set()
    assert folder_text(archive).body("zeppelin", uids_of(archive)) == {1}
    mailbox.delete_folder("Archive2")
    index = textindex.index_of(mailbox)  # prunes folders that no longer exist
    validities = [v for (v,) in index.db.execute("SELECT uidvalidity FROM folders")]
    assert validities == [inbox.uidvalidity]
    tables = {name for (name,) in index.db.execute("SELECT name FROM sqlite_master")}
    assert not any(name.endswith("_2") for name in tables)


def test_a_damaged_index_file_is_replaced(tmp_path):
    store = Store(tmp_path, "mx.test")
    with opened(store, DOMAIN, USER) as mailbox:
        fill(mailbox, CORPUS[:3])
        path = mailbox.path / TEXT_INDEX_FILE
    path.write_bytes(b"this is not an SQLite database" * 100)
    with opened(Store(tmp_path, "mx.test"), DOMAIN, USER) as mailbox:
        view = mailbox.select("INBOX")
        assert folder_text(view).body("zeppelin", uids_of(view)) == {3}


def test_an_index_of_another_schema_is_replaced(tmp_path):
    path = tmp_path / "text.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    index = TextIndex(path)
    assert index.db.execute("PRAGMA user_version").fetchone() == (1,)
    index.close()


def test_sqlite_failures_fall_back_to_reading_the_messages(mailbox, monkeypatch):
    fill(mailbox)
    view = mailbox.select("INBOX")

    def broken(*args, **kwargs):
        raise sqlite3.DatabaseError("database disk image is malformed")

    content = folder_text(view)
    assert isinstance(content, IndexedText)
    monkeypatch.setattr(TextIndex, "match", broken)
    assert content.body("zeppelin", uids_of(view)) == {3}
    monkeypatch.undo()
    # The damaged file was thrown away; the next search builds it again.
    assert folder_text(view).body("zeppelin", uids_of(view)) == {3}


def test_a_message_that_breaks_the_decoder_is_searched_without_text(mailbox, monkeypatch):
    fill(mailbox, CORPUS[:3])
    view = mailbox.select("INBOX")
    real = textindex.body_of

    def fragile(data, structure, **kwargs):
        if b"zeppelin" in data:
            raise RuntimeError("decoder bug")
        return real(data, structure, **kwargs)

    monkeypatch.setattr(textindex, "body_of", fragile)
    for content in (folder_text(view), ScannedText(view)):
        assert content.body("zeppelin", uids_of(view)) == set()
        assert content.body("quarterly", uids_of(view)) == {1}
        assert content.header("subject", "airship", uids_of(view)) == {3}  # head still read


# ------------------------------------------------------- trigram exactness

_ALPHABET = st.sampled_from([*"abé É\u0301ßs\u00a0\t\nI\u0130ıx\"'*-:^()", "ﬁ", "😀"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(st.text(_ALPHABET, max_size=40), min_size=1, max_size=6),
    needles=st.lists(st.text(_ALPHABET, max_size=6), min_size=1, max_size=8),
)
def test_trigram_phrases_find_exactly_the_substrings(tmp_path_factory, texts, needles):
    """FTS5 trigram phrase queries (and instr() for short strings) over normalized
    text agree with Python's `in`, whatever the characters."""
    index = TextIndex(tmp_path_factory.mktemp("fts") / "t.sqlite")
    try:
        n = index.folder(1)
        stored = {uid: normalize(text) for uid, text in enumerate(texts, 1)}
        empty = mailtext.EMPTY_HEAD
        index.fill(n, [Entry(uid, empty, False, (t, False)) for uid, t in stored.items()])
        for raw in needles:
            needle = normalize(raw)
            expected = {uid for uid, text in stored.items() if needle in text}
            assert index.match(n, BODY, needle, set(stored)) == expected, needle
    finally:
        index.close()


def test_fts_query_syntax_in_needles_is_taken_literally(mailbox):
    fill(mailbox, CORPUS[12:])
    view = mailbox.select("INBOX")
    content = folder_text(view)
    for needle in ('"quoted" (paren)', "AND OR NOT", "NEAR(a b)", "col:umn", "*", "^q"):
        needle = normalize(needle)
        assert content.header("subject", needle, uids_of(view)) == ScannedText(view).header(
            "subject", needle, uids_of(view)
        )
    assert content.text(normalize('"quoted" (paren)'), uids_of(view)) == {1}


def test_printable_ascii_needles_agree(mailbox):
    fill(mailbox, CORPUS[:2])
    view = mailbox.select("INBOX")
    content, scan = folder_text(view), ScannedText(view)
    for ch in string.printable:
        needle = normalize(f"a{ch}b{ch}")
        assert content.text(needle, uids_of(view)) == scan.text(needle, uids_of(view))


def test_a_cold_text_search_reads_each_message_once(mailbox, monkeypatch):
    fill(mailbox)
    view = mailbox.select("INBOX")
    reads: list[int] = []
    real = type(view).read
    monkeypatch.setattr(type(view), "read", lambda self, uid: reads.append(uid) or real(self, uid))
    assert folder_text(view).text("zeppelin", uids_of(view)) == {3}
    assert sorted(reads) == sorted(uids_of(view))
    state = held(mailbox, view)
    assert state.parts[HEAD] == state.parts[BODY] == uids_of(view)
    reads.clear()
    assert folder_text(view).text("widget", uids_of(view)) == {5}
    assert reads == []  # warm: the index alone
