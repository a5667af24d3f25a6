"""Range requests on a stored object (RFC 9110 §14) and the RangeAmp bound: at most twice the object."""

import itertools
import random

import pytest

from edgecdn.http.ranges import (
    MAX_RANGES,
    ByteRange,
    FullBody,
    Partial,
    RangeAnswer,
    Unsatisfiable,
    multipart_head,
    multipart_length,
    multipart_tail,
    plan_ranges,
)

BOUNDARY = "0123456789abcdef0123456789abcdef"  # the shape serve/respond.py uses: secrets.token_hex(16)
CTYPE = "application/octet-stream"


def part(*spans: tuple[int, int]) -> Partial:
    return Partial(tuple(ByteRange(a, b) for a, b in spans))


def every_other(n: int, step: int = 2) -> str:
    return "bytes=" + ",".join(f"{i * step}-{i * step}" for i in range(n))


# (id, Range header, object size, answer)
PLAN = [
    ("rfc9110-14.2-absent", None, 1000, FullBody()),
    ("rfc9110-14.1.2-single", "bytes=0-99", 1000, part((0, 99))),
    ("rfc9110-14.1.2-single-middle", "bytes=100-199", 1000, part((100, 199))),
    ("rfc9110-14.1.2-single-byte", "bytes=5-5", 1000, part((5, 5))),
    ("rfc9110-14.1.2-suffix", "bytes=-100", 1000, part((900, 999))),
    ("rfc9110-14.1.2-suffix-longer-than-object-is-whole", "bytes=-5000", 1000, part((0, 999))),
    ("rfc9110-14.1.2-open-ended", "bytes=900-", 1000, part((900, 999))),
    ("rfc9110-14.1.2-last-pos-clamped", "bytes=900-5000", 1000, part((900, 999))),
    ("rfc9110-14.1.2-last-byte", "bytes=999-999", 1000, part((999, 999))),
    ("rfc9110-14.2-whole-object-is-206", "bytes=0-", 1000, part((0, 999))),
    ("rfc9110-14.1.2-last-pos-beyond-end-satisfiable", "bytes=0-10001", 1000, part((0, 999))),
    ("rfc9110-14.1-unit-case-insensitive", "Bytes=0-9", 1000, part((0, 9))),
    ("rfc9110-5.6.1-ows-around-commas", "bytes=0-9 ,\t20-29", 1000, part((0, 9), (20, 29))),
    ("rfc9110-5.6.1.2-empty-elements-accepted", "bytes=,0-9,,20-29,", 1000, part((0, 9), (20, 29))),
    ("rfc9110-5.5-field-ows-trimmed", " bytes=0-9 ", 1000, part((0, 9))),
    # Unsatisfiable: 416.
    ("rfc9110-14.1.2-first-pos-at-end", "bytes=1000-", 1000, Unsatisfiable()),
    ("rfc9110-14.1.2-first-pos-beyond-end", "bytes=5000-6000", 1000, Unsatisfiable()),
    ("rfc9110-14.1.2-zero-suffix", "bytes=-0", 1000, Unsatisfiable()),
    ("rfc9110-14.1.2-empty-representation", "bytes=0-", 0, Unsatisfiable()),
    ("rfc9110-14.1.2-all-parts-unsatisfiable", "bytes=1000-1001,2000-", 1000, Unsatisfiable()),
    ("rfc9110-14.1.2-one-satisfiable-part", "bytes=5000-6000,0-9", 1000, part((0, 9))),
    # Malformed or not bytes: ignore Range, send 200.
    ("rfc9110-14.2-malformed-text", "bytes=abc", 1000, FullBody()),
    ("rfc9110-14.1.1-last-before-first", "bytes=5-2", 1000, FullBody()),
    ("rfc9110-14.2-empty-set", "bytes=", 1000, FullBody()),
    ("rfc9110-14.2-no-dash", "bytes=5", 1000, FullBody()),
    ("rfc9110-14.2-two-dashes", "bytes=1-2-3", 1000, FullBody()),
    ("rfc9110-14.2-negative-suffix", "bytes=--5", 1000, FullBody()),
    ("rfc9110-14.2-hex-position", "bytes=0x10-20", 1000, FullBody()),
    ("rfc9110-14.2-non-ascii-digit", "bytes=0-\u00b2", 1000, FullBody()),
    ("rfc9110-14.2-one-bad-part-spoils-all", "bytes=0-9,x", 1000, FullBody()),
    ("rfc9110-14.1-other-unit", "items=0-9", 1000, FullBody()),
    ("rfc9110-14.1-no-equals", "bytes 0-9", 1000, FullBody()),
    ("rfc9110-14.1.1-space-before-equals", "bytes =0-9", 1000, FullBody()),
    ("rfc9110-14.1.1-space-after-equals", "bytes= 0-9", 1000, FullBody()),
    ("rfc9110-14.1.1-space-after-dash", "bytes=0- 9", 1000, FullBody()),
    ("rfc9110-14.1.1-space-before-dash", "bytes=0 -9", 1000, FullBody()),
    ("rfc9110-14.1.1-space-in-suffix", "bytes=- 9", 1000, FullBody()),
    ("rfc9110-14.1.1-only-commas", "bytes=,,", 1000, FullBody()),
    ("rfc9110-14.1.1-lone-dash", "bytes=-", 1000, FullBody()),
    # Positions beyond Python's int-conversion limit behave like any huge number.
    ("rfc9110-14.1.2-huge-last-pos-clamped", "bytes=10-" + "9" * 5000, 1000, part((10, 999))),
    ("rfc9110-14.1.2-huge-first-pos-unsatisfiable", "bytes=" + "9" * 5000 + "-", 1000, Unsatisfiable()),
    ("rfc9110-14.1.2-huge-suffix-whole", "bytes=-" + "9" * 5000, 1000, part((0, 999))),
    # Coalescing (RFC 9110 §14.2 lets a server coalesce; RangeAmp requires it).
    ("rfc9110-14.2-overlapping-coalesced", "bytes=0-99,50-149", 1000, part((0, 149))),
    ("rfc9110-14.2-adjacent-coalesced", "bytes=0-99,100-199", 1000, part((0, 199))),
    ("rfc9110-14.2-contained-coalesced", "bytes=0-499,10-20", 1000, part((0, 499))),
    ("rfc9110-14.2-sorted", "bytes=500-599,0-99", 1000, part((0, 99), (500, 599))),
    ("rfc9110-14.2-gap-of-one-kept-apart", "bytes=0-99,101-199", 1000, part((0, 99), (101, 199))),
    ("rfc9110-14.2-suffix-overlapping-open", "bytes=900-,-50", 1000, part((900, 999))),
    ("rfc9110-14.2-coalesced-to-whole-is-206", "bytes=0-499,500-", 1000, part((0, 999))),
    (
        "rangeamp-obr-repeated-range-coalesced",
        "bytes=" + ",".join(["0-499"] * MAX_RANGES),
        1000,
        part((0, 499)),
    ),
    # RangeAmp: many parts, or parts whose multipart overhead would exceed twice the object.
    (
        "rangeamp-max-ranges-allowed",
        every_other(MAX_RANGES, 1000),
        10**6,
        Partial(tuple(ByteRange(i * 1000, i * 1000) for i in range(MAX_RANGES))),
    ),
    ("rangeamp-more-than-max-ranges", every_other(MAX_RANGES + 1, 1000), 10**6, FullBody()),
    ("rangeamp-tiny-ranges-overhead-over-2x", every_other(MAX_RANGES), 1000, FullBody()),
    ("rangeamp-two-tiny-ranges-on-tiny-object", "bytes=0-0,2-2", 100, FullBody()),
]


