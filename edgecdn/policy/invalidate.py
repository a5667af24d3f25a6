"""Unsafe methods: which cache keys a response makes stale (RFC 9111 §4.4), and when a POST's response
is the target's new representation (RFC 9110 §9.3.3, §8.7)."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from edgecdn.http.fields import Headers, get_one
from edgecdn.policy.freshness import effective_cache_control
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
        key = _same_host_key(target, host, value) if value is not None else None
        if key is not None and key not in keys:
            keys.append(key)
    return tuple(keys)


def post_answer_reusable(method: str, status: int, target: str, host: str | None, headers: Headers) -> bool:
    """RFC 9110 §9.3.3: a POST's 200/203 may answer a later GET of its target when it carries explicit
    freshness and a Content-Location that is the target itself (§8.7: then it is that resource's current
    representation). Heuristic freshness never applies to it."""
    if method != "POST" or status not in (200, 203):
        return False
    location = get_one(headers, "content-location")
    if location is None or _same_host_key(target, host, location) != primary_key(target):
        return False
    cc = effective_cache_control(headers)
    explicit = cc.seconds("s-maxage") is not None or cc.seconds("max-age") is not None
    return explicit or get_one(headers, "expires") is not None


def _same_host_key(target: str, host: str | None, value: str) -> str | None:
    """The cache key a Location/Content-Location value names, when it is on this host; else None."""
    url = urlsplit(urljoin(target, value.strip()))
    # §4.4: never another host's URIs (that would let one site purge, or fill, another's).
    if url.netloc and url.netloc != (host or ""):
        return None
    return primary_key((url.path or "/") + (f"?{url.query}" if url.query else ""))
