"""Revalidation: the conditional request to send, and merging a 304 into the stored entry (RFC 9111 §4.3)."""

from __future__ import annotations

from edgecdn.config import CacheConfig
from edgecdn.http.dates import format_http_date
from edgecdn.http.fields import NOT_UPDATED_BY_304, Headers, end_to_end, get_one
from edgecdn.policy.admit import Exchange, to_stored
from edgecdn.policy.stored import StoredResponse


def conditional_headers(entry: StoredResponse) -> dict[str, str]:
    """Validators to send upstream (RFC 9111 §4.3.1); empty means refetch unconditionally."""
    out: dict[str, str] = {}
    if entry.etag is not None:
        out["If-None-Match"] = entry.etag
    if entry.last_modified is not None:
        out["If-Modified-Since"] = entry.last_modified
    return out


def merge_304(
    entry: StoredResponse,
    headers_304: Headers,
    *,
    path: str,
    request_time: float,
    response_time: float,
    cfg: CacheConfig,
) -> StoredResponse:
    """RFC 9111 §4.3.4: update the stored header fields with those of the 304 and restart its age."""
    fresh = end_to_end(headers_304, drop=NOT_UPDATED_BY_304)
    if get_one(fresh, "date") is None:
        # RFC 9110 §6.6.1: a Date-less response is dated on receipt; else the old Date would keep its age.
        fresh += (("Date", format_http_date(response_time)),)
    replaced = {n.lower() for n, _ in fresh}
    merged = tuple((n, v) for n, v in entry.headers if n.lower() not in replaced) + fresh
    ex = Exchange(
        path=path,
        status=entry.status,
        headers=merged,
        request_time=request_time,
        response_time=response_time,
    )
    return to_stored(ex, cfg=cfg, size=entry.size)


def validators_match(entry: StoredResponse, headers_304: Headers) -> bool:
    """RFC 9111 §4.3.4: a 304 that names a different strong ETag does not select this entry."""
    for name, value in headers_304:
        if name.lower() == "etag":
            return entry.etag is None or value.strip() == entry.etag.strip()
    return True
