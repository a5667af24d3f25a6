"""decide(): what a shared cache does with a GET/HEAD given what it holds (RFC 9111 §4, §5.2.1; RFC 5861).

Every entry here was received at T0 with a lifetime of 100 s unless said otherwise; `elapsed` is how long it
has been resident, so its age is initial_age + elapsed.
"""

from dataclasses import replace
from typing import Any

import pytest

from edgecdn.policy.decide import (
    Decision,
    Fresh,
    Miss,
    OnlyIfCached,
    Pass,
    PassReason,
    RequestFacts,
    Revalidate,
    RevalidateReason,
    StaleWhileRevalidate,
    decide,
    request_facts,
    ttl_left,
    usable_on_error,
)
from edgecdn.policy.stored import StoredResponse

T0 = 1_700_000_000.0
BASE = StoredResponse(status=200, headers=(), size=10, response_time=T0, initial_age=0.0, lifetime=100.0)


def entry(**kw: Any) -> StoredResponse:
    return replace(BASE, **kw)


def req(
    cc: str | None = None, *, method: str = "GET", pragma: str | None = None, auth: bool = False
) -> RequestFacts:
    return request_facts(method, [cc] if cc is not None else [], [pragma] if pragma is not None else [], auth)


STALE_REQ = RevalidateReason.STALE
E = BASE
NC = entry(no_cache=True)
MR = entry(must_revalidate=True)
SWR = entry(stale_while_revalidate=60.0)
SWR_MR = entry(stale_while_revalidate=60.0, must_revalidate=True)
AGED = entry(initial_age=5.0)
AUTH = entry(auth_ok=True)
PURGED = entry(invalidated=True, lifetime=1000.0)
PURGED_SWR = entry(invalidated=True, lifetime=1000.0, stale_while_revalidate=60.0)

