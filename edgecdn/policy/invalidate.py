"""Invalidation after unsafe methods (RFC 9111 §4.4): which cache keys a response makes stale."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from edgecdn.http.fields import Headers, get_one
from edgecdn.policy.key import primary_key

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def invalidated_keys(
    method: str, status: int, target: str, host: str | None, headers: Headers
) -> tuple[str, ...]:
    """The target, plus Location and Content-Location when they name the same host (§4.4)."""
    if method in SAFE_METHODS or not 200 <= status < 400:
        return ()
    keys = [primary_key(target)]
    for name in ("location", "content-location"):
        value = get_one(headers, name)
        if value is None:
            continue
        url = urlsplit(urljoin(target, value.strip()))
        # §4.4: never invalidate another host's URIs (that would let one site purge another).
        if url.netloc and url.netloc != (host or ""):
            continue
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        if path not in keys:
            keys.append(primary_key(path))
    return tuple(keys)
