"""CREATE, DELETE, RENAME, SUBSCRIBE, LIST (LIST-EXTENDED, SPECIAL-USE, CHILDREN,
LIST-STATUS), LSUB, STATUS and APPEND."""

from __future__ import annotations

import dataclasses

import pytest

from tests.runtime.imap_harness import RawClient, append, imap_server, tagged

MESSAGE = b"From: a@example.org\r\nSubject: hello\r\n\r\nbody\r\n"


@pytest.fixture
def server(tmp_path):
    with imap_server(tmp_path) as server:
        yield server


@pytest.fixture
def raw(server):
    client = RawClient(server.ports["imap"])
    client.login()
    return client


def listed(lines: list[bytes]) -> dict[bytes, bytes]:
    """{name: attributes} of LIST/LSUB responses."""
    out = {}
    for line in lines[:-1]:
        if line.startswith((b"* LIST ", b"* LSUB ")):
            attrs, rest = line.split(b") ", 1)
            out[rest.split(b" ", 1)[1].strip(b'"')] = attrs.split(b"(", 1)[1]
    return out


def test_new_account_has_inbox_and_special_use_folders(raw):
    got = listed(raw.call('LIST "" "*"'))
    assert got[b"INBOX"] == b"\\HasNoChildren"
    for name, role in ((b"Sent", b"\\Sent"), (b"Trash", b"\\Trash"), (b"Drafts", b"\\Drafts")):
        assert role in got[name]
    only_special = listed(raw.call('LIST (SPECIAL-USE) "" "*"'))
    assert b"INBOX" not in only_special and b"Junk" in only_special


def test_create_nested_percent_and_children(raw):
    assert tagged(raw.call("CREATE Lists.python.")).startswith(b"OK")  # trailing delimiter
    top = listed(raw.call('LIST "" "%"'))
    assert b"Lists" in top and b"Lists.python" not in top
    assert b"\\HasChildren" in top[b"Lists"]
    below = listed(raw.call('LIST "Lists." "%"'))
    assert list(below) == [b"Lists.python"]
    assert tagged(raw.call("CREATE Lists")).startswith(b"NO [ALREADYEXISTS]")
    assert tagged(raw.call("CREATE inbox")).startswith(b"NO [ALREADYEXISTS]")


def test_root_and_delimiter(raw):
    assert raw.call('LIST "" ""')[0] == b'* LIST (\\Noselect) "." ""'


def test_unsafe_names_are_refused(raw, server):
    for name in ('"../x"', '"a/b"', '"a..b"', '"' + "x" * 300 + '"'):
        assert tagged(raw.call(f"CREATE {name}")).startswith(b"NO"), name
    assert not any(p.name.startswith("..") for p in server.maildir().parent.iterdir())


def test_modified_utf7_names(raw, server):
    assert tagged(raw.call("CREATE &ZeVnLIqe-")).startswith(b"OK")  # 日本語
    assert b"&ZeVnLIqe-" in listed(raw.call('LIST "" "*"'))
    assert (server.maildir() / ".&ZeVnLIqe-").is_dir()
    assert tagged(raw.call("CREATE &Jjo")).startswith(b"BAD")  # not valid modified UTF-7
    raw.call("ENABLE UTF8=ACCEPT")
    names = listed(raw.call('LIST "" "*"'))
    assert "日本語".encode() in names


def test_delete_and_rename(raw, server):
    raw.call("CREATE Work.Old")
    raw.call(append("Work.Old", MESSAGE))
    assert tagged(raw.call("RENAME Work Job")).startswith(b"OK")
    names = listed(raw.call('LIST "" "*"'))
    assert b"Job.Old" in names and b"Work.Old" not in names
    assert tagged(raw.call("STATUS Job.Old (MESSAGES)")).startswith(b"OK")
    assert tagged(raw.call("RENAME Nothing Else")).startswith(b"NO [NONEXISTENT]")
    assert tagged(raw.call("RENAME Job Sent")).startswith(b"NO [ALREADYEXISTS]")
    assert tagged(raw.call("DELETE Job.Old")).startswith(b"OK")
    assert tagged(raw.call("DELETE Job.Old")).startswith(b"NO [NONEXISTENT]")
    assert tagged(raw.call("DELETE INBOX")).startswith(b"NO")


def test_rename_inbox_moves_its_mail(raw, server):
    server.deliver(MESSAGE)
    server.deliver(MESSAGE)
    assert tagged(raw.call("RENAME INBOX Saved")).startswith(b"OK")
    assert b"(MESSAGES 2)" in raw.call("STATUS Saved (MESSAGES)")[0]
    assert b"(MESSAGES 0)" in raw.call("STATUS INBOX (MESSAGES)")[0]


