"""Cache keys: the primary key of a request and the secondary (Vary) key of a variant (RFC 9111 §2, §4.1).

Rules of this file: the key is the request target only. The origin is never chosen from Host, and the Host
sent upstream is the origin's own, so the client's Host cannot change the response and is not keyed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

import xxhash


class HeaderView(Protocol):
    """What policy reads from request headers (a CIMultiDict satisfies it)."""

    def getall(self, key: str, default: list[str]) -> list[str]: ...


def primary_key(target: str) -> str:
    """The primary cache key: path and query exactly as requested."""
    return target


# Content codings the edge knows, in its order of preference (RFC 9110 §8.4.1); anything else is identity.
KNOWN_CODINGS = ("br", "zstd", "gzip")
_ALIASES = {"x-gzip": "gzip"}


def accept_encoding(values: Iterable[str]) -> str:
    """Accept-Encoding reduced to the one coding the edge prefers among those the client accepts.

    RFC 9110 §12.5.3: a coding with q=0 is refused, `*` stands for every coding not listed. The result is
    both what a fill sends upstream and what a `Vary: Accept-Encoding` variant is keyed by, so any client
    falls into one of `len(KNOWN_CODINGS) + 1` variants ("identity" when it accepts none of them).
    """
    weights: dict[str, bool] = {}
    star: bool | None = None
    for element in (p.strip() for v in values for p in v.split(",")):
        coding, _, params = element.partition(";")
        coding = _ALIASES.get(coding.strip().lower(), coding.strip().lower())
        accepted = not _zero_q(params)
        if coding == "*":
            star = accepted
        elif coding in KNOWN_CODINGS:
            weights[coding] = weights.get(coding, False) or accepted
    for coding in KNOWN_CODINGS:
        if weights.get(coding, bool(star)):
            return coding
    return "identity"


def _zero_q(params: str) -> bool:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip()) == 0.0
            except ValueError:
                return False
    return False


def accept_language(values: Iterable[str]) -> str:
    """Accept-Language in a canonical form, for keying a `Vary: Accept-Language` variant (RFC 9110 §12.5.4).

    Only rewrites that keep the meaning: case and whitespace folded, `q=1` dropped, q-values written
    without trailing zeros, a repeated range kept once, and ranges ordered by weight (a stable sort, so
    ranges of equal weight keep their order, which servers use as a tie-break). A list that does not
    parse is keyed as folded, unchanged.
    """
    ranges: dict[str, float] = {}
    for element in (p.strip() for v in values for p in v.split(",")):
        if not element:
            continue
        tag, _, params = (x.strip() for x in element.partition(";"))
        name, _, value = (x.strip() for x in params.partition("="))
        tag = tag.lower()
        if not _LANGUAGE_RANGE.fullmatch(tag) or (
            params and (name.lower() != "q" or not _QVALUE.fullmatch(value))
        ):
            return ",".join(p.strip() for v in values for p in v.split(",")).lower()
        ranges.setdefault(tag, float(value) if params else 1.0)
    ordered = sorted(ranges.items(), key=lambda item: -item[1])
    return ",".join(tag if q == 1.0 else f"{tag};q={q:g}" for tag, q in ordered)


_LANGUAGE_RANGE = re.compile(r"\*|[a-z]{1,8}(-[a-z0-9]{1,8})*")  # RFC 4647 §2.1
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")  # RFC 9110 §12.4.2


def vary_values(names: Iterable[str], headers: HeaderView) -> tuple[str, ...]:
    """The normalized values of the Vary-nominated request fields (RFC 9111 §4.1)."""
    out = []
    for name in names:
        values = headers.getall(name, [])
        if name.lower() == "accept-encoding":
            out.append(accept_encoding(values))
            continue
        if name.lower() == "accept-language":
            out.append(accept_language(values))
            continue
        # Combine field lines and fold whitespace so trivially different requests share a variant.
        out.append(",".join(",".join(p.strip() for p in v.split(",")) for v in values).lower())
    return tuple(out)


def variant_key(primary: str, names: Iterable[str], headers: HeaderView) -> str:
    """The key of the variant selected by these request headers."""
    names = tuple(names)
    if not names:
        return primary
    packed = "\x1f".join(f"{n}={v}" for n, v in zip(names, vary_values(names, headers), strict=True))
    digest = xxhash.xxh3_64_hexdigest(packed.encode("utf-8", "surrogateescape"))
    return f"{primary}\x00{digest}"


def key_digest(key: str) -> str:
    """A fixed-size name for a key, for file names and logs (never the request path itself)."""
    return xxhash.xxh3_128_hexdigest(key.encode("utf-8", "surrogateescape"))
