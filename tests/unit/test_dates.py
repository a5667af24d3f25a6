"""HTTP-date (RFC 9110 §5.6.7): all three historical forms parse, anything else is None."""

import pytest

from edgecdn.http.dates import format_http_date, parse_http_date

SUNDAY = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT, the RFC's own example

VALID = [
    ("rfc9110-5.6.7-imf-fixdate", "Sun, 06 Nov 1994 08:49:37 GMT", SUNDAY),
    ("rfc9110-5.6.7-rfc850", "Sunday, 06-Nov-94 08:49:37 GMT", SUNDAY),
    ("rfc9110-5.6.7-asctime", "Sun Nov  6 08:49:37 1994", SUNDAY),
    ("rfc9110-5.6.7-surrounding-whitespace", "  Sun, 06 Nov 1994 08:49:37 GMT \t", SUNDAY),
    ("rfc9110-5.6.7-epoch", "Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
    ("rfc9110-5.6.7-rfc850-two-digit-year-1970", "Thursday, 01-Jan-70 00:00:00 GMT", 0.0),
    ("rfc9110-5.6.7-leap-day", "Thu, 29 Feb 2024 12:00:00 GMT", 1709208000.0),
    ("rfc9110-5.6.7-leap-second", "Sat, 31 Dec 2016 23:59:60 GMT", 1483228800.0),
    ("rfc9110-5.6.7-asctime-two-digit-day", "Sun Nov 16 08:49:37 1994", SUNDAY + 10 * 86400),
    ("rfc9110-5.6.7-rfc850-year-2000s", "Monday, 01-Jan-24 00:00:00 GMT", 1704067200.0),
    ("rfc9110-5.6.7-day-name-not-checked", "Mon, 06 Nov 1994 08:49:37 GMT", SUNDAY),
]


@pytest.mark.parametrize(("value", "expected"), [v[1:] for v in VALID], ids=[v[0] for v in VALID])
def test_parse_valid(value: str, expected: float) -> None:
    assert parse_http_date(value) == expected


INVALID = [
    ("none", None),
    ("empty", ""),
    ("garbage", "garbage"),
    ("bare-number", "0"),
    ("negative-number", "-1"),
    ("iso-8601", "1994-11-06T08:49:37Z"),
    ("date-without-time", "Sun, 06 Nov 1994"),
    ("unknown-month", "Sun, 06 Foo 1994 08:49:37 GMT"),
    ("year-out-of-range", "Sun, 06 Nov 99999 08:49:37 GMT"),
    ("imf-non-gmt-zone", "Sun, 06 Nov 1994 08:49:37 UTC"),
    ("imf-numeric-zone", "Sun, 06 Nov 1994 08:49:37 +0000"),
    ("imf-no-zone", "Sun, 06 Nov 1994 08:49:37"),
    ("imf-two-digit-year", "Sun, 06 Nov 94 08:49:37 GMT"),
    ("imf-missing-comma", "Sun 06 Nov 1994 08:49:37 GMT"),
    ("imf-dashes", "Sun, 06-Nov-1994 08:49:37 GMT"),
    ("imf-dots-in-time", "Sun, 06 Nov 1994 08.49.37 GMT"),
    ("imf-one-digit-hour", "Sun, 06 Nov 1994 8:49:37 GMT"),
    ("imf-one-digit-day", "Sun, 6 Nov 1994 08:49:37 GMT"),
    ("imf-lower-case-month", "Sun, 06 nov 1994 08:49:37 GMT"),
    ("imf-lower-case-gmt", "Sun, 06 Nov 1994 08:49:37 gmt"),
    ("imf-long-day-name", "Sunday, 06 Nov 1994 08:49:37 GMT"),
    ("imf-no-day-name", "06 Nov 1994 08:49:37 GMT"),
    ("imf-double-space", "Sun, 06  Nov 1994 08:49:37 GMT"),
    ("imf-hour-24", "Sun, 06 Nov 1994 24:00:00 GMT"),
    ("imf-minute-60", "Sun, 06 Nov 1994 08:60:00 GMT"),
    ("imf-day-32", "Sun, 32 Nov 1994 08:49:37 GMT"),
    ("imf-feb-30", "Sun, 30 Feb 1994 08:49:37 GMT"),
    ("imf-non-ascii-digit", "Sun, \u06606 Nov 1994 08:49:37 GMT"),
    ("rfc850-four-digit-year", "Sunday, 06-Nov-1994 08:49:37 GMT"),
    ("rfc850-short-day-name", "Sun, 06-Nov-94 08:49:37 GMT"),
    ("asctime-with-gmt", "Sun Nov  6 08:49:37 1994 GMT"),
    ("asctime-single-space-day", "Sun Nov 6 08:49:37 1994"),
    ("two-dates-joined", "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT"),
]


@pytest.mark.parametrize("value", [v[1] for v in INVALID], ids=[f"rfc9110-5.6.7-{v[0]}" for v in INVALID])
def test_parse_invalid_is_none(value: str | None) -> None:
    assert parse_http_date(value) is None


def test_format_is_imf_fixdate() -> None:
    assert format_http_date(SUNDAY) == "Sun, 06 Nov 1994 08:49:37 GMT"


@pytest.mark.parametrize("ts", [0.0, SUNDAY, 1_700_000_000.0, 4_102_444_800.0], ids=str)
def test_format_parse_round_trip(ts: float) -> None:
    assert parse_http_date(format_http_date(ts)) == ts
