"""One HTTP/2 client connection (RFC 9113, ALPN h2 over TLS): each stream is a request for the one handler.

Rules of this file: framing only, as connection.py is for HTTP/1.1 — the h2 package does the protocol
(sans-IO), this file the I/O, the limits and the flow control. Every stream becomes a `Request` and an
`H2Writer` for one `handle(request, writer)` call. Memory is bounded: a stream's body goes out as the
peer's window allows, one read chunk at a time, each write waiting for the transport to drain; a request
body is acknowledged (WINDOW_UPDATE) only while its buffer is below the high-water mark. Floods (streams,
resets, PING/SETTINGS, header blocks) end the connection with GOAWAY; an idle connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
import hyperframe.frame
from h2.errors import ErrorCodes

from edgecdn.policy.status import CacheStatus
from edgecdn.serve.app import Edge, public_protocol
from edgecdn.serve.connection import Connections
from edgecdn.serve.h2fields import BlockEncoder
from edgecdn.serve.parser import BadRequest, check_head
from edgecdn.serve.request import Request, RequestBody
from edgecdn.serve.tls import AlpnSwitch
from edgecdn.serve.writer import NO_BODY_STATUSES, Fields, ResponseWriter

log = logging.getLogger("edgecdn.h2")

WRITE_HIGH_WATER = 64 * 1024  # bytes buffered per connection before a stream's writer waits
MIN_FRAME = 16 * 1024  # the least a writer with room sends at once (the default SETTINGS_MAX_FRAME_SIZE)
READ_CHUNK = 64 * 1024  # file bytes read per step of a stream's body (bounded memory per stream)
# Fields that are HTTP/1.1 framing and must not appear in HTTP/2 (RFC 9113 §8.2.2).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})


@dataclass(frozen=True, slots=True)
class H2Limits:
    max_streams: int = 100  # concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS); beyond: GOAWAY
    max_header_list: int = 64 * 1024  # a decoded header block (SETTINGS_MAX_HEADER_LIST_SIZE); beyond: GOAWAY
    resets_per_s: int = 100  # RST_STREAM from the client per second; beyond: GOAWAY (CVE-2023-44487)
    control_per_s: int = 100  # PING + SETTINGS frames per second; beyond: GOAWAY
    max_handlers: int = 200  # handler runs per connection, reset streams included; beyond: GOAWAY
    streams_per_connection: int = 10_000  # then GOAWAY NO_ERROR: the client reconnects (as nginx)
    idle_timeout: float = 75.0  # with no stream open
    body_timeout: float = 300.0  # a whole request body


Handle = Callable[[Request, ResponseWriter], Awaitable[None]]
Refused = Callable[[str | None, BadRequest, ResponseWriter], None]


class _Stream:
    __slots__ = ("body", "deadline", "held", "id", "paused", "reset", "waiter")

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.body: RequestBody | None = None
        self.held = 0  # request-body bytes received but not yet acknowledged (the body is paused)
        self.paused = False
        self.reset = False  # the client reset the stream, or the connection is gone
        self.waiter: asyncio.Future[None] | None = None  # a writer waiting for window
        self.deadline: asyncio.TimerHandle | None = None  # the request body's

    def wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class H2Connection(asyncio.Protocol):
    def __init__(
        self, handle: Handle, refused: Refused, limits: H2Limits, max_line: int, connections: Connections
    ) -> None:
        self._handle = handle
        self._refused = refused
        self._limits = limits
        self._max_line = max_line
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        # Our response fields are checked where they are made (names lower-cased and no hop-by-hop here;
        # origin heads with control characters are refused by the fetch), so h2 need not check them again.
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.encoder = cast(hpack.Encoder, BlockEncoder())  # the encode() h2 calls, much faster
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.h2.decoder.max_header_list_size = limits.max_header_list
        self.transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._streams: dict[int, _Stream] = {}
        self._handlers = 0  # handler runs in progress
        self._started = 0  # streams begun on this connection
        self._closing = False  # GOAWAY sent or received: no new streams; close when the last ends
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._second = 0.0  # the start of the current one-second window of the flood counters
        self._resets = 0
        self._control = 0
        self._idle: asyncio.TimerHandle | None = None
        self._flush_due = False  # a flush is scheduled for the end of this loop iteration
        self.unflushed = 0  # DATA bytes queued in h2 since the last flush
        self._tasks: set[asyncio.Task[None]] = set()

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=0)
        peer = transport.get_extra_info("peername")
        self._remote = peer[0] if isinstance(peer, tuple) else None
        self._connections.live.add(self)
        self.h2.initiate_connection()
        self._flush()
        if self._connections.draining:
            self.shutdown()
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        now = self._loop.time()
        if now - self._second >= 1.0:  # a new one-second window for the flood counters
            self._second, self._resets, self._control = now, 0, 0
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:  # h2 has queued its GOAWAY
            log.info("http/2 protocol error from %s: %s", self._remote, e)
            self._flush()
            self._close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._request(event)
            elif isinstance(event, h2.events.DataReceived):
                self._data(event)
            elif isinstance(event, h2.events.StreamEnded):
                stream = self._streams.get(event.stream_id)
                if stream is not None and stream.body is not None:
                    stream.body.end()
            elif isinstance(event, h2.events.WindowUpdated):
                self._window(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._reset(event.stream_id)
            elif isinstance(event, h2.events.RemoteSettingsChanged | h2.events.PingReceived):
                self._control += 1
                self._window(0)  # the initial window may have changed
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._closing = True
            if self.transport is None:
                return
        self._flood_check()
        self._flush()
        if self._closing and not self._handlers:
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.closed(self)
        self.transport = None
        self._disarm_idle()
        for stream in self._streams.values():
            self._gone(stream)
        self._wake_writers()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writers()

    # -- what a writer needs (writer.Channel) --------------------------------------------------------

    async def drain(self) -> None:
        if self._write_paused and self.transport is not None:
            if self._drained is None:
                self._drained = self._loop.create_future()
            await asyncio.shield(self._drained)
        if self.transport is None:
            raise ConnectionResetError("client went away")

    def socket_fd(self) -> int:
        return -1  # never sendfile(): the bytes are framed (and encrypted)

    # -- streams ---------------------------------------------------------------------------------------

    def _request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        if self._closing:
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        stream = _Stream(sid)
        self._streams[sid] = stream
        self._started += 1
        self._disarm_idle()
        request: Request | BadRequest = _to_request(
            event.headers or (), self._remote, self._max_line, self._loop.time()
        )
        if isinstance(request, Request) and event.stream_ended is None:
            body = stream.body = request.body = RequestBody(pause=lambda on: self._pause_body(stream, on))
            late = TimeoutError("request body deadline passed")
            stream.deadline = self._loop.call_later(self._limits.body_timeout, body.fail, late)
        self._handlers += 1
        self.spawn(self._serve(stream, request))
        if self._started >= self._limits.streams_per_connection:
            self.shutdown()

    async def _serve(self, stream: _Stream, request: Request | BadRequest) -> None:
        head_only = isinstance(request, Request) and request.method == "HEAD"
        writer = H2Writer(self, stream, head_only=head_only)
        try:
            if stream.reset:
                return
            if isinstance(request, BadRequest):
                self._refused(self._remote, request, writer)
                return
            try:
                await self._handle(request, writer)
            except ConnectionResetError:
                pass
            except Exception:
                log.exception("unhandled error answering %s %s", request.method, request.path)
                if not writer.started and not stream.reset and self.transport is not None:
                    fields = Fields((("Content-Type", "application/json"),))
                    writer.send(500, fields, b'{"error":"internal"}', cache=CacheStatus.ERROR)
        except ConnectionResetError:
            pass
        finally:
            self._end(stream, writer)

    def _end(self, stream: _Stream, writer: H2Writer) -> None:
        """After the handler: a response cut short is reset, never left looking complete."""
        if writer.rest:
            return  # its own task ends the stream (and calls `done`)
        if self.transport is None:
            self.done(stream)
            return
        if not writer.finished and not stream.reset:
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.h2.reset_stream(stream.id, ErrorCodes.INTERNAL_ERROR)
        elif stream.body is not None and not stream.body.done:
            # The answer is complete; the client need not send the rest of its body.
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.h2.reset_stream(stream.id, ErrorCodes.NO_ERROR)
        self.flush_soon()
        self.done(stream)

    def done(self, stream: _Stream) -> None:
        """A stream's handler run (and its body) is over."""
        self._handlers -= 1
        self._streams.pop(stream.id, None)
        if stream.deadline is not None:
            stream.deadline.cancel()
        if not self._handlers and self.transport is not None:
            if self._closing:
                self._close()
            else:
                self._arm_idle()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """A task of this connection, referenced until it is done (the loop keeps only weak ones)."""
        task = self._loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _data(self, event: h2.events.DataReceived) -> None:
        stream = self._streams.get(event.stream_id)
        size = event.flow_controlled_length or 0
        if stream is None or stream.body is None or stream.body.done:
            self.h2.acknowledge_received_data(size, event.stream_id)  # dropped: keep the window open
            return
        stream.body.feed(event.data or b"")
        if stream.paused:
            stream.held += size
        else:
            self.h2.acknowledge_received_data(size, event.stream_id)

    def _pause_body(self, stream: _Stream, pause: bool) -> None:
        stream.paused = pause
        if not pause and stream.held and self.transport is not None and not stream.reset:
            held, stream.held = stream.held, 0
            self.h2.acknowledge_received_data(held, stream.id)
            self._flush()

    def _reset(self, stream_id: int) -> None:
        self._resets += 1
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._gone(stream)

    def _gone(self, stream: _Stream) -> None:
        stream.reset = True
        if stream.body is not None:
            stream.body.fail(ConnectionResetError("client reset the stream"))
        stream.wake()

    def _window(self, stream_id: int) -> None:
        if stream_id == 0:
            for stream in self._streams.values():
                stream.wake()
        elif (one := self._streams.get(stream_id)) is not None:
            one.wake()

    async def wait_window(self, stream: _Stream) -> None:
        if stream.waiter is None:
            stream.waiter = self._loop.create_future()
        await stream.waiter

    # -- limits, shutdown --------------------------------------------------------------------------

    def _flood_check(self) -> None:
        flood = ""
        if self._resets > self._limits.resets_per_s:
            flood = "stream resets"
        elif self._control > self._limits.control_per_s:
            flood = "ping/settings frames"
        elif self._handlers > self._limits.max_handlers:
            flood = "streams"
        if flood:
            log.warning("http/2 flood of %s from %s: GOAWAY", flood, self._remote)
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM)
            self._flush()
            self._close(abort=True)

    def shutdown(self) -> None:
        """Graceful: GOAWAY (no new streams), close when the streams in progress are answered."""
        if self.transport is None:
            return
        if not self._closing:
            self._goaway(ErrorCodes.NO_ERROR)
            self._flush()
        if not self._handlers:
            self._close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _goaway(self, code: ErrorCodes) -> None:
        """GOAWAY naming the last stream that will be answered. An error closes h2's side; NO_ERROR is
        written as a frame of our own, since h2 would refuse to send anything more after its GOAWAY."""
        self._closing = True
        last = self.h2.highest_inbound_stream_id
        if code != ErrorCodes.NO_ERROR:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection(code, last_stream_id=last)
            return
        self._flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(
                hyperframe.frame.GoAwayFrame(0, last_stream_id=last, error_code=0).serialize()
            )

    def _close(self, *, abort: bool = False) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self._flush()
            if abort:
                for stream in list(self._streams.values()):
                    self._gone(stream)
            transport.close()

    def _idle_expired(self) -> None:
        self._idle = None
        if not self._handlers and self.transport is not None:
            self._goaway(ErrorCodes.NO_ERROR)
            self._flush()
            self._close()

    def _arm_idle(self) -> None:
        self._disarm_idle()
        self._idle = self._loop.call_later(self._limits.idle_timeout, self._idle_expired)

    def _disarm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def flush_soon(self) -> None:
        """Write what h2 has queued once this loop iteration is over: the frames of many streams answered
        in one iteration go out in one TLS write."""
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)

    def buffered(self) -> int:
        """Body bytes on their way out: queued in h2 plus the transport's buffer."""
        transport = self.transport
        return self.unflushed + (transport.get_write_buffer_size() if transport is not None else 0)

    def _flush(self) -> None:
        self._flush_due = False
        self.unflushed = 0
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _wake_writers(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)


