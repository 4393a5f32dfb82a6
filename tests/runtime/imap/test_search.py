"""SEARCH and UID SEARCH over the wire: every search key of RFC 3501 §6.4.4, CHARSET,
ESEARCH's result options (RFC 4731), CONDSTORE's MODSEQ (RFC 7162), bad programs,
and a folder changed by another session meanwhile."""

from __future__ import annotations

import re

import pytest

from mailops.runtime.store import opened
from tests.runtime.imap.oracle import RawClient
from tests.runtime.imap_harness import DOMAIN, PASSWORDS, imap_server
from tests.runtime.search_corpus import CORPUS

ALL = list(range(1, len(CORPUS) + 1))
SEEN = [1, 2, 7, 9, 11]
UNSEEN = [n for n in ALL if n not in SEEN]


def populate(server, samples=CORPUS) -> None:
    """Store messages as delivery and APPEND do, with their flags and dates."""
    with opened(server.store, DOMAIN, "alice") as mailbox:
        for sample in samples:
            mailbox.append("INBOX", sample.data, sample.flags, sample.internal_date)


def raw(server) -> RawClient:
    client = RawClient(server.ports["imap"])
    client.ok(f"LOGIN alice@{DOMAIN} {PASSWORDS['alice']}")
    return client


def numbers(response: bytes) -> list[int]:
    """The numbers of the one untagged SEARCH response in a command's response."""
    (line,) = [x for x in response.split(b"\r\n") if x.startswith(b"* SEARCH")]
    return [int(n) for n in line[len(b"* SEARCH") :].split()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A server with the corpus in alice's INBOX, selected by one raw client (which
    therefore sees every message as \\Recent)."""
    with imap_server(tmp_path_factory.mktemp("imap")) as server:
        populate(server)
        client = raw(server)
        client.ok("SELECT INBOX")
        yield client
        client.close()


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ("ALL", ALL),
        ("ANSWERED", [2]),
        ("BCC secret@", [7]),
        ("BEFORE 7-May-2024", [2, 10]),
        ("BODY zeppelin", [3]),
        ("BODY htmlonlyword", [3]),  # only in the HTML alternative
        ("BODY titleword", []),  # what a reader does not see of HTML
        ("CC Carol", [1]),
        ("DELETED", [5]),
        ("DRAFT", [6]),
        ("FLAGGED", [3, 9]),
        ("FROM bob", [3, 5, 11]),
        ('FROM ""', [n for n in ALL if n != 10]),
        ("HEADER X-Custom alpha", [7]),
        ('HEADER Subject ""', ALL),  # an empty value still means "has the field"
        ('HEADER X-None ""', []),
        ("KEYWORD $Label1", [4, 12]),
        ("LARGER 5000", [11]),
        ("NEW", UNSEEN),  # every message is \Recent to this session
        ("NOT SEEN", UNSEEN),
        ("OLD", []),
        ("ON 12-May-2024", [7, 8]),
        ("OR FROM bob TO bob", [1, 3, 5, 11]),
        ("RECENT", ALL),
        ("SEEN", SEEN),
        ("SENTBEFORE 1-Jan-2024", [2]),
        ("SENTON 7-May-2024", [1]),
        ("SENTSINCE 15-May-2024", [11, 12, 13]),
        ("SINCE 16-May-2024", [12, 13]),
        ("SMALLER 100", [10]),
        ("SUBJECT report", [1]),
        ("TEXT inner", [6]),
        ("TEXT x-custom", [7]),  # header field names are part of the text
        ("TO frank", [7]),
        ("UID 2:4", [2, 3, 4]),
        ("UNANSWERED", [n for n in ALL if n != 2]),
        ("UNDELETED", [n for n in ALL if n != 5]),
        ("UNDRAFT", [n for n in ALL if n != 6]),
        ("UNFLAGGED", [n for n in ALL if n not in (3, 9)]),
        ("UNKEYWORD Work", [n for n in ALL if n not in (5, 7, 12)]),
        ("UNSEEN", UNSEEN),
        ("2,4:5", [2, 4, 5]),
        ("12:*", [12, 13]),
        ("(SEEN FLAGGED)", [9]),
        ("SEEN FROM bob", [11]),  # keys side by side: all must match
        ("OR (SEEN FLAGGED) NOT OR SEEN KEYWORD Work", [3, 4, 6, 8, 9, 10, 13]),
        ('TEXT "100 \u20ac"'.encode("utf-8").decode("latin-1"), None),  # 8-bit quoted: BAD
        ("SUBJECT {5}\r\ncaf\u00c9".encode().decode("latin-1"), [2, 13]),  # a literal
        ('SUBJECT "\\"quoted\\" (paren)"', [13]),
        ("TEXT z", [2, 3]),  # one letter: looked up in the stored text, not the trigrams
        ("NOT TEXT q", [3, 5, 6, 7, 8, 9, 10, 11, 12]),
    ],
)
def test_each_search_key(corpus, criteria, expected):
    response = corpus.command(("SEARCH " + criteria).encode("latin-1"))
    if expected is None:
        assert re.search(rb"^t\d+ BAD ", response, re.M), response
        return
    assert response.splitlines()[-1].split(b" ")[1] == b"OK", response
    assert numbers(response) == expected


def test_charset_utf8_and_an_unknown_charset(corpus):
    response = corpus.command("SEARCH CHARSET UTF-8 BODY {7}\r\nzürich".encode())
    assert numbers(response) == [2]
    assert numbers(corpus.command(b"SEARCH CHARSET US-ASCII FROM jm@")) == [2]
    response = corpus.command(b"SEARCH CHARSET KOI8-R BODY x")
    assert response.endswith(
        b" NO [BADCHARSET (UTF-8 US-ASCII)] Supported charsets are UTF-8 and US-ASCII\r\n"
    )


def test_imaplib_with_charset_and_a_literal(tmp_path):
    with imap_server(tmp_path) as server:
        populate(server)
        client = server.client()
        client.select("INBOX")
        client.literal = "JÜRGEN MÜLLER".encode()
        assert client.search("UTF-8", "FROM") == ("OK", [b"2"])
        assert client.uid("SEARCH", "TEXT", "zeppelin") == ("OK", [b"3"])
        typ, data = client.search("ISO-8859-5", "ALL")
        assert typ == "NO" and b"[BADCHARSET" in data[0]
        client.logout()


def test_uid_search_answers_uids(tmp_path):
    with imap_server(tmp_path) as server:
        populate(server)
        with opened(server.store, DOMAIN, "alice") as mailbox:
            mailbox.select("INBOX").expunge([1, 2, 3])
        client = raw(server)
        client.ok("SELECT INBOX")
        assert numbers(client.command(b"UID SEARCH FROM bob")) == [5, 11]
        assert numbers(client.command(b"SEARCH FROM bob")) == [2, 8]
        assert numbers(client.command(b"UID SEARCH 1:2")) == [4, 5]  # sequence numbers
        assert numbers(client.command(b"SEARCH UID 1:4")) == [1]  # UIDs 1-3 are gone
        assert numbers(client.command(b"UID SEARCH UID 100:*")) == [13]
        client.close()


# ---------------------------------------------------------------- ESEARCH


def test_esearch_result_options(corpus):
    response = corpus.command(b"SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN")
    assert re.search(
        rb'^\* ESEARCH \(TAG "t\d+"\) MIN 3 MAX 13 COUNT 8 ALL 3:6,8,10,12:13\r$', response, re.M
    )
    response = corpus.command(b"UID SEARCH RETURN () FLAGGED")
    assert re.search(rb'^\* ESEARCH \(TAG "t\d+"\) UID ALL 3,9\r$', response, re.M)
    response = corpus.command(b"SEARCH RETURN (COUNT) BODY nothing-matches-this")
    assert re.search(rb'^\* ESEARCH \(TAG "t\d+"\) COUNT 0\r$', response, re.M)
    response = corpus.command(b"SEARCH RETURN (MIN MAX) BODY nothing-matches-this")
    assert re.search(rb'^\* ESEARCH \(TAG "t\d+"\)\r$', response, re.M)
    assert b"* SEARCH" not in response


def test_the_esearch_tag_is_the_command_tag(corpus):
    tag = corpus.count + 1
    response = corpus.command(b"SEARCH RETURN (MAX) SEEN")
    assert f'* ESEARCH (TAG "t{tag}") MAX 11\r\n'.encode() in response


@pytest.mark.parametrize(
    "command",
    [b"SEARCH RETURN (SAVE) ALL", b"SEARCH RETURN (PARTIAL 1:5) ALL", b"SEARCH RETURN ALL"],
)
def test_unsupported_result_options_are_bad(corpus, command):
    assert re.search(rb"^t\d+ BAD ", corpus.command(command), re.M)


# ---------------------------------------------------------------- CONDSTORE


def test_modseq_key_enables_condstore_and_reports_modseqs(tmp_path):
    with imap_server(tmp_path) as server:
        populate(server, CORPUS[:4])
        client = raw(server)
        selected = client.ok("SELECT INBOX")
        highest = int(re.search(rb"HIGHESTMODSEQ (\d+)", selected).group(1))
        client.ok("STORE 2 +FLAGS (Later)")
        changed = highest + 1

        response = client.command(f"SEARCH MODSEQ {changed}")
        # The first CONDSTORE enabling command says where the folder stands.
        assert f"* OK [HIGHESTMODSEQ {changed}]".encode() in response
        assert f"* SEARCH 2 (MODSEQ {changed})\r\n".encode() in response
        response = client.command(f"SEARCH MODSEQ {highest}")  # message 4's, 2's before
        assert b"HIGHESTMODSEQ" not in response
        assert f"* SEARCH 2 4 (MODSEQ {changed})\r\n".encode() in response
        response = client.command(f'SEARCH MODSEQ "/flags/\\\\draft" all {changed + 1}')
        assert b"* SEARCH\r\n" in response  # nothing: no MODSEQ either
        response = client.command("SEARCH RETURN (MAX) MODSEQ 1")
        # Only MAX asked for: the MODSEQ of that message (RFC 4731 §3.2).
        assert f"MAX 4 MODSEQ {highest}\r\n".encode() in response
        response = client.command("UID SEARCH RETURN (COUNT) MODSEQ 1")
        assert f"UID COUNT 4 MODSEQ {changed}\r\n".encode() in response
        client.close()


# ------------------------------------------------------------- bad programs


@pytest.mark.parametrize(
    "command",
    [
        b"SEARCH",
        b"SEARCH ",
        b"SEARCH BOGUS",
        b"SEARCH FROM",
        b"SEARCH (SEEN",
        b"SEARCH 99",
        b"SEARCH 1:99",
        b"SEARCH CHARSET",
        b"SEARCH SENTON 32-May-2024",
        b"SEARCH $",
        b"SEARCH " + b"NOT " * 200 + b"ALL",
    ],
)
def test_bad_programs_are_bad(corpus, command):
    response = corpus.command(command)
    assert re.search(rb"^t\d+ BAD ", response, re.M), response
    assert b"* SEARCH" not in response


def test_search_needs_a_selected_folder(tmp_path):
    with imap_server(tmp_path) as server:
        client = raw(server)
        assert re.search(rb"^t\d+ BAD ", client.command(b"SEARCH ALL"), re.M)
        client.ok("SELECT INBOX")
        assert client.ok("SEARCH ALL") == b"* SEARCH\r\n"  # empty folder
        assert client.ok("SEARCH 1:*") == b"* SEARCH\r\n"
        assert client.ok("UID SEARCH TEXT x") == b"* SEARCH\r\n"
        client.close()


# ----------------------------------------------------- others change the folder


def test_messages_expunged_by_another_session(tmp_path):
    with imap_server(tmp_path) as server:
        populate(server, CORPUS[:6])
        mine, other = raw(server), raw(server)
        mine.ok("SELECT INBOX")
        assert numbers(mine.command(b"SEARCH TEXT zeppelin")) == [3]  # indexed
        other.ok("SELECT INBOX")
        other.ok("STORE 3,5 +FLAGS.SILENT (\\Deleted)")
        other.ok("EXPUNGE")

        # Still numbered here, and no EXPUNGE may be sent during SEARCH (RFC 3501
        # §7.4.1); their content is gone, so text keys find nothing in them.
        response = mine.command(b"SEARCH TEXT zeppelin")
        assert numbers(response) == [] and b"EXPUNGE" not in response
        response = mine.command(b"SEARCH NOT BODY {0}\r\n")
        assert numbers(response) == [3, 5] and b"EXPUNGE" not in response
        assert numbers(mine.command(b"SEARCH ALL")) == [1, 2, 3, 4, 5, 6]
        # UID SEARCH may report them; then the numbers close up.
        response = mine.command(b"UID SEARCH ALL")
        assert b"* 3 EXPUNGE" in response and b"* 4 EXPUNGE" in response
        assert numbers(mine.command(b"SEARCH ALL")) == [1, 2, 3, 4]
        assert numbers(mine.command(b"UID SEARCH BODY widget")) == []
        mine.close()
        other.close()


def test_new_mail_is_found_by_the_next_search(tmp_path):
    with imap_server(tmp_path) as server:
        populate(server, CORPUS[:2])
        client = raw(server)
        client.ok("SELECT INBOX")
        assert numbers(client.command(b"SEARCH BODY zeppelin")) == []
        server.deliver(CORPUS[2].data)
        client.ok("NOOP")
        assert numbers(client.command(b"SEARCH BODY zeppelin")) == [3]
        assert numbers(client.command(b"SEARCH FROM bob")) == [3]
        client.close()
