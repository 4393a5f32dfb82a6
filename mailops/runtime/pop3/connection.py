"""One POP3 client's socket: bytes in → command lines for the session, replies out.

An `asyncio.BufferedProtocol` rather than asyncio streams, for the sake of the
command round trip, which is what a POP3 download costs (one RETR per message):

- the socket is read into one buffer made once per connection; a stream protocol
  gets a new 256 KiB bytes object per read, which the allocator maps and unmaps
  (three system calls per command);
- a command that needs no waiting (all of TRANSACTION but QUIT) runs straight from
  the read callback and writes its reply at once: no task wake-up, no future;
- after a RETR's reply is sent, the session reads the next message ahead while the
  client takes this one in (`after_reply`): the file work is off the round trip;
- a command that waits (login, STLS, QUIT) runs as a task; lines that arrive
  meanwhile stay buffered and are taken in order when it is done;
- the idle timeout is one timer for the connection, which looks at the time of the
  last command when it fires, instead of a timeout scheduled and cancelled per line.

Flow control: while the transport's write buffer is over its high-water mark (the
client reads slower than we answer), no further command is taken; while too much
unread input piles up (pipelining), the transport stops reading.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

from mailops.runtime.log import log
from mailops.runtime.pop3.parse import MAX_LINE
from mailops.runtime.pop3.session import Pop3Session, SessionOver

if TYPE_CHECKING:
    from mailops.runtime.pop3.server import Pop3Service

RECV_BUFFER = 64 * 1024  # what one read may take: a burst of pipelined commands
MAX_PENDING_INPUT = 64 * 1024  # unread input beyond this pauses reading from the socket
WRITE_HIGH_WATER = 1 << 20  # stop taking commands while this much waits for the client
CLOSE_GRACE = 5.0  # seconds a closing connection may take to flush before it is cut

LINE_TOO_LONG = b"-ERR Line too long, closing the connection\r\n"
INTERNAL_ERROR = b"-ERR [SYS/TEMP] Internal error, closing the connection\r\n"


class Pop3Connection(asyncio.BufferedProtocol):
    def __init__(self, service: Pop3Service, implicit_tls: bool) -> None:
        self.service = service
        self.tls = implicit_tls
        self.client = "unknown"
        self.transport: asyncio.Transport | None = None
        self.session = Pop3Session(self, service)
        self._loop = asyncio.get_running_loop()
        self._recv = memoryview(bytearray(RECV_BUFFER))
        self._input = b""  # received and not yet taken as lines, from _start on
        self._start = 0
        self._eof = False  # the client will send nothing more
        self._reading_paused = False
        self._writing_paused = False
        self._task: asyncio.Task[None] | None = None  # a command that waits, in progress
        self._line_waiter: asyncio.Future[bytes] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._last_command = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._lost = False
        self._cleaned_up = False
        self._cut: asyncio.TimerHandle | None = None
        self._release: asyncio.Task[None] | None = None  # the mailbox's, after the end

    @property
    def busy(self) -> bool:
        """A command is in progress (shutdown lets it finish)."""
        return self._task is not None

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: other loops' transports (uvloop's) do not
        # derive from asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        self.service.sessions.add(self)
        if self.service.stopping:
            self.close()
            return
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._arm_timer(self.service.idle_timeout())
        self.session.greet()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._recv

    def buffer_updated(self, nbytes: int) -> None:
        if self._start == len(self._input):
            self._input = self._recv[:nbytes].tobytes()
        else:  # a partial line (or lines waiting behind a task) is kept in front
            self._input = self._input[self._start :] + self._recv[:nbytes]
        self._start = 0
        if self._line_waiter is not None:
            self._feed_waiter()
            self._regulate_input()
        else:
            self._pump()

    def eof_received(self) -> bool:
        self._eof = True
        if self._line_waiter is not None:
            self._fail_waiters(SessionOver())
        elif self._task is None:
            self._pump()  # answers what is still buffered, then closes
        # Keep a plain TCP transport open to answer pipelined commands; TLS closes
        # itself after the client's close_notify whatever is returned.
        return not self.tls

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._last_command = self._loop.time()  # the client is reading: not idle
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._closing = True
        for handle in (self._timer, self._cut):
            if handle is not None:
                handle.cancel()
        self._fail_waiters(ConnectionResetError("the POP3 client went away"))
        if self._task is None:
            self._clean_up()
        # else: the command in progress (a login, say) finishes first, then _finish
        # cleans up, so that a mailbox it opened is released too.

    # ------------------------------------------------------------ commands

    def _pump(self) -> None:
        """Run the buffered commands in order, as far as nothing stands in the way."""
        while self._task is None and not self._writing_paused and not self._closing:
            if self.service.stopping:
                self.close()
                break
            line = self._take_line()
            if line is None:
                if self._eof:
                    self.close()  # everything the client sent is answered
                break
            self._run(line)
        self._regulate_input()  # taking lines may have made room to read again

    def _run(self, line: bytes) -> None:
        self._last_command = self._loop.time()
        try:
            pending = self.session.handle(line)
        except SessionOver:
            self.close()
        except Exception as exc:  # a bug: log it, never show a traceback to the client
            self._internal_error(exc)
        else:
            if pending is not None:
                self._task = self._loop.create_task(self._finish(pending))

    async def _finish(self, pending: Awaitable[None]) -> None:
        try:
            await pending
        except SessionOver:
            self.close()
        except (ConnectionError, ssl.SSLError):
            self.close()  # the client went away; nothing it asked for is left half done
        except asyncio.CancelledError:
            self.abort()  # shutdown ran out of time
        except Exception as exc:
            self._internal_error(exc)
        finally:
            self._task = None
            self._last_command = self._loop.time()
        if self._lost:
            self._clean_up()
        else:
            self._pump()

    def _internal_error(self, exc: Exception) -> None:
        log("pop3.error", client=self.client, user=self.session.address(), error=repr(exc))
        self.write(INTERNAL_ERROR)
        self.close()

    # ------------------------------------------------------------ what the session uses

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._lost:
            self.transport.write(data)

    def send(self, line: str) -> None:
        self.write(line.encode("utf-8") + b"\r\n")

    def after_reply(self, callback: Callable[[int], None], arg: int) -> None:
        """Call `callback(arg)` once what was written is on its way, so that the work
        never delays the reply: at once when the transport has sent all of it (as
        asyncio's does, whenever the socket takes it), else on the loop's next turn
        (a loop that sends at the end of its turn sends first; a client that is
        behind gets the rest when it reads, whatever runs meanwhile)."""
        if self.transport is None or self._closing:
            return
        if self.transport.get_write_buffer_size() == 0:
            callback(arg)
        else:
            self._loop.call_soon(callback, arg)

    def pending_input(self) -> bool:
        """The client sent bytes we have not taken as a command yet."""
        return self._start < len(self._input)

    async def read_line(self) -> bytes:
        """The next line, for a command that reads more (AUTH's continuation)."""
        line = self._take_line()
        if line is not None:
            return line
        if self._closing or self._eof:
            raise SessionOver
        self._line_waiter = self._loop.create_future()
        self._regulate_input()
        try:
            return await self._line_waiter
        finally:
            self._line_waiter = None
            self._last_command = self._loop.time()

    async def drain(self) -> None:
        """Wait while the client is behind (a large RETR)."""
        if self._lost:
            raise ConnectionResetError("the POP3 client went away")
        if self._writing_paused:
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter

    def hold_input(self) -> None:
        """Stop reading from the socket until start_tls resumes it over TLS."""
        if self.transport is not None:
            self.transport.pause_reading()

    async def start_tls(self, context: ssl.SSLContext) -> None:
        assert self.transport is not None
        self.transport = await self._loop.start_tls(
            self.transport, self, context, server_side=True, ssl_handshake_timeout=30
        )
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.tls = True

    def close(self) -> None:
        """Flush what was written, then close; cut it off if the client does not read."""
        if self._closing or self.transport is None:
            return
        self._closing = True
        self.transport.close()
        self._cut = self._loop.call_later(CLOSE_GRACE, self.abort)

    def abort(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        if self.transport is not None and not self._lost:
            self.transport.abort()

    # ------------------------------------------------------------ input

    def _take_line(self) -> bytes | None:
        """The next complete line, or None; a line over MAX_LINE ends the session."""
        data, start = self._input, self._start
        end = data.find(b"\n", start, start + MAX_LINE)
        if end < 0:
            if len(data) - start >= MAX_LINE and not self._closing:
                self.write(LINE_TOO_LONG)
                self.close()
            return None
        self._start = end + 1
        return data[start : end + 1]

    def _feed_waiter(self) -> None:
        line = self._take_line()
        waiter = self._line_waiter
        if waiter is None or waiter.done():
            return
        if line is not None:
            waiter.set_result(line)
        elif self._closing:
            waiter.set_exception(SessionOver())

    def _fail_waiters(self, exc: BaseException) -> None:
        for waiter in (self._line_waiter, self._drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
        self._line_waiter = self._drain_waiter = None

    def _regulate_input(self) -> None:
        backlog = len(self._input) - self._start > MAX_PENDING_INPUT
        if backlog == self._reading_paused or self.transport is None or self._closing:
            return
        self._reading_paused = backlog
        if backlog:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # ------------------------------------------------------------ idle timeout

    def _arm_timer(self, delay: float) -> None:
        self._timer = self._loop.call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        if self._closing:
            return  # closing already; CLOSE_GRACE bounds it
        timeout = self.service.idle_timeout()
        left = self._last_command + timeout - self._loop.time()
        waiting_for_us = (
            self._task is not None and self._line_waiter is None and self._drain_waiter is None
        )
        if left > 0 or waiting_for_us:
            self._arm_timer(left if left > 0 else timeout)
            return
        self.session.timed_out()
        if self._writing_paused:
            self.abort()  # the client does not even read: nothing more can reach it
        else:
            self.close()

    # ------------------------------------------------------------ the end

    def _clean_up(self) -> None:
        if self._cleaned_up:
            return
        self._cleaned_up = True
        self.session.release_lease()  # at once: even a cancelled session frees it
        if self.session.mailbox is None:
            self.service.sessions.discard(self)
            return
        self._release = self._loop.create_task(self.session.close_mailbox())
        self._release.add_done_callback(lambda _: self.service.sessions.discard(self))