class H2Writer(ResponseWriter):
    """One response on one HTTP/2 stream: the ResponseWriter interface the handler fills in, framed as
    HEADERS and DATA frames within the peer's flow-control windows."""

    __slots__ = ("_conn", "_fields", "_stream", "rest")

    def __init__(self, conn: H2Connection, stream: _Stream, *, head_only: bool) -> None:
        super().__init__(conn, keep_alive=True, head_only=head_only, version="2.0")
        self._conn = conn
        self._stream = stream
        self._fields: list[tuple[bytes, bytes]] | None = None  # the head, until it is sent
        self.rest = False  # `send` left the body's end to a task of its own (the peer's window was short)

    def start(
        self, status: int, fields: Fields, *, length: int | None, cache: CacheStatus | None = None
    ) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self.status = status
        if cache is not None:
            self.cache = cache
        # Bytes, latin-1 as the values were received (h2 would encode str as UTF-8).
        head = [(b":status", b"%d" % status)]
        head += [
            (n.lower().encode("latin-1"), v.encode("latin-1", "replace"))
            for n, v in fields.items()
            if n.lower() not in HOP_BY_HOP
        ]
        if length is not None and status >= 200 and status not in NO_BODY_STATUSES:
            head.append((b"content-length", b"%d" % length))
        self._fields = head

    def send(self, status: int, fields: Fields, body: bytes, *, cache: CacheStatus | None = None) -> None:
        self.start(status, fields, length=len(body), cache=cache)
        if self._head_only or not body or status in NO_BODY_STATUSES:
            self._send_head(end=True)
            self.finished = True
            return
        self._send_head(end=False)
        view = memoryview(body)
        # At once only what fits below the high-water mark: many streams answered in one loop iteration
        # must not each queue a whole body for a client that does not read.
        at = self._frames(
            view, 0, 0 if self._conn._write_paused else WRITE_HIGH_WATER - self._conn.buffered()
        )
        self.finished = True
        if at == len(view):
            self._conn.h2.end_stream(self._stream.id)
            self._conn.flush_soon()
            return
        # Beyond the peer's window: the rest goes out as the window opens (the body is held once, as given).
        self._conn._flush()
        self.rest = True
        self._conn.spawn(self._send_rest(view[at:]))

    async def _send_rest(self, rest: memoryview) -> None:
        try:
            await self._push(rest)
            self._conn.h2.end_stream(self._stream.id)
            self._conn.flush_soon()
        except (ConnectionResetError, h2.exceptions.ProtocolError):
            pass
        finally:
            self._conn.done(self._stream)

    def flush(self) -> None:
        self._send_head(end=False)

    async def write(self, data: bytes | memoryview) -> None:
        if not data or self._head_only:
            return
        self._send_head(end=False)
        await self._push(memoryview(data))

    async def sendfile(self, file: int, offset: int, count: int, *, copy: memoryview | None = None) -> None:
        if self._head_only or count <= 0:
            return
        self._send_head(end=False)
        start = offset
        while count > 0:
            n = min(READ_CHUNK, count)
            if copy is not None:
                chunk: bytes | memoryview = copy[offset - start : offset - start + n]
            else:
                chunk = await asyncio.to_thread(os.pread, file, n, offset)
            if not chunk:
                raise ConnectionResetError("cache file shorter than its record")
            await self._push(memoryview(chunk))
            offset += len(chunk)
            count -= len(chunk)

    async def end(self) -> None:
        if self.finished:
            return
        if not self.started:
            raise RuntimeError("end() before start()")
        self._check()
        if self._fields is not None:
            self._send_head(end=True)
        else:
            self._conn.h2.end_stream(self._stream.id)
            self._conn.flush_soon()
        self.finished = True

    def _send_head(self, *, end: bool) -> None:
        if self._fields is None:
            return
        self._check()
        head, self._fields = self._fields, None
        try:
            self._conn.h2.send_headers(self._stream.id, head, end_stream=end)
        except h2.exceptions.ProtocolError as e:
            raise ConnectionResetError(f"stream closed: {e}") from None
        self._conn.flush_soon()

    async def _push(self, view: memoryview) -> None:
        """Body bytes as DATA frames within the peer's windows, up to WRITE_HIGH_WATER per write, each
        write waiting for the socket to take the last."""
        at = 0
        while at < len(view):
            self._check()
            if self._conn._write_paused:  # every stream waits, and the first one woken takes the room
                await self._conn.drain()
                continue
            if self._window() <= 0:
                await self._conn.wait_window(self._stream)
                continue
            at = self._frames(view, at, max(MIN_FRAME, WRITE_HIGH_WATER - self._conn.buffered()))
            self._conn._flush()

    def _frames(self, view: memoryview, at: int, most: int) -> int:
        """DATA frames from `view[at:]`, at most `most` bytes, as the windows allow; returns the new `at`."""
        end = min(len(view), at + most)
        while at < end and (n := self._window()) > 0:
            piece = view[at : min(end, at + n)]
            try:
                self._conn.h2.send_data(self._stream.id, piece)
            except h2.exceptions.ProtocolError as e:
                raise ConnectionResetError(f"stream closed: {e}") from None
            at += len(piece)
            self.body_sent += len(piece)
            self._conn.unflushed += len(piece)
        return at

    def _window(self) -> int:
        conn = self._conn.h2
        try:
            window = conn.local_flow_control_window(self._stream.id)
        except h2.exceptions.StreamClosedError:
            raise ConnectionResetError("stream closed") from None
        return min(window, conn.max_outbound_frame_size)

    def _check(self) -> None:
        if self._stream.reset or self._conn.transport is None:
            raise ConnectionResetError("client reset the stream")


