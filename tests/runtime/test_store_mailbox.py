"""The store API IMAP will use: folders, safe names, flags in both places, copy and
move, quota, several views of one folder, and change notification."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mailops.runtime.durable import GroupCommit
from mailops.runtime.store import (
    FolderExists,
    NoSuchFolder,
    OverQuota,
    Store,
    StoreError,
    names,
    opened,
)

DOMAIN, USER = "example.test", "alice"
MESSAGE = b"From: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def mailbox(tmp_path):
    with opened(Store(tmp_path, "mx.test"), DOMAIN, USER) as mb:
        yield mb


def maildir(root: Path) -> Path:
    return root / "mail" / DOMAIN / USER


def test_special_use_folders_exist_from_first_use(mailbox, tmp_path):
    roles = {f.name: f.special_use for f in mailbox.folders()}
    assert roles == {
        "INBOX": None,
        "Sent": "\\Sent",
        "Drafts": "\\Drafts",
        "Trash": "\\Trash",
        "Junk": "\\Junk",
        "Archive": "\\Archive",
    }
    for name in ("Sent", "Trash"):
        folder = maildir(tmp_path) / f".{name}"
        assert (folder / "cur").is_dir() and (folder / "maildirfolder").exists()
    assert mailbox.folder_for("\\Trash") == "Trash"


def test_deleted_special_folder_comes_back_when_its_role_is_needed(mailbox):
    mailbox.delete_folder("Junk")
    assert "Junk" not in {f.name for f in mailbox.folders()}
    assert mailbox.folder_for("\\Junk") == "Junk"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "..",
        "../x",
        "a/b",
        "/etc",
        "a..b",
        ".hidden",
        "trailing.",
        "nul\x00",
        "tab\t",
        "x" * 300,
    ],
)
def test_unsafe_folder_names_are_refused(mailbox, tmp_path, bad):
    with pytest.raises(StoreError):
        mailbox.create_folder(bad)
    assert all(p.parent == maildir(tmp_path) for p in maildir(tmp_path).glob(".*"))


def test_folder_names_in_modified_utf7_on_disk(mailbox, tmp_path):
    mailbox.create_folder("Entw\u00fcrfe.R\u00e9sum\u00e9 & co")
    dirs = {p.name for p in maildir(tmp_path).iterdir() if p.name.startswith(".")}
    assert ".Entw&APw-rfe" in dirs and ".Entw&APw-rfe.R&AOk-sum&AOk- &- co" in dirs
    assert names.decode_mutf7("Entw&APw-rfe") == "Entw\u00fcrfe"
    listed = {f.name: f.has_children for f in mailbox.folders()}
    assert listed["Entw\u00fcrfe"] is True
    with pytest.raises(FolderExists):
        mailbox.create_folder("Entw\u00fcrfe")


def test_inbox_is_case_insensitive_and_cannot_be_deleted(mailbox):
    assert mailbox.select("inbox").name == "INBOX"
    with pytest.raises(StoreError):
        mailbox.delete_folder("Inbox")


def test_rename_moves_children_and_keeps_mail(mailbox):
    mailbox.create_folder("Projects.2024")
    mailbox.append("Projects.2024", MESSAGE)
    mailbox.rename_folder("Projects", "Old.Projects")
    assert {"Old", "Old.Projects", "Old.Projects.2024"} <= {f.name for f in mailbox.folders()}
    assert mailbox.status("Old.Projects.2024").messages == 1
    with pytest.raises(NoSuchFolder):
        mailbox.select("Projects.2024")


def test_renaming_inbox_moves_its_mail(mailbox):
    mailbox.append("INBOX", MESSAGE)
    mailbox.rename_folder("INBOX", "Saved")
    assert mailbox.status("INBOX").messages == 0
    assert mailbox.status("Saved").messages == 1


def test_flags_go_to_file_names_and_keywords_to_the_index(mailbox, tmp_path):
    _validity, uid = mailbox.append("INBOX", MESSAGE, ["\\Seen"])
    view = mailbox.select("INBOX")
    view.store_flags([uid], ["\\Flagged", "$Label1", "\\Deleted"], "+")
    (name,) = os.listdir(maildir(tmp_path) / "cur")
    assert name.endswith(":2,FST")
    view.store_flags([uid], ["\\Deleted"], "-")
    (name,) = os.listdir(maildir(tmp_path) / "cur")
    assert name.endswith(":2,FS")
    assert view.messages[0].flags == {"\\Seen", "\\Flagged", "$Label1"}
    view.store_flags([uid], ["$Label2"], "=")
    assert os.listdir(maildir(tmp_path) / "cur")[0].endswith(":2,")


def test_unchangedsince_refuses_messages_changed_meanwhile(mailbox):
    _, uid = mailbox.append("INBOX", MESSAGE)
    view = mailbox.select("INBOX")
    before = view.messages[0].modseq
    view.store_flags([uid], ["\\Seen"], "+")
    changed, refused = view.store_flags([uid], ["\\Flagged"], "+", unchanged_since=before)
    assert refused == [uid] and changed == []
    assert view.highestmodseq > before


def test_copy_and_move_give_new_uids_and_keep_bytes(mailbox):
    _, uid = mailbox.append("INBOX", MESSAGE, ["\\Seen"])
    inbox = mailbox.select("INBOX")
    validity, pairs = inbox.copy([uid], "Archive")
    ((src, dst),) = pairs
    assert src == uid
    archive = mailbox.select("Archive")
    assert archive.uidvalidity == validity
    assert archive.read(dst) == MESSAGE and archive.messages[0].flags == {"\\Seen"}
    _, moved = inbox.move([uid], "Trash")
    assert inbox.refresh().expunged == [1]
    trash = mailbox.select("Trash")
    assert trash.read(moved[0][1]) == MESSAGE
    assert inbox.cached([uid]) == {}


def test_quota_counts_every_folder(tmp_path):
    store = Store(tmp_path, "mx.test")
    with opened(store, DOMAIN, USER, quota=3 * len(MESSAGE)) as mailbox:
        mailbox.append("INBOX", MESSAGE)
        mailbox.append("Sent", MESSAGE)
        _, uid = mailbox.append("Drafts", MESSAGE)
        with pytest.raises(OverQuota):
            mailbox.append("INBOX", MESSAGE)
        drafts = mailbox.select("Drafts")
        drafts.expunge([uid])  # frees the space again
        mailbox.append("INBOX", MESSAGE)


def test_readonly_views_refuse_changes(mailbox):
    _, uid = mailbox.append("INBOX", MESSAGE)
    view = mailbox.select("INBOX", readonly=True)
    with pytest.raises(StoreError):
        view.store_flags([uid], ["\\Seen"], "+")
    with pytest.raises(StoreError):
        view.expunge([uid])


def test_two_views_see_each_others_changes_only_on_refresh(mailbox):
    _, first = mailbox.append("INBOX", MESSAGE)
    one = mailbox.select("INBOX")
    two = mailbox.select("INBOX")
    assert one.recent == {first} and two.recent == set()  # \Recent goes to one session
    one.store_flags([first], ["\\Answered"], "+")
    _, second = mailbox.append("INBOX", MESSAGE)
    one.expunge([first])
    assert [m.uid for m in two.messages] == [first]  # unchanged until it refreshes
    held = two.refresh(expunges=False)  # e.g. during FETCH: no EXPUNGE yet
    assert held.expunged == [] and [m.uid for m in two.messages] == [first, second]
    changes = two.refresh()
    assert changes.expunged == [1] and [m.uid for m in two.messages] == [second]


def test_notification_on_delivery_and_on_other_sessions_changes(tmp_path):
    store = Store(tmp_path, "mx.test")

    async def scenario() -> None:
        mailbox = await asyncio.to_thread(store.open, DOMAIN, USER)
        view = await asyncio.to_thread(mailbox.select, "INBOX", origin="idle-session")
        subscription = store.notifier.subscribe(view.key(), origin="idle-session")
        # The MDA: prepare, group commit, then tell the store.
        pending = store.delivery.prepare(
            DOMAIN, USER, MESSAGE, return_path="x@remote.example", delivered_to="a", quota=None
        )
        group = GroupCommit()
        await group.commit([pending])
        await group.close()
        store.delivered([pending])
        assert await subscription.wait(1.0)
        changes = await asyncio.to_thread(view.refresh)
        assert len(changes.added) == 1
        # Another session's change (made in a worker thread) wakes it too...
        other = await asyncio.to_thread(mailbox.select, "INBOX", origin="other")
        uid = changes.added[0].uid
        await asyncio.to_thread(other.store_flags, [uid], ["\\Seen"], "+")
        assert await subscription.wait(1.0)
        assert [m.flags for m in (await asyncio.to_thread(view.refresh)).changed] == [{"\\Seen"}]
        # ...but not its own changes.
        await asyncio.to_thread(view.store_flags, [uid], ["\\Flagged"], "+")
        assert not await subscription.wait(0.1)
        subscription.close()
        store.release(mailbox)

    asyncio.run(scenario())


def test_a_message_gone_from_disk_is_reported(mailbox, tmp_path):
    from mailops.runtime.store import MessageGone

    _, uid = mailbox.append("INBOX", MESSAGE)
    view = mailbox.select("INBOX")
    for path in (maildir(tmp_path) / "cur").iterdir():
        path.unlink()
    with pytest.raises(MessageGone):
        view.open(uid)
    with pytest.raises(MessageGone):
        view.read(uid, len(MESSAGE))


def test_read_takes_the_whole_file_whatever_size_it_is_told(mailbox):
    """`read` with the index's size reads in one go; a file longer than that (the
    index is stale) is still read to its end, a shorter one is not padded."""
    big = MESSAGE + b"x" * 300_000 + b"\r\n"  # more than one read chunk of some sizes
    uids = [mailbox.append("INBOX", data)[1] for data in (MESSAGE, big, b"")]
    view = mailbox.select("INBOX")
    for uid, data in zip(uids, (MESSAGE, big, b""), strict=True):
        assert view.read(uid) == data
        for told in (len(data), 0, len(data) // 2, len(data) + 10):
            assert view.read(uid, told) == data
        with view.open(uid) as handle:
            assert handle.read() == data


def test_read_finds_a_message_renamed_by_another_program(mailbox, tmp_path):
    """Another Maildir program changed its flags (renamed the file): the store looks
    again and reads it under its new name."""
    _, uid = mailbox.append("INBOX", MESSAGE)
    view = mailbox.select("INBOX")
    [path] = (maildir(tmp_path) / "cur").iterdir()
    base = path.name.partition(":2,")[0]
    path.rename(path.with_name(base + ":2,FS"))
    assert view.read(uid, len(MESSAGE)) == MESSAGE
    path.with_name(base + ":2,FS").rename(path)
    with view.open(uid) as handle:
        assert handle.read() == MESSAGE
