"""Storability (RFC 9111 §3, §3.1, §3.5) and the StoredResponse an admitted exchange becomes."""

from dataclasses import replace
from typing import Any

import pytest

from edgecdn.config import CacheConfig, TtlRule
from edgecdn.http.dates import format_http_date
from edgecdn.http.fields import get_one
from edgecdn.policy.admit import Exchange, NotStorable, admit, split_tags
from edgecdn.policy.revalidate import merge_304
from edgecdn.policy.stored import StoredResponse

NOW = 1_700_000_000.0
DATE = format_http_date(NOW)
CFG = replace(CacheConfig(), max_object_size=1000)
ETAG = '"v1"'


def ex(status: int = 200, *pairs: tuple[str, str], **kw: Any) -> Exchange:
    return Exchange(
        path="/a", status=status, headers=(("Date", DATE), *pairs), request_time=NOW, response_time=NOW, **kw
    )


def cc(value: str) -> tuple[str, str]:
    return ("Cache-Control", value)


NOT_STORED = [
    ("request-shaped-400-explicit", ex(400, cc("max-age=60")), NotStorable.REQUEST_ERROR),
    ("request-shaped-405-heuristic", ex(405, ("Last-Modified", DATE)), NotStorable.REQUEST_ERROR),
    ("request-shaped-413", ex(413, cc("public, max-age=60")), NotStorable.REQUEST_ERROR),
    ("request-shaped-414-heuristic", ex(414), NotStorable.REQUEST_ERROR),
    ("request-shaped-431", ex(431, cc("s-maxage=60")), NotStorable.REQUEST_ERROR),
    ("request-shaped-501-heuristic", ex(501), NotStorable.REQUEST_ERROR),
    (
        "rfc9111-5.2.1.5-request-no-store",
        ex(200, cc("max-age=60"), request_no_store=True),
        NotStorable.REQUEST_NO_STORE,
    ),
    ("rfc9111-5.2.2.5-no-store", ex(200, cc("max-age=60, no-store")), NotStorable.NO_STORE),
    ("rfc9111-5.2.2.5-no-store-beats-public", ex(200, cc("public, no-store")), NotStorable.NO_STORE),
    (
        "rfc9213-cdn-cache-control-no-store",
        ex(200, ("CDN-Cache-Control", "no-store"), cc("max-age=60")),
        NotStorable.NO_STORE,
    ),
    (
        "rfc9111-5.2.2.3-must-understand-unknown-status",
        ex(299, cc("must-understand, no-store, max-age=60")),
        NotStorable.STATUS,
    ),
    (
        "rfc9111-5.2.2.3-must-understand-206-not-implemented",
        ex(206, cc("must-understand, max-age=60"), ("Content-Range", "bytes 0-1/10")),
        NotStorable.STATUS,
    ),
    (
        "rfc9111-5.2.2.5-no-store-without-must-understand",
        ex(200, cc("no-store, max-age=60")),
        NotStorable.NO_STORE,
    ),
    ("rfc9111-5.2.2.7-private", ex(200, cc("private, max-age=60")), NotStorable.PRIVATE),
    ("rfc9111-5.2.2.7-private-case-insensitive", ex(200, cc("Private, max-age=60")), NotStorable.PRIVATE),
    (
        "rfc9111-3.5-authorization-max-age-only",
        ex(200, cc("max-age=60"), request_has_auth=True),
        NotStorable.AUTHORIZATION,
    ),
    (
        "rfc9111-3.5-authorization-no-directives",
        ex(200, ("ETag", ETAG), request_has_auth=True),
        NotStorable.AUTHORIZATION,
    ),
    ("rfc6265-set-cookie", ex(200, cc("public, max-age=60"), ("Set-Cookie", "a=b")), NotStorable.SET_COOKIE),
    ("rfc9111-3-206-never", ex(206, cc("max-age=60"), ("Content-Range", "bytes 0-1/10")), NotStorable.STATUS),
    ("rfc9111-3-304-never", ex(304, cc("max-age=60"), ("ETag", ETAG)), NotStorable.STATUS),
    ("rfc9111-3-1xx-never", ex(103, cc("max-age=60")), NotStorable.STATUS),
    (
        "rfc9111-3-302-without-explicit-freshness",
        ex(302, ("Location", "/b"), ("ETag", ETAG)),
        NotStorable.STATUS,
    ),
    ("rfc9111-3-500-without-explicit-freshness", ex(500, ("ETag", ETAG)), NotStorable.STATUS),
    ("rfc9111-3-307-without-explicit-freshness", ex(307, ("Last-Modified", DATE)), NotStorable.STATUS),
    ("rfc9111-4.1-vary-star", ex(200, cc("max-age=60"), ("Vary", "*")), NotStorable.VARY_STAR),
    (
        "rfc9111-4.1-vary-star-in-list",
        ex(200, cc("max-age=60"), ("Vary", "Accept"), ("Vary", "*")),
        NotStorable.VARY_STAR,
    ),
    (
        "content-length-over-max-object-size",
        ex(200, cc("max-age=60"), ("Content-Length", "1001")),
        NotStorable.TOO_LARGE,
    ),
    ("rfc9111-4.2-zero-ttl-without-validator", ex(200, cc("max-age=0")), NotStorable.NO_FRESHNESS),
    ("rfc9111-4.2-no-freshness-without-validator", ex(200), NotStorable.NO_FRESHNESS),
    ("rfc9111-4.2-expired-without-validator", ex(200, ("Expires", "0")), NotStorable.NO_FRESHNESS),
]


