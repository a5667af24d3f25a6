"""Structured Field Dictionaries (RFC 8941 §3.2, parsed as §4.2 says), for CDN-Cache-Control (RFC 9213).

Rules of this file: parsing never raises and is all-or-nothing: any deviation from the grammar makes the
whole field None (§4.2: "fail parsing"), never a partial dictionary.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

_INT_DIGITS = 15  # RFC 8941 §3.3.1: at most 15 digits
_KEY_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz*")
_KEY_REST = _KEY_FIRST | frozenset("0123456789_-.")
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ*")
_TOKEN_REST = _TCHAR | frozenset(":/")
_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


@dataclass(frozen=True, slots=True)
class Token:
    """An sf-token (RFC 8941 §3.3.4), distinct from a String."""

    value: str


BareItem = int | Decimal | str | Token | bytes | bool
Params = tuple[tuple[str, BareItem], ...]


@dataclass(frozen=True, slots=True)
class Item:
    value: BareItem
    params: Params = ()


@dataclass(frozen=True, slots=True)
class InnerList:
    items: tuple[Item, ...]
    params: Params = ()


Dictionary = dict[str, Item | InnerList]


class _Fail(Exception):
    """Internal: the input does not follow the grammar."""


def parse_dictionary(lines: Iterable[str]) -> Dictionary | None:
    """Every field line of a Dictionary field, combined (§4.2); None when it fails to parse."""
    text = ",".join(lines)
    try:
        text.encode("ascii")
        return _Parser(text).dictionary()
    except (_Fail, UnicodeEncodeError):
        return None


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text.lstrip(" ")  # §4.2 step 2: discard leading SP
        self.i = 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def take(self) -> str:
        ch = self.peek()
        if not ch:
            raise _Fail
        self.i += 1
        return ch

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.i += 1

    def dictionary(self) -> Dictionary:
        """§4.2.2; the caller's trailing-SP and end-of-input checks are folded in."""
        self.s = self.s.rstrip(" ")
        out: Dictionary = {}
        while self.peek():
            key = self.key()
            if self.peek() == "=":
                self.i += 1
                out[key] = self.item_or_inner_list()
            else:
                out[key] = Item(True, self.params())  # §4.2.2: a later duplicate overwrites
            self.skip(" \t")
            if not self.peek():
                return out
            if self.take() != ",":
                raise _Fail
            self.skip(" \t")
            if not self.peek():
                raise _Fail  # trailing comma
        return out

    def item_or_inner_list(self) -> Item | InnerList:
        if self.peek() == "(":
            return self.inner_list()
        return Item(self.bare_item(), self.params())

    def inner_list(self) -> InnerList:
        self.take()
        items: list[Item] = []
        while True:
            self.skip(" ")
            if self.peek() == ")":
                self.i += 1
                return InnerList(tuple(items), self.params())
            items.append(Item(self.bare_item(), self.params()))
            if self.peek() not in (" ", ")"):
                raise _Fail

    def params(self) -> Params:
        out: dict[str, BareItem] = {}
        while self.peek() == ";":
            self.i += 1
            self.skip(" ")
            key = self.key()
            value: BareItem = True
            if self.peek() == "=":
                self.i += 1
                value = self.bare_item()
            out.pop(key, None)
            out[key] = value
        return tuple(out.items())

    def key(self) -> str:
        if self.peek() not in _KEY_FIRST:
            raise _Fail
        start = self.i
        while self.peek() and self.peek() in _KEY_REST:
            self.i += 1
        return self.s[start : self.i]

    def bare_item(self) -> BareItem:
        ch = self.peek()
        if ch == "-" or ch.isdigit():
            return self.number()
        if ch == '"':
            return self.string()
        if ch == ":":
            return self.byte_seq()
        if ch == "?":
            return self.boolean()
        if ch and ch in _TOKEN_FIRST:
            return self.token()
        raise _Fail

    def number(self) -> int | Decimal:
        """§4.2.4; a number longer than any valid one fails at once (never a quadratic or huge parse)."""
        start = self.i
        if self.peek() == "-":
            self.i += 1
        if not self.peek().isdigit():
            raise _Fail
        dot = False
        while self.peek().isdigit() or (self.peek() == "." and not dot):
            dot = dot or self.peek() == "."
            self.i += 1
            if self.i - start > 17:  # "-" + 12 digits + "." + 3 digits, or "-" + 15 digits
                raise _Fail
        text = self.s[start : self.i]
        digits = text.lstrip("-")
        if "." not in digits:
            if len(digits) > _INT_DIGITS:
                raise _Fail
            return int(text)
        whole, _, frac = digits.partition(".")
        if len(whole) > 12 or not 1 <= len(frac) <= 3:
            raise _Fail
        return Decimal(text)

    def string(self) -> str:
        self.take()
        chars: list[str] = []
        while True:
            ch = self.take()
            if ch == "\\":
                nxt = self.take()
                if nxt not in '"\\':
                    raise _Fail
                chars.append(nxt)
            elif ch == '"':
                return "".join(chars)
            elif not " " <= ch <= "~":
                raise _Fail
            else:
                chars.append(ch)

    def token(self) -> Token:
        start = self.i
        self.i += 1
        while self.peek() and self.peek() in _TOKEN_REST:
            self.i += 1
        return Token(self.s[start : self.i])

    def byte_seq(self) -> bytes:
        self.take()
        start = self.i
        while self.peek() != ":":
            if self.take() not in _BASE64:
                raise _Fail
        self.i += 1
        text = self.s[start : self.i - 1]
        try:  # §4.2.7: missing "=" padding is tolerated
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except binascii.Error:
            raise _Fail from None

    def boolean(self) -> bool:
        self.take()
        ch = self.take()
        if ch not in "01":
            raise _Fail
        return ch == "1"
