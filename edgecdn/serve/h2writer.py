"""One response on one HTTP/2 stream: the ResponseWriter interface the handler fills in, as HEADERS and DATA.

Rules of this file: a writer sends only within the peer's flow-control windows and below its connection's
shared high-water mark (queued + buffered bytes), so a connection holds about WRITE_HIGH_WATER however many
streams wait on a client that does not read; heads go out as latin-1 bytes, as received; a reset stream or
a lost connection is a ConnectionResetError to the handler, as on HTTP/1.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

import h2.connection
import h2.exceptions

from edgecdn.policy.status import CacheStatus
from edgecdn.serve.request import RequestBody
from edgecdn.serve.writer import NO_BODY_STATUSES, Fields, ResponseWriter, file_chunk

WRITE_HIGH_WATER = 64 * 1024  # bytes buffered per connection before a stream's writer waits
MIN_FRAME = 16 * 1024  # the least a writer with room sends at once (the default SETTINGS_MAX_FRAME_SIZE)
READ_CHUNK = 64 * 1024  # file bytes read per step of a stream's body (bounded memory per stream)
# Fields that are HTTP/1.1 framing and must not appear in HTTP/2 (RFC 9113 §8.2.2).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})


class Stream:
    """One stream's state shared by its connection and its writer."""

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


class StreamChannel(Protocol):
    """What a stream's writer needs from its HTTP/2 connection."""

    h2: h2.connection.H2Connection
    transport: asyncio.Transport | None
    write_paused: bool
    unflushed: int  # DATA bytes queued in h2 since the last flush

    async def drain(self) -> None: ...

    def socket_fd(self) -> int: ...

    def flush(self) -> None: ...

    def flush_soon(self) -> None: ...

    def buffered(self) -> int: ...

    async def wait_window(self, stream: Stream) -> None: ...

    def spawn(self, work: Coroutine[Any, Any, None]) -> None: ...

    def done(self, stream: Stream) -> None: ...


class H2Writer(ResponseWriter):
    """One response on one HTTP/2 stream: the ResponseWriter interface the handler fills in, framed as
    HEADERS and DATA frames within the peer's flow-control windows."""

    __slots__ = ("_conn", "_fields", "_stream", "rest")

    def __init__(self, conn: StreamChannel, stream: Stream, *, head_only: bool) -> None:
        super().__init__(conn, keep_alive=True, head_only=head_only, version="2.0")
        self._conn = conn
        self._stream = stream
        self._fields: list[tuple[bytes, bytes]] | None = None  # the head, until it is sent
        self.rest = False  # `send` left the body's end to a task of its own (the peer's window was short)

    def start(
        self, status: int, fields: Fields, *, length: int | None, cache: CacheStatus | None = None
    ) -> None:
        super().start(status, fields, length=length, cache=cache)  # status, cache status, checks
        self._head = b""  # HTTP/1.1's head, unused
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
        at = self._frames(view, 0, 0 if self._conn.write_paused else WRITE_HIGH_WATER - self._conn.buffered())
        self.finished = True
        if at == len(view):
            self._conn.h2.end_stream(self._stream.id)
            self._conn.flush_soon()
            return
        # Beyond the peer's window: the rest goes out as the window opens (the body is held once, as given).
        self._conn.flush()
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
            chunk = await file_chunk(file, offset, min(READ_CHUNK, count), copy, start)
            await self._push(memoryview(chunk))
            offset += len(chunk)
            count -= len(chunk)

    async def end(self) -> None:
        if not self.started:
            raise RuntimeError("end() before start()")
        if self.finished:
            return
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
            if self._conn.write_paused:  # every stream waits, and the first one woken takes the room
                await self._conn.drain()
                continue
            if self._window() <= 0:
                await self._conn.wait_window(self._stream)
                continue
            at = self._frames(view, at, max(MIN_FRAME, WRITE_HIGH_WATER - self._conn.buffered()))
            self._conn.flush()

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
