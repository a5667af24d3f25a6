"""Building responses to clients: from memory, from a disk file, from a fill in progress, or an error.

Rules of this file: a memory hit builds one web.Response from bytes with no thread hop; a disk hit sends
the open file with sendfile where the loop has it; every response carries Age, X-Cache and Cache-Status.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from dataclasses import replace
from typing import IO

from aiohttp import web
from multidict import CIMultiDict

from edgecdn.cache.fill import Fill
from edgecdn.cache.memory import MemoryObject
from edgecdn.cache.store import DiskObject, Found
from edgecdn.http.conditional import Conditions, Precondition, evaluate, if_range_matches
from edgecdn.http.fields import EDGE_TARGETED, Headers, get_one
from edgecdn.http.ranges import (
    FullBody,
    Partial,
    Unsatisfiable,
    multipart_head,
    multipart_length,
    multipart_tail,
    plan_ranges,
)
from edgecdn.policy.status import CacheStatus
from edgecdn.policy.stored import StoredResponse

CHUNK = 256 * 1024
LARGE_BODY = 512 * 1024  # memory bodies from this size on are written without aiohttp's join copy
BOUNDARY_HEX = 32  # hex digits in a multipart boundary
CONDITIONAL_FIELDS = ("If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since")
# RFC 9110 §15.4.5: what a 304 carries of the stored fields.
NOT_MODIFIED_FIELDS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"}
)


def client_fields(stored: StoredResponse) -> Headers:
    """The stored fields a client may see (edge-targeted ones removed); computed once per memory object."""
    return tuple((n, v) for n, v in stored.headers if n.lower() not in EDGE_TARGETED)


def fields_of(found: Found) -> Headers:
    if isinstance(found, MemoryObject):
        if found.fields is None:
            found.fields = client_fields(found.entry.stored)
        return found.fields
    return client_fields(found.entry.stored)


def base_headers(fields: Headers, *, age: float, status: CacheStatus, cache_status: str) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict(fields)
    headers["Age"] = str(int(age))
    headers["X-Cache"] = status.value
    headers["Cache-Status"] = cache_status
    return headers


def conditions(request: web.BaseRequest) -> Conditions:
    h = request.headers
    return Conditions(
        if_match=tuple(h.getall("If-Match", ())),
        if_none_match=tuple(h.getall("If-None-Match", ())),
        if_modified_since=h.get("If-Modified-Since"),
        if_unmodified_since=h.get("If-Unmodified-Since"),
    )


def precondition(request: web.BaseRequest, stored: StoredResponse) -> Precondition:
    h = request.headers
    if stored.status != 200 or not any(name in h for name in CONDITIONAL_FIELDS):
        return Precondition.PROCEED
    cond = conditions(request)
    if not cond:
        return Precondition.PROCEED
    return evaluate(
        cond, method=request.method, etag=stored.etag, last_modified=stored.last_modified, date=stored.date
    )


def not_modified(headers: CIMultiDict[str], pre: Precondition) -> web.Response:
    if pre is Precondition.FAILED:
        return web.Response(status=412, headers=_keep(headers, {"x-cache", "cache-status", "age"}))
    return web.Response(
        status=304, headers=_keep(headers, NOT_MODIFIED_FIELDS | {"x-cache", "cache-status", "age"})
    )


def _keep(headers: CIMultiDict[str], names: frozenset[str] | set[str]) -> CIMultiDict[str]:
    return CIMultiDict((n, v) for n, v in headers.items() if n.lower() in names)


def range_plan(request: web.BaseRequest, stored: StoredResponse) -> FullBody | Partial | Unsatisfiable:
    """RFC 9110 §14.2: ranges apply to GET of a 200 whose validator still matches If-Range."""
    header = request.headers.get("Range")
    if header is None or request.method != "GET" or stored.status != 200:
        return FullBody()
    if not if_range_matches(
        request.headers.get("If-Range"), etag=stored.etag, last_modified=stored.last_modified
    ):
        return FullBody()
    plan = plan_ranges(header, stored.size)
    if isinstance(plan, Partial) and len(plan.ranges) > 1:
        # RangeAmp: the exact multipart size, with this object's Content-Type, must stay within 2x.
        ctype = get_one(stored.headers, "content-type")
        if multipart_length("0" * BOUNDARY_HEX, ctype, plan, stored.size) > 2 * stored.size:
            return FullBody()
    return plan


async def from_cache(request: web.BaseRequest, found: Found, headers: CIMultiDict[str]) -> web.StreamResponse:
    """A cached object, honouring conditionals, HEAD and Range. Closes a disk object's file."""
    stored = found.entry.stored
    try:
        pre = precondition(request, stored)
        if pre is not Precondition.PROCEED:
            return not_modified(headers, pre)
        plan = range_plan(request, stored)
        headers["Accept-Ranges"] = "bytes"
        if isinstance(plan, Unsatisfiable):
            headers["Content-Range"] = f"bytes */{stored.size}"
            return web.Response(
                status=416,
                headers=_keep(headers, {"content-range", "x-cache", "cache-status", "age", "date"}),
            )
        if isinstance(found, MemoryObject):
            return await _memory_body(request, found, headers, plan)
        return await _disk_body(request, found, headers, plan)
    finally:
        if isinstance(found, DiskObject) and not found.file.closed:
            # Whatever path answered (body, 304, 416, an error), the disk object's file is done with.
            await asyncio.to_thread(found.file.close)


