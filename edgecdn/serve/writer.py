"""The HTTP/1.1 response writer: a head serialized once, then bytes, file ranges or chunks, with backpressure.

Rules of this file: the writer is the response object the handler's phases fill in (status, cache status,
origin used, bytes on the wire); it frames HTTP/1.1 and nothing else; it never holds more than one chunk
beyond the transport's high-water mark; `body_sent` counts body bytes the socket took (sendfile included).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from http import HTTPStatus
from typing import Protocol

from edgecdn.http.fields import Headers
from edgecdn.policy.status import CacheStatus

CHUNK = 256 * 1024  # body bytes per write of a streamed or copied body
FALLBACK_CHUNK = 32 * 1024  # bytes copied through the loop while the socket cannot take sendfile()
JOIN_BELOW = 16 * 1024  # bodies smaller than this are joined to the head for a single send
NO_BODY_STATUSES = frozenset({204, 304})
_STATUS_LINES: dict[int, bytes] = {}
EXTRA_KEPT = 4096  # serialized sets of per-response fields kept (Fields.encode)
_EXTRA: dict[tuple[tuple[str, str], ...], bytes] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        line = _STATUS_LINES.setdefault(status, f"HTTP/1.1 {status} {phrase}\r\n".encode())
    return line


def serialize(fields: Iterable[tuple[str, str]]) -> bytes:
    """`Name: value\\r\\n` lines; values are latin-1 as they were received."""
    return "".join([f"{n}: {v}\r\n" for n, v in fields]).encode("latin-1", "replace")


class Fields:
    """Response fields: a block serialized once per object (the stored fields), plus this response's own.

    The handler's per-request fields (Age, X-Cache, Cache-Status, Content-Range ...) go in `extra`; the
    caller keeps `base` free of the names it sets there.
    """

    __slots__ = ("base", "block", "extra")

    def __init__(self, base: Headers = (), block: bytes | None = None) -> None:
        self.base = base
        self.block = block
        self.extra: list[tuple[str, str]] = []

    def __setitem__(self, name: str, value: str) -> None:
        lname = name.lower()
        self.extra = [(n, v) for n, v in self.extra if n.lower() != lname]
        self.extra.append((name, value))

    def get(self, name: str) -> str | None:
        lname = name.lower()
        for n, v in (*self.extra, *self.base):
            if n.lower() == lname:
                return v
        return None

    def items(self) -> list[tuple[str, str]]:
        return [*self.base, *self.extra]

    def only(self, names: frozenset[str] | set[str]) -> Fields:
        """These fields restricted to `names` (lower case), e.g. what a 304 carries."""
        out = Fields(tuple((n, v) for n, v in self.items() if n.lower() in names))
        return out

    def replacing(self, name: str, value: str) -> Fields:
        """A copy with `name` taken out of the base and set to `value`."""
        lname = name.lower()
        out = Fields(tuple((n, v) for n, v in self.base if n.lower() != lname))
        out.extra = [(n, v) for n, v in self.extra if n.lower() != lname]
        out.extra.append((name, value))
        return out

    def encode(self) -> bytes:
        block = self.block if self.block is not None else serialize(self.base)
        if not self.extra:
            return block
        # A response's own fields repeat from request to request (a hit's Age, X-Cache, Cache-Status
        # change once a second at most): serialized once per distinct set.
        extra = tuple(self.extra)
        tail = _EXTRA.get(extra)
        if tail is None:
            if len(_EXTRA) >= EXTRA_KEPT:
                _EXTRA.clear()
            tail = _EXTRA[extra] = serialize(extra)
        return block + tail


class Channel(Protocol):
    """What a writer needs from its connection."""

    transport: asyncio.Transport | None

    async def drain(self) -> None: ...

    def socket_fd(self) -> int: ...


class ResponseWriter:
    """One response on one HTTP/1.1 connection."""

    __slots__ = (
        "_chunked",
        "_head",
        "_head_only",
        "body_sent",
        "cache",
        "channel",
        "finished",
        "keep_alive",
        "origin",
        "started",
        "status",
        "upstream_s",
        "version",
    )

    def __init__(self, channel: Channel, *, keep_alive: bool, head_only: bool, version: str = "1.1") -> None:
        self.channel = channel
        self.keep_alive = keep_alive  # the connection may carry another request after this one
        self._head_only = head_only  # HEAD: framing fields as for GET, no body bytes
        self.version = version
        self.status = 0
        self.cache: CacheStatus | None = None  # what the edge did; None: no cache phase ran
        self.origin = ""  # the origin that answered, for the log
        self.upstream_s = -1.0  # seconds until the origin's head arrived; -1: no origin asked
        self.body_sent = 0
        self.started = False
        self.finished = False
        self._chunked = False
        self._head = b""

    def start(
        self, status: int, fields: Fields, *, length: int | None, cache: CacheStatus | None = None
    ) -> None:
        """Fix the status and fields; the head goes out with the first body bytes (or at `end`)."""
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self.status = status
        if cache is not None:
            self.cache = cache
        framing = b""
        if status in NO_BODY_STATUSES or status < 200:
            pass
        elif length is not None:
            framing = b"Content-Length: %d\r\n" % length
        elif self._head_only:
            pass
        elif self.version == "1.1":
            framing = b"Transfer-Encoding: chunked\r\n"
            self._chunked = True
        else:
            self.keep_alive = False  # HTTP/1.0 without a length: the close ends the body
        if not self.keep_alive:
            framing += b"Connection: close\r\n"
        elif self.version == "1.0":
            framing += b"Connection: keep-alive\r\n"
        self._head = b"".join((status_line(status), fields.encode(), framing, b"\r\n"))  # one copy

    def send(self, status: int, fields: Fields, body: bytes, *, cache: CacheStatus | None = None) -> None:
        """A whole small response in one write."""
        self.start(status, fields, length=len(body), cache=cache)
        head, self._head = self._head, b""
        transport = self._transport()
        if self._head_only or not body or status in NO_BODY_STATUSES:
            transport.write(head)
        elif len(body) < JOIN_BELOW:
            transport.write(head + body)  # one small buffer, one send
            self.body_sent += len(body)
        else:
            transport.writelines((head, body))  # gathered by the transport: the body is not copied
            self.body_sent += len(body)
        self.finished = True

    def flush(self) -> None:
        """Send the head now (a streamed body may break later: the client must have seen the head)."""
        if self._head:
            head, self._head = self._head, b""
            self._transport().write(head)

    async def write(self, data: bytes | memoryview) -> None:
        """Body bytes; large ones go in CHUNK pieces, each waiting for the socket to take the last."""
        if not data or self._head_only:
            return
        transport = self._transport()
        head, self._head = self._head, b""  # a head not sent yet goes in the same send as the first piece
        view = memoryview(data)
        for at in range(0, len(view), CHUNK):
            piece = view[at : at + CHUNK]
            if self._chunked:
                transport.writelines((head + b"%x\r\n" % len(piece), piece, b"\r\n"))
            elif head:
                transport.writelines((head, piece))
            else:
                transport.write(piece)
            head = b""
            self.body_sent += len(piece)
            await self.channel.drain()

    async def sendfile(self, file: int, offset: int, count: int, *, copy: memoryview | None = None) -> None:
        """`count` bytes of the file descriptor `file` from `offset`.

        sendfile(2) whenever the socket is writable and our own buffer empty (so no byte overtakes
        another), otherwise one chunk through the loop — from `copy` (the same bytes, already in
        memory) when given, else read in a thread.
        """
        if self._head_only or count <= 0:
            return
        transport = self._transport()
        if self._head:
            head, self._head = self._head, b""
            transport.write(head)
        fd = self.channel.socket_fd() if not self._chunked else -1
        start = offset
        while count > 0:
            if fd >= 0 and not transport.get_write_buffer_size():
                n = _sendfile(fd, file, offset, count)
                self.body_sent += n
                offset += n
                count -= n
                if not count:
                    break
            chunk = await file_chunk(file, offset, min(FALLBACK_CHUNK, count), copy, start)
            await self.write(chunk)
            offset += len(chunk)
            count -= len(chunk)

    async def end(self) -> None:
        """Finish the response (the head alone, when no body was written)."""
        if self.finished:
            return
        if not self.started:
            raise RuntimeError("end() before start()")
        transport = self._transport()
        tail = b"0\r\n\r\n" if self._chunked else b""
        if self._head or tail:
            head, self._head = self._head, b""
            transport.write(head + tail)
        self.finished = True

    def _transport(self) -> asyncio.Transport:
        transport = self.channel.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        return transport


async def file_chunk(
    file: int, offset: int, n: int, copy: memoryview | None, start: int
) -> bytes | memoryview:
    """`n` bytes of `file` from `offset`: sliced from `copy` (the same bytes, in memory from `start`) or
    read in a thread; a file shorter than its record is the response cut short."""
    if copy is not None:
        chunk: bytes | memoryview = copy[offset - start : offset - start + n]
    else:
        chunk = await asyncio.to_thread(os.pread, file, n, offset)
    if not chunk:
        raise ConnectionResetError("cache file shorter than its record")
    return chunk


def _sendfile(fd: int, file: int, offset: int, count: int) -> int:
    """What the socket takes now, without blocking; a dead socket is the client going away."""
    sent = 0
    try:
        while sent < count:
            n = os.sendfile(fd, file, offset + sent, count - sent)
            if n == 0:
                break
            sent += n
    except (BlockingIOError, InterruptedError):
        pass
    except OSError as e:
        raise ConnectionResetError(f"client went away: {e.strerror}") from None
    return sent
