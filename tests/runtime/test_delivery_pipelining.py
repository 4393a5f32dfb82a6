"""PIPELINING (RFC 2920) on both sides: the client sends MAIL, RCPT… and DATA in one
go when the server offers it, and one at a time when not; mailops's SMTP session
sends the replies of a pipelined group together. The servers here are written
for one test each where the point is what arrives when."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import ClassVar

import pytest
from aiosmtpd.smtp import SMTP

from mailops.runtime.delivery.client import Pool, deliver
from mailops.runtime.delivery.router import Target
from mailops.runtime.smtp.session import Session

MESSAGE = b"From: a@here.test\r\nSubject: x\r\n\r\nbody\r\n"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def listen(handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def greet(reader, writer, *, pipelining: bool) -> None:
    writer.write(b"220 scripted ESMTP\r\n")
    assert (await reader.readline()).startswith(b"EHLO")
    writer.write(
        b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n" if pipelining else b"250 scripted\r\n"
    )


async def quit_if_asked(reader, writer) -> None:
    if await reader.readline() == b"QUIT\r\n":
        writer.write(b"221 bye\r\n")
    writer.close()


def target(port: int) -> Target:
    return Target("mx.far.test", "127.0.0.1", port)


# ---------------------------------------------------------------- the client


def test_with_pipelining_the_envelope_goes_before_any_reply():
    lines: list[bytes] = []

    async def withholding(reader, writer):
        await greet(reader, writer, pipelining=True)
        # Not a word until DATA is in: a client waiting for MAIL's reply stalls here.
        while not lines or lines[-1] != b"DATA\r\n":
            lines.append(await reader.readline())
            if not lines[-1]:
                return  # the client gave up waiting
        writer.write(b"250 sender ok\r\n" + b"250 rcpt ok\r\n" * (len(lines) - 2) + b"354 go\r\n")
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 queued\r\n")
        await quit_if_asked(reader, writer)

    async def scenario():
        server, port = await listen(withholding)
        pool = Pool("mx.here.test", command_timeout=3)
        rcpts = ["b@far.test", "c@far.test"]
        outcomes = await deliver(pool, [target(port)], "a@here.test", rcpts, MESSAGE)
        await pool.close()
        server.close()
        return outcomes

    outcomes = run(scenario())
    assert {o.state for o in outcomes.values()} == {"delivered"}
    assert lines == [
        b"MAIL FROM:<a@here.test>\r\n",
        b"RCPT TO:<b@far.test>\r\n",
        b"RCPT TO:<c@far.test>\r\n",
        b"DATA\r\n",
    ]


def test_without_pipelining_each_command_waits_for_its_reply():
    early: list[bytes] = []  # commands that arrived before the previous one was answered

    async def strict(reader, writer):
        await greet(reader, writer, pipelining=False)
        while True:
            line = await reader.readline()
            # Anything more before we answer means the client did not wait.
            with contextlib.suppress(TimeoutError):
                early.append(await asyncio.wait_for(reader.readline(), 0.1))
            if line.startswith((b"MAIL", b"RCPT")):
                writer.write(b"250 ok\r\n")
            elif line == b"DATA\r\n":
                writer.write(b"354 go\r\n")
                await reader.readuntil(b"\r\n.\r\n")
                writer.write(b"250 queued\r\n")
            else:
                writer.write(b"221 bye\r\n")
                writer.close()
                return

    async def scenario():
        server, port = await listen(strict)
        pool = Pool("mx.here.test", command_timeout=3)
        rcpts = ["b@far.test", "c@far.test"]
        outcomes = await deliver(pool, [target(port)], "a@here.test", rcpts, MESSAGE)
        await pool.close()
        server.close()
        return outcomes

    outcomes = run(scenario())
    assert {o.state for o in outcomes.values()} == {"delivered"}
    assert early == []


class Recorder:
    """aiosmtpd hooks: refuse what it is told to, keep what it gets, and offer
    PIPELINING or not (plain aiosmtpd answers each command as it reads it)."""

    def __init__(self, *, pipelining: bool, refuse=(), mail_reply=None):
        self.pipelining = pipelining
        self.refuse = set(refuse)
        self.mail_reply = mail_reply
        self.received: list[tuple[list[str], bytes]] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]] if self.pipelining else responses

    async def handle_MAIL(self, server, session, envelope, address, options):
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 queued"


async def serve(handler, session=SMTP):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: session(handler), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "lockstep"])
def test_a_transaction_with_no_recipient_is_reset_and_the_session_carries_on(pipelining):
    async def scenario():
        handler = Recorder(pipelining=pipelining, refuse={"gone@far.test"})
        server, port = await serve(handler)
        pool = Pool("mx.here.test", command_timeout=3)
        first = await deliver(pool, [target(port)], "a@here.test", ["gone@far.test"], MESSAGE)
        second = await deliver(pool, [target(port)], "a@here.test", ["b@far.test"], MESSAGE)
        opened = pool.opened
        await pool.close()
        server.close()
        return first, second, opened, handler.received

    first, second, opened, received = run(scenario())
    assert (first["gone@far.test"].state, first["gone@far.test"].status) == ("failed", "5.1.1")
    assert second["b@far.test"].state == "delivered"
    assert opened == 1  # RSET made the session clean again
    assert [rcpts for rcpts, _ in received] == [["b@far.test"]]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "lockstep"])
def test_a_refused_sender_fails_every_recipient_and_the_next_message_still_goes(pipelining):
    async def scenario():
        refusing = Recorder(pipelining=pipelining, mail_reply="550 5.7.1 not you")
        server, port = await serve(refusing)
        pool = Pool("mx.here.test", command_timeout=3)
        rcpts = ["b@far.test", "c@far.test"]
        first = await deliver(pool, [target(port)], "a@here.test", rcpts, MESSAGE)
        refusing.mail_reply = None
        second = await deliver(pool, [target(port)], "a@here.test", ["b@far.test"], MESSAGE)
        await pool.close()
        server.close()
        return first, second, refusing.received

    first, second, received = run(scenario())
    assert {(o.state, o.status) for o in first.values()} == {("failed", "5.7.1")}
    assert second["b@far.test"].state == "delivered"
    assert [rcpts for rcpts, _ in received] == [["b@far.test"]]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "lockstep"])
def test_dots_are_doubled_and_bare_line_ends_become_crlf(pipelining):
    message = b".first line\r\nbare LF\n.\r\n..two\rend"

    async def scenario():
        handler = Recorder(pipelining=pipelining)
        # mailops's own session reads DATA strictly to CRLF.CRLF, unstuffing dots.
        server, port = await serve(handler, session=Session)
        pool = Pool("mx.here.test", command_timeout=3)
        outcomes = await deliver(pool, [target(port)], "a@here.test", ["b@far.test"], message)
        await pool.close()
        server.close()
        return outcomes, handler.received

    outcomes, received = run(scenario())
    assert outcomes["b@far.test"].state == "delivered"
    assert received == [(["b@far.test"], b".first line\r\nbare LF\r\n.\r\n..two\r\nend\r\n")]


def test_a_session_lost_after_the_message_was_sent_leaves_everyone_waiting():
    async def vanishing(reader, writer):
        await greet(reader, writer, pipelining=True)
        for _ in range(3):
            await reader.readline()
        writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
        await reader.readuntil(b"\r\n.\r\n")
        writer.close()  # no final reply: the client cannot know whether it was taken

    async def scenario():
        server, port = await listen(vanishing)
        pool = Pool("mx.here.test", command_timeout=3)
        outcomes = await deliver(pool, [target(port)], "a@here.test", ["b@far.test"], MESSAGE)
        await pool.close()
        server.close()
        return outcomes

    outcome = run(scenario())["b@far.test"]
    assert (outcome.state, outcome.status) == ("deferred", "4.4.2")
    assert "connection lost" in outcome.diagnostic


def test_a_goodbye_sent_while_idle_retires_the_pooled_session():
    sessions = []

    async def leaving(reader, writer):
        sessions.append(writer)
        await greet(reader, writer, pipelining=True)
        for _ in range(3):
            await reader.readline()
        writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 queued\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        # Shutting down between transactions, as RFC 5321 §3.8 allows. The client
        # must not read this as the answer to its next MAIL.
        writer.write(b"421 4.3.2 shutting down\r\n")
        await asyncio.sleep(5)
        writer.close()

    async def scenario():
        server, port = await listen(leaving)
        pool = Pool("mx.here.test", command_timeout=3)
        first = await deliver(pool, [target(port)], "a@here.test", ["b@far.test"], MESSAGE)
        await asyncio.sleep(0.3)
        second = await deliver(pool, [target(port)], "a@here.test", ["c@far.test"], MESSAGE)
        for writer in sessions:
            writer.close()
        server.close()
        return first, second, pool.opened

    first, second, opened = run(scenario())
    assert first["b@far.test"].state == "delivered"
    assert second["c@far.test"].state == "delivered"
    assert opened == 2


def test_a_354_without_any_recipient_is_ended_with_a_lone_dot():
    data: list[bytes] = []

    async def sloppy(reader, writer):
        await greet(reader, writer, pipelining=True)
        for _ in range(3):
            await reader.readline()
        writer.write(b"250 ok\r\n550 5.1.1 unknown\r\n354 go anyway\r\n")
        data.append(await reader.readuntil(b".\r\n"))
        writer.write(b"554 5.5.1 no valid recipients\r\n")
        await quit_if_asked(reader, writer)

    async def scenario():
        server, port = await listen(sloppy)
        pool = Pool("mx.here.test", command_timeout=3)
        outcomes = await deliver(pool, [target(port)], "a@here.test", ["gone@far.test"], MESSAGE)
        await pool.close()
        server.close()
        return outcomes

    outcome = run(scenario())["gone@far.test"]
    assert (outcome.state, outcome.status) == ("failed", "5.1.1")
    assert data == [b".\r\n"]  # the message itself never went


async def one_behind_the_other(port: int, first_in: asyncio.Event) -> tuple[dict, dict, int]:
    """Deliver one message, and a second once the server has the first one's data
    (and has not answered it yet): the second finds the session in the pool."""
    pool = Pool("mx.here.test", command_timeout=3)
    first = asyncio.create_task(
        deliver(pool, [target(port)], "a@here.test", ["b@far.test"], MESSAGE)
    )
    await first_in.wait()
    second = await deliver(pool, [target(port)], "a@here.test", ["c@far.test"], MESSAGE)
    outcomes = await first, second
    await pool.close()
    return *outcomes, pool.opened


def test_the_next_message_follows_the_previous_one_before_its_reply():
    """Two messages for one server: the second's MAIL, RCPT and DATA follow the first
    message on the same session before the first's final reply (RFC 2920 §3.1). The
    server here withholds that reply until the second DATA is in: a client that waits
    for it before sending more stalls until its timeout."""
    stream: list[bytes] = []
    first_in = asyncio.Event()

    async def withholding(reader, writer):
        await greet(reader, writer, pipelining=True)
        for _ in range(3):
            stream.append(await reader.readline())
        writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
        stream.append(await reader.readuntil(b"\r\n.\r\n"))
        first_in.set()
        for _ in range(3):
            stream.append(await reader.readline())
        writer.write(b"250 first queued\r\n250 ok\r\n250 ok\r\n354 go\r\n")
        stream.append(await reader.readuntil(b"\r\n.\r\n"))
        writer.write(b"250 second queued\r\n")
        await quit_if_asked(reader, writer)

    async def scenario():
        server, port = await listen(withholding)
        outcomes = await one_behind_the_other(port, first_in)
        server.close()
        return outcomes

    first, second, opened = run(scenario())
    assert first["b@far.test"].diagnostic == "smtp; 250 first queued"
    assert second["c@far.test"].diagnostic == "smtp; 250 second queued"
    assert opened == 1
    assert stream[4:7] == [b"MAIL FROM:<a@here.test>\r\n", b"RCPT TO:<c@far.test>\r\n", b"DATA\r\n"]


def test_a_message_refused_late_does_not_disturb_the_one_behind_it():
    first_in = asyncio.Event()

    async def picky(reader, writer):
        await greet(reader, writer, pipelining=True)
        for reply in (b"451 4.3.0 try later\r\n", b"250 queued\r\n"):
            for _ in range(3):
                await reader.readline()
            writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
            await reader.readuntil(b"\r\n.\r\n")
            first_in.set()
            await asyncio.sleep(0.2)  # the next message's commands come in meanwhile
            writer.write(reply)
        await quit_if_asked(reader, writer)

    async def scenario():
        server, port = await listen(picky)
        outcomes = await one_behind_the_other(port, first_in)
        server.close()
        return outcomes

    first, second, opened = run(scenario())
    assert (first["b@far.test"].state, first["b@far.test"].status) == ("deferred", "4.3.0")
    assert second["c@far.test"].state == "delivered"
    assert opened == 1  # a 4xx for one message is no reason to drop the session


def test_a_session_lost_after_a_message_sends_the_one_behind_it_on_a_new_session():
    sessions: list[int] = []
    first_in = asyncio.Event()

    async def failing_once(reader, writer):
        sessions.append(len(sessions))
        await greet(reader, writer, pipelining=True)
        for _ in range(3):
            await reader.readline()
        writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
        await reader.readuntil(b"\r\n.\r\n")
        first_in.set()
        if len(sessions) == 1:
            await reader.readuntil(b"DATA\r\n")  # the next message's commands are in
            writer.close()  # and the first message gets no reply
            return
        writer.write(b"250 queued\r\n")
        await quit_if_asked(reader, writer)

    async def scenario():
        server, port = await listen(failing_once)
        outcomes = await one_behind_the_other(port, first_in)
        server.close()
        return outcomes

    first, second, opened = run(scenario())
    # The first message's fate is unknown: it waits (a retry may duplicate, never lose it).
    assert (first["b@far.test"].state, first["b@far.test"].status) == ("deferred", "4.4.2")
    # The second got no reply to MAIL, so nobody has it: it went again on a new session.
    assert second["c@far.test"].state == "delivered"
    assert opened == 2


# ---------------------------------------------------------------- the server


class Accepting:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 queued"


class CountingSession(Session):
    """mailops's session, noting each write it makes to the socket."""

    writes: ClassVar[list[bytes]] = []

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        write = transport.write

        def counted(data) -> None:
            CountingSession.writes.append(bytes(data))
            write(data)

        transport.write = counted


