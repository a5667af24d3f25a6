"""Conditional requests answered from a stored response (RFC 9110 §13.1, evaluated in §13.2.2 order)."""

import pytest

from edgecdn.http.conditional import (
    Conditions,
    ETag,
    Precondition,
    evaluate,
    if_range_matches,
    parse_etag,
    parse_etag_list,
)

ETAG = '"v1"'
LM = "Sun, 06 Nov 1994 08:49:37 GMT"
BEFORE = "Sat, 05 Nov 1994 08:49:37 GMT"
AFTER = "Mon, 07 Nov 1994 08:49:37 GMT"
LM_RFC850 = "Sunday, 06-Nov-94 08:49:37 GMT"

PROCEED, NOT_MODIFIED, FAILED = Precondition.PROCEED, Precondition.NOT_MODIFIED, Precondition.FAILED

# (id, conditions, method, current etag, current Last-Modified, expected)
EVALUATE = [
    ("rfc9110-13.2.2-no-conditions", Conditions(), "GET", ETAG, LM, PROCEED),
    # Step 1: If-Match, strong comparison.
    ("rfc9110-13.1.1-if-match-strong-match", Conditions(if_match=(ETAG,)), "GET", ETAG, LM, PROCEED),
    ("rfc9110-13.1.1-if-match-mismatch", Conditions(if_match=('"v2"',)), "GET", ETAG, LM, FAILED),
    ("rfc9110-13.1.1-if-match-in-list", Conditions(if_match=('"a", "v1"',)), "GET", ETAG, LM, PROCEED),
    (
        "rfc9110-13.1.1-if-match-weak-tag-never-matches",
        Conditions(if_match=('W/"v1"',)),
        "GET",
        ETAG,
        LM,
        FAILED,
    ),
    (
        "rfc9110-13.1.1-if-match-weak-current-never-matches",
        Conditions(if_match=(ETAG,)),
        "GET",
        'W/"v1"',
        LM,
        FAILED,
    ),
    ("rfc9110-13.1.1-if-match-without-current-etag", Conditions(if_match=(ETAG,)), "GET", None, LM, FAILED),
    ("rfc9110-13.1.1-if-match-star", Conditions(if_match=("*",)), "GET", ETAG, LM, PROCEED),
    ("rfc9110-13.1.1-if-match-only-malformed", Conditions(if_match=("v1",)), "GET", ETAG, LM, FAILED),
    (
        "rfc9110-13.2.2-if-match-before-if-none-match",
        Conditions(if_match=('"v2"',), if_none_match=(ETAG,)),
        "GET",
        ETAG,
        LM,
        FAILED,
    ),
    # Step 2: If-Unmodified-Since, only without If-Match.
    ("rfc9110-13.1.4-ius-modified-after", Conditions(if_unmodified_since=BEFORE), "GET", ETAG, LM, FAILED),
    ("rfc9110-13.1.4-ius-same-date", Conditions(if_unmodified_since=LM), "GET", ETAG, LM, PROCEED),
    ("rfc9110-13.1.4-ius-later-date", Conditions(if_unmodified_since=AFTER), "GET", ETAG, LM, PROCEED),
    (
        "rfc9110-13.1.4-ius-invalid-date-ignored",
        Conditions(if_unmodified_since="x"),
        "GET",
        ETAG,
        LM,
        PROCEED,
    ),
    (
        "rfc9110-13.1.4-ius-no-last-modified-ignored",
        Conditions(if_unmodified_since=BEFORE),
        "GET",
        ETAG,
        None,
        PROCEED,
    ),
    (
        "rfc9110-13.2.2-ius-ignored-with-if-match",
        Conditions(if_match=(ETAG,), if_unmodified_since=BEFORE),
        "GET",
        ETAG,
        LM,
        PROCEED,
    ),
    # Step 3: If-None-Match, weak comparison.
    ("rfc9110-13.1.2-inm-match-get", Conditions(if_none_match=(ETAG,)), "GET", ETAG, LM, NOT_MODIFIED),
    ("rfc9110-13.1.2-inm-match-head", Conditions(if_none_match=(ETAG,)), "HEAD", ETAG, LM, NOT_MODIFIED),
    (
        "rfc9110-13.1.2-inm-weak-tag-matches",
        Conditions(if_none_match=('W/"v1"',)),
        "GET",
        ETAG,
        LM,
        NOT_MODIFIED,
    ),
    (
        "rfc9110-13.1.2-inm-weak-current-matches",
        Conditions(if_none_match=(ETAG,)),
        "GET",
        'W/"v1"',
        LM,
        NOT_MODIFIED,
    ),
    ("rfc9110-13.1.2-inm-mismatch", Conditions(if_none_match=('"v2"',)), "GET", ETAG, LM, PROCEED),
    ("rfc9110-13.1.2-inm-in-list", Conditions(if_none_match=('"a", W/"v1"',)), "GET", ETAG, LM, NOT_MODIFIED),
    (
        "rfc9110-13.1.2-inm-across-lines",
        Conditions(if_none_match=('"a"', ETAG)),
        "GET",
        ETAG,
        LM,
        NOT_MODIFIED,
    ),
    (
        "rfc9110-13.1.2-inm-comma-inside-tag",
        Conditions(if_none_match=('"a,b"',)),
        "GET",
        '"a,b"',
        LM,
        NOT_MODIFIED,
    ),
    ("rfc9110-13.1.2-inm-star", Conditions(if_none_match=("*",)), "GET", ETAG, LM, NOT_MODIFIED),
    ("rfc9110-13.1.2-inm-without-current-etag", Conditions(if_none_match=(ETAG,)), "GET", None, LM, PROCEED),
    (
        "rfc9110-13.1.2-inm-match-other-method-fails",
        Conditions(if_none_match=(ETAG,)),
        "DELETE",
        ETAG,
        LM,
        FAILED,
    ),
    # Step 4: If-Modified-Since, only for GET/HEAD and only without If-None-Match.
    ("rfc9110-13.1.3-ims-same-date", Conditions(if_modified_since=LM), "GET", ETAG, LM, NOT_MODIFIED),
    ("rfc9110-13.1.3-ims-later-date", Conditions(if_modified_since=AFTER), "HEAD", ETAG, LM, NOT_MODIFIED),
    ("rfc9110-13.1.3-ims-earlier-date", Conditions(if_modified_since=BEFORE), "GET", ETAG, LM, PROCEED),
    (
        "rfc9110-13.1.3-ims-rfc850-form",
        Conditions(if_modified_since=LM_RFC850),
        "GET",
        ETAG,
        LM,
        NOT_MODIFIED,
    ),
    ("rfc9110-13.1.3-ims-invalid-date-ignored", Conditions(if_modified_since="x"), "GET", ETAG, LM, PROCEED),
    ("rfc9110-13.1.3-ims-no-last-modified", Conditions(if_modified_since=AFTER), "GET", ETAG, None, PROCEED),
    ("rfc9110-13.1.3-ims-ignored-for-post", Conditions(if_modified_since=LM), "POST", ETAG, LM, PROCEED),
    (
        "rfc9110-13.2.2-ims-ignored-with-inm",
        Conditions(if_none_match=('"v2"',), if_modified_since=AFTER),
        "GET",
        ETAG,
        LM,
        PROCEED,
    ),
    (
        "rfc9110-13.2.2-inm-decides-over-ims",
        Conditions(if_none_match=(ETAG,), if_modified_since=BEFORE),
        "GET",
        ETAG,
        LM,
        NOT_MODIFIED,
    ),
    (
        "rfc9110-13.2.2-ius-failure-before-inm",
        Conditions(if_unmodified_since=BEFORE, if_none_match=(ETAG,)),
        "GET",
        ETAG,
        LM,
        FAILED,
    ),
]


