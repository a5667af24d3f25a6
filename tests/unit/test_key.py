"""Cache keys (RFC 9111 §2, §4.1): the primary key is the target; a variant adds the Vary-nominated values."""

import pytest
from multidict import CIMultiDict

from edgecdn.policy.key import (
    accept_encoding,
    accept_language,
    key_digest,
    primary_key,
    variant_key,
    vary_values,
)


def hdrs(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


@pytest.mark.parametrize(
    "target",
    ["/", "/a/b.css", "/a?b=1&c=2", "/a?c=2&b=1", "/%7Euser", "/a?"],
    ids=[
        f"rfc9111-2-{n}"
        for n in ("root", "path", "query", "query-order-kept", "percent-encoding-kept", "empty-query")
    ],
)
def test_rfc9111_2_primary_key_is_the_target(target: str) -> None:
    assert primary_key(target) == target


def test_rfc9111_2_different_targets_different_keys() -> None:
    keys = {primary_key(t) for t in ["/a", "/a?", "/a?b=1", "/A", "/a/"]}
    assert len(keys) == 5


AE = ("accept-encoding",)

# Pairs of requests that must share a variant (RFC 9111 §4.1 lets a cache normalize whitespace and case).
SAME = [
    ("rfc9111-4.1-identical", AE, hdrs(("Accept-Encoding", "gzip")), hdrs(("Accept-Encoding", "gzip"))),
    (
        "rfc9111-4.1-whitespace-after-comma",
        AE,
        hdrs(("Accept-Encoding", "gzip, br")),
        hdrs(("Accept-Encoding", "gzip,br")),
    ),
    (
        "rfc9111-4.1-surrounding-whitespace",
        AE,
        hdrs(("Accept-Encoding", " gzip ")),
        hdrs(("Accept-Encoding", "gzip")),
    ),
    (
        "rfc9111-4.1-case-folded",
        AE,
        hdrs(("Accept-Encoding", "GZIP, Br")),
        hdrs(("Accept-Encoding", "gzip,br")),
    ),
    (
        "rfc9111-4.1-field-lines-combined",
        AE,
        hdrs(("Accept-Encoding", "gzip"), ("Accept-Encoding", "br")),
        hdrs(("Accept-Encoding", "gzip, br")),
    ),
    (
        "rfc9111-4.1-header-name-case",
        AE,
        hdrs(("accept-encoding", "gzip")),
        hdrs(("ACCEPT-ENCODING", "gzip")),
    ),
    (
        "rfc9111-4.1-unnominated-field-ignored",
        AE,
        hdrs(("Accept-Encoding", "gzip"), ("User-Agent", "a")),
        hdrs(("Accept-Encoding", "gzip"), ("User-Agent", "b")),
    ),
    (
        "rfc9111-4.1-no-vary-is-primary",
        (),
        hdrs(("Accept-Encoding", "gzip")),
        hdrs(("Accept-Encoding", "br")),
    ),
]


@pytest.mark.parametrize(("names", "a", "b"), [s[1:] for s in SAME], ids=[s[0] for s in SAME])
def test_same_variant(names: tuple[str, ...], a: CIMultiDict[str], b: CIMultiDict[str]) -> None:
    assert variant_key("/x", names, a) == variant_key("/x", names, b)


DIFFERENT = [
    ("rfc9111-4.1-different-value", AE, hdrs(("Accept-Encoding", "gzip")), hdrs(("Accept-Encoding", "br"))),
    (
        "rfc9111-4.1-different-order",
        ("accept-language",),
        hdrs(("Accept-Language", "en, fr")),
        hdrs(("Accept-Language", "fr, en")),
    ),
    ("rfc9111-4.1-absent-vs-present", AE, hdrs(), hdrs(("Accept-Encoding", "gzip"))),
    (
        "rfc9111-4.1-second-nominated-field",
        ("accept-encoding", "accept-language"),
        hdrs(("Accept-Encoding", "gzip"), ("Accept-Language", "en")),
        hdrs(("Accept-Encoding", "gzip"), ("Accept-Language", "fr")),
    ),
    (
        "rfc9111-4.1-values-do-not-shift-across-fields",
        ("x-a", "x-b"),
        hdrs(("X-A", "1,2"), ("X-B", "3")),
        hdrs(("X-A", "1"), ("X-B", "2,3")),
    ),
]


@pytest.mark.parametrize(("names", "a", "b"), [d[1:] for d in DIFFERENT], ids=[d[0] for d in DIFFERENT])
def test_different_variant(names: tuple[str, ...], a: CIMultiDict[str], b: CIMultiDict[str]) -> None:
    assert variant_key("/x", names, a) != variant_key("/x", names, b)


def test_rfc9111_4_1_different_vary_names_different_keys() -> None:
    request = hdrs(("Accept", "x"), ("Accept-Encoding", "x"))
    keys = {
        variant_key("/x", (), request),
        variant_key("/x", ("accept",), request),
        variant_key("/x", ("accept-encoding",), request),
        variant_key("/x", ("accept", "accept-encoding"), request),
    }
    assert len(keys) == 4


def test_variant_key_stays_under_its_primary() -> None:
    key = variant_key("/x?y=1", AE, hdrs(("Accept-Encoding", "gzip")))
    assert key.startswith("/x?y=1\x00")
    assert key != variant_key("/x?y=2", AE, hdrs(("Accept-Encoding", "gzip")))


def test_vary_values_are_normalized() -> None:
    request = hdrs(("Accept-Language", " EN ,  fr"), ("Accept-Language", "de"), ("Accept-Encoding", "GZIP"))
    assert vary_values(("accept-language", "accept", "accept-encoding"), request) == ("en,fr,de", "", "gzip")


@pytest.mark.parametrize(
    ("values", "want"),
    [
        pytest.param(["en-US, de;q=0.5"], "en-us,de;q=0.5", id="rfc9110-12.5.4-case-folded"),
        pytest.param(["de;q=0.50,EN-us"], "en-us,de;q=0.5", id="rfc9110-12.5.4-ordered-by-weight"),
        pytest.param(["en, fr"], "en,fr", id="rfc9110-12.5.4-equal-weights-keep-their-order"),
        pytest.param(["fr, en"], "fr,en", id="rfc9110-12.5.4-equal-weights-other-order-differs"),
        pytest.param(["en;q=1, fr;q=0"], "en,fr;q=0", id="rfc9110-12.4.2-q1-dropped-q0-kept"),
        pytest.param(["en, en;q=0.1"], "en", id="rfc9110-12.5.4-repeated-range-first-wins"),
        pytest.param([" EN ,  fr", "de"], "en,fr,de", id="rfc9110-5.3-field-lines-combined"),
        pytest.param(["*;q=0.1, da"], "da,*;q=0.1", id="rfc4647-2.1-wildcard"),
        pytest.param(["en;x=1"], "en;x=1", id="unknown-parameter-kept-as-folded"),
        pytest.param(["en;q=2"], "en;q=2", id="rfc9110-12.4.2-bad-qvalue-kept-as-folded"),
        pytest.param(["en_US"], "en_us", id="rfc4647-2.1-bad-range-kept-as-folded"),
    ],
)
def test_accept_language_canonical_form(values: list[str], want: str) -> None:
    assert accept_language(values) == want


@pytest.mark.parametrize(
    ("values", "want"),
    [
        ([], "identity"),
        (["gzip, deflate, br, zstd"], "br"),
        (["br;q=0, gzip"], "gzip"),
        (["BR;Q=0.0, zstd;q=0.1, gzip;q=1"], "zstd"),
        (["x-gzip"], "gzip"),
        (["deflate, compress"], "identity"),
        (["*"], "br"),
        (["*;q=0, gzip"], "gzip"),
        (["br;q=0", "*"], "zstd"),
        (["gzip;q=zz"], "gzip"),
        (["identity"], "identity"),
        (["gzip;q=0, gzip"], "gzip"),
    ],
    ids=[
        "absent-identity",
        "edge-preference-order",
        "rfc9110-12.5.3-q0-refused",
        "q-values-only-refuse",
        "alias",
        "unknown-codings-identity",
        "star-any",
        "star-refused-listed-kept",
        "star-except-refused",
        "bad-q-accepted",
        "identity-only",
        "any-accepting-element-wins",
    ],
)
def test_accept_encoding_is_one_known_coding(values: list[str], want: str) -> None:
    assert accept_encoding(values) == want


def test_fifty_accept_encodings_make_at_most_four_variants() -> None:
    codings = ["gzip", "br", "zstd", "deflate", "x-gzip", "identity", "*", "compress"]
    values = {f"{a};q=0.{i % 10}, {b}" for i, a in enumerate(codings) for b in codings}
    assert len(values) >= 50
    keys = {variant_key("/x", AE, hdrs(("Accept-Encoding", v))) for v in values}
    assert len(keys) <= 4


def test_key_digest_is_fixed_size_and_stable() -> None:
    digest = key_digest("/a")
    assert len(digest) == 32
    assert all(c in "0123456789abcdef" for c in digest)
    assert digest == key_digest("/a") != key_digest("/b")
    assert "/a" not in key_digest("/a" * 100)
