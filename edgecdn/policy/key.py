"""Cache keys: the primary key of a request and the secondary (Vary) key of a variant (RFC 9111 §2, §4.1).

Rules of this file: the key is the request target only. The origin is never chosen from Host, and the Host
sent upstream is the origin's own, so the client's Host cannot change the response and is not keyed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import xxhash


class HeaderView(Protocol):
    """What policy reads from request headers (a CIMultiDict satisfies it)."""

    def getall(self, key: str, default: list[str]) -> list[str]: ...


def primary_key(target: str) -> str:
    """The primary cache key: path and query exactly as requested."""
    return target


def vary_values(names: Iterable[str], headers: HeaderView) -> tuple[str, ...]:
    """The normalized values of the Vary-nominated request fields (RFC 9111 §4.1)."""
    out = []
    for name in names:
        values = headers.getall(name, [])
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