@pytest.mark.parametrize(
    ("cond", "method", "etag", "last_modified", "expected"),
    [e[1:] for e in EVALUATE],
    ids=[e[0] for e in EVALUATE],
)
def test_evaluate(
    cond: Conditions, method: str, etag: str | None, last_modified: str | None, expected: Precondition
) -> None:
    assert evaluate(cond, method=method, etag=etag, last_modified=last_modified) is expected


# (id, If-Range, current etag, current Last-Modified, range applies)
IF_RANGE = [
    ("rfc9110-13.1.5-absent", None, ETAG, LM, True),
    ("rfc9110-13.1.5-strong-etag-match", ETAG, ETAG, LM, True),
    ("rfc9110-13.1.5-strong-etag-mismatch", '"v2"', ETAG, LM, False),
    ("rfc9110-13.1.5-weak-if-range-never-matches", 'W/"v1"', 'W/"v1"', LM, False),
    ("rfc9110-13.1.5-weak-current-never-matches", ETAG, 'W/"v1"', LM, False),
    ("rfc9110-13.1.5-etag-without-current-etag", ETAG, None, LM, False),
    ("rfc9110-13.1.5-date-equals-last-modified", LM, ETAG, LM, True),
    ("rfc9110-13.1.5-date-equals-with-whitespace", f" {LM} ", None, LM, True),
    ("rfc9110-13.1.5-date-earlier", BEFORE, ETAG, LM, False),
    ("rfc9110-13.1.5-date-later-is-not-exact", AFTER, ETAG, LM, False),
    ("rfc9110-13.1.5-date-without-last-modified", LM, ETAG, None, False),
]


