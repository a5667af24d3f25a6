"""Slicing policy (RFC 9110 §14, RFC 9111 §3.3-3.4): which slices a range needs, and which origin answers
are slices of the stored representation (strong ETag and complete length), table-driven."""

import re
from pathlib import Path

import pytest

from edgecdn.config import CacheConfig, TtlRule, load_config
from edgecdn.errors import ConfigError
from edgecdn.http.ranges import ByteRange, FullBody, Unsatisfiable
from edgecdn.policy.admit import Exchange, NotStorable, admit
from edgecdn.policy.slice import (
    Part,
    Refused,
    Representation,
    SliceAsk,
    check_part,
    content_range,
    first_slice,
    plan_span,
    slices_for,
    slicing_applies,
    within,
)

MIB = 2**20
ETAG = '"v1"'
REP = Representation(ETAG, 10 * MIB + 5, MIB)


@pytest.mark.parametrize(
    ("span", "indexes"),
    [
        pytest.param(ByteRange(0, 0), [0], id="first-byte-one-slice"),
        pytest.param(ByteRange(MIB - 1, MIB), [0, 1], id="straddles-a-boundary"),
        pytest.param(ByteRange(MIB, 2 * MIB - 1), [1], id="exactly-one-aligned-slice"),
        pytest.param(ByteRange(5 * MIB + 7, 5 * MIB + 9), [5], id="middle-segment-one-slice"),
        pytest.param(ByteRange(0, 10 * MIB + 4), list(range(11)), id="whole-object-every-slice"),
    ],
)
def test_slices_for_a_span_are_only_those_holding_its_bytes(span: ByteRange, indexes: list[int]) -> None:
    assert list(slices_for(span, MIB)) == indexes


@pytest.mark.parametrize(
    ("index", "span", "want"),
    [
        pytest.param(0, ByteRange(10, 20), (10, 11), id="inside-one-slice"),
        pytest.param(0, ByteRange(MIB - 2, MIB + 2), (MIB - 2, 2), id="tail-of-the-first"),
        pytest.param(1, ByteRange(MIB - 2, MIB + 2), (0, 3), id="head-of-the-next"),
        pytest.param(3, ByteRange(0, 10 * MIB), (0, MIB), id="a-whole-slice"),
    ],
)
def test_within_cuts_the_span_to_one_slice(index: int, span: ByteRange, want: tuple[int, int]) -> None:
    assert within(index, span, MIB) == want


@pytest.mark.parametrize(
    ("field", "first"),
    [
        pytest.param(None, 0, id="no-range-starts-at-0"),
        pytest.param("bytes=0-0", 0, id="rfc9110-14.1.2-first-byte"),
        pytest.param("bytes=5242880-", 5, id="rfc9110-14.1.2-open-range"),
        pytest.param("bytes=3145729-3145730,0-1", 0, id="rfc9110-14.1.2-lowest-of-several"),
        pytest.param("bytes=-100", 0, id="rfc9110-14.1.2-suffix-needs-the-length-first"),
        pytest.param("bytes =0-9", 0, id="rfc9110-14.1.1-whitespace-is-no-range"),
        pytest.param("items=5-9", 0, id="rfc9110-14.1-unknown-unit-ignored"),
    ],
)
def test_first_slice_before_the_length_is_known(field: str | None, first: int) -> None:
    assert first_slice(field, MIB) == first


@pytest.mark.parametrize(
    ("field", "want"),
    [
        pytest.param(None, FullBody(), id="rfc9110-14.2-no-range-whole"),
        pytest.param("bytes=0-0", ByteRange(0, 0), id="rfc9110-14.1.2-single"),
        pytest.param("bytes=900-10001", ByteRange(900, 999), id="rfc9110-14.1.2-last-clipped"),
        pytest.param("bytes=0-0,500-509", ByteRange(0, 509), id="rfc9110-14.2-several-become-one-span"),
        pytest.param("bytes=1000-", Unsatisfiable(), id="rfc9110-15.5.17-beyond-the-end"),
    ],
)
def test_plan_span_is_one_range_never_more_than_the_object(
    field: str | None, want: ByteRange | FullBody | Unsatisfiable
) -> None:
    assert plan_span(field, 1000) == want


