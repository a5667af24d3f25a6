"""Pass-through: any request the cache does not handle streams to the origin and back unchanged."""

from __future__ import annotations

import asyncio

from edgecdn.errors import OriginError
from edgecdn.fetch.client import OriginClient, OriginResponse, upstream_headers
from edgecdn.fetch.pool import OriginPool
from edgecdn.http.fields import PER_RESPONSE, end_to_end, get_one
from edgecdn.policy.status import CacheStatus, cache_status_field
from edgecdn.serve.request import Request
from edgecdn.serve.writer import Fields, ResponseWriter

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


async def send(
    request: Request, out: ResponseWriter, client: OriginClient, pool: OriginPool, primary: str
) -> OriginResponse:
    """Forward the request as the client sent it (body streamed) through the pool's retry loop.

    A request with a body may have been partly sent when it failed, so only bodiless idempotent
    requests move on to the next origin.
    """
    headers = upstream_headers(tuple(request.headers.items()), client_ip=request.remote)
    body = request.body
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await pool.send(
        client,
        request.method,
        request.target,
        headers,
        key=primary,
        client_ip=request.remote,
        body=body.chunks() if body is not None else None,
        idempotent=request.method in IDEMPOTENT and body is None,
    )
    out.origin = resp.origin
    out.upstream_s = loop.time() - started
    return resp


def content_length(resp: OriginResponse) -> int | None:
    value = get_one(resp.headers, "content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


async def relay(
    request: Request,
    out: ResponseWriter,
    resp: OriginResponse,
    client: OriginClient,
    cache_status: str,
    status: CacheStatus = CacheStatus.PASS,
) -> ResponseWriter:
    """Stream an origin response to the client as it arrives; a broken body aborts the connection."""
    fields = Fields(end_to_end(resp.headers, drop=PER_RESPONSE))
    fields.extra += (("X-Cache", status.value), ("Cache-Status", cache_status))
    try:
        out.start(resp.status, fields, length=content_length(resp), cache=status)
        if request.method != "HEAD":
            out.flush()
            async for chunk in client.body(resp):
                await out.write(chunk)
        await out.end()
    except OriginError:
        resp.abort()  # the response stays unfinished: the client sees a broken body, not a short one
    finally:
        resp.release()
    return out


def pass_status(reason: str) -> str:
    return cache_status_field(
        CacheStatus.PASS, fwd="method" if reason == "method" else "bypass", detail=reason
    )
