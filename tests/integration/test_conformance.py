"""RFC 9111 / 9213 conformance through a real edge: what the client got and how often the origin was asked.

Each test drives the reference origin's `X-Set-*` hooks so it sends exactly the header fields under test,
then asks twice: a second request that reaches the origin proves the first answer was not reused fresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator

import pytest

from tests.integration.conftest import OriginClient, Proc
from tests.integration.edge_client import fetch, get, session, start_edge

EDGE_CONFIG = """
[cache]
# What is stored is under test here: a 5xx shared for cache.error_ttl would read as a reuse.
error_ttl = "0s"

[[cache.rules]]
prefix = "/_test/blob/7"
set_cookie = "store"

[[cache.rules]]
prefix = "/_test/blob/8"
set_cookie = "strip"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OriginClient, Proc]]:
    root = tmp_path_factory.mktemp("root")
    origin_proc = Proc("origin", "serve", str(root), "--listen", "127.0.0.1:0", "--test-hooks")
    config = tmp_path_factory.mktemp("config") / "edge.toml"
    config.write_text(EDGE_CONFIG)
    edge = start_edge(origin_proc.url, tmp_path_factory.mktemp("cache"), "-c", str(config))
    try:
        yield OriginClient(origin_proc, root), edge
    finally:
        edge.stop()
        origin_proc.stop()


@pytest.fixture
def origin(stack: tuple[OriginClient, Proc]) -> OriginClient:
    return stack[0]


@pytest.fixture
def edge_url(stack: tuple[OriginClient, Proc]) -> str:
    return stack[1].url


def blob(name: str, size: int = 1000) -> str:
    return f"/_test/blob/{size}?t={name}"


async def twice(edge_url: str, path: str, status: int = 200, **headers: str) -> tuple[int, int, str, str]:
    """(first Age, second Age, first X-Cache, second X-Cache) of two GETs with the same hook headers."""
    async with session() as s:
        first = await get(s, edge_url + path, **headers)
        second = await get(s, edge_url + path, **headers)
    assert first.status == second.status == status
    ages = [int(got.headers.get("Age", "-1")) for got in (first, second)]  # -1: no Age (passed through)
    return ages[0], ages[1], first.x_cache, second.x_cache


async def reuses(origin: OriginClient, edge_url: str, hooks: dict[str, str], status: int = 200) -> bool:
    """Whether the edge answered the second of two GETs from its cache (and the origin saw one request)."""
    path = blob("reuse-" + hashlib.sha256(repr(sorted(hooks.items())).encode()).hexdigest()[:16])
    *_, second = await twice(edge_url, path, status, **hooks)
    assert origin.hits(path) == (1 if second == "HIT" else 2)
    return second == "HIT"


# -- group 1: Age on responses from the origin (RFC 9111 §4.2.3, §5.1) -----------------------------------


async def test_miss_forwards_the_age_the_response_already_had(origin: OriginClient, edge_url: str) -> None:
    path = blob("age-forwarded")
    hooks = {"X-Set-Cache-Control": "max-age=3600", "X-Set-Age": "100"}
    age1, age2, xc1, xc2 = await twice(edge_url, path, **hooks)
    assert (xc1, xc2) == ("MISS", "HIT")
    assert age1 >= 100 and age2 >= age1
    assert origin.hits(path) == 1


async def test_age_older_than_max_age_is_stale_on_arrival(origin: OriginClient, edge_url: str) -> None:
    path = blob("age-stale")
    age1, _, xc1, xc2 = await twice(
        edge_url, path, **{"X-Set-Cache-Control": "max-age=3600", "X-Set-Age": "7200"}
    )
    assert xc1 == "MISS" and age1 >= 7200
    assert xc2 != "HIT"
    assert origin.hits(path) == 2


# -- groups 2, 3, 4: what makes a stored response fresh -----------------------------------------------------
# Age parsing (RFC 9111 §5.1, §1.2.2), Expires (RFC 9111 §5.3, RFC 9110 §5.6.7), CDN-Cache-Control as an
# RFC 8941 Dictionary (RFC 9213 §2): (origin's header fields, whether the second request is a hit).

