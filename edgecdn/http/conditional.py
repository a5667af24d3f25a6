"""Entity tags and conditional requests, as a cache answers them from a stored response (RFC 9110 §13).

Rules of this file: evaluation follows the precedence of RFC 9110 §13.2.2 exactly; a date condition is
ignored when an entity-tag condition of the same kind is present.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from edgecdn.http.dates import parse_http_date


@dataclass(frozen=True, slots=True)
class ETag:
    opaque: str  # including the quotes
    weak: bool

    def strong_eq(self, other: ETag) -> bool:
        """Strong comparison (RFC 9110 §8.8.3.2): both strong and identical."""
        return not self.weak and not other.weak and self.opaque == other.opaque

    def weak_eq(self, other: ETag) -> bool:
        """Weak comparison: the opaque tags match, weakness ignored."""
        return self.opaque == other.opaque


def parse_etag(value: str | None) -> ETag | None:
    """One entity-tag, or None when malformed."""
    if not value:
        return None
    value = value.strip()
    weak = value.startswith("W/")
    if weak:
        value = value[2:]
    if len(value) < 2 or value[0] != '"' or value[-1] != '"' or '"' in value[1:-1]:
        return None
    return ETag(value, weak)


def parse_etag_list(values: Iterable[str]) -> list[ETag] | None:
    """An If-Match / If-None-Match list; None means `*`. Malformed members are dropped."""
    tags: list[ETag] = []
    for value in values:
        if value.strip() == "*":
            return None
        for part in _split_tags(value):
            tag = parse_etag(part)
            if tag is not None:
                tags.append(tag)
    return tags


def _split_tags(value: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


class Precondition(enum.Enum):
    """What a conditional request asks of the stored representation."""

    PROCEED = "proceed"  # send the full (or range) response
    NOT_MODIFIED = "not-modified"  # 304
    FAILED = "failed"  # 412


@dataclass(frozen=True, slots=True)
class Conditions:
    """The precondition fields of one request."""

    if_match: tuple[str, ...] = ()
    if_none_match: tuple[str, ...] = ()
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None

    def __bool__(self) -> bool:
        return bool(self.if_match or self.if_none_match or self.if_modified_since or self.if_unmodified_since)


def evaluate(
    cond: Conditions,
    *,
    method: str,
    etag: str | None,
    last_modified: str | None,
    date: float | None = None,
) -> Precondition:
    """RFC 9110 §13.2.2: the order in which a server evaluates preconditions for GET/HEAD.

    `date`: a cache's stored response's Date (or receipt time), which If-Modified-Since is compared with
    when the response has no Last-Modified (RFC 9111 §4.3.2).
    """
    current = parse_etag(etag)
    lm = parse_http_date(last_modified)
    if cond.if_match:
        tags = parse_etag_list(cond.if_match)
        if tags is not None and not (current and any(t.strong_eq(current) for t in tags)):
            return Precondition.FAILED
        if tags is None and current is None and lm is None:
            return Precondition.FAILED
    elif cond.if_unmodified_since:
        since = parse_http_date(cond.if_unmodified_since)
        if since is not None and lm is not None and lm > since:
            return Precondition.FAILED
    if cond.if_none_match:
        tags = parse_etag_list(cond.if_none_match)
        matched = tags is None or bool(current and any(t.weak_eq(current) for t in tags))
        if matched:
            return Precondition.NOT_MODIFIED if method in ("GET", "HEAD") else Precondition.FAILED
    elif cond.if_modified_since and method in ("GET", "HEAD"):
        since = parse_http_date(cond.if_modified_since)
        modified = lm if lm is not None else date
        if since is not None and modified is not None and modified <= since:
            return Precondition.NOT_MODIFIED
    return Precondition.PROCEED


def if_range_matches(if_range: str | None, *, etag: str | None, last_modified: str | None) -> bool:
    """RFC 9110 §13.1.5: a Range applies only if If-Range still names this representation."""
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith('"') or if_range.startswith("W/"):
        want, have = parse_etag(if_range), parse_etag(etag)
        return bool(want and have and want.strong_eq(have))
    # A date validator only counts when it is the exact Last-Modified value (a strong validator).
    return last_modified is not None and if_range == last_modified.strip()
