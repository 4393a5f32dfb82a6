"""The POP3 command parser and wire encoding: total over any bytes, bounded, exact."""

from __future__ import annotations

import asyncio
import io
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailops.runtime.pop3 import parse, wire
from mailops.runtime.pop3.parse import Bad, Command
from mailops.runtime.store import Message


@given(st.binary(max_size=3000))
@settings(max_examples=500)
def test_any_bytes_give_a_command_or_bad(line: bytes) -> None:
    result = parse.parse_command(line)
    assert isinstance(result, Command | Bad)
    if isinstance(result, Command):
        assert len(line) <= parse.MAX_COMMAND_LINE + 2
        assert result.name.isalpha() and result.name.isupper() and 3 <= len(result.name) <= 4


@given(st.binary(min_size=parse.MAX_COMMAND_LINE + 1, max_size=parse.MAX_COMMAND_LINE + 50))
def test_long_lines_are_refused(line: bytes) -> None:
    assert parse.parse_command(b"NOOP " + line) == Bad("Line too long")


@given(st.text(max_size=30))
def test_numbers_are_digits_only(text: str) -> None:
    number = parse.message_number(text)
    if number is not None:
        assert text.isdigit() and number > 0 and str(number) == text.lstrip("0")


def test_commands_parse_case_insensitively_with_arguments() -> None:
    assert parse.parse_command(b"retr 12\r\n") == Command("RETR", ("12",), "12")
    assert parse.parse_command(b"PASS secret with spaces\r\n").rest == "secret with spaces"
    assert parse.parse_command(b"CAPA\n") == Command("CAPA", (), "")
    assert isinstance(parse.parse_command(b"\r\n"), Bad)
    assert isinstance(parse.parse_command(b"RETR\x001\r\n"), Bad)
    assert isinstance(parse.parse_command(b"\xff\xfe\r\n"), Bad)
    assert parse.message_number("0") is None and parse.message_number("-1") is None
    assert parse.message_number("٣") is None  # a digit, but not ASCII


def test_sasl_plain() -> None:
    assert parse.plain_credentials(b"\x00alice@example.test\x00pw") == ("alice@example.test", "pw")
    assert parse.plain_credentials(b"alice\x00alice\x00pw") == ("alice", "pw")
    assert parse.plain_credentials(b"bob\x00alice\x00pw") is None  # no acting as another
    assert parse.plain_credentials(b"alice\x00pw") is None
    assert parse.decode_base64("=") == b""
    assert parse.decode_base64("not base64!") is None


# ------------------------------------------------------------------------- wire


def message(data: bytes) -> Message:
    vsize = len(data) + data.count(b"\n") - data.count(b"\r\n")
    return Message(1, "k", frozenset(), 1, len(data), vsize, not data or data.endswith(b"\n"), 0)


def unstuff(wire_bytes: bytes) -> bytes:
    """What a client makes of a multi-line response body (RFC 1939 §3)."""
    assert wire_bytes.endswith(b"\r\n.\r\n") or wire_bytes == b".\r\n"
    body = wire_bytes[: -len(b".\r\n")]
    lines = body.split(b"\r\n")[:-1] if body else []
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