MAX_AGE = {"X-Set-Cache-Control": "max-age=3600"}
NO_CC = {"X-Remove-Cache-Control": "1"}
NO_STORE = {"X-Set-Cache-Control": "no-store"}
FRESHNESS = [
    *[
        pytest.param({**MAX_AGE, "X-Set-Age": age}, reused, id=f"rfc9111-5.1-age-{name}")
        for name, age, reused in [
            ("list-first-member-old", "7200, 0", False),
            ("list-first-member-zero", "0, 7200", True),
            ("float-ignored", "7200.0", True),
            ("negative-ignored", "-7200", True),
            ("2-pow-31-stale", "2147483648", False),
            ("huge-saturates-stale", "99999999999999999999", False),
        ]
    ],
    *[
        pytest.param({**NO_CC, "X-Set-Expires": value}, reused, id=f"rfc9111-5.3-expires-{name}")
        for name, value, reused in [
            ("imf-fixdate", "Thu, 01 Jan 2099 00:00:00 GMT", True),
            ("rfc850-1999-is-past", "Thursday, 01-Jan-99 00:00:00 GMT", False),
            ("asctime", "Thu Jan  1 00:00:00 2099", True),
            ("utc-invalid", "Thu, 01 Jan 2099 00:00:00 UTC", False),
            ("two-digit-year-invalid", "Thu, 01 Jan 99 00:00:00 GMT", False),
            ("no-comma-invalid", "Thu 01 Jan 2099 00:00:00 GMT", False),
            ("dashes-invalid", "Thu, 01-Jan-2099 00:00:00 GMT", False),
            ("dots-invalid", "Thu, 01 Jan 2099 00.00.00 GMT", False),
            ("one-digit-hour-invalid", "Thu, 01 Jan 2099 0:00:00 GMT", False),
        ]
    ],
    *[
        pytest.param({**NO_STORE, "X-Set-CDN-Cache-Control": value}, reused, id=f"rfc9213-2-cdn-cc-{name}")
        for name, value, reused in [
            ("integer-max-age-governs", "max-age=3600", True),
            ("string-max-age-ignored", 'max-age="3600"', False),
            ("decimal-max-age-ignored", "max-age=3600.0", False),
            ("token-s-maxage-ignored", "s-maxage=a3600", False),
            ("not-a-dictionary-ignored", "max-age=3600,", False),
        ]
    ],
]


@pytest.mark.parametrize(("hooks", "reused"), FRESHNESS)
async def test_freshness_inputs(
    origin: OriginClient, edge_url: str, hooks: dict[str, str], reused: bool
) -> None:
    assert await reuses(origin, edge_url, hooks) is reused


# -- group 5: stored header fields (RFC 9111 §3.1, §3.2) and the Set-Cookie setting -----------------------


async def test_end_to_end_fields_are_stored_and_hop_by_hop_ones_are_not(
    origin: OriginClient, edge_url: str
) -> None:
    path = blob("stored-fields")
    hooks = {
        "X-Set-Cache-Control": "max-age=3600",
        "X-Set-Content-Range": "bytes 0-999/1000",
        "X-Set-X-Custom": "kept",
        "X-Set-Connection": "X-Hop",
        "X-Set-X-Hop": "dropped",
    }
    async with session() as s:
        got = [await get(s, edge_url + path, **hooks) for _ in range(2)]
    assert [g.x_cache for g in got] == ["MISS", "HIT"]
    for g in got:
        assert g.status == 200
        assert g.headers.get("Content-Range") == "bytes 0-999/1000"
        assert g.headers.get("X-Custom") == "kept"
        assert "X-Hop" not in g.headers
    assert origin.hits(path) == 1


@pytest.mark.parametrize(
    ("size", "cookies", "reused"),
    [
        pytest.param(1000, [["a=1"], ["a=1"]], False, id="set-cookie-pass-default-not-stored"),
        pytest.param(7000, [["a=1"], ["a=1"]], True, id="rfc9111-3-set-cookie-store-rule"),
        pytest.param(8000, [[], []], True, id="set-cookie-strip-rule"),
    ],
)
async def test_set_cookie_setting(
    origin: OriginClient, edge_url: str, size: int, cookies: list[list[str]], reused: bool
) -> None:
    path = blob("set-cookie", size)
    hooks = {"X-Set-Cache-Control": "max-age=3600", "X-Set-Set-Cookie": "a=1"}
    async with session() as s:
        got = [await get(s, edge_url + path, **hooks) for _ in range(2)]
    assert [g.headers.getall("Set-Cookie", []) for g in got] == cookies
    assert (got[1].x_cache == "HIT") is reused
    assert origin.hits(path) == (1 if reused else 2)