@pytest.mark.parametrize(
    ("if_range", "etag", "last_modified", "expected"), [i[1:] for i in IF_RANGE], ids=[i[0] for i in IF_RANGE]
)
def test_if_range_matches(
    if_range: str | None, etag: str | None, last_modified: str | None, expected: bool
) -> None:
    assert if_range_matches(if_range, etag=etag, last_modified=last_modified) is expected


PARSE_ETAG = [
    ("rfc9110-8.8.3-strong", '"xyzzy"', ETag('"xyzzy"', weak=False)),
    ("rfc9110-8.8.3-weak", 'W/"xyzzy"', ETag('"xyzzy"', weak=True)),
    ("rfc9110-8.8.3-empty-opaque", '""', ETag('""', weak=False)),
    ("rfc9110-8.8.3-whitespace-trimmed", ' "a" ', ETag('"a"', weak=False)),
    ("rfc9110-8.8.3-unquoted", "xyzzy", None),
    ("rfc9110-8.8.3-unterminated", '"xyzzy', None),
    ("rfc9110-8.8.3-inner-quote", '"a"b"', None),
    ("rfc9110-8.8.3-lower-case-weak-prefix", 'w/"a"', None),
    ("rfc9110-8.8.3-empty", "", None),
    ("rfc9110-8.8.3-none", None, None),
]


@pytest.mark.parametrize(("value", "expected"), [p[1:] for p in PARSE_ETAG], ids=[p[0] for p in PARSE_ETAG])
def test_parse_etag(value: str | None, expected: ETag | None) -> None:
    assert parse_etag(value) == expected


def test_etag_list_star_and_malformed_members() -> None:
    assert parse_etag_list(['"a"', "*"]) is None
    assert parse_etag_list(['"a", junk, W/"b"']) == [ETag('"a"', False), ETag('"b"', True)]


def test_strong_and_weak_comparison() -> None:
    """RFC 9110 §8.8.3.2, the table of the four comparisons."""
    w1, w1b, w2, s1 = ETag('"1"', True), ETag('"1"', True), ETag('"2"', True), ETag('"1"', False)
    assert (w1.strong_eq(w1b), w1.weak_eq(w1b)) == (False, True)
    assert (w1.strong_eq(w2), w1.weak_eq(w2)) == (False, False)
    assert (w1.strong_eq(s1), w1.weak_eq(s1)) == (False, True)
    assert (s1.strong_eq(s1), s1.weak_eq(s1)) == (True, True)


def test_empty_conditions_are_falsy() -> None:
    assert not Conditions()
    assert Conditions(if_modified_since=LM)


SUNDAY = 784111777.0  # LM as a timestamp


@pytest.mark.parametrize(
    ("since", "last_modified", "expected"),
    [
        pytest.param(LM, None, NOT_MODIFIED, id="rfc9111-4.3.2-ims-against-date-equal"),
        pytest.param(AFTER, None, NOT_MODIFIED, id="rfc9111-4.3.2-ims-after-date"),
        pytest.param(BEFORE, None, PROCEED, id="rfc9111-4.3.2-ims-before-date"),
        pytest.param(AFTER, AFTER, NOT_MODIFIED, id="rfc9111-4.3.2-last-modified-preferred"),
        pytest.param(LM, AFTER, PROCEED, id="rfc9111-4.3.2-last-modified-preferred-modified"),
    ],
)
def test_if_modified_since_without_last_modified_uses_date(
    since: str, last_modified: str | None, expected: Precondition
) -> None:
    cond = Conditions(if_modified_since=since)
    got = evaluate(cond, method="GET", etag=None, last_modified=last_modified, date=SUNDAY)
    assert got is expected