async def _memory_body(
    request: web.BaseRequest,
    found: MemoryObject,
    headers: CIMultiDict[str],
    plan: FullBody | Partial,
) -> web.StreamResponse:
    body: bytes | memoryview = found.body
    file_offset: int | None = 0  # where `body` starts in the kept body file (None: not in it)
    size = len(body)
    status = found.entry.stored.status
    if isinstance(plan, Partial) and len(plan.ranges) == 1:
        r = plan.ranges[0]
        headers["Content-Range"] = r.content_range(size)
        status, body, file_offset = 206, memoryview(found.body)[r.start : r.end + 1], r.start
    elif isinstance(plan, Partial):
        boundary = secrets.token_hex(BOUNDARY_HEX // 2)
        ctype = headers.get("Content-Type")
        parts = [multipart_head(boundary, ctype, r, size) + body[r.start : r.end + 1] for r in plan.ranges]
        headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        status, body, file_offset = 206, b"".join(parts) + multipart_tail(boundary), None
    headers["Content-Length"] = str(len(body))
    if request.method == "HEAD":
        return web.Response(status=status, headers=headers)
    if len(body) < LARGE_BODY:
        return web.Response(status=status, body=body, headers=headers)
    # aiohttp joins headers and body into one new buffer (it avoids writelines before Python 3.12.9):
    # for a large body that is a copy per response. Headers go first, then the cached bytes themselves.
    resp = web.StreamResponse(status=status, headers=headers)
    writer = await resp.prepare(request)
    _send_headers(writer)
    sent = 0
    if file_offset is not None and found.file is not None and request.transport is not None:
        # The same bytes from the kept body file: sendfile() spares the copy into the socket.
        sent = _sendfile_now(request.transport, found.file, file_offset, len(body))
    if sent < len(body):
        await resp.write(memoryview(body)[sent:])
    await resp.write_eof()
    return resp


def _send_headers(writer: object) -> None:
    """Flush buffered response headers now (aiohttp ≥ 3.11 buffers them until the first body write)."""
    send = getattr(writer, "send_headers", None)
    if send is not None:
        send()


async def _disk_body(
    request: web.BaseRequest, found: DiskObject, headers: CIMultiDict[str], plan: FullBody | Partial
) -> web.StreamResponse:
    size = found.entry.stored.size
    status = found.entry.stored.status
    if isinstance(plan, Partial) and len(plan.ranges) > 1:
        boundary = secrets.token_hex(BOUNDARY_HEX // 2)
        ctype = headers.get("Content-Type")
        headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        headers["Content-Length"] = str(multipart_length(boundary, ctype, plan, size))
        resp = web.StreamResponse(status=206, headers=headers)
        await resp.prepare(request)
        if request.method != "HEAD":
            for r in plan.ranges:
                await resp.write(multipart_head(boundary, ctype, r, size))
                await _send_file(request, resp, found.file, r.start, r.length)
            await resp.write(multipart_tail(boundary))
        await resp.write_eof()
        return resp
    offset, count = 0, size
    if isinstance(plan, Partial):
        r = plan.ranges[0]
        headers["Content-Range"] = r.content_range(size)
        status, offset, count = 206, r.start, r.length
    headers["Content-Length"] = str(count)
    resp = web.StreamResponse(status=status, headers=headers)
    await resp.prepare(request)
    if request.method != "HEAD":
        await _send_file(request, resp, found.file, offset, count)
    await resp.write_eof()
    return resp


async def _send_file(
    request: web.BaseRequest, resp: web.StreamResponse, file: IO[bytes], offset: int, count: int
) -> None:
    """sendfile(2) where the event loop offers it, else chunked reads in a thread."""
    loop = asyncio.get_running_loop()
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("client went away")
    _send_headers(await resp.prepare(request))  # headers must reach the socket before the file bytes
    try:
        await loop.sendfile(transport, file, offset, count, fallback=False)
        return
    except (NotImplementedError, RuntimeError, AttributeError):
        pass
    sent = _sendfile_now(transport, file, offset, count)
    offset += sent
    count -= sent
    while count > 0:
        chunk = await asyncio.to_thread(os_pread, file, min(CHUNK, count), offset)
        if not chunk:
            raise ConnectionResetError("cache file shorter than its record")
        await resp.write(chunk)
        offset += len(chunk)
        count -= len(chunk)


def _sendfile_now(transport: asyncio.BaseTransport, file: IO[bytes], offset: int, count: int) -> int:
    """Zero-copy what the socket takes right now, for loops without loop.sendfile (uvloop).

    Safe only while the transport has nothing buffered (its bytes would otherwise go after ours) and
    carries plain TCP; anything not sent here goes the ordinary way.
    """
    buffered = getattr(transport, "get_write_buffer_size", None)  # uvloop's is no WriteTransport subclass
    if buffered is None or buffered():
        return 0
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("sslcontext") is not None:
        return 0
    sent = 0
    try:
        while sent < count:
            n = os.sendfile(sock.fileno(), file.fileno(), offset + sent, count - sent)
            if n == 0:
                break
            sent += n
    except (BlockingIOError, InterruptedError):
        pass
    except OSError as e:
        raise ConnectionResetError(f"client went away: {e.strerror}") from None
    return sent


def os_pread(file: IO[bytes], n: int, offset: int) -> bytes:
    return os.pread(file.fileno(), n, offset)


async def from_fill(
    request: web.BaseRequest,
    fill: Fill,
    stored: StoredResponse,
    length: int | None,
    headers: CIMultiDict[str],
) -> web.StreamResponse:
    """Stream a body while it is being filled (read-while-write); a break aborts the connection."""
    status = stored.status
    offset, count = 0, length
    if length is not None and request.method == "GET":
        plan = range_plan(request, _with_size(stored, length))
        if isinstance(plan, Partial) and len(plan.ranges) == 1:
            r = plan.ranges[0]
            headers["Content-Range"] = r.content_range(length)
            status, offset, count = 206, r.start, r.length
    if count is not None:
        headers["Content-Length"] = str(count)
    resp = web.StreamResponse(status=status, headers=headers)
    await resp.prepare(request)
    if request.method == "HEAD":
        await resp.write_eof()
        return resp
    end = None if count is None else offset + count
    while end is None or offset < end:
        limit = CHUNK if end is None else min(CHUNK, end - offset)
        chunk = await fill.read(offset, limit)  # raises the fill's error if it broke
        if not chunk:
            break
        await resp.write(chunk)
        offset += len(chunk)
    await resp.write_eof()
    return resp


def _with_size(stored: StoredResponse, size: int) -> StoredResponse:
    return replace(stored, size=size)


def error(status: int, message: str, *, cache_status: str, detail: object = None) -> web.Response:
    """An error the edge itself generates: JSON `{"error", "detail"}`, never a traceback."""
    body = json.dumps({"error": message, "detail": detail}).encode()
    return web.Response(
        status=status,
        body=body,
        content_type="application/json",
        headers={
            "X-Cache": CacheStatus.MISS.value if status != 400 else CacheStatus.PASS.value,
            "Cache-Status": cache_status,
            "Cache-Control": "no-store",
        },
    )