def encode(data: bytes, chunk: int, crlf_only: bool = False) -> bytes:
    stuffer = wire.Stuffer(crlf_only)
    parts = [stuffer.feed(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return b"".join(parts) + stuffer.finish()


@given(st.binary(max_size=400), st.integers(1, 50))
@settings(max_examples=400)
def test_stuffing_roundtrips_and_matches_the_announced_size(data: bytes, chunk: int) -> None:
    sent = encode(data, chunk)
    assert not re.search(rb"(?<!\r)\n", sent)  # every line end is CRLF
    assert b"\r\n.\r\n" not in sent[:-5]  # the terminator appears only at the end
    unstuffed = unstuff(sent)
    assert len(unstuffed) == wire.pop3_size(message(data))
    assert unstuffed.replace(b"\r\n", b"\n") == (
        data.replace(b"\r\n", b"\n") + (b"" if not data or data.endswith(b"\n") else b"\n")
    )


def test_crlf_only_fast_path_gives_the_same_bytes() -> None:
    data = b"Subject: x\r\n\r\n.hidden\r\n..two\r\nend\r\n"
    assert (
        encode(data, 7, crlf_only=True)
        == encode(data, 7)
        == (b"Subject: x\r\n\r\n..hidden\r\n...two\r\nend\r\n.\r\n")
    )


@given(st.binary(max_size=400))
@settings(max_examples=400)
def test_multiline_gives_what_the_stuffer_gives(data: bytes) -> None:
    """The whole-message fast path of RETR and TOP against the streaming one."""
    assert wire.multiline(b"+OK\r\n", data) == b"+OK\r\n" + encode(data, 7)
    crlf_clean = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert wire.multiline(b"", crlf_clean, crlf_only=True) == encode(crlf_clean, 5)


def test_multiline_edge_cases() -> None:
    def body(data: bytes, crlf_only: bool = False) -> bytes:
        return wire.multiline(b"", data, crlf_only)

    assert body(b"") == b".\r\n"
    assert body(b".") == b"..\r\n.\r\n"
    assert body(b"a\nb") == b"a\r\nb\r\n.\r\n"  # bare LF, no final newline
    assert body(b"a\r") == b"a\r\r\n.\r\n"  # as many octets as pop3_size says
    assert body(b"a\r\r\nb\n\r") == b"a\r\r\nb\r\n\r\r\n.\r\n"
    assert body(b".a\r\n.\r\n", crlf_only=True) == b"..a\r\n..\r\n.\r\n"
    assert body(b"\x00.\n.\x00\n") == b"\x00.\r\n..\x00\r\n.\r\n"


def test_top_returns_header_and_n_lines() -> None:
    data = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n"
    assert wire.top_of(io.BytesIO(data), 0) == b"A: 1\r\nB: 2\r\n\r\n"
    assert wire.top_of(io.BytesIO(data), 2) == b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n"
    assert wire.top_of(io.BytesIO(data), 99) == data
    assert wire.top_of(io.BytesIO(b"A: only header"), 3) == b"A: only header"


def test_uidl_is_the_base_name_or_a_hash_when_it_does_not_fit() -> None:
    plain = message(b"x")._replace(key="1700000000.M1P2Q3.host,S=10")
    assert wire.uidl(plain) == plain.key
    long = message(b"x")._replace(key="x" * 71)
    odd = message(b"x")._replace(key="name with spaces")
    for msg in (long, odd):
        value = wire.uidl(msg)
        assert len(value) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in value)
    assert wire.uidl(long) != wire.uidl(odd)


# --------------------------------------------------------------- session fuzzing


class FakeTransport(asyncio.Transport):
    """Collects what the connection writes; closing reports the loss as asyncio does."""

    def __init__(self, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.data = bytearray()
        self.closed = False

    def write(self, data) -> None:
        self.data += data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class FakeService:
    stopping = False

    def __init__(self) -> None:
        self.sessions: set = set()

    def config(self):
        class C:
            plaintext_auth_on_loopback = False

        return C()

    def tls(self):
        return None

    def idle_timeout(self) -> float:
        return 5.0

    def authenticator(self):
        class A:
            async def login(self, *args):
                return None

        return A()

    def store(self):
        raise AssertionError("no login can succeed here")


@given(st.lists(st.binary(max_size=300), max_size=20))
@settings(max_examples=150, deadline=None)
def test_a_session_survives_any_input_and_ends(chunks: list[bytes]) -> None:
    """Arbitrary bytes, in arbitrary pieces, never raise out of the connection and
    never hang it."""
    from mailops.runtime.pop3.connection import Pop3Connection

    async def scenario() -> bytes:
        service = FakeService()
        conn = Pop3Connection(service, implicit_tls=False)  # type: ignore[arg-type]
        transport = FakeTransport(conn)
        conn.connection_made(transport)
        for chunk in chunks:
            if transport.closed:
                break
            conn.get_buffer(len(chunk))[: len(chunk)] = chunk
            conn.buffer_updated(len(chunk))
            await asyncio.sleep(0)  # let a command that waits (AUTH) run
        if not transport.closed:
            conn.eof_received()
        for _ in range(1000):
            if not service.sessions:
                break
            await asyncio.sleep(0.01)
        assert transport.closed and not service.sessions
        return bytes(transport.data)

    out = asyncio.run(scenario())
    assert out.startswith(b"+OK")
    assert b"Traceback" not in out and b"Internal error" not in out
    for line in out.split(b"\r\n"):
        assert len(line) < 1000
