"""Tricky messages for FETCH: the shapes MIME parsers get wrong. Each is bytes as it
would sit in a Maildir file; most use CRLF, a few bare LF or no final line break."""

from __future__ import annotations

import random


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


SIMPLE = crlf(
    "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\n"
    "From: Fred Foobar <foobar@Blurdybloop.example>\n"
    "Subject: afternoon meeting\n"
    "To: mooch@owatagu.siam.edu.example\n"
    "Message-Id: <B27397-0100000@Blurdybloop.example>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
    "\n"
    "Hello Joe, do you think we can meet at 3:30 tomorrow?\n"
)

ALTERNATIVE_WITH_ATTACHMENTS = crlf(
    "From: \"Doe, Jane\" <jane@example.test>\n"
    "To: bob@example.test, \"Carol (work)\" <carol@example.test>\n"
    "Cc: undisclosed-recipients:;\n"
    "Subject: =?UTF-8?Q?R=C3=A9union?= notes\n"
    "Date: Tue, 1 Feb 2022 10:00:00 +0100\n"
    "Message-ID: <alt.1@example.test>\n"
    "In-Reply-To: <prev@example.test>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed;\n"
    " boundary=\"outer-boundary\"\n"
    "\n"
    "This is a preamble.\n"
    "--outer-boundary\n"
    "Content-Type: multipart/alternative; boundary=inner\n"
    "\n"
    "--inner\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "R=C3=A9union at 10.\n"
    "Bring notes.\n"
    "--inner\n"
    "Content-Type: text/html; charset=\"utf-8\"\n"
    "Content-ID: <html@example.test>\n"
    "Content-Description: the HTML part\n"
    "Content-Language: en, fr\n"
    "Content-Location: http://example.test/a.html\n"
    "\n"
    "<p>R&eacute;union at 10.</p>\n"
    "--inner--\n"
    "--outer-boundary\n"
    "Content-Type: application/pdf; name=\"notes.pdf\"\n"
    "Content-Disposition: attachment; filename=\"notes.pdf\"; size=12\n"
    "Content-Transfer-Encoding: base64\n"
    "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
    "\n"
    "JVBERi0xLjQK\n"
    "--outer-boundary\n"
    "Content-Type: image/png\n"
    "Content-Disposition: inline\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "iVBORw0KGgo=\n"
    "--outer-boundary--\n"
    "This is the epilogue.\n"
)

NESTED_RFC822 = crlf(
    "From: forwarder@example.test\n"
    "To: someone@example.test\n"
    "Subject: Fwd: inner\n"
    "Date: Wed, 2 Feb 2022 11:00:00 +0000\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=\"b1\"\n"
    "\n"
    "--b1\n"
    "Content-Type: text/plain\n"
    "\n"
    "See the forwarded message.\n"
    "--b1\n"
    "Content-Type: message/rfc822\n"
    "Content-Description: forwarded\n"
    "\n"
    "From: Inner Sender <inner@example.test>\n"
    "To: forwarder@example.test\n"
    "Subject: inner\n"
    "Date: Tue, 1 Feb 2022 09:00:00 +0000\n"
    "Message-ID: <inner@example.test>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/alternative; boundary=\"b2\"\n"
    "\n"
    "--b2\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "\n"
    "inner text\n"
    "--b2\n"
    "Content-Type: text/html\n"
    "\n"
    "<b>inner</b>\n"
    "--b2--\n"
    "\n"
    "--b1--\n"
)

TOP_LEVEL_RFC822 = crlf(
    "From: a@example.test\n"
    "Subject: a message that is a message\n"
    "MIME-Version: 1.0\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: b@example.test\n"
    "Subject: the inner one\n"
    "\n"
    "inner body\n"
)

NO_CONTENT_TYPE = crlf(
    "From: plain@example.test\n"
    "To: Group: one@example.test, Two <two@example.test>;, three@example.test\n"
    "Subject: no content type\n"
    "\n"
    "Just text.\n"
    "Two lines.\n"
)

RFC2231_AND_ENCODED = crlf(
    "From: =?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@example.test>\n"
    "Sender: \"Quoted \\\"Name\\\"\" <sender@example.test>\n"
    "Reply-To: reply@example.test (a comment)\n"
    "To: =?UTF-8?B?w7xiZXI=?= <uber@example.test>\n"
    "Subject: =?UTF-8?B?w6nDqMOg?=\n"
    "  continued subject\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=x\n"
    "\n"
    "--x\n"
    "Content-Type: application/x-stuff;\n"
    " title*0*=us-ascii'en'This%20is%20even%20more%20;\n"
    " title*1*=%2A%2A%2Afun%2A%2A%2A%20;\n"
    " title*2=\"isn't it!\"\n"
    "Content-Disposition: attachment; filename*=UTF-8''%C3%A9t%C3%A9.txt\n"
    "\n"
    "stuff\n"
    "--x--\n"
)

