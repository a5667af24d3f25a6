"""The edge's own request type: what every framing (HTTP/1.1 today, HTTP/2 later) hands the handler.

Rules of this file: nothing here knows how the request was framed; the target is already origin-form
(the URL's host never picks an origin) and the body is a bounded stream, never read whole.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qsl, unquote

from multidict import CIMultiDict, MultiDict

BODY_HIGH_WATER = 256 * 1024  # buffered request-body bytes at which the connection stops reading
BODY_LOW_WATER = 64 * 1024  # ... and starts again


class RequestBody:
    """A request body as it arrives: chunks buffered up to a high-water mark, read by one consumer."""

    __slots__ = ("_buffered", "_chunks", "_error", "_on_first_read", "_pause", "_waiter", "done")

    def __init__(
        self,
        *,
        pause: Callable[[bool], None],
        on_first_read: Callable[[], None] | None = None,
    ) -> None:
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._pause = pause  # pause(True) stops reading from the client, pause(False) resumes
        self._on_first_read = on_first_read  # e.g. send "100 Continue" (RFC 9110 §10.1.1)
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.done = False

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= BODY_HIGH_WATER:
            self._pause(True)
        self._wake()

    def end(self) -> None:
        self.done = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self._error = error
            self.done = True
            self._wake()

    async def read(self) -> bytes:
        """The next chunk; b"" at the end; raises if the client broke the body off."""
        if self._on_first_read is not None:
            start, self._on_first_read = self._on_first_read, None
            start()
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self.done:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        chunk = self._chunks.popleft()
        before = self._buffered
        self._buffered -= len(chunk)
        if before >= BODY_HIGH_WATER > self._buffered or (before > BODY_LOW_WATER >= self._buffered):
            self._pause(False)
        return chunk

    async def chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Request:
    """One request as the handler sees it: method, origin-form target, decoded path, fields, body."""

    __slots__ = ("_query", "body", "headers", "method", "path", "received", "remote", "target", "version")

    def __init__(
        self,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        *,
        remote: str | None,
        version: str = "1.1",
        body: RequestBody | None = None,
        received: float = 0.0,
    ) -> None:
        self.method = method
        self.target = target  # origin-form path and query, exactly as sent
        path = target.partition("?")[0]
        self.path = unquote(path, errors="replace") if "%" in path else path
        self.headers = headers
        self.remote = remote
        self.version = version
        self.body = body  # None: the request has no body
        self.received = received  # loop time when the head was complete
        self._query: MultiDict[str] | None = None

    @property
    def raw_path(self) -> str:
        return self.target

    @property
    def host(self) -> str:
        return self.headers.get("Host", "")

    @property
    def query(self) -> MultiDict[str]:
        if self._query is None:
            _, _, qs = self.target.partition("?")
            self._query = MultiDict(parse_qsl(qs, keep_blank_values=True))
        return self._query

    def with_target(self, target: str) -> Request:
        """The same request for another origin-form target (signed-URL parameters removed)."""
        return Request(
            self.method,
            target,
            self.headers,
            remote=self.remote,
            version=self.version,
            body=self.body,
            received=self.received,
        )
