"""Freshness lifetime (RFC 9111 §4.2.1, §4.2.2, RFC 9213, RFC 5861) and age (RFC 9111 §4.2.3).

Precedence: operator override > CDN-Cache-Control > s-maxage > max-age > Expires - Date > operator default >
heuristic. Time is an argument everywhere; NOW is a fixed instant.
"""

from dataclasses import replace

import pytest

from edgecdn.config import CacheConfig, TtlRule
from edgecdn.http.dates import format_http_date
from edgecdn.http.fields import Headers
from edgecdn.policy.freshness import (
    Freshness,
    current_age,
    effective_cache_control,
    freshness,
    initial_age,
    matching_rule,
    trusted_date,
)

NOW = 1_700_000_000.0
CFG = CacheConfig()
OVERRIDE = TtlRule(prefix="/static/", ttl=999.0, mode="override")
DEFAULT = TtlRule(prefix="/static/", ttl=50.0)


def at(offset: float) -> str:
    return format_http_date(NOW + offset)


def h(*pairs: tuple[str, str]) -> Headers:
    return tuple(pairs)


# (id, status, headers, rules, lifetime) for a response whose Date is NOW, on path /static/a.css
LIFETIME = [
    (
        "rfc9111-4.2.1-operator-override-beats-everything",
        200,
        h(("CDN-Cache-Control", "max-age=5"), ("Cache-Control", "s-maxage=10, max-age=20")),
        (OVERRIDE,),
        999.0,
    ),
    ("rfc9111-4.2.1-operator-override-beats-no-freshness", 200, h(), (OVERRIDE,), 999.0),
    (
        "rfc9213-cdn-cache-control-beats-s-maxage",
        200,
        h(("CDN-Cache-Control", "max-age=30"), ("Cache-Control", "s-maxage=10")),
        (),
        30.0,
    ),
    (
        "rfc9213-cdn-cache-control-s-maxage",
        200,
        h(("CDN-Cache-Control", "s-maxage=40, max-age=30"), ("Cache-Control", "max-age=10")),
        (),
        40.0,
    ),
    (
        "rfc9213-cdn-cache-control-replaces-cache-control",
        200,
        h(("CDN-Cache-Control", "public"), ("Cache-Control", "max-age=10")),
        (),
        0.0,
    ),
    (
        "rfc9213-2.2-cdn-cache-control-ignores-expires",
        200,
        h(("CDN-Cache-Control", "public"), ("Expires", at(100))),
        (),
        0.0,
    ),
    (
        "rfc9213-2.2-cdn-cache-control-ignores-expires-falls-to-default",
        200,
        h(("CDN-Cache-Control", "public"), ("Expires", at(100))),
        (DEFAULT,),
        50.0,
    ),
    (
        "rfc9213-empty-cdn-cache-control-falls-back",
        200,
        h(("CDN-Cache-Control", ""), ("Cache-Control", "max-age=10")),
        (),
        10.0,
    ),
    *[
        (
            f"rfc9213-2.1-invalid-cdn-cache-control-ignored-{name}",
            200,
            h(("CDN-Cache-Control", value), ("Cache-Control", "max-age=10")),
            (),
            10.0,
        )
        for name, value in [
            ("max-age-string", 'max-age="3600"'),
            ("max-age-token", "max-age=a3600"),
            ("max-age-decimal", "max-age=3600.0"),
            ("max-age-negative", "max-age=-1"),
            ("s-maxage-string", 's-maxage="3600"'),
            ("not-a-dictionary", "max-age=3600,"),
            ("upper-case-key", "Max-Age=3600"),
            ("space-around-equals", "max-age = 3600"),
            ("swr-token", "max-age=3600, stale-while-revalidate=x"),
        ]
    ],
    (
        "rfc9213-2.1-cdn-cache-control-params-ignored",
        200,
        h(("CDN-Cache-Control", "max-age=30;foo=bar"), ("Cache-Control", "max-age=10")),
        (),
        30.0,
    ),
    (
        "rfc9213-2.1-cdn-cache-control-lines-combine",
        200,
        h(
            ("CDN-Cache-Control", "public"),
            ("CDN-Cache-Control", "max-age=30"),
            ("Cache-Control", "max-age=10"),
        ),
        (),
        30.0,
    ),
    (
        "rfc9213-2.1-invalid-cdn-cache-control-uses-expires",
        200,
        h(("CDN-Cache-Control", 'max-age="5"'), ("Expires", at(100))),
        (),
        100.0,
    ),
    *[
        (f"rfc9111-5.3-expires-{name}-is-stale", 200, h(("Expires", value)), (DEFAULT,), 0.0)
        for name, value in [
            ("utc-zone", "Thu, 01 Jan 2099 00:00:00 UTC"),
            ("two-digit-year", "Thu, 01 Jan 99 00:00:00 GMT"),
            ("missing-comma", "Thu 01 Jan 2099 00:00:00 GMT"),
            ("dashes", "Thu, 01-Jan-2099 00:00:00 GMT"),
            ("dots", "Thu, 01 Jan 2099 00.00.00 GMT"),
            ("one-digit-hour", "Thu, 01 Jan 2099 0:00:00 GMT"),
        ]
    ],
    (
        "rfc9111-5.3-expires-several-lines-is-stale",
        200,
        h(("Expires", at(100)), ("Expires", at(100))),
        (),
        0.0,
    ),
    (
        "rfc9110-5.6.7-expires-asctime",
        200,
        h(("Expires", "Fri Jan  1 00:00:00 2100")),
        (),
        4102444800.0 - NOW,
    ),
    ("rfc9111-4.2.1-s-maxage-wins", 200, h(("Cache-Control", "max-age=10, s-maxage=20")), (), 20.0),
    ("rfc9111-4.2.1-max-age", 200, h(("Cache-Control", "max-age=10")), (), 10.0),
    (
        "rfc9111-4.2.1-max-age-beats-expires",
        200,
        h(("Cache-Control", "max-age=10"), ("Expires", at(100))),
        (),
        10.0,
    ),
    (
        "rfc9111-4.2.1-max-age-beats-operator-default",
        200,
        h(("Cache-Control", "max-age=10")),
        (DEFAULT,),
        10.0,
    ),
    (
        "rfc9111-4.2.1-bad-max-age-is-stale",
        200,
        h(("Cache-Control", "max-age=x"), ("Expires", at(100))),
        (),
        0.0,
    ),
    ("rfc9111-4.2.1-expires-minus-date", 200, h(("Expires", at(100))), (), 100.0),
    ("rfc9111-4.2.1-expires-rfc850", 200, h(("Expires", "Sunday, 06-Nov-94 08:49:37 GMT")), (), 0.0),
    ("rfc9111-4.2.1-expires-beats-operator-default", 200, h(("Expires", at(100))), (DEFAULT,), 100.0),
    ("rfc9111-4.2.1-expires-in-past-is-stale", 200, h(("Expires", at(-100))), (), 0.0),
    ("rfc9111-5.3-invalid-expires-is-stale", 200, h(("Expires", "0")), (), 0.0),
    ("rfc9111-5.3-invalid-expires-beats-default", 200, h(("Expires", "0")), (DEFAULT,), 0.0),
    (
        "rfc9111-5.3-invalid-expires-no-heuristic",
        200,
        h(("Expires", "never"), ("Last-Modified", at(-10_000))),
        (),
        0.0,
    ),
    ("operator-default-rule-without-explicit-freshness", 200, h(), (DEFAULT,), 50.0),
    ("operator-default-beats-heuristic", 200, h(("Last-Modified", at(-10_000))), (DEFAULT,), 50.0),
    ("rfc9111-4.2.2-heuristic-10-percent", 200, h(("Last-Modified", at(-1000))), (), 100.0),
    ("rfc9111-4.2.2-heuristic-capped", 200, h(("Last-Modified", at(-(10**8)))), (), CFG.heuristic_max),
    ("rfc9111-4.2.2-heuristic-404", 404, h(("Last-Modified", at(-1000))), (), 100.0),
    ("rfc9111-4.2.2-heuristic-301", 301, h(("Last-Modified", at(-1000))), (), 100.0),
    ("rfc9111-4.2.2-no-heuristic-302", 302, h(("Last-Modified", at(-1000))), (), 0.0),
    ("rfc9111-4.2.2-no-heuristic-500", 500, h(("Last-Modified", at(-1000))), (), 0.0),
    ("rfc9111-4.2.2-no-heuristic-future-last-modified", 200, h(("Last-Modified", at(10))), (), 0.0),
    ("rfc9111-4.2.2-no-heuristic-bad-last-modified", 200, h(("Last-Modified", "yesterday")), (), 0.0),
    ("rfc9111-4.2-no-freshness-information", 200, h(), (), 0.0),
]