@pytest.mark.parametrize(("exchange", "reason"), [n[1:] for n in NOT_STORED], ids=[n[0] for n in NOT_STORED])
def test_not_stored(exchange: Exchange, reason: NotStorable) -> None:
    assert admit(exchange, cfg=CFG) is reason


# (id, exchange, expected attributes of the StoredResponse)
STORED = [
    ("rfc9111-3-200-max-age", ex(200, cc("max-age=60")), {"status": 200, "lifetime": 60.0, "auth_ok": False}),
    ("rfc9111-3-404-by-default", ex(404, cc("max-age=10")), {"lifetime": 10.0}),
    (
        "rfc9111-4.2.2-301-heuristic",
        ex(301, ("Last-Modified", format_http_date(NOW - 1000))),
        {"lifetime": 100.0},
    ),
    (
        "rfc9111-3-302-with-explicit-max-age",
        ex(302, cc("max-age=60"), ("Location", "/b")),
        {"lifetime": 60.0},
    ),
    (
        "rfc9111-3-500-with-explicit-expires",
        ex(500, ("Expires", format_http_date(NOW + 60))),
        {"lifetime": 60.0},
    ),
    (
        "rfc9111-3-302-public-with-validator",
        ex(302, cc("public"), ("ETag", ETAG)),
        {"lifetime": 0.0, "etag": ETAG},
    ),
    (
        "rfc9111-3.5-authorization-public",
        ex(200, cc("public, max-age=60"), request_has_auth=True),
        {"auth_ok": True},
    ),
    (
        "rfc9111-3.5-authorization-s-maxage",
        ex(200, cc("s-maxage=60"), request_has_auth=True),
        {"auth_ok": True, "must_revalidate": True},
    ),
    (
        "rfc9111-3.5-authorization-must-revalidate",
        ex(200, cc("max-age=60, must-revalidate"), request_has_auth=True),
        {"auth_ok": True, "must_revalidate": True},
    ),
    (
        "rfc9111-4.2-zero-ttl-with-etag-revalidates-later",
        ex(200, cc("max-age=0"), ("ETag", ETAG)),
        {"lifetime": 0.0, "etag": ETAG},
    ),
    (
        "rfc9111-4.2-zero-ttl-with-last-modified",
        ex(200, cc("max-age=0"), ("Last-Modified", DATE)),
        {"lifetime": 0.0, "last_modified": DATE},
    ),
    (
        "rfc5861-3-zero-ttl-with-swr",
        ex(200, cc("max-age=0, stale-while-revalidate=30")),
        {"stale_while_revalidate": 30.0},
    ),
    ("rfc9111-5.2.2.4-no-cache-with-validator", ex(200, cc("no-cache"), ("ETag", ETAG)), {"no_cache": True}),
    (
        "rfc9213-cdn-cache-control-replaces-cc-no-store",
        ex(200, cc("no-store"), ("CDN-Cache-Control", "max-age=60")),
        {"lifetime": 60.0},
    ),
    (
        "rfc9213-cdn-cache-control-replaces-cc-private",
        ex(200, cc("private"), ("CDN-Cache-Control", "public, max-age=60")),
        {"lifetime": 60.0},
    ),
    (
        "content-length-at-max-object-size",
        ex(200, cc("max-age=60"), ("Content-Length", "1000")),
        {"lifetime": 60.0},
    ),
    (
        "content-length-malformed-is-not-too-large",
        ex(200, cc("max-age=60"), ("Content-Length", "\u00b2")),
        {"status": 200},
    ),
    (
        "rfc9111-4.1-vary-names-lower-cased",
        ex(200, cc("max-age=60"), ("Vary", "Accept-Encoding, Accept"), ("Vary", "X-Mode")),
        {"vary": ("accept-encoding", "accept", "x-mode")},
    ),
    (
        "purge-tags-surrogate-key-and-cache-tag",
        ex(200, cc("max-age=60"), ("Surrogate-Key", "a  b c"), ("Cache-Tag", "c, d,e")),
        {"tags": ("a", "b", "c", "d", "e")},
    ),
    (
        "rfc9111-4.2.3-times-recorded",
        ex(200, cc("max-age=60")),
        {"response_time": NOW, "initial_age": 0.0, "invalidated": False},
    ),
    (
        "rfc9111-4.2.3-age-field-counted-at-admission",
        ex(200, cc("max-age=60"), ("Age", "15")),
        {"initial_age": 15.0, "lifetime": 60.0},
    ),
    (
        "rfc9111-4.2.1-expires-relative-to-origin-date-when-clock-behind",
        Exchange(
            path="/a",
            status=200,
            headers=(("Date", format_http_date(NOW - 7200)), ("Expires", format_http_date(NOW - 3600))),
            request_time=NOW,
            response_time=NOW,
        ),
        {"lifetime": 3600.0, "initial_age": 0.0},
    ),
    (
        "rfc9111-4.2.1-expires-relative-to-origin-date-when-clock-ahead",
        Exchange(
            path="/a",
            status=200,
            headers=(("Date", format_http_date(NOW + 7200)), ("Expires", format_http_date(NOW + 10800))),
            request_time=NOW,
            response_time=NOW,
        ),
        {"lifetime": 3600.0, "initial_age": 0.0},
    ),
    (
        "rfc9110-6.6.1-expires-without-date-relative-to-receipt",
        Exchange(
            path="/a",
            status=200,
            headers=(("Expires", format_http_date(NOW + 50)),),
            request_time=NOW - 1,
            response_time=NOW,
        ),
        {"lifetime": 50.0, "initial_age": 1.0},
    ),
    (
        "rfc9111-4.2.2-heuristic-on-origin-clock",
        Exchange(
            path="/a",
            status=200,
            headers=(("Date", format_http_date(NOW - 7200)), ("Last-Modified", format_http_date(NOW - 8200))),
            request_time=NOW,
            response_time=NOW,
        ),
        {"lifetime": 100.0, "initial_age": 0.0},
    ),
]


