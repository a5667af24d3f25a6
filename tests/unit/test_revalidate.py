"""Revalidation (RFC 9111 §4.3): the conditional request to send, and merging a 304 into the stored entry."""

from dataclasses import replace

import pytest

from edgecdn.config import CacheConfig
from edgecdn.http.dates import format_http_date
from edgecdn.http.fields import Headers, get_all, get_one
from edgecdn.policy.admit import Exchange, admit
from edgecdn.policy.decide import Fresh, Revalidate, decide, request_facts
from edgecdn.policy.revalidate import conditional_headers, merge_304, validators_match
from edgecdn.policy.stored import StoredResponse

T0 = 1_700_000_000.0
T1 = T0 + 1000.0  # when the entry is revalidated
CFG = CacheConfig()
ETAG = '"v1"'
LM = "Sun, 06 Nov 1994 08:49:37 GMT"

BASE = StoredResponse(status=200, headers=(), size=10, response_time=T0, initial_age=0.0, lifetime=60.0)

CONDITIONAL = [
    ("rfc9111-4.3.1-etag", replace(BASE, etag=ETAG), {"If-None-Match": ETAG}),
    ("rfc9111-4.3.1-weak-etag-sent-as-is", replace(BASE, etag='W/"v1"'), {"If-None-Match": 'W/"v1"'}),
    ("rfc9111-4.3.1-last-modified", replace(BASE, last_modified=LM), {"If-Modified-Since": LM}),
    (
        "rfc9111-4.3.1-both-validators",
        replace(BASE, etag=ETAG, last_modified=LM),
        {"If-None-Match": ETAG, "If-Modified-Since": LM},
    ),
    ("rfc9111-4.3.1-no-validator-unconditional", BASE, {}),
]


@pytest.mark.parametrize(
    ("stored", "expected"), [c[1:] for c in CONDITIONAL], ids=[c[0] for c in CONDITIONAL]
)
def test_conditional_headers(stored: StoredResponse, expected: dict[str, str]) -> None:
    assert conditional_headers(stored) == expected


def stored_200(*extra: tuple[str, str]) -> StoredResponse:
    headers: Headers = (
        ("Date", format_http_date(T0)),
        ("Cache-Control", "max-age=60"),
        ("ETag", ETAG),
        ("Content-Type", "text/plain"),
        ("Content-Encoding", "gzip"),
        ("X-Kept", "old"),
        ("X-Replaced", "old-1"),
        ("X-Replaced", "old-2"),
        *extra,
    )
    stored = admit(Exchange("/a", 200, headers, request_time=T0, response_time=T0), cfg=CFG)
    assert isinstance(stored, StoredResponse)
    return replace(stored, size=1234)


def merged(
    headers_304: Headers, *, request_time: float = T1, entry: StoredResponse | None = None
) -> StoredResponse:
    return merge_304(
        entry or stored_200(),
        headers_304,
        path="/a",
        request_time=request_time,
        response_time=T1,
        cfg=CFG,
    )


NOT_MODIFIED: Headers = (
    ("Date", format_http_date(T1)),
    ("Cache-Control", "max-age=120"),
    ("ETag", ETAG),
    ("Content-Type", "text/html"),
    ("Content-Length", "0"),
    ("Content-Encoding", "br"),
    ("X-Replaced", "new"),
    ("Connection", "close"),
    ("Keep-Alive", "timeout=5"),
)


def test_rfc9111_4_3_4_304_updates_stored_fields() -> None:
    m = merged(NOT_MODIFIED)
    assert get_all(m.headers, "x-replaced") == ["new"]
    assert get_one(m.headers, "x-kept") == "old"
    assert get_one(m.headers, "cache-control") == "max-age=120"
    assert m.lifetime == 120.0


@pytest.mark.parametrize(
    ("name", "value"),
    [("content-type", "text/plain"), ("content-encoding", "gzip"), ("content-length", None)],
    ids=[
        "rfc9111-3.2-content-type-not-updated",
        "rfc9111-3.2-content-encoding-not-updated",
        "rfc9111-3.2-content-length-not-stored",
    ],
)
def test_rfc9111_3_2_304_does_not_update_body_fields(name: str, value: str | None) -> None:
    assert get_all(merged(NOT_MODIFIED).headers, name) == ([value] if value else [])


def test_rfc9110_7_6_1_304_hop_by_hop_not_merged() -> None:
    names = {n.lower() for n, _ in merged(NOT_MODIFIED).headers}
    assert not names & {"connection", "keep-alive"}


def test_rfc9111_4_3_4_304_restarts_the_age() -> None:
    stale = stored_200()
    facts = request_facts("GET", [], [], False)
    assert isinstance(decide(facts, stale, now=T1), Revalidate)
    m = merged(NOT_MODIFIED, request_time=T1 - 0.5)
    assert (m.response_time, m.initial_age) == (T1, 0.5)
    assert decide(facts, m, now=T1 + 10) == Fresh(m, 10.5)


def test_rfc9111_4_3_4_304_age_field_counts() -> None:
    m = merged((*NOT_MODIFIED, ("Age", "7")))
    assert m.initial_age == 7.0
    assert get_one(m.headers, "age") is None


def test_rfc9110_6_6_1_304_without_date_restarts_the_age() -> None:
    """A Date-less 304 is dated on receipt, so the stored Date (T1 - 30, within skew) is replaced."""
    entry = replace(
        stored_200(), headers=(("Date", format_http_date(T1 - 30)), ("Cache-Control", "max-age=60"))
    )
    m = merged((("Cache-Control", "max-age=60"),), entry=entry)
    assert m.initial_age == 0.0
    assert decide(request_facts("GET", [], [], False), m, now=T1 + 40) == Fresh(m, 40.0)


def test_304_keeps_status_size_and_clears_soft_purge() -> None:
    m = merged(NOT_MODIFIED, entry=replace(stored_200(), invalidated=True))
    assert (m.status, m.size, m.invalidated, m.etag) == (200, 1234, False, ETAG)


def test_304_keeps_tags_and_vary() -> None:
    entry = stored_200(("Vary", "Accept-Encoding"), ("Surrogate-Key", "a b"))
    m = merged(NOT_MODIFIED, entry=entry)
    assert (m.vary, m.tags) == (("accept-encoding",), ("a", "b"))


VALIDATORS = [
    ("rfc9111-4.3.4-same-strong-etag", ETAG, (("ETag", ETAG),), True),
    ("rfc9111-4.3.4-different-strong-etag", ETAG, (("ETag", '"v2"'),), False),
    ("rfc9111-4.3.4-whitespace-ignored", ETAG, (("etag", f" {ETAG} "),), True),
    ("rfc9111-4.3.4-same-weak-etag", 'W/"v1"', (("ETag", 'W/"v1"'),), True),
    ("rfc9111-4.3.4-304-without-etag", ETAG, (("Cache-Control", "max-age=1"),), True),
    ("rfc9111-4.3.4-entry-without-etag", None, (("ETag", '"v2"'),), True),
]


@pytest.mark.parametrize(
    ("etag", "headers_304", "expected"), [v[1:] for v in VALIDATORS], ids=[v[0] for v in VALIDATORS]
)
def test_validators_match(etag: str | None, headers_304: Headers, expected: bool) -> None:
    assert validators_match(replace(BASE, etag=etag), headers_304) is expected