@pytest.mark.parametrize(
    ("status", "headers", "rules", "expected"), [x[1:] for x in LIFETIME], ids=[x[0] for x in LIFETIME]
)
def test_lifetime_precedence(
    status: int, headers: Headers, rules: tuple[TtlRule, ...], expected: float
) -> None:
    cfg = replace(CFG, rules=rules)
    assert freshness(status, headers, path="/static/a.css", date=NOW, cfg=cfg).lifetime == expected


def test_heuristic_cap_is_configurable() -> None:
    cfg = replace(CFG, heuristic_max=60.0, heuristic_fraction=0.5)
    fresh = freshness(200, h(("Last-Modified", at(-100))), path="/", date=NOW, cfg=cfg)
    assert fresh.lifetime == 50.0
    fresh = freshness(200, h(("Last-Modified", at(-1000))), path="/", date=NOW, cfg=cfg)
    assert fresh.lifetime == 60.0


RULES = (
    TtlRule(prefix="/a/", ttl=1.0),
    TtlRule(regex=r"\.css$", ttl=2.0),
    TtlRule(prefix="/", ttl=3.0),
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/a/x.css", RULES[0]), ("/b/x.css", RULES[1]), ("/b/x.js", RULES[2]), ("/b/x.css?v=1", RULES[2])],
    ids=[
        f"operator-rule-{n}"
        for n in ("first-match-wins", "regex-searched", "prefix-fallback", "regex-sees-query")
    ],
)
def test_matching_rule(path: str, expected: TtlRule) -> None:
    assert matching_rule(path, RULES) is expected


