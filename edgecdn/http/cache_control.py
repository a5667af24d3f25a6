"""Cache-Control and CDN-Cache-Control directives (RFC 9111 §5.2, RFC 9213).

Rules of this file: parsing never raises; a malformed directive is dropped, and a malformed delta-seconds
value counts as absent except where RFC 9111 §4.2.1 says to treat it as stale (max-age, s-maxage → 0).
A targeted field is a Structured Field Dictionary: it is used whole or, when it does not parse, not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from edgecdn.http.structured import BareItem, Item, Token, parse_dictionary

# RFC 9111 §1.2.2: delta-seconds larger than this are treated as this.
MAX_DELTA = 2**31


@dataclass(frozen=True, slots=True)
class CacheControl:
    """Parsed directives: lower-case name → argument (None when the directive has none)."""

    directives: dict[str, str | None] = field(default_factory=dict)
    targeted: bool = False  # from a targeted field (CDN-Cache-Control, RFC 9213), not Cache-Control

    def __contains__(self, name: str) -> bool:
        return name in self.directives

    def seconds(self, name: str) -> int | None:
        """The directive's delta-seconds, or None when absent; a bad number reads as 0 (stale)."""
        if name not in self.directives:
            return None
        return parse_delta(self.directives[name])

    def field_names(self, name: str) -> frozenset[str]:
        """The field names of a qualified directive such as `private="Set-Cookie"` (lower-cased)."""
        arg = self.directives.get(name)
        if not arg:
            return frozenset()
        return frozenset(p.strip().lower() for p in arg.split(",") if p.strip())

    def __bool__(self) -> bool:
        return bool(self.directives)


def parse_delta(value: str | None) -> int:
    """delta-seconds (RFC 9111 §1.2.2); anything unparseable is 0, which makes a response stale."""
    # isdigit() alone admits "²" and other digits int() rejects; int() also rejects > 4300 digits.
    if value is None or not (value.isascii() and value.isdigit()):
        return 0
    return min(int(value), MAX_DELTA) if len(value) <= 10 else MAX_DELTA


def parse_age(values: Iterable[str]) -> int | None:
    """The Age field (RFC 9111 §5.1): the first list member, as delta-seconds; None when absent or invalid.

    A list-based value (one or more field lines) uses its first member and discards the rest; a member that
    is not a non-negative integer (a sign, a fraction, a prefix or suffix) makes the field invalid, and an
    invalid Age is ignored. Values beyond 2**31 saturate (§1.2.2), which makes any response stale.
    """
    members = [m.strip(" \t") for v in values for m in v.split(",") if m.strip(" \t")]
    if not members or not (members[0].isascii() and members[0].isdigit()):
        return None
    return parse_delta(members[0])


def parse_cache_control(values: Iterable[str]) -> CacheControl:
    """Parse every field line of Cache-Control (or CDN-Cache-Control) into one set of directives."""
    out: dict[str, str | None] = {}
    for value in values:
        for name, arg in _split_directives(value):
            # RFC 9111 §4.2.1: with duplicated directives, use the first.
            out.setdefault(name, arg)
    return CacheControl(out)


def _split_directives(value: str) -> Iterable[tuple[str, str | None]]:
    """Split `a, b=1, c="x, y"` on commas outside quoted strings."""
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t,":
            i += 1
        start = i
        while i < n and value[i] not in "=,":
            i += 1
        name = value[start:i].strip().lower()
        arg: str | None = None
        if i < n and value[i] == "=":
            i += 1
            if i < n and value[i] == '"':
                i += 1
                chars = []
                while i < n and value[i] != '"':
                    if value[i] == "\\" and i + 1 < n:
                        i += 1
                    chars.append(value[i])
                    i += 1
                i += 1
                arg = "".join(chars)
            else:
                start = i
                while i < n and value[i] != ",":
                    i += 1
                arg = value[start:i].strip()
        if name and all(c.isalnum() or c in "-_!#$%&'*+.^`|~" for c in name):
            yield name, arg


# RFC 9213 §2.1: directives whose Cache-Control argument is delta-seconds take an Integer here.
_TARGETED_DELTAS = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})


def parse_targeted(values: Iterable[str]) -> CacheControl | None:
    """A targeted field such as CDN-Cache-Control (RFC 9213 §2): an RFC 8941 Dictionary of directives.

    None means "ignore the field" (§2.1): absent, empty, not a Dictionary, or a delta-seconds directive
    whose value is not a non-negative Integer (a String, Token, Decimal or negative number). Parameters
    are ignored; a String argument (`private="x"`) keeps its text, like a quoted Cache-Control argument.
    """
    parsed = parse_dictionary(values)
    if not parsed:
        return None
    out: dict[str, str | None] = {}
    for name, member in parsed.items():
        value = member.value if isinstance(member, Item) else None
        if name in _TARGETED_DELTAS:
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                return None
            out[name] = str(min(value, MAX_DELTA))
        elif value is not False:  # `name=?0` sets nothing
            out[name] = _argument(value)
    return CacheControl(out, targeted=True)


def _argument(value: BareItem | None) -> str | None:
    """A targeted directive's argument in Cache-Control's terms (None: the directive has none)."""
    if isinstance(value, Token):
        return value.value
    if isinstance(value, str | int | Decimal) and not isinstance(value, bool):
        return str(value)
    return None
