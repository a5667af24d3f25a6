"""TTL jitter: a rule's `ttl_jitter` spreads stored lifetimes, so objects warmed together expire apart.

Rules of this file: pure; the factor is a hash of the path, so every fill and revalidation of one object
gets the same lifetime, and the Age clients see is never touched (only the stored lifetime moves).
"""

from __future__ import annotations

import xxhash

from edgecdn.config import TtlRule


def spread_lifetime(lifetime: float, rule: TtlRule | None, path: str) -> float:
    """`lifetime` scaled by a factor in [1 - j, 1 + j), fixed per path; j is the rule's ttl_jitter."""
    if rule is None or rule.ttl_jitter <= 0 or lifetime <= 0:
        return lifetime
    u = xxhash.xxh3_64_intdigest(path.encode("utf-8", "surrogateescape")) / 2**64
    return lifetime * (1.0 + rule.ttl_jitter * (2.0 * u - 1.0))
