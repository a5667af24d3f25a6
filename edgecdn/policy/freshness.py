"""Freshness lifetime and age (RFC 9111 §4.2, RFC 9213 CDN-Cache-Control, RFC 5861 stale-*).

Rules of this file: precedence is operator override > CDN-Cache-Control > s-maxage > max-age > Expires >
operator default > heuristic; the origin's Date is trusted only within the configured clock skew.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgecdn.config import CacheConfig, TtlRule
from edgecdn.http.cache_control import CacheControl, parse_age, parse_cache_control, parse_targeted
from edgecdn.http.dates import parse_http_date
from edgecdn.http.fields import Headers, get_all, get_one
from edgecdn.policy.ttl_jitter import spread_lifetime

# RFC 9110 §15.1 / RFC 9111 §4.2.2: status codes that are heuristically cacheable.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})


@dataclass(frozen=True, slots=True)
class Freshness:
    lifetime: float
    stale_while_revalidate: float
    stale_if_error: float
    must_revalidate: bool
    no_cache: bool


def effective_cache_control(headers: Headers) -> CacheControl:
    """CDN-Cache-Control, when it parses and has directives, replaces Cache-Control for us (RFC 9213 §2.1)."""
    cdn = parse_targeted(get_all(headers, "cdn-cache-control"))
    return cdn if cdn else parse_cache_control(get_all(headers, "cache-control"))


def matching_rule(path: str, rules: tuple[TtlRule, ...]) -> TtlRule | None:
    """The first operator TTL rule whose prefix or regex matches the path."""
    for rule in rules:
        if rule.prefix is not None and path.startswith(rule.prefix):
            return rule
        if rule.regex is not None and re.search(rule.regex, path):
            return rule
    return None


def freshness(status: int, headers: Headers, *, path: str, date: float, cfg: CacheConfig) -> Freshness:
    """Freshness facts for a response whose Date is `date` (the origin's, or our receipt time without one)."""
    cc = effective_cache_control(headers)
    rule = matching_rule(path, cfg.rules)
    lifetime = spread_lifetime(_lifetime(status, headers, cc, rule, date=date, cfg=cfg), rule, path)
    swr = cc.seconds("stale-while-revalidate")
    sie = cc.seconds("stale-if-error")
    default_swr = (
        rule.stale_while_revalidate
        if rule and rule.stale_while_revalidate is not None
        else cfg.stale_while_revalidate
    )
    default_sie = rule.stale_if_error if rule and rule.stale_if_error is not None else cfg.stale_if_error
    return Freshness(
        lifetime=lifetime,
        stale_while_revalidate=float(swr if swr is not None else default_swr),
        stale_if_error=float(sie if sie is not None else default_sie),
        must_revalidate="must-revalidate" in cc or "proxy-revalidate" in cc or "s-maxage" in cc,
        no_cache="no-cache" in cc and not cc.field_names("no-cache"),
    )


def _lifetime(
    status: int,
    headers: Headers,
    cc: CacheControl,
    rule: TtlRule | None,
    *,
    date: float,
    cfg: CacheConfig,
) -> float:
    if rule is not None and rule.ttl is not None and rule.mode == "override":
        return rule.ttl
    for name in ("s-maxage", "max-age"):
        seconds = cc.seconds(name)
        if seconds is not None:
            return float(seconds)
    # RFC 9213 §2.2: when CDN-Cache-Control governs, Expires is ignored along with Cache-Control.
    expires = [] if cc.targeted else get_all(headers, "expires")
    if expires:
        # RFC 9111 §5.3: an invalid date (several field lines included) means already expired.
        when = parse_http_date(expires[0]) if len(expires) == 1 else None
        return max(0.0, when - date) if when is not None else 0.0
    if rule is not None and rule.ttl is not None:
        return rule.ttl
    last_modified = parse_http_date(get_one(headers, "last-modified"))
    if status in HEURISTIC_STATUSES and last_modified is not None and last_modified < date:
        return min(cfg.heuristic_fraction * (date - last_modified), cfg.heuristic_max)
    return 0.0


def trusted_date(date_header: str | None, *, response_time: float, max_skew: float) -> float:
    """The origin's Date, unless it is missing or further than `max_skew` from our clock."""
    date = parse_http_date(date_header)
    if date is None or abs(date - response_time) > max_skew:
        return response_time
    return date


def initial_age(headers: Headers, *, request_time: float, response_time: float, max_skew: float) -> float:
    """corrected_initial_age (RFC 9111 §4.2.3)."""
    date = trusted_date(get_one(headers, "date"), response_time=response_time, max_skew=max_skew)
    apparent_age = max(0.0, response_time - date)
    age_value = parse_age(get_all(headers, "age")) or 0
    response_delay = max(0.0, response_time - request_time)
    return max(apparent_age, age_value + response_delay)


def current_age(initial: float, response_time: float, *, now: float) -> float:
    """RFC 9111 §4.2.3: corrected initial age plus time resident in this cache."""
    return initial + max(0.0, now - response_time)
