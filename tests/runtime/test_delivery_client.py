"""The SMTP client against small in-process servers: next server on failure or 4xx,
per-recipient answers, connection reuse."""

from __future__ import annotations

import asyncio
import socket

from aiosmtpd.smtp import SMTP

from mailops.runtime.delivery.client import Pool, deliver
from mailops.runtime.delivery.router import Target

MESSAGE = b"From: a@here.test\r\nSubject: x\r\n\r\nbody\r\n"


class Handler:
    """Accepts everything except what it is told to refuse; keeps what it received."""

    def __init__(self, mail_reply=None, refuse=()):
        self.mail_reply = mail_reply
        self.refuse = set(refuse)
        self.received: list[tuple[str, list[str]]] = []

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
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 2.0.0 queued"


async def serve(handler):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(coro):
    return asyncio.run(coro)


def test_4xx_to_mail_and_a_dead_server_pass_the_mail_to_the_next():
    async def scenario():
        busy, busy_port = await serve(Handler(mail_reply="451 4.3.2 busy"))
        good_handler = Handler()
        good, good_port = await serve(good_handler)
        pool = Pool("mx.here.test", connect_timeout=2, command_timeout=5)
        targets = [
            Target("dead.far.test", "127.0.0.1", dead_port()),
            Target("busy.far.test", "127.0.0.1", busy_port),
            Target("good.far.test", "127.0.0.1", good_port),
        ]
        outcomes = await deliver(pool, targets, "a@here.test", ["b@far.test"], MESSAGE)
        await pool.close()
        busy.close()
        good.close()
        return outcomes, good_handler.received

    outcomes, received = run(scenario())
    assert outcomes["b@far.test"].state == "delivered"
    assert outcomes["b@far.test"].remote == "good.far.test"
    assert received == [("a@here.test", ["b@far.test"])]


def test_each_recipient_gets_its_own_answer():
    async def scenario():
        handler = Handler(refuse={"gone@far.test"})
        server, port = await serve(handler)
        pool = Pool("mx.here.test")
        targets = [Target("mx.far.test", "127.0.0.1", port)]
        rcpts = ["b@far.test", "gone@far.test"]
        outcomes = await deliver(pool, targets, "a@here.test", rcpts, MESSAGE)
        await pool.close()
        server.close()
        return outcomes

    outcomes = run(scenario())
    assert outcomes["b@far.test"].state == "delivered"
    gone = outcomes["gone@far.test"]
    assert (gone.state, gone.status) == ("failed", "5.1.1")
    assert gone.diagnostic == "smtp; 550 5.1.1 no such user"


def test_when_no_server_answers_every_recipient_waits():
    async def scenario():
        pool = Pool("mx.here.test", connect_timeout=2)
        targets = [Target("a.far.test", "127.0.0.1", dead_port())]
        return await deliver(pool, targets, "a@here.test", ["b@far.test", "c@far.test"], MESSAGE)

    outcomes = run(scenario())
    assert {o.state for o in outcomes.values()} == {"deferred"}
    assert outcomes["b@far.test"].status == "4.4.1"
    assert "connect to a.far.test [127.0.0.1]" in outcomes["b@far.test"].diagnostic


def test_a_connection_is_reused_for_the_next_message():
    async def scenario():
        handler = Handler()
        server, port = await serve(handler)
        pool = Pool("mx.here.test")
        target = Target("mx.far.test", "127.0.0.1", port)
        for n in range(5):
            await deliver(pool, [target], "a@here.test", [f"r{n}@far.test"], MESSAGE)
        opened = pool.opened
        await pool.close()
        server.close()
        return opened, handler.received

    opened, received = run(scenario())
    assert opened == 1
    assert [r for _, [r] in received] == [f"r{n}@far.test" for n in range(5)]


def test_mail_leaves_from_the_one_address_the_listener_is_bound_to():
    from mailops.runtime.delivery.client import source_addresses

    assert source_addresses(["203.0.113.5", "127.0.0.1"]) == {
        (4, False): "203.0.113.5",
        (4, True): "127.0.0.1",  # loopback targets only: it could reach nothing else
    }
    assert source_addresses(["0.0.0.0", "::"]) == {}  # the kernel chooses
    assert source_addresses(["203.0.113.5", "203.0.113.6"]) == {}  # which one? the kernel's
    assert source_addresses(["2001:db8::25"]) == {(6, False): "2001:db8::25"}

    async def scenario():
        handler = Handler()
        server, port = await serve(handler)
        pool = Pool("mx.here.test", listen=["127.0.0.1"])
        assert pool._source("127.0.0.1") == ("127.0.0.1", 0)
        assert pool._source("192.0.2.1") is None
        outcomes = await deliver(pool, [Target("mx.far.test", "127.0.0.1", port)],
                                 "a@here.test", ["b@far.test"], MESSAGE)  # fmt: skip
        await pool.close()
        server.close()
        return outcomes

    assert run(scenario())["b@far.test"].state == "delivered"
