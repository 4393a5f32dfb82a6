"""FETCH and UID FETCH through the server: every fetch-att of RFC 3501, \\Seen,
CONDSTORE (RFC 7162), EXPUNGEISSUED (RFC 5530), streaming of big answers — and the
same requests answered byte for byte as a private Dovecot answers them."""

from __future__ import annotations

import re

import pytest

from mailops.runtime.imap import message as msg
from mailops.runtime.imap.commands import fetch as fetch_command
from mailops.runtime.store import mime, opened
from tests.runtime.imap import mime_corpus as corpus
from tests.runtime.imap.oracle import RawClient, dovecot, dovecot_available, write_maildir
from tests.runtime.imap_harness import DOMAIN, PASSWORDS, imap_server

ARRIVED = b'"13-Sep-2020 12:26:40 +0000"'  # write_maildir's first file time


@pytest.fixture
def server(tmp_path):
    with imap_server(tmp_path) as server:
        yield server


def connect(server, messages: list[bytes], select: str = "SELECT") -> RawClient:
    """A logged-in client with INBOX selected, holding exactly `messages`."""
    if messages:
        write_maildir(server.maildir(), messages)
    client = RawClient(server.ports["imap"])
    client.ok(f"LOGIN alice@{DOMAIN} {PASSWORDS['alice']}")
    client.ok(f"{select} INBOX")
    return client


def status(response: bytes) -> bytes:
    """The tagged status line of a response, without the tag."""
    return response[:-2].rsplit(b"\r\n", 1)[-1].split(b" ", 1)[1]


def untagged(response: bytes) -> bytes:
    return response[: response[:-2].rfind(b"\r\n") + 2]


# ================================================================ simple items


def test_flags_size_date_and_uid(server):
    client = connect(server, [corpus.SIMPLE])
    assert client.ok("FETCH 1 (UID FLAGS RFC822.SIZE INTERNALDATE)") == (
        b"* 1 FETCH (UID 1 FLAGS (\\Recent) RFC822.SIZE 326 INTERNALDATE " + ARRIVED + b")\r\n"
    )


@pytest.mark.parametrize(
    ("macro", "items"),
    [
        ("FAST", "FLAGS INTERNALDATE RFC822.SIZE"),
        ("ALL", "FLAGS INTERNALDATE RFC822.SIZE ENVELOPE"),
        ("FULL", "FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY"),
    ],
)
def test_macros_are_their_items(server, macro, items):
    client = connect(server, [corpus.NESTED_RFC822])
    assert client.ok(f"FETCH 1 {macro}") == client.ok(f"FETCH 1 ({items})")


def test_envelope_body_and_bodystructure_come_from_the_cache(server):
    client = connect(server, [corpus.ALTERNATIVE_WITH_ATTACHMENTS])
    blob = mime.parse_to_cache(corpus.ALTERNATIVE_WITH_ATTACHMENTS)
    assert client.ok("FETCH 1 (ENVELOPE BODY BODYSTRUCTURE)") == (
        b"* 1 FETCH (ENVELOPE " + mime.cached_envelope(blob)
        + b" BODY (" + mime.cached_body(blob)
        + b") BODYSTRUCTURE (" + mime.cached_bodystructure(blob) + b"))\r\n"
    )  # fmt: skip


def test_uid_fetch_always_answers_with_the_uid(server):
    client = connect(server, [corpus.SIMPLE, corpus.DIGEST])
    assert client.ok("UID FETCH 2 FLAGS") == b"* 2 FETCH (UID 2 FLAGS (\\Recent))\r\n"
    assert client.ok("UID FETCH 1:* (FLAGS UID)") == (
        b"* 1 FETCH (FLAGS (\\Recent) UID 1)\r\n* 2 FETCH (FLAGS (\\Recent) UID 2)\r\n"
    )
    assert client.ok("UID FETCH 7:9 FLAGS") == b""  # no such UIDs: nothing, and OK
    assert client.ok("UID FETCH 5:* FLAGS") == b"* 2 FETCH (UID 2 FLAGS (\\Recent))\r\n"


# ===================================================================== bodies


def test_the_rfc822_forms(server):
    client = connect(server, [corpus.SIMPLE])
    header, _, text = corpus.SIMPLE.partition(b"\r\n\r\n")
    header += b"\r\n\r\n"
    assert client.ok("FETCH 1 (RFC822.HEADER)") == (
        b"* 1 FETCH (RFC822.HEADER {%d}\r\n%s)\r\n" % (len(header), header)
    )
    assert client.ok("FETCH 1 RFC822") == (
        b"* 1 FETCH (RFC822 {326}\r\n" + corpus.SIMPLE + b" FLAGS (\\Recent \\Seen))\r\n"
    )
    assert client.ok("FETCH 1 RFC822.TEXT") == b"* 1 FETCH (RFC822.TEXT {%d}\r\n%s)\r\n" % (
        len(text),
        text,
    )


