"""HTTP-date (RFC 9110 §5.6.7): parse exactly the three historical forms, format only IMF-fixdate.

Rules of this file: the grammar is applied literally (case-sensitive names, exact spaces, two-digit
fields, GMT only); anything else is not a date, and a caller decides what "not a date" means (for Expires:
already expired, RFC 9111 §5.3).
"""

from __future__ import annotations

import calendar
import re
from email.utils import formatdate

_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_DAY_L = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = r"(?P<month>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"(?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)"
_FORMS = (
    # IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    re.compile(rf"{_DAY}, (?P<day>\d\d) {_MONTH} (?P<year>\d{{4}}) {_TIME} GMT", re.ASCII),
    # obsolete RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
    re.compile(rf"{_DAY_L}, (?P<day>\d\d)-{_MONTH}-(?P<year>\d\d) {_TIME} GMT", re.ASCII),
    # obsolete asctime: Sun Nov  6 08:49:37 1994
    re.compile(rf"{_DAY} {_MONTH} (?P<day>\d\d| \d) {_TIME} (?P<year>\d{{4}})", re.ASCII),
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# RFC 850 two-digit years: 70-99 are 19xx, 00-69 20xx (a date read as further in the past, never later).
_PIVOT = 70


def parse_http_date(value: str | None) -> float | None:
    """Seconds since the epoch, or None when the value is not an HTTP-date (RFC 9110 §5.6.7)."""
    if not value:
        return None
    text = value.strip(" \t")
    for form in _FORMS:
        m = form.fullmatch(text)
        if m is not None:
            return _timestamp(m)
    return None


def _timestamp(m: re.Match[str]) -> float | None:
    year = int(m["year"])
    if len(m["year"]) == 2:
        year += 1900 if year >= _PIVOT else 2000
    month = _MONTHS.index(m["month"]) + 1
    day, hour, minute, second = int(m["day"]), int(m["hour"]), int(m["minute"]), int(m["second"])
    if year < 1 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    if hour > 23 or minute > 59 or second > 60:  # second 60: a leap second (§5.6.7)
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second)))


def format_http_date(ts: float) -> str:
    """IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`."""
    return formatdate(ts, usegmt=True)
