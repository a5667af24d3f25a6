"""Cache-Control parsing (RFC 9111 §5.2, §1.2.2; RFC 9110 §5.6): never raises, first duplicate wins."""

import pytest

from edgecdn.http.cache_control import (
    MAX_DELTA,
    CacheControl,
    parse_age,
    parse_cache_control,
    parse_delta,
)

PARSE = [
    ("rfc9111-5.2-token-and-argument", ["max-age=60, public"], {"max-age": "60", "public": None}),
    ("rfc9111-5.2-names-case-insensitive", ["Max-Age=60, NO-CACHE"], {"max-age": "60", "no-cache": None}),
    (
        "rfc9111-5.2-quoted-argument-keeps-commas",
        ['private="Set-Cookie, X-User", max-age=5'],
        {"private": "Set-Cookie, X-User", "max-age": "5"},
    ),
    (
        "rfc9110-5.6.4-quoted-pair-unescaped",
        ['no-cache="a\\"b", public'],
        {"no-cache": 'a"b', "public": None},
    ),
    ("rfc9111-4.2.1-duplicate-first-wins", ["max-age=10, max-age=20"], {"max-age": "10"}),
    ("rfc9111-4.2.1-duplicate-across-lines-first-wins", ["max-age=10", "max-age=20"], {"max-age": "10"}),
    ("rfc9110-5.6.1-lines-combine", ["public", "s-maxage=30"], {"public": None, "s-maxage": "30"}),
    ("rfc9110-5.6.1-empty-elements-ignored", [" , ,max-age=1,, "], {"max-age": "1"}),
    ("rfc9111-5.2-argument-whitespace-trimmed", ["max-age=60 ,public"], {"max-age": "60", "public": None}),
    ("rfc9111-5.2-malformed-name-dropped", ["max age=1, public"], {"public": None}),
    ("rfc9111-5.2-extension-directive-kept", ["community=UCI"], {"community": "UCI"}),
    ("rfc9111-5.2-empty-field", [""], {}),
    ("rfc9111-5.2-no-field", [], {}),
]


@pytest.mark.parametrize(("values", "expected"), [p[1:] for p in PARSE], ids=[p[0] for p in PARSE])
def test_parse_cache_control(values: list[str], expected: dict[str, str | None]) -> None:
    cc = parse_cache_control(values)
    assert cc.directives == expected
    assert bool(cc) == bool(expected)


SECONDS = [
    ("rfc9111-1.2.2-delta-seconds", "max-age=60", "max-age", 60),
    ("rfc9111-1.2.2-zero", "max-age=0", "max-age", 0),
    ("rfc9111-1.2.2-absent-is-none", "public", "max-age", None),
    ("rfc9111-4.2.1-non-numeric-is-stale", "max-age=abc", "max-age", 0),
    ("rfc9111-4.2.1-negative-is-stale", "max-age=-1", "max-age", 0),
    ("rfc9111-4.2.1-fraction-is-stale", "max-age=1.5", "max-age", 0),
    ("rfc9111-4.2.1-empty-argument-is-stale", "max-age=", "max-age", 0),
    ("rfc9111-4.2.1-missing-argument-is-stale", "max-age", "max-age", 0),
    ("rfc9111-1.2.2-non-ascii-digit-is-stale", "max-age=\u00b2", "max-age", 0),
    ("rfc9111-1.2.2-non-latin-digit-is-stale", "max-age=\u0663", "max-age", 0),
    ("rfc9111-5.2-quoted-delta-accepted", 's-maxage="30"', "s-maxage", 30),
    ("rfc9111-1.2.2-huge-capped", "max-age=99999999999999", "max-age", MAX_DELTA),
    ("rfc9111-1.2.2-longer-than-int-conversion-limit-capped", "max-age=" + "9" * 5000, "max-age", MAX_DELTA),
    ("rfc9111-1.2.2-cap-is-2-pow-31", f"max-age={2**31 + 1}", "max-age", 2**31),
    ("rfc5861-swr-delta", "max-age=1, stale-while-revalidate=30", "stale-while-revalidate", 30),
]