def test_sections_and_partial_ranges(server):
    client = connect(server, [corpus.NESTED_RFC822])
    response = client.ok(
        "FETCH 1 (BODY.PEEK[2.1] BODY.PEEK[1.MIME] BODY.PEEK[2.HEADER.FIELDS (subject FROM)]"
        " BODY.PEEK[TEXT]<10.20> BODY.PEEK[]<1000.5> BODY.PEEK[4])"
    )
    assert response == (
        b"* 1 FETCH (BODY[2.1] {10}\r\ninner text BODY[1.MIME] {28}\r\n"
        b"Content-Type: text/plain\r\n\r\n BODY[2.HEADER.FIELDS (SUBJECT FROM)] {59}\r\n"
        b"From: Inner Sender <inner@example.test>\r\nSubject: inner\r\n\r\n"
        b" BODY[TEXT]<10> {20}\r\nent-Type: text/plain BODY[]<1000> {0}\r\n BODY[4] {0}\r\n)\r\n"
    )


def test_bare_line_feeds_go_out_as_crlf_and_sizes_match(server):
    client = connect(server, [corpus.BARE_LF])
    crlf = corpus.BARE_LF.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    response = client.ok("FETCH 1 (RFC822.SIZE BODY.PEEK[])")
    assert response == b"* 1 FETCH (RFC822.SIZE %d BODY[] {%d}\r\n%s)\r\n" % (
        len(crlf),
        len(crlf),
        crlf,
    )
    assert client.ok("FETCH 1 BODY.PEEK[2]") == b"* 1 FETCH (BODY[2] {14}\r\nmixed\r\nendings)\r\n"


def test_nul_is_sent_as_0x80(server):
    client = connect(server, [b"Subject: nul\r\n\r\na\x00b\r\n"])
    assert client.ok("FETCH 1 BODY.PEEK[TEXT]") == b"* 1 FETCH (BODY[TEXT] {5}\r\na\x80b\r\n)\r\n"


def test_eight_bit_headers_are_literals(server):
    client = connect(server, [corpus.EIGHT_BIT])
    response = client.ok("FETCH 1 (ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert "{17}\r\nGrüße aus Köln".encode() in response
    field = "Subject: Grüße aus Köln\r\n\r\n".encode()
    assert b"BODY[HEADER.FIELDS (SUBJECT)] {%d}\r\n%s)" % (len(field), field) in response


# ====================================================================== \Seen


def test_fetching_a_body_sets_seen_and_says_so(server):
    client = connect(server, [corpus.SIMPLE, corpus.DIGEST])
    assert client.ok("FETCH 1 BODY.PEEK[1]").count(b"FLAGS") == 0
    assert client.ok("FETCH 1 BODY[1]").endswith(b" FLAGS (\\Recent \\Seen))\r\n")
    assert client.ok("FETCH 1 (FLAGS BODY[1])").count(b"FLAGS") == 1  # not twice
    assert client.ok("FETCH 1:2 FLAGS") == (
        b"* 1 FETCH (FLAGS (\\Recent \\Seen))\r\n* 2 FETCH (FLAGS (\\Recent))\r\n"
    )
    assert client.ok("FETCH 2 RFC822.HEADER").count(b"FLAGS") == 0  # RFC822.HEADER peeks


def test_examine_never_sets_seen(server):
    client = connect(server, [corpus.SIMPLE], select="EXAMINE")
    assert b"FLAGS" not in client.ok("FETCH 1 BODY[]")
    assert client.ok("FETCH 1 FLAGS") == b"* 1 FETCH (FLAGS (\\Recent))\r\n"


# ================================================================= CONDSTORE


def test_modseq_enables_condstore_and_changedsince_filters(server):
    client = connect(server, [corpus.SIMPLE, corpus.DIGEST, corpus.HEADER_ONLY])
    first = client.ok("FETCH 1 (MODSEQ)")
    highest = re.match(rb"\* OK \[HIGHESTMODSEQ (\d+)\]", first)
    assert highest is not None
    modseq = int(highest.group(1))
    assert first.endswith(b"* 1 FETCH (MODSEQ (%d))\r\n" % modseq)
    assert client.ok("FETCH 1 (MODSEQ)") == b"* 1 FETCH (MODSEQ (%d))\r\n" % modseq
    assert client.ok(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})") == b""
    client.ok("FETCH 2 BODY[TEXT]")  # sets \Seen: a new MODSEQ
    changed = client.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")
    assert re.fullmatch(
        rb"\* 2 FETCH \(UID 2 FLAGS \(\\Recent \\Seen\) MODSEQ \((\d+)\)\)\r\n", changed
    )


