"""Maildir delivery: names, headers, layout, quota, and refusing unsafe mailbox names."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

from mailops.runtime.durable import GroupCommit, PendingFile
from mailops.runtime.store import maildir
from mailops.runtime.store.maildir import (
    InvalidMailboxName,
    Maildir,
    MaildirDelivery,
    QuotaExceeded,
    mailbox_path,
    size_from_name,
)

CRLF_MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody line\r\n"
HEADERS = b"Return-Path: <bob@example.net>\r\nDelivered-To: alice@example.org\r\n"
STORED_SIZE = len(HEADERS + CRLF_MESSAGE)


def deliver(files: list[PendingFile]) -> None:
    async def scenario() -> None:
        group = GroupCommit()
        await group.commit(files)
        await group.close()

    asyncio.run(scenario())


def prepare(delivery: MaildirDelivery, message: bytes, quota: int | None = None, **kw: str):
    return delivery.prepare(
        kw.get("domain", "example.org"),
        kw.get("user", "alice"),
        message,
        return_path=kw.get("return_path", "bob@example.net"),
        delivered_to=kw.get("delivered_to", "alice@example.org"),
        quota=quota,
    )


# --------------------------------------------------------------------------- names


def test_names_unique_for_ten_thousand_deliveries_in_one_microsecond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A frozen clock leaves only pid and counter to tell deliveries apart.
    monkeypatch.setattr(maildir.time, "time_ns", lambda: 1_700_000_000_123_456_000)
    names: list[str] = []
    lock = threading.Lock()

    def make(count: int) -> None:
        made = [maildir.unique_name("mx.example.org", 100) for _ in range(count)]
        with lock:
            names.extend(made)

    threads = [threading.Thread(target=make, args=(2500,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(names) == 10_000
    assert len(set(names)) == 10_000
    assert all(n.startswith(f"1700000000.M123456P{os.getpid()}Q") for n in names)


def test_deliveries_in_the_same_second_get_distinct_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maildir.time, "time_ns", lambda: 1_700_000_000_000_000_000)
    delivery = MaildirDelivery(tmp_path, "mx.example.org")
    files = [prepare(delivery, CRLF_MESSAGE) for _ in range(10_000)]
    assert len({f.final_path for f in files}) == 10_000
    assert len({f.tmp_path for f in files}) == 10_000


def test_name_has_size_and_escaped_hostname(tmp_path: Path) -> None:
    delivery = MaildirDelivery(tmp_path, "odd/host:name,x")
    pending = prepare(delivery, CRLF_MESSAGE)
    assert isinstance(pending, PendingFile)
    name = pending.final_path.name
    assert name.endswith(f".odd\\057host\\072name\\054x,S={len(pending.data)}")
    assert size_from_name(name) == len(pending.data)
    assert size_from_name(name + ":2,S") == len(pending.data)
    assert size_from_name("1700000000.M1P2Q3.host") is None


# ---------------------------------------------------------------- stored bytes


def test_headers_prepended_exactly_and_message_untouched(tmp_path: Path) -> None:
    delivery = MaildirDelivery(tmp_path, "mx.example.org")
    pending = prepare(delivery, CRLF_MESSAGE)
    assert isinstance(pending, PendingFile)
    assert pending.data == HEADERS + CRLF_MESSAGE


def test_binary_message_without_final_newline_stored_byte_for_byte(tmp_path: Path) -> None:
    message = b"Subject: raw\r\n\r\n\x00\xff\xfe\x80 8bit \xc3\xa9 and NUL\x00 no newline at end"
    delivery = MaildirDelivery(tmp_path, "mx.example.org")
    pending = prepare(delivery, message, return_path="", delivered_to="jörg@example.org")
    assert isinstance(pending, PendingFile)
    deliver([pending])
    stored = pending.final_path.read_bytes()
    headers = "Return-Path: <>\r\nDelivered-To: jörg@example.org\r\n".encode()
    assert stored == headers + message
    assert size_from_name(pending.final_path.name) == len(stored)


def test_lf_message_gets_lf_headers(tmp_path: Path) -> None:
    delivery = MaildirDelivery(tmp_path, "mx.example.org")
    pending = prepare(delivery, b"Subject: local\n\nbody\n")
    assert isinstance(pending, PendingFile)
    assert pending.data.startswith(b"Return-Path: <bob@example.net>\nDelivered-To: ")


@pytest.mark.parametrize("field", ["return_path", "delivered_to"])
def test_header_injection_refused(tmp_path: Path, field: str) -> None:
    delivery = MaildirDelivery(tmp_path, "mx.example.org")
    with pytest.raises(ValueError):
        prepare(delivery, CRLF_MESSAGE, **{field: "x@example.org\r\nBcc: evil@example.net"})


def test_delivery_goes_through_tmp_into_new_of_a_private_maildir(tmp_path: Path) -> None:
    delivery = MaildirDelivery(tmp_path, "mx.example.org")
    pending = prepare(delivery, CRLF_MESSAGE)
    assert isinstance(pending, PendingFile)
    box = tmp_path / "mail" / "example.org" / "alice"
    assert pending.tmp_path.parent == box / "tmp"
    assert pending.final_path.parent == box / "new"
    assert pending.mode == 0o600
    for sub in ("cur", "new", "tmp"):
        assert stat.S_IMODE((box / sub).stat().st_mode) == 0o700
    deliver([pending])
    assert [p.name for p in (box / "new").iterdir()] == [pending.final_path.name]
    assert list((box / "tmp").iterdir()) == []


# ---------------------------------------------------------------------- quota


def make_existing_mail(box: Maildir) -> int:
    """Two messages already stored: one named with its size, one without (stat)."""
    box.create()
    (box.cur / "1600000000.M1P1Q1.old,S=1000:2,S").write_bytes(b"x" * 1000)
    (box.new / "1600000001.M1P1Q1.old").write_bytes(b"y" * 234)
    (box.cur / ".hidden-tool-file").write_bytes(b"z" * 5000)  # not a message
    return 1234


def test_quota_counts_existing_mail_and_this_process_deliveries(tmp_path: Path) -> None:
    delivery = MaildirDelivery(tmp_path, "mx.example.org")
    existing = make_existing_mail(delivery.mailbox("example.org", "alice"))
    size = STORED_SIZE
    quota = existing + 2 * size  # room for exactly two more

    first = prepare(delivery, CRLF_MESSAGE, quota=quota)
    second = prepare(delivery, CRLF_MESSAGE, quota=quota)
    assert isinstance(first, PendingFile) and isinstance(second, PendingFile)
    deliver([first, second])
    third = prepare(delivery, CRLF_MESSAGE, quota=quota)
    assert third == QuotaExceeded(used=existing + 2 * size, quota=quota)
    assert delivery.usage("example.org", "alice") == existing + 2 * size


def test_mailbox_listed_once_then_tracked_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans = []
    real_usage = Maildir.usage
    monkeypatch.setattr(Maildir, "usage", lambda self: scans.append(1) or real_usage(self))
    delivery = MaildirDelivery(tmp_path, "mx.example.org")
    for _ in range(3):
        assert isinstance(prepare(delivery, CRLF_MESSAGE, quota=10**9), PendingFile)
    assert len(scans) == 1


def test_abandon_gives_the_reservation_back(tmp_path: Path) -> None:
    delivery = MaildirDelivery(tmp_path, "mx.example.org")
    first = prepare(delivery, CRLF_MESSAGE, quota=200)
    assert isinstance(first, PendingFile)
    assert isinstance(prepare(delivery, CRLF_MESSAGE, quota=200), QuotaExceeded)
    delivery.abandon(first)  # its commit failed: the space is free again
    assert isinstance(prepare(delivery, CRLF_MESSAGE, quota=200), PendingFile)


def test_quota_exceeded_creates_nothing(tmp_path: Path) -> None:
    delivery = MaildirDelivery(tmp_path, "mx.example.org")
    result = prepare(delivery, CRLF_MESSAGE, quota=10)
    assert result == QuotaExceeded(used=0, quota=10)
    assert not (tmp_path / "mail").exists()


def test_usage_reads_sizes_from_names_without_stat(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "box")
    box.create()
    for i in range(200):
        (box.cur / f"{i}.M1P1Q{i}.h,S=100:2,S").touch()  # empty files: only names say 100
    assert box.usage() == 200 * 100


def test_abandon_makes_the_next_delivery_recreate_a_removed_mailbox(tmp_path: Path) -> None:
    delivery = MaildirDelivery(tmp_path, "mx.example.org")
    first = prepare(delivery, CRLF_MESSAGE)
    assert isinstance(first, PendingFile)
    shutil.rmtree(tmp_path / "mail")  # an operator removed the mailbox meanwhile
    delivery.abandon(first)  # what the SMTP layer does when the commit failed
    second = prepare(delivery, CRLF_MESSAGE)
    assert isinstance(second, PendingFile)
    deliver([second])
    assert second.final_path.read_bytes() == second.data


# -------------------------------------------------------------- mailbox names


@pytest.mark.parametrize(
    ("domain", "user"),
    [
        ("example.org", "../x"),
        ("example.org", ".."),
        ("example.org", "."),
        ("example.org", "a/b"),
        ("example.org", "a\\b"),
        ("example.org", "\x00"),
        ("example.org", "a\x00b"),
        ("example.org", "line\nbreak"),
        ("example.org", ""),
        ("example.org", "u" * 300),
        ("..", "alice"),
        ("../etc", "alice"),
        ("a/b", "alice"),
        ("", "alice"),
        ("d" * 300, "alice"),
        ("example.org", "\udcff"),  # not encodable: cannot be a file name as given
    ],
)
def test_mailbox_path_refuses_names_that_could_escape(
    tmp_path: Path, domain: str, user: str
) -> None:
    with pytest.raises(InvalidMailboxName):
        mailbox_path(tmp_path, domain, user)


def test_mailbox_path_of_a_normal_address(tmp_path: Path) -> None:
    assert mailbox_path(tmp_path, "example.org", "alice") == tmp_path / "mail/example.org/alice"
    assert mailbox_path(tmp_path, "例え.jp", "jörg.o'neil+x") == (
        tmp_path / "mail" / "例え.jp" / "jörg.o'neil+x"
    )
    assert mailbox_path(tmp_path, "example.org", "u" * 255).name == "u" * 255


def test_sweep_removes_only_stale_tmp_files(tmp_path):
    import os

    from mailops.runtime.store.maildir import STALE_TMP_SECONDS, sweep_stale_tmp

    now = 2_000_000_000.0
    box = tmp_path / "mail" / "example.org" / "alice"
    for folder in ("tmp", "new", ".Sent/tmp", ".Sent/cur"):
        (box / folder).mkdir(parents=True)
    stale = [box / "tmp" / "old", box / ".Sent" / "tmp" / "old"]
    fresh = box / "tmp" / "fresh"
    kept = [box / "new" / "old-but-delivered", box / ".Sent" / "cur" / "old-too"]
    for path in [*stale, fresh, *kept]:
        path.write_bytes(b"x")
    for path in [*stale, *kept]:
        os.utime(path, (now - STALE_TMP_SECONDS - 60,) * 2)
    os.utime(fresh, (now - 60,) * 2)
    assert sweep_stale_tmp(tmp_path, now=now) == 2
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and all(p.exists() for p in kept)