def test_subscribe_lsub_and_list_subscribed(raw):
    raw.call("CREATE A")
    raw.call("CREATE B")
    defaults = set(listed(raw.call('LSUB "" "*"')))  # INBOX and the special-use folders
    assert b"Sent" in defaults and b"A" not in defaults
    raw.call("SUBSCRIBE A")
    assert set(listed(raw.call('LSUB "" "*"'))) == defaults | {b"A"}
    extended = listed(raw.call('LIST "" "*" RETURN (SUBSCRIBED)'))
    assert b"\\Subscribed" in extended[b"A"] and b"\\Subscribed" not in extended[b"B"]
    assert set(listed(raw.call('LIST (SUBSCRIBED) "" "*"'))) == defaults | {b"A"}
    raw.call("UNSUBSCRIBE A")
    assert set(listed(raw.call('LSUB "" "*"'))) == defaults


def test_status_and_list_status(raw, server):
    server.deliver(MESSAGE)
    raw.call(append("INBOX", MESSAGE, "(\\Seen)"))
    line = raw.call("STATUS INBOX (MESSAGES UNSEEN UIDNEXT RECENT SIZE)")[0]
    size = sum(len(path.read_bytes()) for path in server.files())  # all CRLF already
    assert line.startswith(b"* STATUS INBOX (MESSAGES 2 UNSEEN 1 UIDNEXT 3 RECENT 2 SIZE ")
    assert int(line.rsplit(b" ", 1)[1].rstrip(b")")) == size
    lines = raw.call('LIST "" "INBOX" RETURN (STATUS (MESSAGES))')
    assert lines[:2] == [b'* LIST (\\HasNoChildren) "." INBOX', b"* STATUS INBOX (MESSAGES 2)"]
    assert tagged(raw.call("STATUS Nowhere (MESSAGES)")).startswith(b"NO [NONEXISTENT]")
    assert tagged(raw.call("STATUS INBOX (BOGUS)")).startswith(b"BAD")


def test_append_with_flags_date_and_uidplus(raw, server):
    date = b'"05-Feb-2024 10:20:30 +0100"'
    raw.send(b"a APPEND INBOX (\\Flagged $Work) %s {%d}\r\n" % (date, len(MESSAGE)))
    assert raw.line().startswith(b"+ ")
    raw.send(MESSAGE + b"\r\n")
    status = raw.until(b"a")[-1]
    assert status.startswith(b"a OK [APPENDUID ") and status.split()[4].rstrip(b"]") == b"1"
    (path,) = server.files()
    assert path.read_bytes() == MESSAGE and path.name.endswith(":2,F")
    assert int(path.stat().st_mtime) == 1707124830  # 09:20:30 UTC
    lines = raw.call("SELECT INBOX")
    assert b"$Work" in lines[0]


def test_append_refusals(raw):
    assert tagged(raw.call("APPEND Nowhere {5+}\r\nhello")).startswith(b"NO [TRYCREATE]")
    assert tagged(raw.call("APPEND INBOX {0+}\r\n")).startswith(b"NO")
    assert tagged(raw.call("APPEND INBOX (\\Recent) {5+}\r\nhello")).startswith(b"BAD")
    assert tagged(raw.call('APPEND INBOX "31-Feb-2024 10:00:00 +0000" {5+}\r\nhello')).startswith(
        b"BAD"
    )


def test_append_and_copy_over_quota(tmp_path):
    with imap_server(tmp_path) as server:
        directory = server.host.authenticator._directory()
        account = directory.accounts["alice@example.test"]
        directory.accounts[account.address] = dataclasses.replace(account, quota=3000)
        raw = RawClient(server.ports["imap"])
        raw.login()
        small = b"Subject: small\r\n\r\n" + b"x" * 1000
        assert tagged(raw.call(b"APPEND INBOX {%d+}\r\n" % len(small) + small)).startswith(b"OK")
        big = b"Subject: big\r\n\r\n" + b"x" * 5000
        status = tagged(raw.call(b"APPEND INBOX {%d+}\r\n" % len(big) + big))
        assert status.startswith(b"NO [OVERQUOTA]")
        raw.call("SELECT INBOX")
        assert tagged(raw.call("COPY 1 Trash")).startswith(b"OK [COPYUID")
        assert tagged(raw.call("COPY 1 Trash")).startswith(b"NO [OVERQUOTA]")  # 3 × 1018 > 3000
        assert len(server.files()) == 1
