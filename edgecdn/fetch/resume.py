"""Mid-body failover: a body that breaks off is continued from the next origin with Range + If-Range.

Rules of this file: only a pinned body is resumed: one with a strong ETag (If-Range), or a versioned URL
whose body hash the fill verifies at the end. Only a 206 that carries the same ETag (when there is one) and
starts exactly at the byte received continues it; anything else (a 200, another ETag, another offset)
fails the fill, so a body is never stitched from two different objects. Each origin is tried at most once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from edgecdn.errors import OriginBodyError, OriginError
from edgecdn.fetch.client import OriginClient, OriginResponse
from edgecdn.fetch.pool import OriginPool
from edgecdn.http.fields import Headers, get_one

log = logging.getLogger("edgecdn.fill")
_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*")


@dataclass(frozen=True, slots=True)
class ResumeTarget:
    """What a resume request needs from the fill that started it."""

    primary: str
    target: str
    headers: Headers  # the fill's own upstream fields (client fields already filtered)
    client_ip: str | None
    versioned: bool = False  # the name pins the content (the fill verifies its hash)


def strong_etag(headers: Headers) -> str | None:
    """RFC 9110 §8.8.3: a strong entity tag (If-Range needs one, §13.1.5)."""
    etag = get_one(headers, "etag")
    if etag is None or not etag.strip().startswith('"'):
        return None
    return etag.strip()


async def resumable_body(
    client: OriginClient, pool: OriginPool, want: ResumeTarget, resp: OriginResponse
) -> AsyncIterator[bytes]:
    """`client.body(resp)`, continued from other origins when it breaks after a retryable error."""
    etag = strong_etag(resp.headers)
    total = get_one(resp.headers, "content-length")
    tried = {resp.origin}
    current = resp
    received = 0
    ok = False
    try:
        while True:
            try:
                async for chunk in client.body(current):
                    received += len(chunk)
                    yield chunk
                ok = True
                return
            except OriginError as e:
                if not e.retryable or (etag is None and not want.versioned) or resp.status != 200:
                    raise
                pool.report(current.origin, ok=False)
                nxt = await _resume(client, pool, want, etag, total, received, tried, e)
                if current is not resp:
                    current.abort()
                current = nxt
                tried.add(nxt.origin)
    finally:
        if current is not resp:
            if ok:
                current.release()
            else:
                current.abort()


async def _resume(
    client: OriginClient,
    pool: OriginPool,
    want: ResumeTarget,
    etag: str | None,
    total: str | None,
    received: int,
    tried: set[str],
    error: OriginError,
) -> OriginResponse:
    """The rest of the body from an origin not tried yet, or the error that ends the fill."""
    order = tuple(o for o in pool.order(want.primary, want.client_ip) if o not in tried)
    if not order:
        pool.metrics.fill_resumes.labels("no_origin").inc()
        raise error
    headers = want.headers + (("Range", f"bytes={received}-"),) + ((("If-Range", etag),) if etag else ())
    try:
        nxt = await pool.send(
            client, "GET", want.target, headers, key=want.primary, client_ip=want.client_ip, origins=order
        )
    except OriginError:
        pool.metrics.fill_resumes.labels("failed").inc()
        raise error from None
    why = _mismatch(nxt, etag, total, received)
    if why is not None:
        nxt.abort()
        pool.metrics.fill_resumes.labels("mismatch").inc()
        log.warning("cannot resume %s at byte %d from %s: %s", want.primary, received, nxt.origin, why)
        raise OriginBodyError(f"resume from {nxt.origin} refused: {why}")
    pool.metrics.fill_resumes.labels("resumed").inc()
    log.warning("resumed %s at byte %d from %s after: %s", want.primary, received, nxt.origin, error)
    return nxt


def _mismatch(resp: OriginResponse, etag: str | None, total: str | None, received: int) -> str | None:
    """Why this answer cannot continue the body, or None when it is the same object's rest."""
    if resp.status != 206:
        return f"answered {resp.status}, not 206 (object changed)"
    if etag is not None and strong_etag(resp.headers) != etag:
        return f"ETag {get_one(resp.headers, 'etag')!r} differs from {etag!r}"
    m = _CONTENT_RANGE.fullmatch(get_one(resp.headers, "content-range") or "")
    if m is None or int(m.group(1)) != received:
        return f"Content-Range {get_one(resp.headers, 'content-range')!r} does not start at {received}"
    if total is not None and m.group(3) != total.strip():
        return f"Content-Range total {m.group(3)} differs from Content-Length {total}"
    return None
