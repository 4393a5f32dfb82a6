"""IMAP against a real `mailops serve`, with the real clients from Debian: mbsync
(isync) and offlineimap3 keep a local Maildir in sync with the server both ways, over
STARTTLS on the 143-style port and TLS on the 993-style one, trusting a test CA;
fetchmail and getmail6 download in IMAP mode.

What is compared is content, not exit codes: the messages' bytes (up to the client's
line endings, and mbsync's X-TUID header), the flags, and the folder lists, on the
server (through imaplib) and in the client's Maildir.

One server for the module; each test gets an account of its own (users of a domain
added for these tests), its Maildir written before its first login: seven folders
(one nested, one with a space, one with a non-ASCII name), ~50 messages of five kinds
(plain, 8-bit UTF-8, 8-bit Latin-1, multipart/alternative, multipart/mixed with a
base64 attachment and a message/rfc822 part), some read, flagged or answered.

MAILOPS_IMAP_CLIENTS_SERVER=dovecot runs the same tests against a private Dovecot
instead (=both: against each): the reference that shows a failure is the server's and
not the test's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration import imapclients as ic
from tests.integration.imapclients import Mbsync, OfflineImap, Target

pytestmark = pytest.mark.integration

_WANTED = os.environ.get("MAILOPS_IMAP_CLIENTS_SERVER", "mailops")
SERVERS = ["mailops", "dovecot"] if _WANTED == "both" else [_WANTED]


@pytest.fixture(scope="module", params=SERVERS)
def target(request, tmp_path_factory) -> Iterator[Target]:
    if request.param == "dovecot":
        if not ic.dovecot_available():
            pytest.skip("dovecot-imapd not installed")
        with ic.dovecot_target() as reference:
            yield reference
    else:
        with ic.mailops_target(tmp_path_factory.mktemp("imap-clients")) as server:
            yield server


@pytest.fixture
def observer(target) -> Iterator[ic.Observer]:
    """Another session on the account, for looking at the server and changing it."""
    watcher = ic.Observer(target)
    yield watcher
    watcher.close()


def nonempty(content: ic.Content) -> ic.Content:
    """Without empty folders (the server may make the special-use ones on first use)."""
    return {name: messages for name, messages in content.items() if messages}


def assert_in_sync(client: ic.SyncClient, observer: ic.Observer, state=None) -> dict:
    """The client's Maildir holds exactly what the server holds: the same folders, and
    in each the same messages with the same flags. Returns the server state."""
    state = state if state is not None else observer.state()
    server = ic.server_content(state, client.normalize)
    local = client.content()
    assert local == server, (
        f"{client.name} ({client.port}) out of sync with {observer.target.name}:\n"
        f"{ic.describe_difference(server, local)}\n--- client log: {client.log}\n"
        f"{client.log.read_text(errors='replace')[-4000:]}"
    )
    return state


def assert_sync_changes_nothing(client: ic.SyncClient, observer: ic.Observer, state) -> None:
    files = client.files()
    client.sync()
    after = observer.state()
    difference = ic.describe_difference(
        ic.server_content(state), ic.server_content(after), ("before", "after")
    )
    assert after == state, f"a sync with nothing to do changed the server:\n{difference}"
    assert client.files() == files, "a sync with nothing to do changed the local Maildir"


def mail(corpus: dict[str, list[ic.Mail]], folder: str, letters: str, skip=()) -> ic.Mail:
    """The first message of a folder with exactly these flags (and not one of `skip`)."""
    return next(m for m in corpus[folder] if m.letters == letters and m not in skip)


# ------------------------------------------------------------ mbsync, offlineimap

SYNC_CLIENTS = [
    pytest.param(Mbsync, marks=pytest.mark.skipif(ic.MBSYNC is None, reason="no mbsync")),
    pytest.param(
        OfflineImap, marks=pytest.mark.skipif(ic.OFFLINEIMAP is None, reason="no offlineimap")
    ),
]


@pytest.mark.parametrize("port", ["imap", "imaps"], ids=["starttls-143", "tls-993"])
@pytest.mark.parametrize("client_class", SYNC_CLIENTS, ids=["mbsync", "offlineimap"])
def test_sync_client_keeps_a_maildir_in_sync_both_ways(
    target, observer, tmp_path, client_class, port
):
    corpus = ic.make_corpus()
    target.reset(corpus)
    client = client_class(tmp_path, target, port)

    # 1. The first sync copies every folder and message down, and leaves the server be.
    run = client.sync()
    if port == "imap":
        assert "STARTTLS" in run.output, run.tail()
    state = observer.state()
    assert nonempty(ic.server_content(state, client.normalize)) == ic.expected_content(
        corpus, client.normalize
    ), "the first sync changed the server"
    assert_in_sync(client, observer, state)
    assert set(ic.local_folders(client.local, client.layout)) >= set(ic.FOLDERS)

    # 2. A second sync has nothing to do: neither side changes.
    assert_sync_changes_nothing(client, observer, state)

    # 3. Changes on both sides, then one sync: flags set locally (flagged, read) and
    #    on the server (flagged, answered); a message written into the local Maildir
    #    (a sent copy, say) is uploaded.
    local_one = mail(corpus, "INBOX", "")
    server_one = mail(corpus, "INBOX", "S")
    ic.set_local_letters(client.find("INBOX", local_one.message_id), "FS")
    observer.set_flags(
        "INBOX", ic.uid_of(state, "INBOX", server_one.message_id), r"(\Flagged \Answered)"
    )
    new = ic.extra_message("append")
    ic.deliver_local(client.local, client.layout, "Work", new, letters="S")
    client.sync()
    state = assert_in_sync(client, observer)
    inbox = ic.by_message_id(state, "INBOX")
    assert inbox[local_one.message_id][0] == "FS", "a flag set locally did not reach the server"
    assert ic.local_letters(client.find("INBOX", server_one.message_id).name) == "FRS", (
        "a flag set on the server did not reach the Maildir"
    )
    work = ic.by_message_id(state, "Work")
    mid = ic.message_id(new)
    assert mid in work, "a message appended locally was not uploaded"
    assert client.normalize(work[mid][1]) == client.normalize(new)
    assert work[mid][0] == "S"

    # 4. Moves and deletes, then one sync: a message moved on the server (IMAP MOVE)
    #    moves in the Maildir; a file removed locally and a message expunged on the
    #    server are gone on both sides.
    moved = mail(corpus, "INBOX", "", skip=[local_one])
    observer.move("INBOX", ic.uid_of(state, "INBOX", moved.message_id), "Archive")
    gone_here = corpus["Lists"][0]
    gone_there = corpus["Lists.python"][0]
    client.find("Lists", gone_here.message_id).unlink()
    observer.delete("Lists.python", ic.uid_of(state, "Lists.python", gone_there.message_id))
    client.sync()
    state = assert_in_sync(client, observer)
    assert moved.message_id not in ic.by_message_id(state, "INBOX")
    assert moved.message_id in ic.by_message_id(state, "Archive")
    local_copy = client.find("Archive", moved.message_id)
    assert client.normalize(local_copy.read_bytes()) == client.normalize(moved.data)
    assert not client.has("INBOX", moved.message_id), "moved on the server, still here"
    assert gone_here.message_id not in ic.by_message_id(state, "Lists")
    assert len(state["Lists"].messages) == len(corpus["Lists"]) - 1
    assert len(state["Lists.python"].messages) == len(corpus["Lists.python"]) - 1
    assert not client.has("Lists.python", gone_there.message_id), "expunged, still here"

    # 5. And after all that, another sync has nothing to do.
    assert_sync_changes_nothing(client, observer, state)


# ------------------------------------------------------------ fetchmail, getmail


def fetch_corpus() -> dict[str, list[ic.Mail]]:
    """INBOX: 12 unread messages of every kind and 3 read ones; one other folder."""
    corpus = ic.make_corpus(seed=11)
    inbox = [ic.Mail(m.data, "") for m in corpus["INBOX"][:12]]
    inbox += [ic.Mail(m.data, "S") for m in corpus["INBOX"][12:15]]
    return {"INBOX": inbox, "Work": corpus["Work"][:3]}


def by_id(messages: list[bytes], strip=lambda data: data) -> dict[bytes, bytes]:
    got: dict[bytes, bytes] = {}
    for data in messages:
        data = strip(data)
        mid = ic.message_id(data)
        assert mid not in got, f"{mid!r} fetched twice"
        got[mid] = data
    return got


def assert_same(got: dict[bytes, bytes], expected: dict[bytes, bytes], normalize=ic.lf) -> None:
    assert set(got) == set(expected)
    for mid, data in got.items():
        assert normalize(data) == normalize(expected[mid]), f"{mid!r} changed on the way"


def inbox_bytes(observer: ic.Observer) -> dict[bytes, tuple[str, bytes]]:
    return ic.by_message_id(observer.state(), "INBOX")


@pytest.mark.skipif(ic.FETCHMAIL is None, reason="fetchmail not installed")
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls-143", "tls-993"])
def test_fetchmail_imap_keep_then_delete(target, observer, tmp_path, implicit):
    corpus = fetch_corpus()
    target.reset(corpus)
    unread = {m.message_id: m.data for m in corpus["INBOX"] if not m.letters}

    # keep: the unread messages arrive intact, nothing is removed, all are now \Seen.
    got, _ = ic.fetchmail(target, tmp_path, implicit=implicit, keep=True)
    assert_same(by_id(got, ic.strip_fetchmail_received), unread)
    inbox = inbox_bytes(observer)
    assert {mid: data for mid, (_, data) in inbox.items()} == {
        m.message_id: m.data for m in corpus["INBOX"]
    }
    assert {letters for letters, _ in inbox.values()} == {"S"}
    # A second run has nothing new to fetch.
    got, _ = ic.fetchmail(target, tmp_path, implicit=implicit, keep=True)
    assert got == []

    # New mail: only it is fetched; without keep it is deleted, the old mail stays.
    before = set(inbox)
    for n in range(2):
        target.deliver(ic.extra_message("fetchmail", n))
    later = {mid: data for mid, (_, data) in inbox_bytes(observer).items() if mid not in before}
    assert len(later) == 2
    got, _ = ic.fetchmail(target, tmp_path, implicit=implicit, keep=False)
    assert_same(by_id(got, ic.strip_fetchmail_received), later)
    assert set(inbox_bytes(observer)) == before
    # Other folders are not touched.
    assert ic.by_message_id(observer.state(), "Work") == {
        m.message_id: (m.letters, m.data) for m in corpus["Work"]
    }


@pytest.mark.skipif(ic.GETMAIL is None, reason="getmail6 not installed")
def test_getmail_imap_keep_then_delete(target, observer, tmp_path):
    corpus = fetch_corpus()
    target.reset(corpus)
    everything = {m.message_id: m.data for m in corpus["INBOX"]}

    # read_all = false remembers what it got; delete = false leaves the server alone.
    got, _ = ic.getmail(target, tmp_path, delete=False)
    assert_same(by_id(got), everything, ic.without_return_path)
    assert {mid: data for mid, (_, data) in inbox_bytes(observer).items()} == everything
    got, _ = ic.getmail(target, tmp_path, delete=False)
    assert got == []

    before = set(everything)
    for n in range(2):
        target.deliver(ic.extra_message("getmail", n))
    later = {mid: data for mid, (_, data) in inbox_bytes(observer).items() if mid not in before}
    assert len(later) == 2
    got, _ = ic.getmail(target, tmp_path, delete=True)
    assert_same(by_id(got), later, ic.without_return_path)
    left = inbox_bytes(observer)
    assert not set(later) & set(left), "delete = true left a fetched message on the server"
    assert set(left) <= before