# -- group 7: Authorization (RFC 9111 §3.5) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "reused"),
    [
        pytest.param("max-age=3600, public", True, id="rfc9111-3.5-public-reused"),
        pytest.param("s-maxage=3600", True, id="rfc9111-3.5-s-maxage-reused"),
        pytest.param("max-age=3600, must-revalidate", True, id="rfc9111-3.5-must-revalidate-reused"),
        pytest.param("max-age=3600", False, id="rfc9111-3.5-max-age-alone-not-reused"),
    ],
)
async def test_authorization_response_reused_only_when_allowed(
    origin: OriginClient, edge_url: str, cache_control: str, reused: bool
) -> None:
    path = blob("auth-" + cache_control.encode().hex())
    hooks = {"X-Set-Cache-Control": cache_control}
    async with session() as s:
        first = await get(s, edge_url + path, Authorization="Bearer alice", **hooks)
        others = [
            await get(s, edge_url + path, Authorization="Bearer bob", **hooks),
            await get(s, edge_url + path, **hooks),
        ]
    assert first.status == 200 and first.x_cache == "MISS"
    assert [g.x_cache == "HIT" for g in others] == [reused, reused]
    seen = origin.requests(path)
    assert len(seen) == (1 if reused else 3)
    assert seen[0]["headers"].get("Authorization") == "Bearer alice"  # forwarded on the fill


async def test_authorization_request_never_joins_another_requests_fill(
    origin: OriginClient, edge_url: str
) -> None:
    path = blob("auth-not-coalesced")
    hooks = {"X-Set-Cache-Control": "max-age=3600", "X-Test-Gate": "auth-not-coalesced"}
    async with session() as s:
        anonymous = asyncio.create_task(get(s, edge_url + path, **hooks))
        await origin.await_gate("auth-not-coalesced", 1)
        alice = asyncio.create_task(get(s, edge_url + path, Authorization="Bearer alice", **hooks))
        await origin.await_gate("auth-not-coalesced", 2)  # alice's own request reached the origin
        await asyncio.to_thread(origin.release, "auth-not-coalesced")
        got = [await anonymous, await alice]
    assert [g.status for g in got] == [200, 200]
    assert [r["headers"].get("Authorization") for r in origin.requests(path)] == [None, "Bearer alice"]


# -- group 9: Range syntax (RFC 9110 §14.1-14.2) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("rng", "status", "content_range", "length"),
    [
        pytest.param("bytes=0-10001", 206, "bytes 0-999/1000", 1000, id="rfc9110-14.1.2-last-pos-beyond-end"),
        pytest.param("bytes=0-", 206, "bytes 0-999/1000", 1000, id="rfc9110-14.2-whole-object-206"),
        pytest.param("bytes=10-19", 206, "bytes 10-19/1000", 10, id="rfc9110-14.1.2-single"),
        pytest.param("bytes =0-9", 200, None, 1000, id="rfc9110-14.1.1-space-before-equals-ignored"),
        pytest.param("bytes=0- 9", 200, None, 1000, id="rfc9110-14.1.1-space-in-range-spec-ignored"),
    ],
)
async def test_range_syntax(
    origin: OriginClient, edge_url: str, rng: str, status: int, content_range: str | None, length: int
) -> None:
    path = blob("range-" + rng.encode().hex())
    async with session() as s:
        got = [await get(s, edge_url + path, Range=rng) for _ in range(2)]  # from the fill, then stored
    for g in got:
        assert (g.status, g.headers.get("Content-Range"), len(g.body)) == (status, content_range, length)
    assert got[1].x_cache == "HIT"
    assert origin.hits(path) == 1


# -- group 8: what the optional tests also expect ---------------------------------------------------------