# (id, request, stored entry or None, seconds resident, decision)
DECIDE: list[tuple[str, RequestFacts, StoredResponse | None, float, Decision]] = [
    ("rfc9111-4-post-passes", req(method="POST"), None, 0, Pass(PassReason.METHOD)),
    ("rfc9111-4-put-passes-even-when-stored", req(method="PUT"), E, 0, Pass(PassReason.METHOD)),
    ("rfc9111-4-options-passes", req(method="OPTIONS"), E, 0, Pass(PassReason.METHOD)),
    ("rfc9111-4-miss", req(), None, 0, Miss()),
    ("rfc9111-4-head-miss", req(method="HEAD"), None, 0, Miss()),
    # Fresh and stale (§4.2): fresh iff lifetime > age.
    ("rfc9111-4.2-fresh-hit", req(), E, 10, Fresh(E, 10.0)),
    ("rfc9111-4.2.3-fresh-hit-age-includes-initial-age", req(), AGED, 10, Fresh(AGED, 15.0)),
    ("rfc9111-4.2-head-fresh-hit", req(method="HEAD"), E, 10, Fresh(E, 10.0)),
    ("rfc9111-4.2-just-fresh", req(), E, 99.5, Fresh(E, 99.5)),
    ("rfc9111-4.2-age-equal-lifetime-is-stale", req(), E, 100, Revalidate(E, STALE_REQ)),
    ("rfc9111-4.2-stale-revalidates", req(), E, 500, Revalidate(E, STALE_REQ)),
    (
        "rfc9111-4.2.3-initial-age-beyond-lifetime-is-stale",
        req(),
        entry(initial_age=200.0),
        0,
        Revalidate(entry(initial_age=200.0), STALE_REQ),
    ),
    (
        "rfc9111-4.2-zero-lifetime-revalidates",
        req(),
        entry(lifetime=0.0),
        0,
        Revalidate(entry(lifetime=0.0), STALE_REQ),
    ),
    # no-cache, from either side.
    (
        "rfc9111-5.2.2.4-response-no-cache-revalidates-fresh",
        req(),
        NC,
        1,
        Revalidate(NC, RevalidateReason.NO_CACHE),
    ),
    ("rfc9111-5.2.1.4-request-no-cache", req("no-cache"), E, 1, Revalidate(E, RevalidateReason.REQUEST)),
    (
        "rfc9111-5.4-pragma-no-cache-without-cache-control",
        req(pragma="no-cache"),
        E,
        1,
        Revalidate(E, RevalidateReason.REQUEST),
    ),
    (
        "rfc9111-5.4-pragma-case-insensitive",
        req(pragma="No-Cache"),
        E,
        1,
        Revalidate(E, RevalidateReason.REQUEST),
    ),
    (
        "rfc9111-5.4-pragma-ignored-with-cache-control",
        req("max-age=1000", pragma="no-cache"),
        E,
        1,
        Fresh(E, 1.0),
    ),
    ("rfc9111-5.4-other-pragma-ignored", req(pragma="x-debug"), E, 1, Fresh(E, 1.0)),
    # Request max-age (§5.2.1.1): the client refuses older responses.
    ("rfc9111-5.2.1.1-max-age-accepts-younger", req("max-age=20"), E, 15, Fresh(E, 15.0)),
    ("rfc9111-5.2.1.1-max-age-accepts-equal", req("max-age=15"), E, 15, Fresh(E, 15.0)),
    (
        "rfc9111-5.2.1.1-max-age-rejects-older",
        req("max-age=10"),
        E,
        15,
        Revalidate(E, RevalidateReason.REQUEST),
    ),
    (
        "rfc9111-5.2.1.1-max-age-0-revalidates",
        req("max-age=0"),
        E,
        1,
        Revalidate(E, RevalidateReason.REQUEST),
    ),
    (
        "rfc9111-5.2.1.1-max-age-rejects-even-with-swr",
        req("max-age=0"),
        SWR,
        1,
        Revalidate(SWR, RevalidateReason.REQUEST),
    ),
    (
        "rfc9111-5.2.1.1-max-age-larger-than-lifetime-stale",
        req("max-age=1000"),
        E,
        150,
        Revalidate(E, STALE_REQ),
    ),
    # Request min-fresh (§5.2.1.3): wants at least this much freshness left.
    ("rfc9111-5.2.1.3-min-fresh-accepts", req("min-fresh=80"), E, 15, Fresh(E, 15.0)),
    (
        "rfc9111-5.2.1.3-min-fresh-rejects",
        req("min-fresh=90"),
        E,
        15,
        Revalidate(E, RevalidateReason.REQUEST),
    ),
    # Request max-stale (§5.2.1.2).
    ("rfc9111-5.2.1.2-max-stale-within", req("max-stale=20"), E, 110, Fresh(E, 110.0, stale=True)),
    ("rfc9111-5.2.1.2-max-stale-at-limit", req("max-stale=20"), E, 120, Fresh(E, 120.0, stale=True)),
    ("rfc9111-5.2.1.2-max-stale-exceeded", req("max-stale=5"), E, 110, Revalidate(E, STALE_REQ)),
    (
        "rfc9111-5.2.1.2-max-stale-without-value",
        req("max-stale"),
        E,
        10**6,
        Fresh(E, 1_000_000.0, stale=True),
    ),
    ("rfc9111-5.2.1.2-max-stale-bad-value-is-zero", req("max-stale=x"), E, 110, Revalidate(E, STALE_REQ)),
    ("rfc9111-5.2.1.2-max-stale-on-fresh-is-plain-hit", req("max-stale"), E, 10, Fresh(E, 10.0)),
    (
        "rfc9111-5.2.2.2-must-revalidate-forbids-max-stale",
        req("max-stale"),
        MR,
        110,
        Revalidate(MR, STALE_REQ),
    ),
    ("rfc9111-5.2.2.2-must-revalidate-fresh-hit", req(), MR, 10, Fresh(MR, 10.0)),
    # only-if-cached (§5.2.1.7): never contact the origin; 504 when nothing usable is stored.
    ("rfc9111-5.2.1.7-only-if-cached-miss", req("only-if-cached"), None, 0, OnlyIfCached()),
    ("rfc9111-5.2.1.7-only-if-cached-fresh", req("only-if-cached"), E, 10, Fresh(E, 10.0)),
    ("rfc9111-5.2.1.7-only-if-cached-stale", req("only-if-cached"), E, 110, OnlyIfCached()),
    (
        "rfc9111-5.2.1.7-only-if-cached-max-stale",
        req("only-if-cached, max-stale"),
        E,
        110,
        Fresh(E, 110.0, stale=True),
    ),
    ("rfc9111-5.2.1.7-only-if-cached-stored-no-cache", req("only-if-cached"), NC, 1, OnlyIfCached()),
    (
        "rfc9111-5.2.1.7-only-if-cached-max-age-rejects",
        req("only-if-cached, max-age=0"),
        E,
        1,
        OnlyIfCached(),
    ),
    (
        "rfc9111-5.2.1.7-only-if-cached-auth-not-reusable",
        req("only-if-cached", auth=True),
        E,
        1,
        OnlyIfCached(),
    ),
    # stale-while-revalidate (RFC 5861 §3).
    ("rfc5861-3-swr-within-window", req(), SWR, 150, StaleWhileRevalidate(SWR, 150.0)),
    ("rfc5861-3-swr-window-end-inclusive", req(), SWR, 160, StaleWhileRevalidate(SWR, 160.0)),
    ("rfc5861-3-swr-beyond-window", req(), SWR, 161, Revalidate(SWR, STALE_REQ)),
    ("rfc5861-3-swr-fresh-is-plain-hit", req(), SWR, 10, Fresh(SWR, 10.0)),
    ("rfc5861-3-no-window-no-swr-at-expiry", req(), E, 100, Revalidate(E, STALE_REQ)),
    ("rfc9111-5.2.2.2-must-revalidate-forbids-swr", req(), SWR_MR, 150, Revalidate(SWR_MR, STALE_REQ)),
    (
        "rfc5861-3-swr-not-for-no-cache",
        req(),
        replace(SWR, no_cache=True),
        150,
        Revalidate(replace(SWR, no_cache=True), RevalidateReason.NO_CACHE),
    ),
    # Authorization (§3.5): reuse only an entry the response allowed for authenticated requests.
    ("rfc9111-3.5-authorization-miss-fills-alone", req(auth=True), None, 0, Miss(alone=True)),
    (
        "rfc9111-3.5-authorization-no-store-passes",
        req("no-store", auth=True),
        None,
        0,
        Pass(PassReason.REQUEST_NO_STORE),
    ),
    (
        "rfc9111-3.5-authorization-entry-not-shared-passes",
        req(auth=True),
        E,
        1,
        Pass(PassReason.AUTHORIZATION),
    ),
    ("rfc9111-3.5-authorization-entry-auth-ok-hit", req(auth=True), AUTH, 1, Fresh(AUTH, 1.0)),
    ("rfc9111-3.5-authorization-entry-auth-ok-stale", req(auth=True), AUTH, 101, Revalidate(AUTH, STALE_REQ)),
    # Request no-store (§5.2.1.5): do not store; a stored response may still answer.
    (
        "rfc9111-5.2.1.5-request-no-store-miss-passes",
        req("no-store"),
        None,
        0,
        Pass(PassReason.REQUEST_NO_STORE),
    ),
    ("rfc9111-5.2.1.5-request-no-store-hit", req("no-store"), E, 1, Fresh(E, 1.0)),
    # Soft purge: stale from now on, whatever its lifetime; stale-while-revalidate still applies.
    ("soft-purge-stale-immediately", req(), PURGED, 1, Revalidate(PURGED, STALE_REQ)),
    ("soft-purge-swr-still-applies", req(), PURGED_SWR, 1, StaleWhileRevalidate(PURGED_SWR, 1.0)),
    ("soft-purge-swr-window-from-purge-age", req(), PURGED_SWR, 61, Revalidate(PURGED_SWR, STALE_REQ)),
    ("soft-purge-max-stale", req("max-stale=10"), PURGED, 5, Fresh(PURGED, 5.0, stale=True)),
]


