"""One HTTP/1.1 client connection: llhttp framing, keep-alive, pipelining, deadlines, backpressure.

Rules of this file: framing only — requests leave here as `Request`s for one `handle(request, writer)`
call each, answered strictly in order, one at a time; at most `max_pipeline` parsed requests wait, and
reading stops while they or a request body are above their high-water marks. Every deadline is one timer:
the request head from the accept (or from the first byte after a keep-alive wait), the body, the idle
wait. A malformed request is answered 4xx after the ones before it, then the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, cast

import httptools

from edgecdn.policy.status import CacheStatus
from edgecdn.serve.parser import BadRequest, Head, HeadFields, check_fields, check_head
from edgecdn.serve.request import Request, RequestBody
from edgecdn.serve.writer import Fields, ResponseWriter

log = logging.getLogger("edgecdn.connection")

# Bytes buffered per connection before a writer waits (until the buffer is empty again): with the
# writer's chunking this bounds what a slow reader holds to about one chunk.
WRITE_HIGH_WATER = 16 * 1024
LINGER_S = 2.0  # after a close with the client still sending, how long its bytes are read and dropped
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout: float = 10.0  # a whole request head, counted from the accept or its first byte
    keepalive_timeout: float = 75.0  # idle between requests
    body_timeout: float = 300.0  # a whole request body
    max_line: int = 8190  # request target bytes (414 beyond)
    max_head: int = 8190 * 4  # request head bytes (431 beyond)
    max_pipeline: int = 32  # parsed requests waiting on one connection before reading stops
    hard_pipeline: int = 128  # ... and beyond which the flood is cut (answered up to here, then closed)


Handle = Callable[[Request, ResponseWriter], Awaitable[None]]
Refused = Callable[[str | None, BadRequest, ResponseWriter], None]
INTERNAL = b'{"error":"internal"}'


async def answer(handle: Handle, request: Request, out: ResponseWriter) -> None:
    """Run the request handler for one request, whatever the framing (HTTP/1.1, an HTTP/2 stream).

    A client gone is no error; a bug is logged once with its traceback and, if nothing was sent yet,
    answered 500 (never a traceback to the client, never a request left hanging).
    """
    try:
        await handle(request, out)
    except ConnectionResetError:
        pass
    except Exception:  # a bug in the edge: the last resort, logged and answered; the connection lives on
        log.exception("unhandled error answering %s %s", request.method, request.path)
        if not out.started and out.channel.transport is not None:
            out.keep_alive = False
            with contextlib.suppress(ConnectionResetError):  # an HTTP/2 stream reset meanwhile
                fields = Fields((("Content-Type", "application/json"), ("X-Cache", CacheStatus.ERROR.value)))
                out.send(500, fields, INTERNAL, cache=CacheStatus.ERROR)


class Live(Protocol):
    """A connection as `Connections` drains it (HTTP/1.1 here, HTTP/2 in h2connection.py)."""

    def shutdown(self) -> None: ...

    def abort(self) -> None: ...


class Connections:
    """The live connections of one listener, for a bounded graceful drain."""

    def __init__(self) -> None:
        self.live: set[Live] = set()
        self.draining = False
        self._all_closed: asyncio.Event | None = None

    def drain(self) -> None:
        """No new requests: idle connections close now, busy ones after their current response."""
        self.draining = True
        for conn in list(self.live):
            conn.shutdown()

    async def wait_closed(self, grace: float) -> None:
        """Wait up to `grace` seconds for the busy connections to finish, then cut the rest."""
        self._all_closed = asyncio.Event()
        if self.live:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._all_closed.wait()
        for conn in list(self.live):
            conn.abort()

    def closed(self, conn: Live) -> None:
        self.live.discard(conn)
        if not self.live and self._all_closed is not None:
            self._all_closed.set()


class HttpConnection(asyncio.Protocol):
    def __init__(self, handle: Handle, limits: Limits, connections: Connections, refused: Refused) -> None:
        self._handle = handle
        self._limits = limits
        self._connections = connections
        self._refused = refused
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._fd = -1
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[Request | BadRequest] = deque()
        self._task: asyncio.Task[None] | None = None  # answers the queue; lives as long as the connection
        self._wakeup: asyncio.Future[None] | None = None  # what that task waits on while the queue is empty
        self._busy = False  # a request is being answered
        self._writer: ResponseWriter | None = None  # ... by this writer
        # One deadline (loop time, 0: none) and one timer that only ever moves earlier: a timer that
        # fires before the deadline re-arms itself, so a keep-alive request costs no timer operation.
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._head_due = False  # the deadline is the current request head's
        self._closing = False  # no more requests are read; close after what is queued
        self._reading = True
        self._body_paused = False
        self._write_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._bad: BadRequest | None = None
        self._lingering = False  # our side is shut; the client's bytes are dropped until it closes
        # The request being parsed.
        self._in_head = True
        self._head_bytes = 0
        self._url = b""
        self._raw: list[tuple[bytes, bytes]] = []
        self._head_size = 0  # bytes of the fields so far
        self._body: RequestBody | None = None
        # The previous request's fields and what they say (check_fields), reused while they repeat.
        self._last_raw: list[tuple[bytes, bytes]] = []
        self._last_version = ""
        self._fields: HeadFields | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport subclass
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=0)
        peer = transport.get_extra_info("peername")
        self._remote = peer[0] if isinstance(peer, tuple) else None
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self._fd = sock.fileno()
        self._connections.live.add(self)
        if self._connections.draining:
            transport.close()
            return
        self._head_due = True
        self._arm(self._limits.header_timeout)  # the first head is due from the accept on

    def data_received(self, data: bytes) -> None:
        if self._closing and self._body is None:
            return  # past the last request: nothing more is parsed
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request is queued; what follows is another protocol, which the edge does not speak.
            self._stop_reading()
        except httptools.HttpParserCallbackError:
            if self._bad is not None or not self._closing:
                self._refuse(self._bad or BadRequest(400, "malformed request"))
        except httptools.HttpParserInvalidURLError:
            self._refuse(BadRequest(400, "invalid request target"))
        except httptools.HttpParserError as e:
            self._refuse(BadRequest(400, _reason(e)))
        else:
            if self._in_head and self._head_bytes:
                if self._head_bytes > self._limits.max_head:
                    self._refuse(BadRequest(431, "request header fields too large"))
                elif not self._head_due:  # a head begun and not finished: due within the limit
                    self._head_due = True
                    self._arm(self._limits.header_timeout)
        if self._queue:
            # Started once the whole chunk is parsed, so a request whose framing breaks later in the
            # same chunk is refused before anything of it runs.
            self._kick()

    def eof_received(self) -> bool | None:
        if self._lingering:
            return None  # the client is done too: close
        if self._body is not None and not self._body.done:
            self._body.fail(ConnectionResetError("client closed the request body"))
        self._stop_reading()
        if not self._queue and not self._busy:
            return None  # nothing to answer: close
        return True  # keep the write side open for the answers still due

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.closed(self)
        self._closing = True
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._kick()  # the serving task ends
        if self._body is not None:
            self._body.fail(ConnectionResetError("client went away"))
        for item in self._queue:
            if isinstance(item, Request) and item.body is not None:
                item.body.fail(ConnectionResetError("client went away"))
        self._wake_writer()
        self.transport = None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()

    # -- what a writer needs (writer.Channel) --------------------------------------------------------

    async def drain(self) -> None:
        if self._write_paused and self.transport is not None:
            self._write_waiter = self._loop.create_future()
            await self._write_waiter
        if self.transport is None:
            raise ConnectionResetError("client went away")

    def socket_fd(self) -> int:
        return self._fd

    # -- llhttp callbacks ----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._closing:
            raise _PastTheLast
        self._in_head = True
        self._url = b""
        self._raw = []
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_line:
            self._bad = BadRequest(414, "request target too long")
            raise self._bad

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        if size > self._limits.max_line:
            self._bad = BadRequest(431, "request header field too large")
            raise self._bad
        self._head_size += size + 4
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        if len(self._url) + self._head_size > self._limits.max_head:
            self._bad = BadRequest(431, "request header fields too large")
            raise self._bad
        parser = self._parser
        version = parser.get_http_version()
        try:
            if self._raw != self._last_raw or version != self._last_version:
                self._fields = check_fields(version, self._raw)  # else the same fields as last time
                self._last_raw, self._last_version = self._raw, version
            head = check_head(parser.get_method().decode(), self._url, version, self._raw, self._fields)
        except BadRequest as e:
            self._last_raw, self._last_version = [], ""
            self._bad = e
            raise
        self._in_head = False
        self._head_bytes = 0
        self._head_due = False
        if len(self._queue) >= self._limits.hard_pipeline:
            self._bad = BadRequest(429, "too many pipelined requests")
            raise self._bad
        self._enqueue(head, keep_alive=parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self._body is not None:
            self._body.feed(body)

    def on_message_complete(self) -> None:
        self._in_head = True  # what comes next is the head of another request
        self._head_bytes = 0
        if self._body is not None:
            self._body.end()
            self._body = None
            self._arm(None)
            if self._closing:
                self._stop_reading()

    # -- requests in, answers out ----------------------------------------------------------------------

    def _enqueue(self, head: Head, *, keep_alive: bool) -> None:
        body = None
        if head.has_body:
            body = RequestBody(
                pause=self._pause_for_body,
                on_first_read=self._send_continue if head.expect_continue else None,
            )
            self._body = body
            self._arm(self._limits.body_timeout)
        else:
            self._disarm()
        request = Request(
            head.method,
            head.target,
            head.headers,
            remote=self._remote,
            version=head.version,
            body=body,
            received=self._loop.time(),
        )
        if not keep_alive:
            self._closing = True  # the last request of this connection (its body is still read)
            if body is None:
                self._stop_reading()
        self._queue.append(request)
        if len(self._queue) >= self._limits.max_pipeline:
            self._set_reading(False)

    def _kick(self) -> None:
        """Start the serving task, or wake it from its wait for the next request."""
        if self._task is None:
            if self.transport is not None:
                self._task = self._loop.create_task(self._serve())
        elif self._wakeup is not None:
            wakeup, self._wakeup = self._wakeup, None
            if not wakeup.done():
                wakeup.set_result(None)

    async def _serve(self) -> None:
        """Answer queued requests in order, one at a time, for as long as the connection lives."""
        try:
            while self.transport is not None:
                if not self._queue:
                    if self._closing:
                        break
                    if self._in_head and not self._head_due:
                        self._arm(self._limits.keepalive_timeout)  # idle until the next request
                    self._wakeup = self._loop.create_future()
                    await self._wakeup
                    continue
                item = self._queue[0]
                if isinstance(item, BadRequest):
                    self._queue.clear()
                    self._answer_bad(item)
                    return
                self._busy = True
                carry_on = await self._one(item)
                self._busy = False
                self._queue.popleft()
                if not carry_on:
                    self._queue.clear()
                    return
                self._set_reading(True)
        finally:
            self._task = None
            self._busy = False
        if self._closing:
            self._linger()

    async def _one(self, request: Request) -> bool:
        """Answer one request; False when the connection must end after it."""
        last = self._closing and len(self._queue) == 1
        writer = ResponseWriter(
            self,
            keep_alive=not last and not self._connections.draining,
            head_only=request.method == "HEAD",
            version=request.version,
        )
        self._writer = writer
        await answer(self._handle, request, writer)
        self._writer = None
        transport = self.transport
        if transport is None:
            return False
        if not writer.finished:
            transport.abort()  # a response cut short must look broken to the client, never complete
            return False
        if not writer.keep_alive or (request.body is not None and not request.body.done):
            self._closing = True  # an unread body cannot be told apart from the next request
            self._linger()
            return False
        return True

    def _answer_bad(self, bad: BadRequest) -> None:
        writer = ResponseWriter(self, keep_alive=False, head_only=False)
        self._refused(self._remote, bad, writer)
        self._linger()

    def _refuse(self, bad: BadRequest) -> None:
        """Answer the queued requests, then `bad`, then close; nothing more is read."""
        self._bad = None
        self._stop_reading()
        body, self._body = self._body, None
        if body is not None:
            body.fail(ConnectionResetError("malformed request body"))
            last = self._queue[-1] if self._queue else None
            if not self._busy and isinstance(last, Request) and last.body is body:
                self._queue.pop()  # its own framing is broken: it is never handled, only refused
        self._queue.append(bad)

    def _send_continue(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(CONTINUE)

    # -- flow control and deadlines ----------------------------------------------------------------------

    def _pause_for_body(self, pause: bool) -> None:
        self._body_paused = pause
        self._set_reading(not pause)

    def _set_reading(self, on: bool) -> None:
        if self.transport is None or (self._closing and self._body is None):
            return
        on = on and not self._body_paused and len(self._queue) < self._limits.max_pipeline
        if on != self._reading:
            self._reading = on
            if on:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _stop_reading(self) -> None:
        self._closing = True
        self._disarm()
        if self.transport is not None and self._reading:
            self._reading = False
            self.transport.pause_reading()

    def shutdown(self) -> None:
        """Graceful shutdown of this connection (see Connections.drain)."""
        self._stop_reading()
        if self._writer is not None and not self._writer.started:
            self._writer.keep_alive = False  # the answer in progress says it is the last
        if not self._queue and not self._busy and self.transport is not None:
            self.transport.close()

    def _linger(self) -> None:
        """Close without the client losing what was sent (RFC 9112 §9.6): our side is shut, and what the
        client still sends is read and dropped for a while, so no reset overtakes the answers."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._lingering or not transport.can_write_eof():
            transport.close()
            return
        self._lingering = True
        self._closing = True
        transport.write_eof()
        if not self._reading:
            self._reading = True
            transport.resume_reading()
        self._arm(LINGER_S)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _arm(self, timeout: float | None) -> None:
        """Make `timeout` from now the connection's deadline (None: no deadline)."""
        if timeout is None or timeout <= 0:
            self._deadline = 0.0
            return
        at = self._loop.time() + timeout
        self._deadline = at
        if self._timer is None or self._timer_at > at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(at, self._expired)
            self._timer_at = at

    def _disarm(self) -> None:
        self._deadline = 0.0

    def _expired(self) -> None:
        self._timer = None
        if not self._deadline or self.transport is None:
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._expired)
            self._timer_at = self._deadline
            return
        if self._body is not None:
            self._body.fail(TimeoutError("request body deadline passed"))
        self.transport.close()

    def _wake_writer(self) -> None:
        waiter, self._write_waiter = self._write_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _PastTheLast(Exception):
    """Raised in a callback to stop parsing after the connection's last request."""


def _reason(error: Exception) -> str:
    """llhttp's message, which names the rule and never the client's bytes."""
    text = str(error).strip().lower()
    return text[:80] if text else "malformed request"
