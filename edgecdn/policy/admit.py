"""Whether a response may be stored, and the StoredResponse it becomes (RFC 9111 §3, §3.1, §4.2).

Rules of this file: when in doubt, do not store; a shared cache drops `private` responses, Set-Cookie ones
unless the operator's `set_cookie` setting says "strip" or "store", and only stores an Authorization-bearing
exchange when the response explicitly allows it (§3.5).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edgecdn.config import CacheConfig
from edgecdn.http.dates import parse_http_date
from edgecdn.http.fields import PER_RESPONSE, Headers, end_to_end, get_all, get_one, split_list
from edgecdn.policy.freshness import (
    HEURISTIC_STATUSES,
    effective_cache_control,
    freshness,
    initial_age,
    matching_rule,
)
from edgecdn.policy.stored import StoredResponse

# Status codes whose caching semantics this cache implements (RFC 9111 §5.2.2.3 must-understand).
UNDERSTOOD_STATUSES = (HEURISTIC_STATUSES - {206}) | {302, 307}


class NotStorable(enum.Enum):
    """Why a response was not stored; the value is the Cache-Status `detail`."""

    NO_STORE = "no-store"
    PRIVATE = "private"
    AUTHORIZATION = "authorization"
    SET_COOKIE = "set-cookie"
    STATUS = "status"
    VARY_STAR = "vary-star"
    NO_FRESHNESS = "zero-ttl"
    TOO_LARGE = "too-large"
    REQUEST_NO_STORE = "request-no-store"
    REQUEST_ERROR = "request-error"


# Answers that describe the request that caused them (its method, size, fields), not the resource: stored,
# one client's malformed or oversized request would become everybody's answer (HHO, HMC, method override).
REQUEST_SHAPED = frozenset({400, 405, 408, 411, 413, 414, 417, 431, 501})


@dataclass(frozen=True, slots=True)
class Exchange:
    """The facts of one origin exchange that admission needs."""

    path: str
    status: int
    headers: Headers
    request_time: float
    response_time: float
    request_has_auth: bool = False
    request_no_store: bool = False
    slice: bool = False  # a 206 to a slice request (policy/slice.py), already checked as one


def admit(ex: Exchange, *, cfg: CacheConfig) -> StoredResponse | NotStorable:
    """RFC 9111 §3: store this response, or say why not."""
    if ex.request_no_store:
        return NotStorable.REQUEST_NO_STORE
    if ex.status in REQUEST_SHAPED:
        return NotStorable.REQUEST_ERROR
    cc = effective_cache_control(ex.headers)
    # §5.2.2.3: must-understand stands in for no-store when this cache implements the status code's
    # caching rules, and forbids storing a status code it does not.
    understood = ex.status in UNDERSTOOD_STATUSES
    if "must-understand" in cc and not understood:
        return NotStorable.STATUS
    if "no-store" in cc and not ("must-understand" in cc and understood):
        return NotStorable.NO_STORE
    if "private" in cc and not cc.field_names("private"):
        return NotStorable.PRIVATE
    auth_ok = "public" in cc or "s-maxage" in cc or "must-revalidate" in cc
    if ex.request_has_auth and not auth_ok:
        return NotStorable.AUTHORIZATION
    # Set-Cookie named by a qualified private / no-cache is withheld from storage anyway (to_stored).
    withheld = cc.field_names("private") | cc.field_names("no-cache")
    cookie = "set-cookie" not in withheld and get_one(ex.headers, "set-cookie") is not None
    if cookie and set_cookie_mode(ex.path, cfg) == "pass":
        return NotStorable.SET_COOKIE
    explicit = any(d in cc for d in ("max-age", "s-maxage", "public")) or bool(get_one(ex.headers, "expires"))
    if (
        (ex.status == 206 and not ex.slice)
        or ex.status == 304
        or ex.status < 200
        or not (explicit or ex.status in HEURISTIC_STATUSES)
    ):
        return NotStorable.STATUS
    vary = tuple(v.lower() for v in split_list(get_all(ex.headers, "vary")))
    if "*" in vary:
        return NotStorable.VARY_STAR
    # 19 significant digits are plenty to compare (and int() refuses more than 4300).
    length = get_one(ex.headers, "content-length") or ""
    if length.isascii() and length.isdigit() and int(length.lstrip("0")[:19] or "0") > cfg.max_object_size:
        return NotStorable.TOO_LARGE
    stored = to_stored(ex, cfg=cfg, size=0)
    stored_ok = stored.lifetime > 0 or stored.stale_while_revalidate > 0 or stored.has_validator
    if not stored_ok:
        return NotStorable.NO_FRESHNESS
    return stored


def to_stored(ex: Exchange, *, cfg: CacheConfig, size: int) -> StoredResponse:
    """The StoredResponse for an exchange already judged storable (also used after a 304 merge)."""
    cc = effective_cache_control(ex.headers)
    # RFC 9111 §5.2.2.7: a qualified `private` names fields a shared cache must not store; §5.2.2.4: those
    # of a qualified `no-cache` must not be reused without revalidation, so they are not stored either.
    drop = PER_RESPONSE | cc.field_names("private") | cc.field_names("no-cache")
    if set_cookie_mode(ex.path, cfg) != "store":
        drop |= {"set-cookie"}  # "strip", and a 304 merged into a "pass" entry (§4.3.4)
    headers = end_to_end(ex.headers, drop=drop)
    # Expires minus Date and Date minus Last-Modified are both on the origin's clock (§4.2.1), so its Date
    # is used as sent; the clock-skew bound protects the age only (§4.2.3).
    origin_date = parse_http_date(get_one(headers, "date"))
    date = ex.response_time if origin_date is None else origin_date
    fresh = freshness(ex.status, headers, path=ex.path, date=date, cfg=cfg)
    tags = split_tags(get_all(headers, "surrogate-key") + get_all(headers, "cache-tag"))
    return StoredResponse(
        status=ex.status,
        headers=headers,
        size=size,
        response_time=ex.response_time,
        initial_age=initial_age(
            ex.headers,
            request_time=ex.request_time,
            response_time=ex.response_time,
            max_skew=cfg.clock_skew,
        ),
        lifetime=fresh.lifetime,
        stale_while_revalidate=fresh.stale_while_revalidate,
        stale_if_error=fresh.stale_if_error,
        must_revalidate=fresh.must_revalidate,
        no_cache=fresh.no_cache,
        auth_ok="public" in cc or "s-maxage" in cc or "must-revalidate" in cc,
        etag=get_one(headers, "etag"),
        last_modified=get_one(headers, "last-modified"),
        vary=tuple(v.lower() for v in split_list(get_all(headers, "vary"))),
        tags=tags,
    )


def set_cookie_mode(path: str, cfg: CacheConfig) -> str:
    """What to do with a Set-Cookie response here: the first matching rule's setting, else the cache's."""
    rule = matching_rule(path, cfg.rules)
    return rule.set_cookie if rule is not None and rule.set_cookie is not None else cfg.set_cookie


def split_tags(values: list[str]) -> tuple[str, ...]:
    """Surrogate-Key is space-separated, Cache-Tag comma-separated; accept both in either."""
    seen: dict[str, None] = {}
    for value in values:
        for tag in value.replace(",", " ").split():
            seen.setdefault(tag, None)
    return tuple(seen)
