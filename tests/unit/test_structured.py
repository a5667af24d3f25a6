"""Structured Field Dictionaries (RFC 8941 §3.2, §4.2): the RFC's examples parse, its failures fail whole."""

from decimal import Decimal

import pytest

from edgecdn.http.structured import InnerList, Item, Token, parse_dictionary

VALID = [
    (
        "rfc8941-3.2-example",
        ['en="Applepie", da=:w4ZibGV0w6ZydGUK:'],
        {"en": Item("Applepie"), "da": Item("Æbletærte\n".encode())},
    ),
    (
        "rfc8941-3.2-true-and-params",
        ["a=?0, b, c; foo=bar"],
        {"a": Item(False), "b": Item(True), "c": Item(True, (("foo", Token("bar")),))},
    ),
    (
        "rfc8941-3.2-inner-list",
        ["rating=1.5, feelings=(joy sadness)"],
        {"rating": Item(Decimal("1.5")), "feelings": InnerList((Item(Token("joy")), Item(Token("sadness"))))},
    ),
    (
        "rfc8941-3.2-mixed",
        ["a=(1 2), b=3, c=4;aa=bb, d=(5 6);valid"],
        {
            "a": InnerList((Item(1), Item(2))),
            "b": Item(3),
            "c": Item(4, (("aa", Token("bb")),)),
            "d": InnerList((Item(5), Item(6)), (("valid", True),)),
        },
    ),
    ("rfc8941-4.2-lines-combine", ["a=1", "b=2"], {"a": Item(1), "b": Item(2)}),
    ("rfc8941-4.2.2-duplicate-last-wins", ["a=1, a=2"], {"a": Item(2)}),
    ("rfc8941-4.2-leading-trailing-sp", ["  a=1  "], {"a": Item(1)}),
    ("rfc8941-4.2.2-ows-around-comma", ["a=1 ,\tb=2"], {"a": Item(1), "b": Item(2)}),
    ("rfc8941-3.1.2-empty-inner-list", ["a=()"], {"a": InnerList(())}),
    ("rfc8941-3.3.1-negative-integer", ["a=-42"], {"a": Item(-42)}),
    ("rfc8941-3.3.1-fifteen-digits", ["a=999999999999999"], {"a": Item(999999999999999)}),
    ("rfc8941-3.3.3-string-escapes", ['a="x\\"y\\\\z"'], {"a": Item('x"y\\z')}),
    ("rfc8941-3.3.4-token-with-colon-slash", ["a=foo:bar/baz"], {"a": Item(Token("foo:bar/baz"))}),
    ("rfc8941-3.3.4-star-token", ["a=*x"], {"a": Item(Token("*x"))}),
    ("rfc8941-3.1.2-key-star-and-digits", ["*a-1.b_2=1"], {"*a-1.b_2": Item(1)}),
    ("rfc8941-4.2-empty-is-empty", [""], {}),
    ("rfc8941-4.2.7-unpadded-base64", ["a=:YWI:"], {"a": Item(b"ab")}),
]


@pytest.mark.parametrize(("lines", "expected"), [v[1:] for v in VALID], ids=[v[0] for v in VALID])
def test_parse_dictionary(lines: list[str], expected: dict[str, object]) -> None:
    assert parse_dictionary(lines) == expected


INVALID = [
    ("trailing-comma", "a=1,"),
    ("leading-comma", ",a=1"),
    ("empty-member", "a=1,,b=2"),
    ("upper-case-key", "A=1"),
    ("key-starts-with-digit", "1a=1"),
    ("space-before-equals", "a =1"),
    ("space-after-equals", "a= 1"),
    ("tab-leading", "\ta=1"),
    ("integer-16-digits", "a=1234567890123456"),
    ("decimal-four-fraction-digits", "a=1.2345"),
    ("decimal-13-integer-digits", "a=1234567890123.5"),
    ("decimal-trailing-dot", "a=1."),
    ("two-dots", "a=1.2.3"),
    ("lone-minus", "a=-"),
    ("unterminated-string", 'a="abc'),
    ("bad-escape", 'a="\\n"'),
    ("non-ascii", "a=\u00e9"),
    ("control-char-in-string", 'a="\x01"'),
    ("bad-boolean", "a=?2"),
    ("unterminated-byte-seq", "a=:abc"),
    ("bad-byte-seq-char", "a=:ab!c:"),
    ("bad-byte-seq-padding", "a=:a=bc:"),
    ("unterminated-inner-list", "a=(1 2"),
    ("inner-list-no-space", "a=(1,2)"),
    ("garbage-after-item", "a=1 b=2"),
    ("semicolon-without-key", "a=1;"),
]


@pytest.mark.parametrize("value", [v[1] for v in INVALID], ids=[f"rfc8941-4.2-fail-{v[0]}" for v in INVALID])
def test_parse_dictionary_fails_whole(value: str) -> None:
    assert parse_dictionary([value]) is None


def test_hostile_sizes_fail_fast() -> None:
    """A header of 1 MB of digits, or of nested-looking noise, is refused in linear time."""
    assert parse_dictionary(["a=" + "9" * 1_000_000]) is None
    assert parse_dictionary(["a=1." + "9" * 1_000_000]) is None
    assert parse_dictionary(["a=(" + "1 " * 200_000 + ")"]) is not None
    assert parse_dictionary(['a="' + "x" * 1_000_000]) is None
