"""Content-hash versioned objects: immutable once verified, whatever the origin said about caching.

Rules of this file: pure; the URL pattern lives in control/versioning.py (the handler applies it) and the
hash check in the fill, so this file only says how a verified object is stored and served.
"""

from __future__ import annotations

from dataclasses import replace

from edgecdn.http.fields import Headers
from edgecdn.policy.stored import StoredResponse

IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"
# Never stale in practice: cached until evicted (a versioned name's bytes cannot change).
IMMUTABLE_LIFETIME_S = 100 * 365 * 86400.0
_REPLACED = frozenset({"cache-control", "expires", "pragma", "surrogate-control"})


def immutable_headers(headers: Headers) -> Headers:
    """The origin's fields with its freshness replaced by `public, max-age=31536000, immutable`."""
    kept = tuple((n, v) for n, v in headers if n.lower() not in _REPLACED)
    return (*kept, ("Cache-Control", IMMUTABLE_CACHE_CONTROL))


def pin(stored: StoredResponse) -> StoredResponse:
    """Stored as never needing revalidation (RFC 8246 immutable, with an edge-long lifetime)."""
    return replace(stored, lifetime=IMMUTABLE_LIFETIME_S, must_revalidate=False, no_cache=False, auth_ok=True)
