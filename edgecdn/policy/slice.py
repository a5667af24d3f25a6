"""Slicing a large object into fixed-size byte ranges (RFC 9110 §14, RFC 9111 §3.3-3.4).

Rules of this file: slice `i` is bytes [i*size, (i+1)*size) of one representation, named by its strong
ETag and complete length; a part that names another representation is never stitched to the stored ones
(they are dropped together). Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from edgecdn.config import CacheConfig
from edgecdn.http.fields import Headers, get_one
from edgecdn.http.ranges import ByteRange, FullBody, Partial, Unsatisfiable, plan_ranges
from edgecdn.policy.freshness import matching_rule

UNKNOWN_LENGTH = 2**62  # planning a Range before the first slice told the object's length
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18})", re.ASCII)


@dataclass(frozen=True, slots=True)
class Representation:
    """What every slice of one object must agree on (RFC 9110 §8.8.3, §14.4)."""

    etag: str  # strong
    length: int  # complete length, from Content-Range
    slice_size: int


@dataclass(frozen=True, slots=True)
class SliceAsk:
    """One slice to ask the origin for: `Range: bytes=start-end`, `If-Range` once the ETag is known."""

    index: int
    slice_size: int
    expect: Representation | None = None

    @property
    def start(self) -> int:
        return self.index * self.slice_size

    @property
    def end(self) -> int:
        """Inclusive; may lie past the end of the object (the origin clips it)."""
        return self.start + self.slice_size - 1

    @property
    def range_field(self) -> str:
        return f"bytes={self.start}-{self.end}"


@dataclass(frozen=True, slots=True)
class Part:
    """An origin 206 accepted as slice `index` of `representation`."""

    index: int
    representation: Representation


class Refused(enum.Enum):
    """Why an origin answer cannot be a slice; the value is the Cache-Status `detail`."""

    NOT_PARTIAL = "slice-not-partial"  # a 200, 416, ...: the origin does not slice this object
    NO_STRONG_ETAG = "slice-no-strong-etag"  # nothing to prove two slices are the same bytes
    BAD_CONTENT_RANGE = "slice-bad-content-range"
    CHANGED = "slice-changed"  # another ETag or length than the stored slices: drop them all
    VARY = "slice-vary"  # slices are not kept per variant


def slicing_applies(path: str, cfg: CacheConfig) -> bool:
    """Slices are kept for paths whose first matching `cache.rules` entry says `slice = true`."""
    rule = matching_rule(path, cfg.rules)
    return rule is not None and rule.slice


def first_slice(range_field: str | None, slice_size: int) -> int:
    """The slice to fetch first, before the length is known: the one holding the first byte asked.

    A suffix range (`bytes=-N`) or no Range at all starts at slice 0, which also tells the length.
    """
    plan = plan_ranges(range_field, UNKNOWN_LENGTH)
    if not isinstance(plan, Partial) or plan.ranges[0].start >= UNKNOWN_LENGTH // 2:
        return 0
    return plan.ranges[0].start // slice_size


def plan_span(range_field: str | None, length: int) -> ByteRange | FullBody | Unsatisfiable:
    """The one span to send of a sliced object (RFC 9110 §14.2): several ranges become the one range
    from the first byte asked to the last (a server may send fewer parts), never more than the object."""
    plan = plan_ranges(range_field, length)
    if not isinstance(plan, Partial):
        return plan
    return ByteRange(plan.ranges[0].start, plan.ranges[-1].end)


def slices_for(span: ByteRange, slice_size: int) -> range:
    """The slice indexes that hold the bytes of `span` (aligned to `slice_size`)."""
    return range(span.start // slice_size, span.end // slice_size + 1)


def within(index: int, span: ByteRange, slice_size: int) -> tuple[int, int]:
    """The bytes of `span` inside slice `index`, as (offset in the slice, count)."""
    first = index * slice_size
    lo = max(span.start, first)
    hi = min(span.end, first + slice_size - 1)
    return lo - first, hi - lo + 1


def strong_etag(headers: Headers) -> str | None:
    """RFC 9110 §8.8.3: only a strong entity tag says two ranges are of the same bytes (§13.1.5)."""
    etag = (get_one(headers, "etag") or "").strip()
    if len(etag) < 2 or not etag.startswith('"') or not etag.endswith('"'):
        return None
    return etag


def content_range(value: str | None) -> tuple[int, int, int] | None:
    """`bytes first-last/complete` (RFC 9110 §14.4), exactly; None for `*` or anything malformed."""
    m = _CONTENT_RANGE.fullmatch((value or "").strip(" \t"))
    if m is None:
        return None
    first, last, length = int(m[1]), int(m[2]), int(m[3])
    if last < first or last >= length:
        return None
    return first, last, length


def check_part(asked: SliceAsk, status: int, headers: Headers) -> Part | Refused:
    """Is this origin answer slice `asked.index` of the representation the stored slices belong to?"""
    etag = strong_etag(headers)
    # Only a 200 or 206 speaks of the representation: a 200 is the answer to a failed If-Range (RFC 9110
    # §13.1.5), a 206 under another ETag is another representation; any other status is not an answer.
    if asked.expect is not None and status in (200, 206) and (etag != asked.expect.etag or status == 200):
        return Refused.CHANGED
    if status != 206:
        return Refused.NOT_PARTIAL
    if etag is None:
        return Refused.NO_STRONG_ETAG
    parsed = content_range(get_one(headers, "content-range"))
    if parsed is None:
        return Refused.BAD_CONTENT_RANGE
    first, last, length = parsed
    if first != asked.start or last != min(asked.end, length - 1):
        return Refused.BAD_CONTENT_RANGE
    rep = Representation(etag, length, asked.slice_size)
    if asked.expect is not None and rep != asked.expect:
        return Refused.CHANGED
    return Part(asked.index, rep)