NO_FINAL_NEWLINE = b"From: x@example.test\r\nSubject: no final newline\r\n\r\nlast line"

BARE_LF = (
    b"From: lf@example.test\n"
    b"Subject: bare LF\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=zz\n"
    b"\n"
    b"--zz\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"one\n"
    b"two\n"
    b"--zz\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"\n"
    b"mixed\r\nendings\n"
    b"--zz--\n"
)

HEADER_ONLY = b"From: h@example.test\r\nSubject: header only\r\n"

EIGHT_BIT = (
    "From: Jörg Müller <joerg@example.test>\r\n"
    "Subject: Grüße aus Köln\r\n"
    "To: ünïcödé@example.test\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Schöne Grüße\r\n"
).encode()

ODD_ADDRESSES = crlf(
    "From: <>\n"
    "To: just-local, @route1,@route2:user@host.example, \"\" <empty@name.example>\n"
    "Cc: A Group:;, B Group: b1@x.example;\n"
    "Bcc: broken <no-at-sign>, missing@\n"
    "Subject: odd addresses\n"
    "\n"
    "x\n"
)

EMPTY_BODY_MULTIPART = crlf(
    "From: e@example.test\n"
    "Content-Type: multipart/mixed; boundary=\"nothing\"\n"
    "\n"
    "no boundary ever appears\n"
)

DIGEST = crlf(
    "From: digest@example.test\n"
    "Subject: digest\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/digest; boundary=d\n"
    "\n"
    "--d\n"
    "\n"
    "From: one@example.test\n"
    "Subject: one\n"
    "\n"
    "first\n"
    "--d\n"
    "Content-Type: text/plain\n"
    "\n"
    "not a message\n"
    "--d--\n"
)

LONG_HEADERS = crlf(
    "Received: from a by b;\n"
    "\tMon, 7 Feb 1994 21:52:25 -0800\n"
    "From: Long <long@example.test>\n"
    "Subject: folded\n"
    "\tsubject line\n"
    "X-Empty:\n"
    "x-lower: value\n"
    "Content-Type: text/plain;\n"
    "\tcharset=\"iso-8859-1\";\n"
    "\tformat=flowed\n"
    "\n"
    "body\n"
)

CORPUS: dict[str, bytes] = {
    "simple": SIMPLE,
    "alternative": ALTERNATIVE_WITH_ATTACHMENTS,
    "nested": NESTED_RFC822,
    "top-rfc822": TOP_LEVEL_RFC822,
    "no-content-type": NO_CONTENT_TYPE,
    "rfc2231": RFC2231_AND_ENCODED,
    "no-final-newline": NO_FINAL_NEWLINE,
    "bare-lf": BARE_LF,
    "header-only": HEADER_ONLY,
    "8bit": EIGHT_BIT,
    "odd-addresses": ODD_ADDRESSES,
    "empty-multipart": EMPTY_BODY_MULTIPART,
    "digest": DIGEST,
    "long-headers": LONG_HEADERS,
}


# ------------------------------------------------------------------ random messages
#
# Messages built from a seed, mixing the shapes above with broken ones: boundaries
# that prefix others or repeat, delimiters with trailing text or missing, headers
# without an empty line, repeated and folded fields, odd addresses and parameters,
# bare LF line ends. Used to compare with Dovecot byte for byte.