@pytest.mark.parametrize(("exchange", "expected"), [s[1:] for s in STORED], ids=[s[0] for s in STORED])
def test_stored(exchange: Exchange, expected: dict[str, object]) -> None:
    stored = admit(exchange, cfg=CFG)
    assert isinstance(stored, StoredResponse), stored
    assert {k: getattr(stored, k) for k in expected} == expected


def stored_names(exchange: Exchange) -> list[str]:
    stored = admit(exchange, cfg=CFG)
    assert isinstance(stored, StoredResponse), stored
    return [n.lower() for n, _ in stored.headers]


HEADERS = [
    (
        "rfc9110-7.6.1-hop-by-hop-not-stored",
        ex(
            200,
            cc("max-age=60"),
            ("Connection", "close, X-Conn-Only"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Proxy-Authenticate", "Basic"),
            ("Trailer", "X-T"),
            ("Upgrade", "h2c"),
            ("TE", "trailers"),
            ("X-Conn-Only", "1"),
            ("X-Kept", "1"),
        ),
        ["date", "cache-control", "x-kept"],
    ),
    (
        "rfc9111-3.1-age-and-content-length-not-stored",
        ex(200, cc("max-age=60"), ("Age", "3"), ("Content-Length", "10"), ("Content-Type", "text/plain")),
        ["date", "cache-control", "content-type"],
    ),
    (
        "rfc9111-5.2.2.7-qualified-private-strips-named-fields",
        ex(
            200,
            cc('private="X-User, X-Session", max-age=60'),
            ("X-User", "alice"),
            ("X-Session", "s"),
            ("X-Kept", "1"),
        ),
        ["date", "cache-control", "x-kept"],
    ),
    (
        "rfc9111-5.2.2.4-qualified-no-cache-strips-named-fields",
        ex(200, cc('no-cache="X-User", max-age=60'), ("X-User", "alice"), ("X-Kept", "1")),
        ["date", "cache-control", "x-kept"],
    ),
    (
        "rfc9111-3.1-content-range-on-200-kept",
        ex(200, cc("max-age=60"), ("Content-Range", "bytes 0-9/10")),
        ["date", "cache-control", "content-range"],
    ),
    (
        "rfc9111-3.1-proxy-authentication-info-not-stored",
        ex(200, cc("max-age=60"), ("Proxy-Authentication-Info", "x"), ("Proxy-Connection", "close")),
        ["date", "cache-control"],
    ),
    (
        "rfc9111-5.2.2.7-private-set-cookie-stored-without-it",
        ex(200, cc('private="Set-Cookie", max-age=60'), ("Set-Cookie", "a=b")),
        ["date", "cache-control"],
    ),
    (
        "rfc9111-3.1-end-to-end-fields-kept-in-order",
        ex(200, cc("max-age=60"), ("Link", "</a>"), ("Link", "</b>"), ("ETag", ETAG)),
        ["date", "cache-control", "link", "link", "etag"],
    ),
]


@pytest.mark.parametrize(("exchange", "names"), [x[1:] for x in HEADERS], ids=[x[0] for x in HEADERS])
def test_stored_headers(exchange: Exchange, names: list[str]) -> None:
    assert stored_names(exchange) == names


def test_qualified_private_stores_the_rest() -> None:
    stored = admit(ex(200, cc('private="X-User", max-age=60'), ("X-User", "alice")), cfg=CFG)
    assert isinstance(stored, StoredResponse)
    assert stored.lifetime == 60.0


@pytest.mark.parametrize(
    ("values", "tags"),
    [
        (["a b", "b c"], ("a", "b", "c")),
        (["a,b", " c ,, d"], ("a", "b", "c", "d")),
        ([], ()),
    ],
    ids=["surrogate-key-space-separated", "cache-tag-comma-separated", "none"],
)
def test_split_tags(values: list[str], tags: tuple[str, ...]) -> None:
    assert split_tags(values) == tags


STRIP = replace(CFG, set_cookie="strip")
STORE = replace(CFG, set_cookie="store")
COOKIE = ex(200, cc("max-age=60"), ("Set-Cookie", "a=b"), ("Set-Cookie", "c=d"))


@pytest.mark.parametrize(
    ("cfg", "cookies"),
    [
        pytest.param(STRIP, [], id="rfc9111-3-set-cookie-strip-stores-without-it"),
        pytest.param(STORE, ["a=b", "c=d"], id="rfc9111-3-set-cookie-store-keeps-every-line"),
        pytest.param(
            replace(CFG, rules=(TtlRule(prefix="/a", set_cookie="store"),)),
            ["a=b", "c=d"],
            id="set-cookie-rule-overrides-cache-setting",
        ),
        pytest.param(
            replace(STORE, rules=(TtlRule(prefix="/a", set_cookie="strip"),)),
            [],
            id="set-cookie-rule-strip-beats-store",
        ),
    ],
)
def test_set_cookie_modes(cfg: CacheConfig, cookies: list[str]) -> None:
    stored = admit(COOKIE, cfg=cfg)
    assert isinstance(stored, StoredResponse), stored
    assert [v for n, v in stored.headers if n.lower() == "set-cookie"] == cookies
    assert stored.lifetime == 60.0


def test_set_cookie_pass_by_rule_beats_store() -> None:
    cfg = replace(STORE, rules=(TtlRule(prefix="/a", set_cookie="pass"),))
    assert admit(COOKIE, cfg=cfg) is NotStorable.SET_COOKIE


def test_304_never_merges_set_cookie_into_a_pass_entry() -> None:
    stored = admit(ex(200, cc("max-age=60"), ("ETag", ETAG)), cfg=CFG)
    assert isinstance(stored, StoredResponse)
    merged = merge_304(
        stored,
        (("Set-Cookie", "a=b"), ("ETag", ETAG)),
        path="/a",
        request_time=NOW,
        response_time=NOW,
        cfg=CFG,
    )
    assert get_one(merged.headers, "set-cookie") is None


@pytest.mark.parametrize(
    "status", [200, 404, 301], ids=lambda s: f"rfc9111-5.2.2.3-must-understand-{s}-stored"
)
def test_must_understand_overrides_no_store_for_an_understood_status(status: int) -> None:
    stored = admit(ex(status, cc("must-understand, no-store, max-age=60")), cfg=CFG)
    assert isinstance(stored, StoredResponse), stored
    assert stored.lifetime == 60.0