def _to_request(headers: object, remote: str | None, max_line: int, received: float) -> Request | BadRequest:
    """A stream's header block as the edge's Request (RFC 9113 §8.3), checked as an HTTP/1.1 head is."""
    pseudo: dict[bytes, bytes] = {}
    raw: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    for name, value in cast(list[tuple[bytes, bytes]], headers):
        if name.startswith(b":"):
            pseudo[name] = value
        elif name == b"cookie":
            cookies.append(value)  # RFC 9113 §8.2.3: crumbs are joined again for HTTP/1.1 semantics
        else:
            raw.append((name, value))
    if cookies:
        raw.append((b"cookie", b"; ".join(cookies)))
    authority = pseudo.get(b":authority")
    if authority is not None and not any(n == b"host" for n, _ in raw):
        raw.append((b"host", authority))
    method = pseudo.get(b":method", b"").decode("latin-1")
    path = pseudo.get(b":path", b"")
    if len(path) > max_line:
        return BadRequest(414, "request target too long")
    try:
        head = check_head(method, path, "1.1", raw)
    except BadRequest as bad:
        return bad
    return Request(head.method, head.target, head.headers, remote=remote, version="2.0", received=received)


def h2_protocol(edge: Edge, connections: Connections) -> Callable[[], H2Connection]:
    """HTTP/2 connections feeding `edge.dispatch`, with the listener's limits."""
    cfg = edge.cfg.server
    limits = H2Limits(idle_timeout=cfg.keepalive_timeout, body_timeout=cfg.body_timeout)
    return lambda: H2Connection(edge.dispatch, edge.refused, limits, cfg.max_header_size, connections)


def tls_protocol(edge: Edge, connections: Connections) -> Callable[[], asyncio.Protocol]:
    """The TLS listener's protocol factory: each connection gets the framing its ALPN chose."""
    http1 = public_protocol(edge, connections)
    http2 = h2_protocol(edge, connections)
    return lambda: AlpnSwitch(http1, http2)
