"""Pass-through: any request the cache does not handle streams to the origin and back unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from multidict import CIMultiDict

from edgecdn.errors import OriginError
from edgecdn.fetch.client import OriginClient, OriginResponse, upstream_headers
from edgecdn.fetch.pool import OriginPool
from edgecdn.http.fields import PER_RESPONSE, end_to_end
from edgecdn.policy.status import CacheStatus, cache_status_field

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


async def _request_body(request: web.BaseRequest) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_any():
        yield chunk


async def send(
    request: web.BaseRequest, client: OriginClient, pool: OriginPool, primary: str
) -> OriginResponse:
    """Forward the request as the client sent it (body streamed) through the pool's retry loop.

    A request with a body may have been partly sent when it failed, so only bodiless idempotent
    requests move on to the next origin.
    """
    headers = upstream_headers(tuple(request.headers.items()), client_ip=request.remote)
    has_body = request.body_exists
    return await pool.send(
        client,
        request.method,
        request.raw_path,
        headers,
        key=primary,
        client_ip=request.remote,
        body=_request_body(request) if has_body else None,
        idempotent=request.method in IDEMPOTENT and not has_body,
    )


async def relay(
    request: web.BaseRequest,
    resp: OriginResponse,
    client: OriginClient,
    cache_status: str,
    status: CacheStatus = CacheStatus.PASS,
) -> web.StreamResponse:
    """Stream an origin response to the client as it arrives; a broken body aborts the connection."""
    headers: CIMultiDict[str] = CIMultiDict(end_to_end(resp.headers, drop=PER_RESPONSE - {"content-length"}))
    headers["X-Cache"] = status.value
    headers["Cache-Status"] = cache_status
    out = web.StreamResponse(status=resp.status, headers=headers)
    try:
        await out.prepare(request)
        if request.method != "HEAD":
            async for chunk in client.body(resp):
                await out.write(chunk)
        await out.write_eof()
    except OriginError:
        resp.abort()
        if request.transport is not None:
            request.transport.close()  # the client must see a broken body, not a short one
        return out
    finally:
        resp.release()
    return out


def pass_status(reason: str) -> str:
    return cache_status_field(
        CacheStatus.PASS, fwd="method" if reason == "method" else "bypass", detail=reason
    )
