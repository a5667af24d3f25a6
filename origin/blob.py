"""Synthetic test content: ``/_test/blob/<size>`` and ``/_test/echo`` (only with --test-hooks).

Rules of this file: a blob is never built whole, it is cut from a repeating pattern seeded by size
and ``v``; its Range (single range only) and conditional handling is ours, so it stays small.
"""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate, parsedate_to_datetime

import xxhash
from aiohttp import web

from origin import hooks
from origin.rules import DEFAULT_CACHE_CONTROL

# A prime period, so 64 KiB chunk and range boundaries never line up with the pattern.
_PERIOD = 65_521
_EPOCH = 1_700_000_000
MAX_SIZE = 1 << 40


def install(app: web.Application) -> None:
    app.router.add_route("*", r"/_test/blob/{size:\d+}", blob)
    app.router.add_route("*", "/_test/echo", echo)


@functools.lru_cache(maxsize=16)
def _pattern(size: int, v: str) -> bytes:
    return random.Random(f"edgecdn-blob:{size}:{v}").randbytes(_PERIOD) * 3


def blob_etag(size: int, v: str) -> str:
    return f'"blob-{size:x}-{xxhash.xxh3_64_hexdigest(v.encode())}"'


def blob_last_modified(v: str) -> float:
    """Later for a larger integer ``v``, so a new version is also newer by date."""
    step = int(v) if v.isascii() and v.isdigit() else xxhash.xxh32_intdigest(v.encode())
    return float(_EPOCH + (step % 1_000_000) * 60)


def blob_bytes(size: int, v: str, start: int = 0, end: int | None = None) -> bytes:
    """The bytes [start, end) of a blob, whole; for tests that check what they received."""
    return b"".join(_slices(size, v, start, size if end is None else end))


def _slices(size: int, v: str, start: int, end: int) -> Iterator[bytes]:
    pattern = _pattern(size, v)
    for pos in range(start, end, hooks.CHUNK):
        offset = pos % _PERIOD
        yield pattern[offset : offset + min(hooks.CHUNK, end - pos)]


async def _chunks(size: int, v: str, start: int, end: int) -> AsyncIterator[bytes]:
    for chunk in _slices(size, v, start, end):
        yield chunk


async def blob(request: web.Request) -> web.StreamResponse:
    """GET/HEAD a deterministic body of ``size`` bytes with strong validators."""
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    size = int(request.match_info["size"])
    if size > MAX_SIZE:
        raise web.HTTPNotFound()
    v = request.query.get("v", "1")
    shaping = request[hooks.HOOKS]
    etag = shaping.etag or blob_etag(size, v)
    last_modified = blob_last_modified(v)
    headers = {
        "ETag": etag,
        "Last-Modified": formatdate(last_modified, usegmt=True),
        "Cache-Control": DEFAULT_CACHE_CONTROL,
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    if _not_modified(request, etag, last_modified):
        return web.Response(status=304, headers=headers)
    status, start, end = 200, 0, size
    if _wanted_range(request, etag, headers["Last-Modified"]):
        try:
            start, end = _byte_range(request, size)
        except ValueError:
            headers["Content-Range"] = f"bytes */{size}"
            return web.Response(status=416, headers=headers)
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = end - start
    await response.prepare(request)
    if request.method == "GET" and end > start:
        await hooks.send_body(request, response, _chunks(size, v, start, end), shaping)
    return response


def _not_modified(request: web.Request, etag: str, last_modified: float) -> bool:
    """RFC 9110 §13.2.2: If-None-Match, else If-Modified-Since."""
    if request.if_none_match is not None:
        return hooks.etag_matches(request, etag)
    since = request.if_modified_since
    return since is not None and last_modified <= since.timestamp()


def _wanted_range(request: web.Request, etag: str, last_modified: str) -> bool:
    """RFC 9110 §13.1.5: If-Range must match exactly (strong ETag or the same date)."""
    if "Range" not in request.headers:
        return False
    if_range = request.headers.get("If-Range")
    if if_range is None or if_range == etag:
        return True
    if if_range.startswith(("W/", '"')):
        return False
    try:
        return parsedate_to_datetime(if_range).timestamp() == parsedate_to_datetime(last_modified).timestamp()
    except (TypeError, ValueError):
        return False


def _byte_range(request: web.Request, size: int) -> tuple[int, int]:
    """One byte range as [start, end); ValueError when unsatisfiable or not a single range."""
    rng = request.http_range
    if rng.start is None:
        raise ValueError("no range")
    if rng.start < 0:
        return max(size + rng.start, 0), size
    end = size if rng.stop is None else min(rng.stop, size)
    if rng.start >= size:
        raise ValueError("unsatisfiable")
    return rng.start, end


async def echo(request: web.Request) -> web.Response:
    """Any method: what the origin received, as JSON (the middleware already read the body)."""
    return web.json_response(
        {
            "method": request.method,
            "target": request.raw_path,
            "headers": hooks.header_dict(request.headers),
            "body_len": request[hooks.BODY_LEN],
        },
        headers={"Cache-Control": "no-store"},
    )