LONG_AGO = "Thu, 01 Jan 2015 00:00:00 GMT"


@pytest.mark.parametrize(
    ("status", "reused"),
    [
        *[pytest.param(s, True, id=f"rfc9110-15.1-heuristic-{s}") for s in (200, 203, 404, 410)],
        *[pytest.param(s, False, id=f"rfc9110-15.1-no-heuristic-{s}") for s in (302, 307, 400, 403, 500)],
        # Heuristically cacheable by RFC 9110, but they describe the request (its method), so a shared
        # cache that stored them could be made to answer them to everybody (THREAT_MODEL: poisoned errors).
        *[pytest.param(s, False, id=f"edgecdn-request-shaped-{s}-never-stored") for s in (405, 501)],
    ],
)
async def test_heuristic_freshness_only_for_heuristically_cacheable_statuses(
    origin: OriginClient, edge_url: str, status: int, reused: bool
) -> None:
    hooks = {"X-Test-Status": str(status), "X-Set-Last-Modified": LONG_AGO}
    assert await reuses(origin, edge_url, hooks, status=status) is reused


@pytest.mark.parametrize(
    ("content_location", "cache_control", "reused"),
    [
        pytest.param("SELF", "max-age=300", True, id="rfc9110-9.3.3-post-answer-reused-for-get"),
        pytest.param("/elsewhere", "max-age=300", False, id="rfc9110-9.3.3-other-content-location"),
        pytest.param("SELF", None, False, id="rfc9110-9.3.3-no-explicit-freshness"),
        # A field a fill would not forward could have shaped the answer: never shared (THREAT_MODEL).
        pytest.param("SELF-COOKIE", "max-age=300", False, id="edgecdn-post-with-unkeyed-field-not-shared"),
    ],
)
async def test_post_answer_with_its_own_content_location_serves_later_gets(
    origin: OriginClient, edge_url: str, content_location: str, cache_control: str | None, reused: bool
) -> None:
    path = f"/_test/echo?t=post-{content_location.strip('/')}-{cache_control}"
    own = content_location.startswith("SELF")
    hooks = {"X-Set-Content-Location": path if own else content_location}
    if content_location == "SELF-COOKIE":
        hooks["Cookie"] = "session=attacker"
    if cache_control is not None:
        hooks["X-Set-Cache-Control"] = cache_control
    async with session() as s:
        post = await fetch(s, "POST", edge_url + path, **hooks)
        later = await get(s, edge_url + path)
    assert post.status == 200 and json.loads(post.body)["method"] == "POST"
    assert (later.x_cache == "HIT") is reused
    assert (later.body == post.body) is reused
    assert origin.hits(path) == (1 if reused else 2)


@pytest.mark.parametrize(
    ("status", "reused"),
    [
        pytest.param(200, True, id="rfc9111-5.2.2.3-must-understand-200-overrides-no-store"),
        pytest.param(299, False, id="rfc9111-5.2.2.3-must-understand-unknown-status-not-stored"),
    ],
)
async def test_must_understand(origin: OriginClient, edge_url: str, status: int, reused: bool) -> None:
    hooks = {"X-Test-Status": str(status), "X-Set-Cache-Control": "must-understand, no-store, max-age=3600"}
    assert await reuses(origin, edge_url, hooks, status=status) is reused


async def test_if_modified_since_without_last_modified_is_304_from_cache(
    origin: OriginClient, edge_url: str
) -> None:
    path = blob("ims-no-last-modified")
    hooks = {"X-Set-Cache-Control": "max-age=3600", "X-Remove-Last-Modified": "1", "X-Remove-ETag": "1"}
    async with session() as s:
        first = await get(s, edge_url + path, **hooks)
        assert "Last-Modified" not in first.headers
        again = await get(s, edge_url + path, **{"If-Modified-Since": first.headers["Date"], **hooks})
        older = await get(s, edge_url + path, **{"If-Modified-Since": LONG_AGO, **hooks})
    assert (again.status, again.x_cache) == (304, "HIT")
    assert (older.status, older.x_cache, len(older.body)) == (200, "HIT", 1000)
    assert origin.hits(path) == 1