def test_no_rule_matches() -> None:
    assert matching_rule("/x", (TtlRule(prefix="/y"),)) is None


# (id, headers, config changes, expected facts) for a 200 with max-age=10 unless said otherwise
FACTS = [
    (
        "rfc5861-3-swr-directive",
        h(("Cache-Control", "max-age=10, stale-while-revalidate=30")),
        {},
        {"swr": 30.0},
    ),
    ("rfc5861-3-swr-operator-default", h(("Cache-Control", "max-age=10")), {"swr": 5.0}, {"swr": 5.0}),
    (
        "rfc5861-3-swr-directive-beats-operator-default",
        h(("Cache-Control", "max-age=10, stale-while-revalidate=30")),
        {"swr": 5.0},
        {"swr": 30.0},
    ),
    (
        "rfc5861-3-swr-rule-beats-global-default",
        h(("Cache-Control", "max-age=10")),
        {"rule_swr": 7.0},
        {"swr": 7.0},
    ),
    ("rfc5861-4-sie-directive", h(("Cache-Control", "max-age=10, stale-if-error=600")), {}, {"sie": 600.0}),
    ("rfc5861-4-sie-operator-default", h(("Cache-Control", "max-age=10")), {"sie": 60.0}, {"sie": 60.0}),
    (
        "rfc5861-4-sie-rule-beats-global-default",
        h(("Cache-Control", "max-age=10")),
        {"rule_sie": 9.0},
        {"sie": 9.0},
    ),
    ("rfc5861-no-stale-by-default", h(("Cache-Control", "max-age=10")), {}, {"swr": 0.0, "sie": 0.0}),
    (
        "rfc9111-5.2.2.2-must-revalidate",
        h(("Cache-Control", "max-age=10, must-revalidate")),
        {},
        {"mr": True},
    ),
    (
        "rfc9111-5.2.2.8-proxy-revalidate",
        h(("Cache-Control", "max-age=10, proxy-revalidate")),
        {},
        {"mr": True},
    ),
    (
        "rfc9111-5.2.2.10-s-maxage-implies-proxy-revalidate",
        h(("Cache-Control", "s-maxage=10")),
        {},
        {"mr": True},
    ),
    ("rfc9111-5.2.2.1-max-age-alone-may-serve-stale", h(("Cache-Control", "max-age=10")), {}, {"mr": False}),
    ("rfc9111-5.2.2.4-no-cache", h(("Cache-Control", "no-cache, max-age=10")), {}, {"nc": True}),
    (
        "rfc9111-5.2.2.4-qualified-no-cache-is-not-whole",
        h(("Cache-Control", 'no-cache="X-A", max-age=10')),
        {},
        {"nc": False},
    ),
    ("rfc9213-no-cache-in-cdn-cache-control", h(("CDN-Cache-Control", "no-cache")), {}, {"nc": True}),
    (
        "rfc9213-cache-control-no-cache-replaced",
        h(("CDN-Cache-Control", "max-age=10"), ("Cache-Control", "no-cache, must-revalidate")),
        {},
        {"nc": False, "mr": False},
    ),
]


@pytest.mark.parametrize(
    ("headers", "changes", "expected"), [f[1:] for f in FACTS], ids=[f[0] for f in FACTS]
)
def test_freshness_facts(headers: Headers, changes: dict[str, float], expected: dict[str, object]) -> None:
    rule = TtlRule(
        prefix="/", stale_while_revalidate=changes.get("rule_swr"), stale_if_error=changes.get("rule_sie")
    )
    cfg = replace(
        CFG,
        stale_while_revalidate=changes.get("swr", 0.0),
        stale_if_error=changes.get("sie", 0.0),
        rules=(rule,),
    )
    fresh = freshness(200, headers, path="/x", date=NOW, cfg=cfg)
    got = {"swr": fresh.stale_while_revalidate, "sie": fresh.stale_if_error, "mr": fresh.must_revalidate}
    got["nc"] = fresh.no_cache
    assert {k: got[k] for k in expected} == expected
    assert isinstance(fresh, Freshness)