@pytest.mark.parametrize(
    ("value", "want"),
    [
        pytest.param("bytes 0-99/1000", (0, 99, 1000), id="rfc9110-14.4-complete"),
        pytest.param("bytes 0-99/*", None, id="rfc9110-14.4-unknown-length-unusable"),
        pytest.param("bytes 99-0/1000", None, id="rfc9110-14.4-last-before-first"),
        pytest.param("bytes 0-1000/1000", None, id="rfc9110-14.4-last-past-the-length"),
        pytest.param("bytes */1000", None, id="rfc9110-14.4-unsatisfied-form"),
        pytest.param("bytes 0-99/1000, bytes 0-9/10", None, id="several-values"),
        pytest.param("items 0-99/1000", None, id="other-unit"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_content_range_is_parsed_exactly(value: str | None, want: tuple[int, int, int] | None) -> None:
    assert content_range(value) == want


def answer(status: int, crange: str | None = None, etag: str | None = ETAG) -> tuple[tuple[str, str], ...]:
    fields = [("Content-Range", crange)] if crange else []
    return (*fields, *([("ETag", etag)] if etag else []))


@pytest.mark.parametrize(
    ("asked", "status", "fields", "want"),
    [
        pytest.param(
            SliceAsk(0, MIB),
            206,
            answer(206, f"bytes 0-{MIB - 1}/{REP.length}"),
            Part(0, REP),
            id="first-slice",
        ),
        pytest.param(
            SliceAsk(10, MIB, REP),
            206,
            answer(206, f"bytes {10 * MIB}-{REP.length - 1}/{REP.length}"),
            Part(10, REP),
            id="last-slice-is-short",
        ),
        pytest.param(
            SliceAsk(0, MIB), 200, answer(200), Refused.NOT_PARTIAL, id="rfc9110-14.2-origin-ignores-range"
        ),
        pytest.param(
            SliceAsk(0, MIB), 416, answer(416, "bytes */0"), Refused.NOT_PARTIAL, id="rfc9110-15.5.17-empty"
        ),
        pytest.param(
            SliceAsk(0, MIB),
            206,
            answer(206, "bytes 0-9/10", etag='W/"v1"'),
            Refused.NO_STRONG_ETAG,
            id="rfc9110-8.8.3-weak-etag-cannot-join-ranges",
        ),
        pytest.param(
            SliceAsk(0, MIB),
            206,
            answer(206, "bytes 0-9/10", etag=None),
            Refused.NO_STRONG_ETAG,
            id="no-etag",
        ),
        pytest.param(
            SliceAsk(1, MIB), 206, answer(206, "bytes 0-9/10"), Refused.BAD_CONTENT_RANGE, id="another-range"
        ),
        pytest.param(
            SliceAsk(0, MIB), 206, answer(206, "bytes 0-9/*"), Refused.BAD_CONTENT_RANGE, id="length-unknown"
        ),
        pytest.param(
            SliceAsk(0, MIB),
            206,
            answer(206, "bytes 0-9/100"),
            Refused.BAD_CONTENT_RANGE,
            id="short-of-the-slice-before-the-end",
        ),
        pytest.param(
            SliceAsk(1, MIB, REP),
            206,
            answer(206, f"bytes {MIB}-{2 * MIB - 1}/{REP.length}", etag='"v2"'),
            Refused.CHANGED,
            id="rfc9111-3.4-other-etag-drops-all",
        ),
        pytest.param(
            SliceAsk(1, MIB, REP),
            206,
            answer(206, f"bytes {MIB}-{2 * MIB - 1}/{REP.length + 1}"),
            Refused.CHANGED,
            id="rfc9111-3.4-other-length-drops-all",
        ),
        pytest.param(
            SliceAsk(1, MIB, REP),
            200,
            answer(200, etag='"v2"'),
            Refused.CHANGED,
            id="rfc9110-13.1.5-if-range-failed-is-a-200",
        ),
        pytest.param(
            SliceAsk(1, MIB, REP),
            404,
            (("Content-Type", "text/plain"),),
            Refused.NOT_PARTIAL,
            id="rfc9110-15-an-error-says-nothing-of-the-representation",
        ),
    ],
)
def test_check_part(asked: SliceAsk, status: int, fields: tuple[tuple[str, str], ...], want: object) -> None:
    assert check_part(asked, status, fields) == want


def test_slice_ask_fields() -> None:
    ask = SliceAsk(3, MIB, REP)
    assert (ask.start, ask.end, ask.range_field) == (3 * MIB, 4 * MIB - 1, f"bytes={3 * MIB}-{4 * MIB - 1}")


@pytest.mark.parametrize(
    ("rules", "path", "sliced"),
    [
        pytest.param((), "/v/a.mp4", False, id="no-rule-not-sliced"),
        pytest.param((TtlRule(prefix="/v/", slice=True),), "/v/a.mp4", True, id="rule-slice-true"),
        pytest.param((TtlRule(prefix="/v/", slice=True),), "/w/a.mp4", False, id="rule-other-path"),
        pytest.param(
            (TtlRule(prefix="/v/", ttl=60), TtlRule(prefix="/v/", slice=True)),
            "/v/a.mp4",
            False,
            id="first-matching-rule-decides",
        ),
        pytest.param((TtlRule(regex=r"\.mp4$", slice=True),), "/x/a.mp4", True, id="regex-rule"),
    ],
)
def test_slicing_applies_on_rules(rules: tuple[TtlRule, ...], path: str, sliced: bool) -> None:
    assert slicing_applies(path, CacheConfig(rules=rules)) is sliced


@pytest.mark.parametrize(
    ("is_slice", "want_stored"),
    [
        pytest.param(False, False, id="rfc9111-3.3-206-not-stored-as-an-object"),
        pytest.param(True, True, id="rfc9111-3.3-206-stored-as-a-slice"),
    ],
)
def test_admit_206_only_for_slice_fills(is_slice: bool, want_stored: bool) -> None:
    fields = (("Cache-Control", "max-age=60"), ("ETag", ETAG), ("Content-Range", "bytes 0-9/100"))
    verdict = admit(Exchange("/v", 206, fields, 0.0, 0.0, slice=is_slice), cfg=CacheConfig())
    assert (not isinstance(verdict, NotStorable)) is want_stored


@pytest.mark.parametrize(
    ("text", "want"),
    [
        pytest.param("", (2**20, ()), id="default-1mib-no-rule"),
        pytest.param(
            '[cache]\nslice_size = "4MiB"\n[[cache.rules]]\nprefix = "/v/"\nslice = true\n',
            (4 * 2**20, (True,)),
            id="size-and-rule",
        ),
    ],
)
def test_slice_config(tmp_path: Path, text: str, want: tuple[int, tuple[bool, ...]]) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    cfg = load_config(path).cache
    assert (cfg.slice_size, tuple(r.slice for r in cfg.rules)) == want


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param('slice_size = "1KiB"', "cache.slice_size", id="slice-size-below-4kib"),
        pytest.param('slice_size = "2GiB"', "cache.slice_size", id="slice-size-above-1gib"),
        pytest.param(
            '[[cache.rules]]\nprefix = "/"\nslice = "yes"', "cache.rules[0].slice", id="slice-not-bool"
        ),
    ],
)
def test_slice_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text("[cache]\n" + text + "\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)
