"""decide(): what to do with a GET/HEAD given what the cache holds (RFC 9111 §4, RFC 5861).

Rules of this file: no I/O and no clock; the handler matches on the returned value and ends in
assert_never, so a new decision cannot be forgotten downstream.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edgecdn.http.cache_control import CacheControl, parse_cache_control
from edgecdn.policy.freshness import current_age
from edgecdn.policy.stored import StoredResponse

CACHEABLE_METHODS = frozenset({"GET", "HEAD"})


class PassReason(enum.Enum):
    METHOD = "method"
    AUTHORIZATION = "authorization"
    REQUEST_NO_STORE = "request-no-store"
    HIT_FOR_MISS = "hit-for-miss"


class RevalidateReason(enum.Enum):
    STALE = "stale"
    NO_CACHE = "no-cache"  # the stored response says so
    REQUEST = "request"  # the client's Cache-Control asks for it


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the policy reads from one request."""

    method: str
    cc: CacheControl
    has_auth: bool

    @property
    def no_store(self) -> bool:
        return "no-store" in self.cc


_PLAIN: dict[str, RequestFacts] = {}  # the facts of requests with no cache directives, by method


def request_facts(method: str, cache_control: list[str], pragma: list[str], has_auth: bool) -> RequestFacts:
    """Request Cache-Control, with `Pragma: no-cache` honoured only when Cache-Control is absent."""
    if not cache_control and not pragma and not has_auth:
        plain = _PLAIN.get(method)
        if plain is None:
            plain = _PLAIN.setdefault(
                method, RequestFacts(method=method, cc=CacheControl({}), has_auth=False)
            )
        return plain
    cc = parse_cache_control(cache_control)
    if not cache_control and any("no-cache" in p.lower() for p in pragma):
        cc = CacheControl({"no-cache": None})
    return RequestFacts(method=method, cc=cc, has_auth=has_auth)


@dataclass(frozen=True, slots=True)
class Fresh:
    entry: StoredResponse
    age: float
    stale: bool = False  # served stale because the client allowed it (max-stale)


@dataclass(frozen=True, slots=True)
class StaleWhileRevalidate:
    entry: StoredResponse
    age: float


@dataclass(frozen=True, slots=True)
class Revalidate:
    entry: StoredResponse
    reason: RevalidateReason


@dataclass(frozen=True, slots=True)
class Miss:
    """Fetch and try to store; `alone`: in a fill of its own, never joined with other requests' fills.

    A request with Authorization may get an answer meant for it only: it is stored (and then shared) only
    when the response allows it (RFC 9111 §3.5), and never handed to requests that merely coalesced.
    """

    alone: bool = False


@dataclass(frozen=True, slots=True)
class Pass:
    reason: PassReason


@dataclass(frozen=True, slots=True)
class OnlyIfCached:
    """The client said only-if-cached and nothing usable is stored: 504 (RFC 9111 §5.2.1.7)."""


Decision = Fresh | StaleWhileRevalidate | Revalidate | Miss | Pass | OnlyIfCached


def decide(req: RequestFacts, entry: StoredResponse | None, *, now: float) -> Decision:
    """The cache's decision for one request (RFC 9111 §4)."""
    if req.method not in CACHEABLE_METHODS:
        return Pass(PassReason.METHOD)
    if entry is None or (req.has_auth and not entry.auth_ok):
        if "only-if-cached" in req.cc:
            return OnlyIfCached()
        if entry is not None:  # stored for requests without Authorization: not this one's answer
            return Pass(PassReason.AUTHORIZATION)
        if req.no_store:
            return Pass(PassReason.REQUEST_NO_STORE)
        return Miss(alone=req.has_auth)
    age = current_age(entry.initial_age, entry.response_time, now=now)
    if "no-cache" in req.cc and "only-if-cached" not in req.cc:
        return Revalidate(entry, RevalidateReason.REQUEST)
    if entry.no_cache:
        # §5.2.1.7: only-if-cached forbids the origin, and this entry is unusable without it.
        if "only-if-cached" in req.cc:
            return OnlyIfCached()
        return Revalidate(entry, RevalidateReason.NO_CACHE)
    lifetime = 0.0 if entry.invalidated else entry.lifetime
    fresh = age < lifetime
    max_age = req.cc.seconds("max-age")
    if max_age is not None and age > max_age:
        fresh = False
    min_fresh = req.cc.seconds("min-fresh")
    if fresh and min_fresh is not None and lifetime - age < min_fresh:
        fresh = False
    if fresh:
        return Fresh(entry, age)
    # Negative staleness: still fresh, but not fresh enough for the request's max-age or min-fresh, so
    # neither max-stale nor stale-while-revalidate (which are about stale responses) applies.
    staleness = age - lifetime
    if staleness >= 0 and not entry.must_revalidate:
        if "max-stale" in req.cc:
            allowed = req.cc.directives["max-stale"]
            if allowed is None or staleness <= req.cc.seconds("max-stale"):  # type: ignore[operator]
                return Fresh(entry, age, stale=True)
        if entry.stale_while_revalidate > 0 and staleness <= entry.stale_while_revalidate:
            return StaleWhileRevalidate(entry, age)
    if "only-if-cached" in req.cc:
        return OnlyIfCached()
    return Revalidate(entry, RevalidateReason.STALE if staleness >= 0 else RevalidateReason.REQUEST)


def usable_on_error(entry: StoredResponse, *, now: float) -> bool:
    """RFC 5861 §4: may this stale entry answer when the origin failed?"""
    if entry.must_revalidate or entry.no_cache:
        return False
    age = current_age(entry.initial_age, entry.response_time, now=now)
    lifetime = 0.0 if entry.invalidated else entry.lifetime
    return age - lifetime <= entry.stale_if_error


def ttl_left(entry: StoredResponse, age: float) -> float:
    """Remaining freshness, for Cache-Status `ttl` (negative when stale)."""
    return (0.0 if entry.invalidated else entry.lifetime) - age
