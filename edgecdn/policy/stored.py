"""What the policy knows of a stored response: its headers and the freshness facts fixed at admission.

Rules of this file: every value here is computed once, when the response is admitted (RFC 9111 §4.2.3
wants request and response times recorded then), so a hit evaluates freshness with arithmetic only.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecdn.http.dates import parse_http_date
from edgecdn.http.fields import Headers, get_one


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: Headers  # end-to-end fields as stored (no Age, Content-Length, hop-by-hop)
    size: int  # body length in bytes
    response_time: float  # when the response was received (RFC 9111 §4.2.3)
    initial_age: float  # corrected_initial_age (RFC 9111 §4.2.3)
    lifetime: float  # freshness lifetime in seconds (RFC 9111 §4.2.1)
    stale_while_revalidate: float = 0.0  # RFC 5861 §3, or the operator default
    stale_if_error: float = 0.0  # RFC 5861 §4, or the operator default
    must_revalidate: bool = False  # must-revalidate, proxy-revalidate or s-maxage
    no_cache: bool = False  # reuse only after a successful revalidation
    auth_ok: bool = False  # may answer requests that carry Authorization (RFC 9111 §3.5)
    etag: str | None = None
    last_modified: str | None = None
    vary: tuple[str, ...] = ()  # lower-case field names the variant was selected on
    tags: tuple[str, ...] = ()  # Surrogate-Key / Cache-Tag values, for purge by tag
    invalidated: bool = False  # soft-purged: stale from now on, whatever its lifetime

    @property
    def date(self) -> float:
        """Its Date, or when it was received without one (RFC 9111 §4.3.2, If-Modified-Since)."""
        date = parse_http_date(get_one(self.headers, "date"))
        return self.response_time if date is None else date

    @property
    def has_validator(self) -> bool:
        return self.etag is not None or self.last_modified is not None