@pytest.mark.parametrize(("value", "name", "expected"), [s[1:] for s in SECONDS], ids=[s[0] for s in SECONDS])
def test_seconds(value: str, name: str, expected: int | None) -> None:
    assert parse_cache_control([value]).seconds(name) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 0), ("", 0), ("7", 7), ("007", 7), (" 7", 0), ("1e3", 0), (str(2**40), MAX_DELTA)],
    ids=[
        f"rfc9111-1.2.2-{n}"
        for n in ("none", "empty", "digits", "leading-zeros", "leading-space", "exponent", "capped")
    ],
)
def test_parse_delta(value: str | None, expected: int) -> None:
    assert parse_delta(value) == expected


FIELD_NAMES = [
    (
        "rfc9111-5.2.2.7-qualified-private",
        'private="Set-Cookie, X-User"',
        "private",
        {"set-cookie", "x-user"},
    ),
    ("rfc9111-5.2.2.7-unqualified-private", "private", "private", set()),
    ("rfc9111-5.2.2.4-qualified-no-cache", 'no-cache="X-A"', "no-cache", {"x-a"}),
    ("rfc9111-5.2.2.4-empty-qualifier", 'no-cache=""', "no-cache", set()),
    ("rfc9111-5.2-absent-directive", "public", "private", set()),
]


@pytest.mark.parametrize(
    ("value", "name", "expected"), [f[1:] for f in FIELD_NAMES], ids=[f[0] for f in FIELD_NAMES]
)
def test_field_names(value: str, name: str, expected: set[str]) -> None:
    assert parse_cache_control([value]).field_names(name) == expected


def test_contains_uses_lower_case_names() -> None:
    cc = parse_cache_control(["No-Store"])
    assert "no-store" in cc
    assert "No-Store" not in cc
    assert CacheControl() == parse_cache_control([])


AGE = [
    ("rfc9111-5.1-age-delta-seconds", ["7200"], 7200),
    ("rfc9111-5.1-age-zero", ["0"], 0),
    ("rfc9111-5.1-age-absent", [], None),
    ("rfc9111-5.1-age-empty-invalid", [""], None),
    ("rfc9111-5.1-age-ows-trimmed", [" 60\t"], 60),
    ("rfc9111-5.1-age-float-invalid", ["7200.0"], None),
    ("rfc9111-5.1-age-negative-invalid", ["-7200"], None),
    ("rfc9111-5.1-age-plus-invalid", ["+7200"], None),
    ("rfc9111-5.1-age-prefix-invalid", ["a7200"], None),
    ("rfc9111-5.1-age-suffix-invalid", ["7200a"], None),
    ("rfc9111-5.1-age-inner-space-invalid", ["72 00"], None),
    ("rfc9111-5.1-age-non-ascii-digit-invalid", ["\u0663"], None),
    ("rfc9111-5.1-age-list-uses-first-member", ["7200, 0"], 7200),
    ("rfc9111-5.1-age-list-first-zero", ["0, 7200"], 0),
    ("rfc9111-5.1-age-lines-use-first", ["0", "7200"], 0),
    ("rfc9111-5.1-age-lines-first-old", ["7200", "0"], 7200),
    ("rfc9111-5.1-age-list-first-invalid", ["a, 7200"], None),
    ("rfc9110-5.6.1-age-empty-members-skipped", [" , 30"], 30),
    ("rfc9111-1.2.2-age-2-pow-31", [str(2**31)], 2**31),
    ("rfc9111-1.2.2-age-saturates", [str(2**31 + 1)], 2**31),
    ("rfc9111-1.2.2-age-huge-saturates", ["9" * 5000], 2**31),
]


@pytest.mark.parametrize(("values", "expected"), [a[1:] for a in AGE], ids=[a[0] for a in AGE])
def test_parse_age(values: list[str], expected: int | None) -> None:
    assert parse_age(values) == expected
