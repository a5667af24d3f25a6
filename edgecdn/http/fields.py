"""Header-field classes that a cache must treat specially (RFC 9110 §7.6.1, RFC 9111 §3.1)."""

from __future__ import annotations

from collections.abc import Iterable

# Hop-by-hop fields: meaningful for one connection only, never stored or forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-authentication-info",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Computed by the edge for each response it sends, so never stored with the object. (Content-Range is the
# origin's on anything but a 206 the edge makes, so it is stored and returned: RFC 9111 §3.1.)
PER_RESPONSE = frozenset({"age", "x-cache", "cache-status", "content-length"})

# Targeted at this cache (RFC 9213) and not forwarded to clients.
EDGE_TARGETED = frozenset({"cdn-cache-control", "edgecdn-cache-control"})

# RFC 9111 §3.2: a 304 updates stored fields, except those that describe the stored body itself.
NOT_UPDATED_BY_304 = frozenset({"content-length", "content-encoding", "content-type", "content-range"})

Headers = tuple[tuple[str, str], ...]


def connection_nominated(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Field names listed in Connection, which are hop-by-hop for this message (RFC 9110 §7.6.1)."""
    names: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            names.update(p.strip().lower() for p in value.split(",") if p.strip())
    return frozenset(names)


def end_to_end(headers: Iterable[tuple[str, str]], *, drop: frozenset[str] = frozenset()) -> Headers:
    """The fields a proxy may forward: hop-by-hop and Connection-nominated ones removed."""
    items = list(headers)
    skip = HOP_BY_HOP | connection_nominated(items) | drop
    return tuple((n, v) for n, v in items if n.lower() not in skip)


def get_all(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    """Every value of one field, in order."""
    lname = name.lower()
    return [v for n, v in headers if n.lower() == lname]


def get_one(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of one field, or None."""
    lname = name.lower()
    for n, v in headers:
        if n.lower() == lname:
            return v
    return None


def split_list(values: Iterable[str]) -> list[str]:
    """Elements of a comma-separated list field (RFC 9110 §5.6.1), empty ones dropped."""
    return [p.strip() for v in values for p in v.split(",") if p.strip()]