def test_changedsince_alone_also_enables_condstore(server):
    client = connect(server, [corpus.SIMPLE])
    response = client.ok("FETCH 1 (UID) (CHANGEDSINCE 1)")
    assert response.startswith(b"* OK [HIGHESTMODSEQ ")
    assert re.search(rb"\* 1 FETCH \(UID 1 MODSEQ \(\d+\)\)\r\n$", response)


def test_implicit_flags_carry_modseq_once_condstore_is_on(server):
    client = connect(server, [corpus.SIMPLE])
    client.ok("FETCH 1 MODSEQ")
    response = client.ok("FETCH 1 BODY[1]")
    assert re.search(rb" FLAGS \(\\Recent \\Seen\) MODSEQ \(\d+\)\)\r\n$", response)


# ==================================================== expunged by someone else


def test_messages_expunged_meanwhile(server):
    client = connect(server, [corpus.SIMPLE, corpus.DIGEST, corpus.HEADER_ONLY])
    with opened(server.store, DOMAIN, "alice") as mailbox:
        assert mailbox.select("INBOX").expunge([2]) == [2]
    # What the index still knows is answered; the body is gone, and no EXPUNGE yet.
    assert client.ok("FETCH 2 (UID FLAGS RFC822.SIZE)") == (
        b"* 2 FETCH (UID 2 FLAGS (\\Recent) RFC822.SIZE %d)\r\n" % len(corpus.DIGEST)
    )
    response = client.command("FETCH 1:3 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert status(response).startswith(b"NO [EXPUNGEISSUED]")
    assert re.findall(rb"\* (\d+) FETCH", response) == [b"1", b"3"]
    assert b"EXPUNGE" not in untagged(response)
    assert client.ok("NOOP") == b"* 2 EXPUNGE\r\n"
    assert client.ok("FETCH 2 (UID)") == b"* 2 FETCH (UID 3)\r\n"


# ================================================================ big answers


def test_big_answers_stream_in_batches(server, monkeypatch):
    monkeypatch.setattr(fetch_command, "BATCH", 7)
    monkeypatch.setattr(fetch_command, "BATCH_BYTES", 50_000)
    messages = [b"Subject: %d\r\n\r\n" % n + b"x" * (20_000 + n) + b"\r\n" for n in range(40)]
    client = connect(server, messages)
    response = client.ok("FETCH 1:* (UID BODY.PEEK[])")
    for n, data in enumerate(messages, 1):
        assert b"* %d FETCH (UID %d BODY[] {%d}\r\n%s)\r\n" % (n, n, len(data), data) in response
    assert response.count(b" FETCH ") == 40
    envelopes = client.ok("FETCH 1:* ENVELOPE")
    assert envelopes.count(b" FETCH (ENVELOPE (NIL \"") == 40


# ===================================================================== errors


@pytest.mark.parametrize(
    "request_text",
    [
        "FETCH 1 ()",
        "FETCH 1 (FOO)",
        "FETCH 1 BODY.PEEK",
        "FETCH 1 BODY[MIME]",
        "FETCH 1 BODY[0]",
        "FETCH 1 BODY[1.01]",
        "FETCH 1 BODY[HEADER.FIELDS ()]",
        "FETCH 1 BODY[HEADER.FIELDS]",
        "FETCH 1 BODY[TEXTX]",
        "FETCH 1 BODY[]<1>",
        "FETCH 1 BODY[]<1.0>",
        "FETCH 1 (FAST)",
        "FETCH 1 FLAGS extra",
        "FETCH 1 FLAGS (VANISHED)",
        "FETCH 9 FLAGS",
        "FETCH 0 FLAGS",
        "FETCH x FLAGS",
    ],
)
def test_bad_requests(server, request_text):
    client = connect(server, [corpus.SIMPLE])
    assert status(client.command(request_text)).startswith(b"BAD")
    assert status(client.command("FETCH 1 UID")) == b"OK FETCH completed"


def test_fetch_needs_a_selected_folder(server):
    client = RawClient(server.ports["imap"])
    client.ok(f"LOGIN alice@{DOMAIN} {PASSWORDS['alice']}")
    assert status(client.command("FETCH 1 FLAGS")).startswith(b"BAD")


# ================================================================ Dovecot


def _requests(data: bytes) -> list[str]:
    """Fetch items for one message: the fixed ones and every section of its parts."""
    items = [
        "ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822.SIZE", "RFC822.HEADER", "BODY.PEEK[]",
        "BODY.PEEK[HEADER]", "BODY.PEEK[TEXT]", "BODY.PEEK[1]", "BODY.PEEK[1.MIME]",
        "BODY.PEEK[1.1]", "BODY.PEEK[2]", "BODY.PEEK[]<3.20>", "BODY.PEEK[TEXT]<0.5>",
        "BODY.PEEK[HEADER.FIELDS (FROM SUBJECT content-type X-NONE)]",
        "BODY.PEEK[HEADER.FIELDS.NOT (FROM SUBJECT)]",
    ]  # fmt: skip
    tree = mime.cached_tree(mime.parse_to_cache(data))
    for path in sorted(_paths(tree))[:12]:
        number = ".".join(map(str, path))
        for suffix in ("", ".MIME", ".HEADER", ".TEXT", ".HEADER.FIELDS (SUBJECT FROM)", ".1"):
            items.append(f"BODY.PEEK[{number}{suffix}]")
    return items


def _paths(node, prefix=()):
    if "parts" in node:
        for n, part in enumerate(node["parts"], 1):
            yield (*prefix, n)
            yield from _paths(part, (*prefix, n))
    elif "body" in node:
        yield from _paths(node["body"], prefix or (1,))


def _deliberate(data: bytes, item: str, ours: bytes, theirs: bytes) -> bool:
    """Where we answer differently on purpose.

    1. A lone plain us-ascii part: Dovecot's first BODY/BODYSTRUCTURE keeps the case
       of the Content-Type, later ones use a fixed lower-case form; we always do.
    2. HEADER.FIELDS of an enclosed message whose header a boundary line cut short:
       Dovecot reads the header again from the part start, past that boundary; we
       keep to the header the part has.
    """
    if item in ("BODY", "BODYSTRUCTURE"):
        return ours.lower() == theirs.lower()
    found = re.match(r"BODY\.PEEK\[([0-9.]+)\.HEADER\.FIELDS", item)
    if not found:
        return False
    tree = mime.cached_tree(mime.parse_to_cache(data))
    node = msg.find_part(tree, tuple(int(n) for n in found.group(1).split(".")))
    if node is None or "body" not in node:
        return False
    start, size = node["body"]["start"], node["body"]["header_size"]
    header = data[start : start + size]
    return not (header in (b"\n", b"\r\n") or header.endswith((b"\n\n", b"\n\r\n")))


DOVECOT_MESSAGES = [*corpus.CORPUS.values(), *(corpus.random_message(n) for n in range(40))]


@pytest.mark.skipif(not dovecot_available(), reason="dovecot is not installed")
def test_answers_match_dovecot_byte_for_byte(server):
    ours = connect(server, DOVECOT_MESSAGES)
    differences = []
    with dovecot(DOVECOT_MESSAGES) as theirs:
        for n, data in enumerate(DOVECOT_MESSAGES, 1):
            for item in _requests(data):
                mine = ours.command(f"FETCH {n} ({item})")
                reference = theirs.command(f"FETCH {n} ({item})")
                same_status = status(mine).split(b" ")[0] == status(reference).split(b" ")[0]
                if same_status and untagged(mine) == untagged(reference):
                    continue
                if not _deliberate(data, item, untagged(mine), untagged(reference)):
                    differences.append((n, item, data, untagged(mine), untagged(reference)))
    assert not differences, differences[:3]


# ========================================================= remembered answers


def test_header_fields_answers_are_remembered(server):
    client = connect(server, [corpus.SIMPLE, corpus.NESTED_RFC822, corpus.BARE_LF])
    request = "UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (From Subject)])"
    first = client.ok(request)
    assert b"* 3 FETCH (UID 3 BODY[HEADER.FIELDS (FROM SUBJECT)] {43}\r\n" in first
    assert client.ok(request) == first  # from memory now
    assert client.ok("FETCH 2 (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<6.9>)") == (
        b"* 2 FETCH (BODY[HEADER.FIELDS (FROM SUBJECT)]<6> {9}\r\nforwarder)\r\n"
    )


def test_the_memo_keeps_to_its_limit():
    memo = fetch_command.AnswerMemo(limit=1000)
    first = memo.table(("a",))
    memo.remember(("a",), 1, b"x" * 300)
    memo.table(("b",))
    memo.remember(("b",), 1, b"y" * 300)
    assert first == {1: b"x" * 300}
    memo.remember(("b",), 2, b"y" * 300)  # over the limit: the older table goes
    assert list(memo.tables) == [("b",)] and memo.total <= 1000
    memo.remember(("b",), 3, b"z" * 900)  # one table never holds more than the limit
    assert 3 not in memo.tables[("b",)]