@pytest.mark.parametrize(("header", "size", "expected"), [p[1:] for p in PLAN], ids=[p[0] for p in PLAN])
def test_plan_ranges(header: str | None, size: int, expected: RangeAnswer) -> None:
    assert plan_ranges(header, size) == expected


def response_bytes(plan: Partial, size: int) -> int:
    if len(plan.ranges) == 1:
        return plan.ranges[0].length
    return multipart_length(BOUNDARY, CTYPE, plan, size)


def random_spec(rng: random.Random, size: int) -> str:
    reach = size + size // 5 + 1
    match rng.randrange(4):
        case 0:
            return f"-{rng.randrange(reach)}"
        case 1:
            return f"{rng.randrange(reach)}-"
        case _:
            a = rng.randrange(reach)
            return f"{a}-{a + rng.randrange(max(1, size // rng.choice((1, 10, 100))))}"


def requested_bytes(header: str, size: int) -> set[int]:
    """The satisfiable bytes a header names, by brute force (RFC 9110 §14.1.2)."""
    out: set[int] = set()
    for spec in header.removeprefix("bytes=").split(","):
        first, _, last = spec.partition("-")
        if not first:
            out.update(range(max(0, size - int(last)), size))
        else:
            out.update(range(int(first), min(int(last) if last else size - 1, size - 1) + 1))
    return out


def test_random_partials_stay_within_twice_the_object_and_cover_exactly_what_was_asked() -> None:
    rng = random.Random(9110)
    partials = 0
    for _ in range(2000):
        size = rng.randrange(1, 4000)
        header = "bytes=" + ",".join(random_spec(rng, size) for _ in range(rng.randrange(1, MAX_RANGES + 1)))
        plan = plan_ranges(header, size)
        if not isinstance(plan, Partial):
            continue
        partials += 1
        assert response_bytes(plan, size) <= 2 * size, (header, size, plan)
        spans = plan.ranges
        assert all(0 <= r.start <= r.end < size for r in spans), (header, size, plan)
        assert all(a.end + 1 < b.start for a, b in itertools.pairwise(spans)), (header, plan)
        covered = {i for r in spans for i in range(r.start, r.end + 1)}
        assert covered == requested_bytes(header, size), (header, size, plan)
    assert partials > 500  # the loop really exercised Partial answers


@pytest.mark.parametrize(
    "ctype",
    [CTYPE, None, "text/html; charset=utf-8"],
    ids=[f"rfc9110-14.6-{n}" for n in ("content-type", "no-content-type", "params")],
)
def test_multipart_length_is_the_bytes_sent(ctype: str | None) -> None:
    size = 10_000
    body = bytes(i % 251 for i in range(size))
    plan = plan_ranges("bytes=0-9,100-199,-5", size)
    assert isinstance(plan, Partial)
    sent = b"".join(multipart_head(BOUNDARY, ctype, r, size) + body[r.start : r.end + 1] for r in plan.ranges)
    sent += multipart_tail(BOUNDARY)
    assert multipart_length(BOUNDARY, ctype, plan, size) == len(sent)
    assert sent.endswith(f"\r\n--{BOUNDARY}--\r\n".encode())
    assert b"Content-Range: bytes 9995-9999/10000\r\n\r\n" + body[-5:] in sent


def test_content_range() -> None:
    assert ByteRange(0, 99).content_range(1000) == "bytes 0-99/1000"
    assert ByteRange(5, 5).length == 1
