"""HTTP-date (RFC 9110 §5.6.7): parse all three historical forms, format only IMF-fixdate."""

from __future__ import annotations

import calendar
from email.utils import formatdate, parsedate_tz

_ASCTIME_MONTHS = (
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
)


def parse_http_date(value: str | None) -> float | None:
    """Seconds since the epoch, or None when the value is not a date (RFC 9110 §5.6.7)."""
    if not value:
        return None
    parsed = parsedate_tz(value.strip())
    if parsed is None:
        return None
    # RFC 850 two-digit years: email.utils maps them to 19xx/20xx already.
    try:
        ts = calendar.timegm(parsed[:6]) - (parsed[9] or 0)
    except (OverflowError, ValueError):
        return None
    return float(ts)


def format_http_date(ts: float) -> str:
    """IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`."""
    return formatdate(ts, usegmt=True)