_WORDS = ["alpha", "beta", "gamma", "x", "y", "hello", "world", "=?UTF-8?Q?caf=C3=A9?="]
_ADDRESSES = [
    "a@b.example", "Bob <bob@x.example>", '"Doe, J" <j@d.example>', "<c@d>",
    "undisclosed-recipients:;", "G: a@b, c@d;", "e@f (Eve)", "broken <x", '"q\\"uote" <q@q>',
    "x@", "@y", "just", "a@[1.2.3.4]", "<@r1,@r2:u@h>", "a . b @ c . d",
    "John Q. Public <jqp@x.y>", "=?UTF-8?B?w7w=?= <u@v>", "", "a@b,", '"" <e@e>', "Grp:;",
    "a@b (c) (d)", "Müller <m@x>",
]  # fmt: skip
_VALUES = {
    "Subject": ["hi", "  spaced  out  ", "tab\there", '"quoted"', "back\\slash", "", "café",
                "a\r\n b", " ", "x\\\\\\\\\\y"],
    "Date": ["Mon, 1 Jan 2024 10:00:00 +0000", "bad date", "Mon,\r\n 1 Jan 2024", " x "],
    "Message-ID": ["<a@b>", "  <a@b>  ", "\r\n <c@d>", "<a\\b@c>"],
    "In-Reply-To": ["<a@b> <c@d>", ""],
    "Content-ID": ["<id@x>", '"q"'],
    "Content-Description": ["desc", "two\r\n lines", "café"],
    "Content-Language": ["en", "en, fr", "(c) en", "", "12"],
    "Content-Location": ["http://x/y", "a b"],
    "Content-MD5": ["Q2hlY2s=", ""],
    "Content-Disposition": ["attachment", "inline; filename=a.txt", "; x=y",
                            'attachment; filename="a b.txt"', "ATTACHMENT; FILENAME*=utf-8''%C3%A9",
                            "inline; a*0=x; a*1=y"],
    "Content-Transfer-Encoding": ["7bit", "BASE64", "x-foo bar", "", "(c) 8bit"],
}  # fmt: skip
_ADDRESS_FIELDS = ("From", "To", "Cc", "Bcc", "Sender", "Reply-To")
_FIELD_NAMES = [*_ADDRESS_FIELDS, *_VALUES, "X-Foo", "Received"]
_LEAF_TYPES = [
    "text/plain", "text/html", "TEXT/Plain", "application/octet-stream", "text", "foo/",
    "text/plain; charset=utf-8", 'text/plain; charset="iso-8859-1"; format=flowed',
    "application/x; name*0*=us-ascii'en'a%20; name*1*=b; name*2=\"c d\"",
    "text/plain; x==?utf-8?b?QQ==?=", "text/plain bad", "text/plain; =x",
]  # fmt: skip


class _RandomMessage:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.nl = "\r\n"

    def pick(self, choices):
        return self.rng.choice(choices)

    def fields(self, extra: list[str]) -> list[str]:
        out = list(extra)
        for _ in range(self.rng.randint(0, 5)):
            name = self.pick(_FIELD_NAMES)
            if name in _ADDRESS_FIELDS:
                value = ", ".join(self.pick(_ADDRESSES) for _ in range(self.rng.randint(1, 3)))
            else:
                value = self.pick(_VALUES.get(name, ["v"]))
            spelled = self.pick([name, name.upper(), name.lower()])
            out.append(f"{spelled}:{self.pick([' ', '', '  ', chr(9)])}{value}")
        self.rng.shuffle(out)
        if self.rng.random() < 0.1:
            out.append("MIME-Version: 1.0")
        return out

    def text(self) -> str:
        lines = [
            " ".join(self.pick(_WORDS) for _ in range(self.rng.randint(0, 5)))
            for _ in range(self.rng.randint(0, 4))
        ]
        if self.rng.random() < 0.1:
            lines.append("--not-a-boundary")
        return self.nl.join(lines)

    def entity(self, depth: int) -> str:
        nested = ["multipart", "multipart", "message"] if depth < 3 else []
        kind = self.pick(["leaf"] * 4 + nested)
        if kind == "multipart":
            return self.multipart(depth)
        if kind == "message":
            head = self.fields(["Content-Type: " + self.pick(["message/rfc822", "Message/RFC822"])])
            return self.nl.join(head) + self.nl + self.nl + self.entity(depth + 1)
        extra = ["Content-Type: " + self.pick(_LEAF_TYPES)] if self.rng.random() < 0.7 else []
        empty_line = self.nl if self.rng.random() < 0.9 else ""
        return self.nl.join(self.fields(extra)) + self.nl + empty_line + self.text()

    def multipart(self, depth: int) -> str:
        rng, nl = self.rng, self.nl
        subtype = self.pick(["mixed", "alternative", "digest", "related"])
        boundary = self.pick(["b", "bb", "=_x", f"b{depth}", "ab", "simple boundary"])
        boundary += str(rng.randint(0, 3))
        if rng.random() < 0.5:
            spec = f'"{boundary}"'
        else:
            boundary = boundary.replace(" ", "")
            spec = boundary
        head = self.fields([f"Content-Type: multipart/{subtype}; boundary={spec}"])
        body = "preamble" + nl if rng.random() < 0.3 else ""
        for _ in range(rng.randint(0, 3)):
            trail = self.pick(["", "", " ", "garbage"])
            body += f"--{boundary}{trail}{nl}{self.entity(depth + 1)}{nl}"
        if rng.random() < 0.85:
            body += f"--{boundary}--{self.pick(['', '', ' trailing'])}{nl}"
        if rng.random() < 0.3:
            body += "epilogue" + nl
        return nl.join(head) + nl + nl + body

    def message(self) -> bytes:
        self.nl = "\n" if self.rng.random() < 0.15 else "\r\n"
        text = self.entity(0)
        ending = self.rng.random()
        if ending < 0.2:
            text = text.rstrip("\r\n")
        elif ending < 0.6:
            text += self.nl
        return text.encode("utf-8")


def random_message(seed: int) -> bytes:
    return _RandomMessage(seed).message()
