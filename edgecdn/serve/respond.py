"""Building responses to clients: from memory, from a disk file, from a fill in progress, or an error.

Rules of this file: a memory hit writes a header block serialized once per object plus Age, X-Cache and
Cache-Status, with no thread hop; a disk hit sends the open file with sendfile; every response carries
Age, X-Cache and Cache-Status, and its CacheStatus rides on the writer (the access log and metrics read it).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import replace

from edgecdn.cache.fill import Fill
from edgecdn.cache.memory import MemoryObject
from edgecdn.cache.store import DiskObject, Found
from edgecdn.errors import OriginConnectError, OriginError, OriginTimeout
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
from edgecdn.serve.request import Request
from edgecdn.serve.writer import Fields, ResponseWriter, serialize

# What one reader of a fill in progress holds at most: the bytes not yet in the fill's file are copied
# out in pieces of this size; the rest goes by sendfile from the fill's file.
FILL_READ = 64 * 1024
SENDFILE_FROM = 64 * 1024  # memory bodies from this size on go by sendfile from their kept file, if they can
LARGE_BODY = 512 * 1024  # ... and otherwise from this size on in pieces, not one write
BOUNDARY_HEX = 32  # hex digits in a multipart boundary
# RFC 9110 §15.4.5: what a 304 carries of the stored fields.
NOT_MODIFIED_FIELDS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"}
)
EDGE_FIELDS = frozenset({"x-cache", "cache-status", "age"})
# Set by the edge on every response from the cache, so never taken from the stored fields.
EDGE_SET = EDGE_TARGETED | {"accept-ranges"}


def client_fields(stored: StoredResponse) -> Headers:
    """The stored fields a client may see (edge-targeted ones removed); computed once per memory object."""
    return tuple((n, v) for n, v in stored.headers if n.lower() not in EDGE_SET)


def stored_fields(stored: StoredResponse) -> Fields:
    return Fields(client_fields(stored))


def fields_of(found: Found) -> Fields:
    if isinstance(found, MemoryObject):
        if found.fields is None or found.block is None:
            found.fields = client_fields(found.entry.stored)
            found.block = serialize(found.fields)
        return Fields(found.fields, found.block)
    return stored_fields(found.entry.stored)


def base_headers(
    out: ResponseWriter, fields: Fields, *, age: float, status: CacheStatus, cache_status: str
) -> Fields:
    """This response's own fields, and its CacheStatus carried on the writer."""
    out.cache = status
    fields.extra += (("Age", str(int(age))), ("X-Cache", status._value_), ("Cache-Status", cache_status))
    return fields


def conditions(request: Request) -> Conditions:
    h = request.headers
    return Conditions(
        if_match=tuple(h.getall("If-Match", ())),
        if_none_match=tuple(h.getall("If-None-Match", ())),
        if_modified_since=h.get("If-Modified-Since"),
        if_unmodified_since=h.get("If-Unmodified-Since"),
    )


def precondition(request: Request, stored: StoredResponse) -> Precondition:
    h = request.headers
    if stored.status != 200 or not (
        "If-None-Match" in h or "If-Modified-Since" in h or "If-Match" in h or "If-Unmodified-Since" in h
    ):
        return Precondition.PROCEED
    cond = conditions(request)
    if not cond:
        return Precondition.PROCEED
    return evaluate(
        cond, method=request.method, etag=stored.etag, last_modified=stored.last_modified, date=stored.date
    )


def not_modified(out: ResponseWriter, fields: Fields, pre: Precondition) -> ResponseWriter:
    if pre is Precondition.FAILED:
        out.send(412, fields.only(EDGE_FIELDS), b"")
    else:
        out.send(304, fields.only(NOT_MODIFIED_FIELDS | EDGE_FIELDS), b"")
    return out


def range_plan(request: Request, stored: StoredResponse) -> FullBody | Partial | Unsatisfiable:
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


async def from_cache(request: Request, out: ResponseWriter, found: Found, fields: Fields) -> ResponseWriter:
    """A cached object, honouring conditionals, HEAD and Range. Closes a disk object's file."""
    stored = found.entry.stored
    try:
        pre = precondition(request, stored)
        if pre is not Precondition.PROCEED:
            return not_modified(out, fields, pre)
        plan = range_plan(request, stored)
        if isinstance(plan, Unsatisfiable):
            fields.extra.append(("Content-Range", f"bytes */{stored.size}"))
            out.send(416, fields.only(EDGE_FIELDS | {"content-range", "date"}), b"")
            return out
        fields.extra.append(("Accept-Ranges", "bytes"))
        if isinstance(found, MemoryObject):
            await _memory_body(out, found, fields, plan)
        else:
            await _disk_body(out, found, fields, plan)
        return out
    finally:
        if isinstance(found, DiskObject) and not found.file.closed:
            # Whatever path answered (body, 304, 416, an error), the disk object's file is done with.
            await asyncio.to_thread(found.file.close)