def converse(port: int, *chunks: bytes) -> list[bytes]:
    """Send each chunk and collect the reply lines to it until the last is final."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        for chunk, expected in chunks:
            sock.sendall(chunk)
            got = []
            while len([x for x in got if x[3:4] == b" "]) < expected:
                got.append(reader.readline())
            answers.append(b"".join(got))
    return answers


def test_the_replies_to_a_pipelined_group_go_out_in_one_write():
    async def scenario():
        server, port = await serve(Accepting(), session=CountingSession)
        group = (
            b"MAIL FROM:<a@far.test>\r\nRCPT TO:<b@here.test>\r\nRCPT TO:<c@here.test>\r\nDATA\r\n"
        )
        CountingSession.writes.clear()
        answers = await asyncio.to_thread(
            converse, port, (b"EHLO far.test\r\n", 1), (group, 4), (b"x\r\n.\r\n", 1)
        )
        server.close()
        return answers, list(CountingSession.writes)

    answers, writes = run(scenario())
    assert answers[1].split(b"\r\n")[:-1] == [
        b"250 OK",
        b"250 OK",
        b"250 OK",
        b"354 End data with <CR><LF>.<CR><LF>",
    ]
    assert answers[1] in writes  # the four replies, together, in one write


def test_the_reply_to_a_message_goes_out_with_the_replies_to_the_next_commands():
    async def scenario():
        server, port = await serve(Accepting(), session=CountingSession)
        envelope = b"MAIL FROM:<a@far.test>\r\nRCPT TO:<b@here.test>\r\nDATA\r\n"
        CountingSession.writes.clear()
        answers = await asyncio.to_thread(
            converse,
            port,
            (b"EHLO far.test\r\n", 1),
            (envelope, 3),
            (b"first\r\n.\r\n" + envelope, 4),
            (b"second\r\n.\r\n", 1),
        )
        server.close()
        return answers, list(CountingSession.writes)

    answers, writes = run(scenario())
    assert answers[2].split(b"\r\n")[:-1] == [
        b"250 2.0.0 queued",
        b"250 OK",
        b"250 OK",
        b"354 End data with <CR><LF>.<CR><LF>",
    ]
    assert answers[2] in writes
    assert answers[3] == b"250 2.0.0 queued\r\n"  # nothing behind it: sent all the same


def test_a_client_that_waits_for_each_reply_gets_it():
    async def scenario():
        server, port = await serve(Accepting(), session=Session)
        answers = await asyncio.to_thread(
            converse,
            port,
            (b"EHLO far.test\r\n", 1),
            (b"MAIL FROM:<a@far.test>\r\n", 1),
            (b"RCPT TO:<b@here.test>\r\n", 1),
            (b"RSET\r\n", 1),
        )
        server.close()
        return answers

    answers = run(scenario())
    assert answers[1:] == [b"250 OK\r\n", b"250 OK\r\n", b"250 OK\r\n"]