def test_effective_cache_control_prefers_cdn_cache_control() -> None:
    headers = h(("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=60"))
    assert effective_cache_control(headers).directives == {"max-age": "60"}
    assert effective_cache_control(h(("Cache-Control", "no-store"))).directives == {"no-store": None}


# (id, Date offset from our response_time or None, max skew, trusted date)
TRUSTED = [
    ("rfc9110-6.6.1-missing-date-is-receipt-time", None, 60.0, NOW),
    ("varnish-clock-skew-date-within-bound", -30.0, 60.0, NOW - 30),
    ("varnish-clock-skew-boundary-trusted", -60.0, 60.0, NOW - 60),
    ("varnish-clock-skew-date-too-old", -61.0, 60.0, NOW),
    ("varnish-clock-skew-date-too-new", 3600.0, 60.0, NOW),
    ("varnish-clock-skew-date-slightly-ahead", 10.0, 60.0, NOW + 10),
]


@pytest.mark.parametrize(
    ("offset", "skew", "expected"), [t[1:] for t in TRUSTED], ids=[t[0] for t in TRUSTED]
)
def test_trusted_date(offset: float | None, skew: float, expected: float) -> None:
    header = None if offset is None else at(offset)
    assert trusted_date(header, response_time=NOW, max_skew=skew) == expected


def test_trusted_date_garbage_is_receipt_time() -> None:
    assert trusted_date("soon", response_time=NOW, max_skew=60.0) == NOW


# (id, headers, request sent this many seconds before NOW, corrected initial age); response_time is NOW
AGE = [
    ("rfc9111-4.2.3-nothing-is-zero", h(), 0.0, 0.0),
    ("rfc9111-4.2.3-response-delay", h(), 2.0, 2.0),
    ("rfc9111-4.2.3-apparent-age", h(("Date", at(-30))), 0.0, 30.0),
    ("rfc9111-4.2.3-age-field", h(("Age", "100")), 0.0, 100.0),
    ("rfc9111-4.2.3-age-field-plus-response-delay", h(("Age", "100")), 2.0, 102.0),
    ("rfc9111-4.2.3-max-of-apparent-and-corrected", h(("Date", at(-30)), ("Age", "10")), 2.0, 30.0),
    ("rfc9111-4.2.3-corrected-beats-apparent", h(("Date", at(-5)), ("Age", "10")), 2.0, 12.0),
    ("rfc9111-4.2.3-date-ahead-apparent-zero", h(("Date", at(30))), 1.0, 1.0),
    ("varnish-clock-skew-old-date-not-trusted", h(("Date", at(-3600))), 1.0, 1.0),
    ("rfc9111-5.1-bad-age-ignored", h(("Age", "ten")), 0.0, 0.0),
    ("rfc9111-5.1-negative-age-ignored", h(("Age", "-5")), 0.0, 0.0),
    ("rfc9111-5.1-non-ascii-age-ignored", h(("Age", "\u00b2")), 0.0, 0.0),
    ("rfc9111-5.1-age-whitespace", h(("Age", " 7 ")), 0.0, 7.0),
    ("rfc9111-5.1-age-float-invalid", h(("Age", "7200.0")), 0.0, 0.0),
    ("rfc9111-5.1-age-plus-sign-invalid", h(("Age", "+7200")), 0.0, 0.0),
    ("rfc9111-5.1-age-suffix-invalid", h(("Age", "7200a")), 0.0, 0.0),
    ("rfc9111-5.1-age-prefix-invalid", h(("Age", "a7200")), 0.0, 0.0),
    ("rfc9111-5.1-age-list-first-member", h(("Age", "7200, 0")), 0.0, 7200.0),
    ("rfc9111-5.1-age-lines-first-member", h(("Age", "0"), ("Age", "7200")), 0.0, 0.0),
    ("rfc9111-1.2.2-age-saturates", h(("Age", "9" * 5000)), 0.0, float(2**31)),
]


@pytest.mark.parametrize(("headers", "delay", "expected"), [a[1:] for a in AGE], ids=[a[0] for a in AGE])
def test_initial_age(headers: Headers, delay: float, expected: float) -> None:
    got = initial_age(headers, request_time=NOW - delay, response_time=NOW, max_skew=60.0)
    assert got == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [(NOW, 10.0), (NOW + 5, 15.0), (NOW - 5, 10.0)],
    ids=["rfc9111-4.2.3-at-receipt", "rfc9111-4.2.3-resident-time-added", "rfc9111-4.2.3-clock-went-back"],
)
def test_current_age(now: float, expected: float) -> None:
    assert current_age(10.0, NOW, now=now) == expected
