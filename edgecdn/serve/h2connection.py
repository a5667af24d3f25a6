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
from collections.abc import Callable, Coroutine
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

from edgecdn.serve.app import Edge, public_protocol
from edgecdn.serve.connection import Connections, Handle, answer
from edgecdn.serve.h2fields import BlockEncoder
from edgecdn.serve.h2writer import WRITE_HIGH_WATER, H2Writer, Stream
from edgecdn.serve.parser import BadRequest, check_head
from edgecdn.serve.request import Request, RequestBody
from edgecdn.serve.tls import AlpnSwitch
from edgecdn.serve.writer import ResponseWriter

log = logging.getLogger("edgecdn.h2")


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


Refused = Callable[[str | None, BadRequest, ResponseWriter], None]


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
        self._streams: dict[int, Stream] = {}
        self._handlers = 0  # handler runs in progress
        self._started = 0  # streams begun on this connection
        self._closing = False  # GOAWAY sent or received: no new streams; close when the last ends
        self.write_paused = False
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
        self.flush()
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
            self.flush()
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
        self.flush()
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
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writers()

    # -- what a writer needs (writer.Channel) --------------------------------------------------------

    async def drain(self) -> None:
        if self.write_paused and self.transport is not None:
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
        stream = Stream(sid)
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

    async def _serve(self, stream: Stream, request: Request | BadRequest) -> None:
        head_only = isinstance(request, Request) and request.method == "HEAD"
        writer = H2Writer(self, stream, head_only=head_only)
        try:
            if stream.reset:
                return
            if isinstance(request, BadRequest):
                self._refused(self._remote, request, writer)
                return
            await answer(self._handle, request, writer)
        except ConnectionResetError:
            pass
        finally:
            self._end(stream, writer)

    def _end(self, stream: Stream, writer: H2Writer) -> None:
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

    def done(self, stream: Stream) -> None:
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
        if not event.data:  # an empty DATA frame is no chunk (b"" ends a body); a flood of them is control
            self._control += 1
            if size:
                self.h2.acknowledge_received_data(size, event.stream_id)  # padding only
            return
        if stream is None or stream.body is None or stream.body.done:
            self.h2.acknowledge_received_data(size, event.stream_id)  # dropped: keep the window open
            return
        stream.body.feed(event.data)
        if stream.paused:
            stream.held += size
        else:
            self.h2.acknowledge_received_data(size, event.stream_id)

    def _pause_body(self, stream: Stream, pause: bool) -> None:
        stream.paused = pause
        if not pause and stream.held and self.transport is not None and not stream.reset:
            held, stream.held = stream.held, 0
            self.h2.acknowledge_received_data(held, stream.id)
            self.flush()

    def _reset(self, stream_id: int) -> None:
        self._resets += 1
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._gone(stream)

    def _gone(self, stream: Stream) -> None:
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

    async def wait_window(self, stream: Stream) -> None:
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
            self.flush()
            self._close(abort=True)

    def shutdown(self) -> None:
        """Graceful: GOAWAY (no new streams), close when the streams in progress are answered."""
        if self.transport is None:
            return
        if not self._closing:
            self._goaway(ErrorCodes.NO_ERROR)
            self.flush()
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
        self.flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(
                hyperframe.frame.GoAwayFrame(0, last_stream_id=last, error_code=0).serialize()
            )

    def _close(self, *, abort: bool = False) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.flush()
            if abort:
                for stream in list(self._streams.values()):
                    self._gone(stream)
            transport.close()

    def _idle_expired(self) -> None:
        self._idle = None
        if not self._handlers and self.transport is not None:
            self._goaway(ErrorCodes.NO_ERROR)
            self.flush()
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
            self._loop.call_soon(self.flush)

    def buffered(self) -> int:
        """Body bytes on their way out: queued in h2 plus the transport's buffer."""
        transport = self.transport
        return self.unflushed + (transport.get_write_buffer_size() if transport is not None else 0)

    def flush(self) -> None:
        self._flush_due = False
        self.unflushed = 0
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _wake_writers(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)


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
