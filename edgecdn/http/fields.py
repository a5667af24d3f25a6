"""Header-field classes that a cache must treat specially (RFC 9110 §7.6.1, RFC 9111 §3.1)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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

# Request fields that claim to describe the client's original request (host, scheme, target, address).
# Any client can send them, so they are never forwarded as sent: the edge sets X-Forwarded-For and Via.
SPOOFABLE_FORWARDING = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-scheme",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-ssl",
        "x-original-url",
        "x-original-host",
        "x-rewrite-url",
        "x-host",
        "x-http-host-override",
        "x-real-ip",
        "true-client-ip",
        "via",
        "host",
    }
)

# The only client fields a cacheable request (a fill) forwards, besides `origin.forward_headers` (so
# method overrides, cookies and the like never reach the origin on a request whose answer is shared): each
# either is keyed (Accept-Encoding, normalised), is checked against the stored response (Authorization,
# RFC 9111 §3.5), only chooses among representations the origin declares with Vary (Accept), or is
# extended by the edge and must reach the next tier (CDN-Loop, RFC 8586 §2; Via).
FILL_FORWARD = frozenset({"accept", "accept-encoding", "authorization", "cdn-loop"})

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


@dataclass(frozen=True, slots=True)
class Allow:
    """A set of field names, lower-case; a pattern ending in `*` admits every name with that prefix."""

    names: frozenset[str]
    prefixes: tuple[str, ...] = ()

    @classmethod
    def of(cls, patterns: Iterable[str]) -> Allow:
        pats = [p.strip().lower() for p in patterns if p.strip()]
        prefixes = tuple(p[:-1] for p in pats if p.endswith("*"))
        return cls(frozenset(p for p in pats if not p.endswith("*")), prefixes)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        lname = name.lower()
        return lname in self.names or any(lname.startswith(p) for p in self.prefixes)
