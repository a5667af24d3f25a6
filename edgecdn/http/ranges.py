"""Range requests on a stored object (RFC 9110 §14), with RangeAmp protection.

Rules of this file: the answer is never larger than twice the object (CVE-class "RangeAmp" attacks);
overlapping or adjacent ranges are coalesced, and a request with too many ranges gets the full 200.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_RANGES = 16  # more ranges than this → answer 200 with the whole object
PART_OVERHEAD = 160  # upper bound of a multipart part's delimiter and headers, in bytes
_RANGES = re.compile(r"(?P<unit>[!#$%&'*+\-.^_`|~0-9A-Za-z]+)=(?P<set>.*)", re.ASCII | re.DOTALL)
_SPEC = re.compile(r"(?P<first>[0-9]*)-(?P<last>[0-9]*)", re.ASCII)


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


@dataclass(frozen=True, slots=True)
class FullBody:
    """Ignore Range: absent, malformed, not bytes, too many parts, or not worth it."""


@dataclass(frozen=True, slots=True)
class Partial:
    ranges: tuple[ByteRange, ...]  # sorted, disjoint, non-adjacent


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    """416, with `Content-Range: bytes */size`."""


RangeAnswer = FullBody | Partial | Unsatisfiable


def plan_ranges(header: str | None, size: int) -> RangeAnswer:
    """What to send for a `Range` header against an object of `size` bytes (RFC 9110 §14.2)."""
    specs = _range_specs(header)
    if specs is None or len(specs) > MAX_RANGES:
        return FullBody()
    ranges: list[ByteRange] = []
    for first, last in specs:
        if first is None:  # suffix range: the last N bytes
            if last == 0:
                continue
            ranges.append(ByteRange(max(0, size - (last or 0)), size - 1))
        elif first < size:
            end = size - 1 if last is None else min(last, size - 1)
            ranges.append(ByteRange(first, end))
    if not ranges or size == 0:
        return Unsatisfiable()
    merged = _coalesce(ranges)
    overhead = PART_OVERHEAD * len(merged) if len(merged) > 1 else 0
    if sum(r.length for r in merged) + overhead > 2 * size:
        return FullBody()
    return Partial(tuple(merged))


def _range_specs(header: str | None) -> list[tuple[int | None, int | None]] | None:
    """`bytes=` and its range-set (RFC 9110 §14.1.1), exactly; None when the field is to be ignored.

    No whitespace around `=` or inside a range-spec; OWS only around the commas of the list, whose empty
    elements a recipient accepts (§5.6.1.2).
    """
    if header is None:
        return None
    m = _RANGES.fullmatch(header.strip(" \t"))
    if m is None or m["unit"].lower() != "bytes" or m["set"][:1] in (" ", "\t"):
        return None
    specs = []
    for element in m["set"].split(","):
        element = element.strip(" \t")
        if element:
            spec = _parse_spec(element)
            if spec is None:
                return None  # a syntactically invalid Range is ignored
            specs.append(spec)
    return specs or None


def _parse_spec(part: str) -> tuple[int | None, int | None] | None:
    m = _SPEC.fullmatch(part)
    if m is None or not (m["first"] or m["last"]):
        return None
    if not m["first"]:
        return None, _position(m["last"])
    a, b = _position(m["first"]), (_position(m["last"]) if m["last"] else None)
    if b is not None and b < a:
        return None
    return a, b


def _position(digits: str) -> int:
    """An ASCII decimal position; one beyond any object's size is clamped (int() refuses > 4300 digits)."""
    return int(digits) if len(digits) <= 18 else 10**18


def _coalesce(ranges: list[ByteRange]) -> list[ByteRange]:
    out: list[ByteRange] = []
    for r in sorted(ranges, key=lambda r: r.start):
        if out and r.start <= out[-1].end + 1:
            out[-1] = ByteRange(out[-1].start, max(out[-1].end, r.end))
        else:
            out.append(r)
    return out


def multipart_head(boundary: str, content_type: str | None, r: ByteRange, size: int) -> bytes:
    """The delimiter and part headers before one part of a multipart/byteranges body."""
    lines = [f"\r\n--{boundary}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Range: {r.content_range(size)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def multipart_tail(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("latin-1")


def multipart_length(boundary: str, content_type: str | None, part: Partial, size: int) -> int:
    """Content-Length of the whole multipart/byteranges body, known before sending."""
    heads = sum(len(multipart_head(boundary, content_type, r, size)) + r.length for r in part.ranges)
    return heads + len(multipart_tail(boundary))
