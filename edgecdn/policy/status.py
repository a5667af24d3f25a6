"""One cache-status vocabulary feeds X-Cache, Cache-Status (RFC 9211), the access log and metrics."""

from __future__ import annotations

import enum


class CacheStatus(enum.Enum):
    """What the edge did for one request; the value is the X-Cache word."""

    HIT = "HIT"  # fresh from cache
    MISS = "MISS"  # not in cache, fetched
    STALE = "STALE"  # stale from cache (max-stale or stale-if-error)
    UPDATING = "UPDATING"  # stale from cache while one background refresh runs
    REVALIDATED = "REVALIDATED"  # origin said 304, served from cache
    EXPIRED = "EXPIRED"  # stale in cache, origin sent a new body
    PASS = "PASS"  # not cacheable by method, request or marker: straight to the origin
    # The edge answered with an error of its own: a refusal (400, 403 signed URL, 508 loop) or an origin
    # failure it reports (502/504); never counted as a miss or a pass.
    ERROR = "ERROR"


def cache_status_field(
    status: CacheStatus,
    *,
    fwd: str | None = None,
    fwd_status: int | None = None,
    stored: bool = False,
    ttl: float | None = None,
    detail: str | None = None,
) -> str:
    """The `Cache-Status: edgecdn; ...` member for one response (RFC 9211 §2)."""
    parts = ["edgecdn"]
    if status in (
        CacheStatus.HIT,
        CacheStatus.STALE,
        CacheStatus.UPDATING,
        CacheStatus.REVALIDATED,
    ):
        parts.append("hit")
    if fwd:
        parts.append(f"fwd={fwd}")
    if fwd_status is not None:
        parts.append(f"fwd-status={fwd_status}")
    if stored:
        parts.append("stored")
    if ttl is not None:
        parts.append(f"ttl={int(ttl)}")
    if detail:
        parts.append(f"detail={detail}")
    return "; ".join(parts)