@pytest.mark.parametrize(
    ("request_", "stored", "elapsed", "expected"), [d[1:] for d in DECIDE], ids=[d[0] for d in DECIDE]
)
def test_decide(
    request_: RequestFacts, stored: StoredResponse | None, elapsed: float, expected: Decision
) -> None:
    assert decide(request_, stored, now=T0 + elapsed) == expected


SIE = entry(stale_if_error=60.0)

# (id, entry, seconds resident, may a stale entry answer when the origin failed)
ON_ERROR = [
    ("rfc5861-4-sie-within", SIE, 150, True),
    ("rfc5861-4-sie-window-end-inclusive", SIE, 160, True),
    ("rfc5861-4-sie-beyond-window", SIE, 161, False),
    ("rfc5861-4-no-window", E, 101, False),
    ("rfc9111-5.2.2.2-must-revalidate-forbids-sie", replace(SIE, must_revalidate=True), 101, False),
    ("rfc9111-5.2.2.4-no-cache-forbids-sie", replace(SIE, no_cache=True), 101, False),
    ("rfc5861-4-soft-purged-within", replace(SIE, invalidated=True, lifetime=1000.0), 50, True),
    ("rfc5861-4-soft-purged-beyond", replace(SIE, invalidated=True, lifetime=1000.0), 61, False),
]


@pytest.mark.parametrize(
    ("stored", "elapsed", "expected"), [o[1:] for o in ON_ERROR], ids=[o[0] for o in ON_ERROR]
)
def test_usable_on_error(stored: StoredResponse, elapsed: float, expected: bool) -> None:
    assert usable_on_error(stored, now=T0 + elapsed) is expected


def test_ttl_left() -> None:
    assert ttl_left(E, 30.0) == 70.0
    assert ttl_left(E, 130.0) == -30.0
    assert ttl_left(PURGED, 30.0) == -30.0


REQUEST_FACTS = [
    ("rfc9111-5.2.1-cache-control-parsed", ["max-age=5, no-store"], [], {"max-age": "5", "no-store": None}),
    ("rfc9111-5.4-pragma-when-no-cache-control", [], ["no-cache"], {"no-cache": None}),
    ("rfc9111-5.4-pragma-ignored-with-cache-control", ["max-stale"], ["no-cache"], {"max-stale": None}),
    ("rfc9111-5.4-no-pragma", [], [], {}),
]


@pytest.mark.parametrize(
    ("cache_control", "pragma", "directives"),
    [r[1:] for r in REQUEST_FACTS],
    ids=[r[0] for r in REQUEST_FACTS],
)
def test_request_facts(
    cache_control: list[str], pragma: list[str], directives: dict[str, str | None]
) -> None:
    facts = request_facts("GET", cache_control, pragma, False)
    assert facts.cc.directives == directives
    assert facts.no_store == ("no-store" in directives)
