"""Messages for the SEARCH and text index tests: every way a message hides its text
(RFC 2047 headers, quoted-printable and base64 bodies, charsets, HTML, alternatives,
attachments, attached messages, raw 8-bit headers, folded fields) with the flags,
keywords and internal dates that the other search keys look at.

`CORPUS[i]` is appended as UID i + 1; `NEEDLES` are strings worth searching for
(found in some messages, or in none, or in a place a key must not look).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field


def day(year: int, month: int, dom: int, hour: int = 12) -> int:
    """An internal date (UTC seconds)."""
    return calendar.timegm((year, month, dom, hour, 0, 0))


@dataclass(frozen=True)
class Sample:
    data: bytes
    flags: tuple[str, ...] = ()
    internal_date: int = field(default_factory=lambda: day(2024, 5, 6))


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


CORPUS: list[Sample] = [
    # 1: plain ASCII, every address field.
    Sample(
        crlf(
            'From: "Alice Example" <alice@example.org>\n'
            "To: bob@example.net\nCc: carol@example.com\nSubject: Quarterly report\n"
            "Date: Tue, 7 May 2024 09:15:00 +0200\nMessage-ID: <1@example.org>\n\n"
            "Hello Bob,\nthe quarterly numbers are attached.\nRegards\n"
        ),
        ("\\Seen",),
        day(2024, 5, 7),
    ),
    # 2: encoded words (B and Q), quoted-printable UTF-8 body, a date west of UTC.
    Sample(
        b"From: =?UTF-8?B?SsO8cmdlbiBNw7xsbGVy?= <jm@example.de>\r\n"
        b"To: alice@example.org\r\n"
        b"Subject: =?iso-8859-1?q?Caf=E9_au?= =?iso-8859-1?q?_lait?=\r\n"
        b"Date: Sun, 31 Dec 2023 23:59:59 -0800\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Gr=C3=BC=C3=9Fe aus Z=C3=BCrich, soft=\r\nbreak joined.\r\n",
        ("\\Answered", "\\Seen"),
        day(2023, 12, 31, 23),
    ),
    # 3: multipart/alternative: both alternatives are the message's text.
    Sample(
        crlf(
            "From: bob@example.net\nTo: alice@example.org\nSubject: Airship plans\n"
            "Date: Wed, 8 May 2024 10:00:00 +0000\nMIME-Version: 1.0\n"
            'Content-Type: multipart/alternative; boundary="alt"\n\n'
            "--alt\nContent-Type: text/plain; charset=us-ascii\n\n"
            "The zeppelin leaves at noon.\n"
            "--alt\nContent-Type: text/html; charset=us-ascii\n\n"
            "<p>The <b>zeppelin</b> leaves at noon. htmlonlyword</p>\n"
            "--alt--\n"
        ),
        ("\\Flagged",),
        day(2024, 5, 8),
    ),
    # 4: HTML only, windows-1252 quoted-printable: tags, scripts and entities go.
    Sample(
        b"From: shop@example.com\r\nTo: alice@example.org\r\nSubject: Your order\r\n"
        b"Date: Thu, 9 May 2024 08:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=windows-1252\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"<html><head><title>titleword</title></head><body><div>Prix:</div> 100&nbsp;&euro;"
        b" <script>hiddenscript</script><span>na=EFve</span> cust<i>omer</i></body></html>\r\n",
        ("$Label1",),
        day(2024, 5, 9),
    ),
    # 5: multipart/mixed: text, a PDF (not text: not searched), a CSV attachment.
    Sample(
        crlf(
            "From: bob@example.net\nTo: alice@example.org\nSubject: Invoice attached\n"
            "Date: Fri, 10 May 2024 08:00:00 +0000\nMIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="mix"\n\n'
            "--mix\nContent-Type: text/plain\n\nSee the attachment.\n"
            "--mix\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n"
            "c2VjcmV0d29yZCBpbiBhIHBkZg==\n"
            "--mix\nContent-Type: text/csv\nContent-Disposition: attachment; filename=a.csv\n"
            "Content-Transfer-Encoding: base64\n\nbmFtZSxhbW91bnQKd2lkZ2V0LDQyCg==\n"
            "--mix--\n"
        ),
        ("\\Deleted", "Work"),
        day(2024, 5, 10),
    ),
    # 6: an attached message: its header and body are part of the outer body.
    Sample(
        crlf(
            "From: carol@example.com\nTo: alice@example.org\nSubject: Fwd: minutes\n"
            "Date: Sat, 11 May 2024 08:00:00 +0000\nMIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="fwd"\n\n'
            "--fwd\nContent-Type: text/plain\n\nForwarded message below.\n"
            "--fwd\nContent-Type: message/rfc822\n\n"
            "From: inner@example.org\nSubject: Inner subject\n\nInner body text.\n"
            "--fwd--\n"
        ),
        ("\\Draft",),
        day(2024, 5, 11),
    ),
    # 7: two To fields, a folded Subject, a Bcc, a private field, no Date.
    Sample(
        crlf(
            "From: dave@example.net\nTo: erin@example.org\nTo: frank@example.org\n"
            "Bcc: secret@example.com\nX-Custom: Alpha  Beta\n"
            "Subject: A folded\n subject line\n\nshort\n"
        ),
        ("\\Seen", "Work"),
        day(2024, 5, 12),
    ),
    # 8: a Date that is no date, a raw Latin-1 header, a KOI8-R body.
    Sample(
        b"From: ivan@example.ru\r\nTo: alice@example.org\r\nSubject: Ol\xe9 raw\r\n"
        b"Date: not a date\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=koi8-r\r\n\r\n"
        b"\xf0\xd2\xc9\xd7\xc5\xd4 \xcd\xc9\xd2\r\n",
        (),
        day(2024, 5, 12, 23),
    ),
    # 9: a character split across two encoded words; ISO-2022-JP; Shift_JIS body.
    Sample(
        b"From: =?ISO-2022-JP?B?GyRCN29MPhsoQg==?= <jp@example.jp>\r\n"
        b"To: alice@example.org\r\n"
        b"Subject: =?UTF-8?Q?=C3?= =?UTF-8?Q?=A9t=C3=A9?= plans\r\n"
        b"Date: Mon, 13 May 2024 01:00:00 +0900\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=shift_jis\r\n\r\n"
        b"\x93\xfa\x96{\x8c\xea\x82\xcc\x83e\x83L\x83X\x83g\r\n",
        ("\\Seen", "\\Flagged"),
        day(2024, 5, 13),
    ),
    # 10: an empty Subject, no From, an empty body.
    Sample(b"To: alice@example.org\r\nSubject: \r\nDate: Tue, 14 May 2024 08:00:00 +0000\r\n\r\n"),
    # 11: a bigger plain message with a word near its end.
    Sample(
        crlf(
            "From: bob@example.net\nTo: alice@example.org\nSubject: Long read\n"
            "Date: Wed, 15 May 2024 08:00:00 +0000\n\n"
            + "lorem ipsum dolor sit amet\n" * 200
            + "farewellword\n"
        ),
        ("\\Seen",),
        day(2024, 5, 15),
    ),
    # 12: bare LF line ends; base64 UTF-8 text; white space of every kind.
    Sample(
        b"From: grace@example.org\nTo: alice@example.org\nSubject: Tabs\tand  spaces\n"
        b"Date: Thu, 16 May 2024 08:00:00 +0000\nMIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        b"U3RyYcOfZSBpbSBUZXh0CnRhYgloZXJlICAgbXVsdGlwbGUgICBzcGFjZXMKbmV4dCBsaW5l\n",
        ("$Label1", "Work"),
        day(2024, 5, 16),
    ),
    # 13: decomposed characters (NFD), quotes and parentheses in a Subject.
    Sample(
        crlf(
            'From: heidi@example.org\nTo: alice@example.org\nSubject: "Quoted" (paren) caf'
            "e\u0301\nDate: Fri, 17 May 2024 08:00:00 +0000\nMIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\n\nDe\u0301ja\u0300 vu, cafe\u0301.\n"
        ),
        (),
        day(2024, 5, 17),
    ),
]

# Strings to search for: present in some messages, in none, or only where a key
# must not look (the PDF, <script>, the <title>, HTML tags).
NEEDLES = [
    "",
    "a",
    "é",
    "ex",
    "alice",
    "ALICE@EXAMPLE.ORG",
    "example",
    "bob",
    "quarterly",
    "jürgen müller",
    "JÜRGEN",
    "café au lait",
    "café",
    "grüße aus zürich",
    "softbreak",
    "zeppelin",
    "htmlonlyword",
    "100 €",
    "naïve",
    "hiddenscript",
    "titleword",
    "<b>",
    "customer",
    "secretword",
    "widget,42",
    "inner subject",
    "inner@example.org",
    "forwarded",
    "frank@",
    "secret@example.com",
    "alpha beta",
    "folded subject line",
    "olé",
    "привет мир",
    "件名",
    "été plans",
    "日本語",
    "farewellword",
    "straße",
    "strasse",
    "tab here multiple spaces next",
    "déjà vu",
    '"quoted" (paren)',
    "nothing-matches-this",
    "x-custom",
    "subject: inner",
]

HEADER_NAMES = ["from", "to", "cc", "bcc", "subject", "x-custom", "date", "received", "message-id"]
KEYWORDS = ["$Label1", "Work", "$label1", "Missing"]
DATES = ["31-Dec-2023", "1-Jan-2024", "7-May-2024", "10-May-2024", "12-May-2024", "20-May-2024"]