def _multipart(fields: Fields, plan: Partial, size: int) -> tuple[Fields, str, str | None]:
    boundary = secrets.token_hex(BOUNDARY_HEX // 2)
    ctype = fields.get("Content-Type")
    return fields.replacing("Content-Type", f"multipart/byteranges; boundary={boundary}"), boundary, ctype


async def _memory_body(
    out: ResponseWriter, found: MemoryObject, fields: Fields, plan: FullBody | Partial
) -> None:
    body: bytes | memoryview = found.body
    file_offset: int | None = 0  # where `body` starts in the kept body file (None: not in it)
    size = len(body)
    status = found.entry.stored.status
    if isinstance(plan, Partial) and len(plan.ranges) == 1:
        r = plan.ranges[0]
        fields.extra.append(("Content-Range", r.content_range(size)))
        status, body, file_offset = 206, memoryview(found.body)[r.start : r.end + 1], r.start
    elif isinstance(plan, Partial):
        fields, boundary, ctype = _multipart(fields, plan, size)
        parts = [multipart_head(boundary, ctype, r, size) + body[r.start : r.end + 1] for r in plan.ranges]
        status, body, file_offset = 206, b"".join(parts) + multipart_tail(boundary), None
    # The same bytes from the kept body file: sendfile() spares the copy into the socket (plain TCP only).
    from_file = file_offset is not None and found.file is not None and out.channel.socket_fd() >= 0
    if len(body) < (SENDFILE_FROM if from_file else LARGE_BODY):
        out.send(status, fields, body)  # type: ignore[arg-type]  # bytes + memoryview joins fine
        return
    out.start(status, fields, length=len(body))
    if from_file:
        assert found.file is not None and file_offset is not None
        await out.sendfile(found.file.fileno(), file_offset, len(body), copy=memoryview(body))
    else:
        await out.write(body)
    await out.end()


async def _disk_body(
    out: ResponseWriter, found: DiskObject, fields: Fields, plan: FullBody | Partial
) -> None:
    size = found.entry.stored.size
    status = found.entry.stored.status
    if isinstance(plan, Partial) and len(plan.ranges) > 1:
        fields, boundary, ctype = _multipart(fields, plan, size)
        out.start(206, fields, length=multipart_length(boundary, ctype, plan, size))
        for r in plan.ranges:
            await out.write(multipart_head(boundary, ctype, r, size))
            await out.sendfile(found.file.fileno(), r.start, r.length)
        await out.write(multipart_tail(boundary))
        await out.end()
        return
    offset, count = 0, size
    if isinstance(plan, Partial):
        r = plan.ranges[0]
        fields.extra.append(("Content-Range", r.content_range(size)))
        status, offset, count = 206, r.start, r.length
    out.start(status, fields, length=count)
    await out.sendfile(found.file.fileno(), offset, count)
    await out.end()


async def from_fill(
    request: Request,
    out: ResponseWriter,
    fill: Fill,
    stored: StoredResponse,
    length: int | None,
    fields: Fields,
) -> ResponseWriter:
    """Stream a body while it is being filled (read-while-write); a break aborts the connection."""
    status = stored.status
    offset, count = 0, length
    if length is not None and request.method == "GET":
        plan = range_plan(request, _with_size(stored, length))
        if isinstance(plan, Partial) and len(plan.ranges) == 1:
            r = plan.ranges[0]
            fields.extra.append(("Content-Range", r.content_range(length)))
            status, offset, count = 206, r.start, r.length
    if length is not None and stored.status == 200:
        fields.extra.append(("Accept-Ranges", "bytes"))
    out.start(status, fields, length=count)
    if request.method == "HEAD":
        await out.end()
        return out
    if fill.error is not None or (fill.received <= offset and not fill.complete):
        out.flush()  # nothing to send with it yet (or never will be): the client has the head meanwhile
    end = None if count is None else offset + count
    while end is None or offset < end:
        flushed = fill.flushed if end is None else min(fill.flushed, end)
        if offset < flushed and fill.error is None:
            # In the fill's file already: sent from there, so joiners share the bytes, not copies.
            await out.sendfile(fill.fileno(), offset, flushed - offset)
            offset = flushed
            continue
        limit = FILL_READ if end is None else min(FILL_READ, end - offset)
        chunk = await fill.read(offset, limit)  # raises the fill's error if it broke
        if not chunk:
            break
        await out.write(chunk)
        offset += len(chunk)
    await out.end()
    return out


def _with_size(stored: StoredResponse, size: int) -> StoredResponse:
    return replace(stored, size=size)


def error(
    out: ResponseWriter,
    status: int,
    message: str,
    *,
    cache_status: str,
    detail: object = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> ResponseWriter:
    """An error the edge itself generates: JSON `{"error", "detail"}`, never a traceback."""
    body = json.dumps({"error": message, "detail": detail}).encode()
    fields = Fields(
        (
            ("Content-Type", "application/json"),
            ("X-Cache", CacheStatus.ERROR.value),
            ("Cache-Status", cache_status),
            ("Cache-Control", "no-store"),
            *extra,
        )
    )
    out.send(status, fields, body, cache=CacheStatus.ERROR)
    return out


def origin_error(out: ResponseWriter, err: OriginError, *, cache_status: str) -> ResponseWriter:
    """502/504 for an origin failure; the body names the kind, never the origin (the log has the rest)."""
    if isinstance(err, OriginTimeout):
        message = "origin timeout"
    elif isinstance(err, OriginConnectError):
        message = "origin unreachable"
    else:
        message = "origin error"
    return error(out, err.status, message, cache_status=cache_status, detail=err.detail)
