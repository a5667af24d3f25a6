"""HTTP/1.1 request heads (RFC 9112) checked beyond what llhttp checks: version, Host, target form.

Rules of this file: pure functions of the received head, no I/O; every refusal is a `BadRequest` carrying
the status to answer and a short reason for the log. llhttp (httptools) already refuses bare LF, obs-fold,
control characters, invalid field names, CL+TE, duplicate or malformed Content-Length.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from multidict import CIMultiDict

# RFC 9110 §7.2 / RFC 3986 §3.2.2: uri-host [ ":" port ]; a reg-name has no "@" and at most one ":".
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")
_ABSOLUTE = re.compile(r"[hH][tT][tT][pP][sS]?://[^/?#]*")


class BadRequest(Exception):
    """A request the edge refuses at the framing level; the connection closes after the answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason  # short, for the error body and the log line; never echoes client bytes


class HeadFields(NamedTuple):
    """What the header fields of a head say, checked: the same for every request that sends the same ones."""

    headers: CIMultiDict[str]
    has_body: bool
    expect_continue: bool


class Head(NamedTuple):
    method: str
    target: str  # origin-form
    version: str
    headers: CIMultiDict[str]
    has_body: bool
    expect_continue: bool


def check_head(
    method: str, url: bytes, version: str, raw: list[tuple[bytes, bytes]], fields: HeadFields | None = None
) -> Head:
    """The request head as the handler may see it, or BadRequest (RFC 9112 §2-§3, RFC 9110 §7.2).

    `fields`: `check_fields(version, raw)` when the caller already has it (a keep-alive client sends the
    same fields request after request); the handler never changes a request's headers, so they are shared.
    """
    if version not in ("1.1", "1.0"):
        raise BadRequest(505, "http version not supported")
    if method == "CONNECT":
        raise BadRequest(405, "method not allowed")
    if fields is None:
        fields = check_fields(version, raw)
    target = url.decode("latin-1")
    if not target.startswith("/"):
        target = origin_form(target)
    return Head(method, target, version, *fields)


def check_fields(version: str, raw: list[tuple[bytes, bytes]]) -> HeadFields:
    """Host (one, valid, required on 1.1), Expect, Transfer-Encoding, and whether a body follows."""
    headers: CIMultiDict[str] = CIMultiDict([(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw])
    hosts = headers.getall("Host", [])
    if len(hosts) > 1:
        raise BadRequest(400, "more than one Host")
    if not hosts and version == "1.1":
        raise BadRequest(400, "Host required")
    if hosts and not _HOST.fullmatch(hosts[0]):
        raise BadRequest(400, "invalid Host")
    expect = headers.get("Expect")
    if expect is not None and expect.strip().lower() != "100-continue":
        raise BadRequest(417, "expectation not supported")
    te = "Transfer-Encoding" in headers
    if te and ",".join(headers.getall("Transfer-Encoding")).rsplit(",", 1)[-1].strip().lower() != "chunked":
        raise BadRequest(400, "transfer-encoding must end in chunked")  # RFC 9112 §6.3 rule 4
    length = headers.get("Content-Length")
    return HeadFields(
        headers,
        te or (length is not None and length.strip() not in ("", "0")),
        expect is not None and version == "1.1",
    )


def origin_form(target: str) -> str:
    """RFC 9112 §3.2: origin-form as sent; absolute-form reduced to its path and query (its host never
    picks an origin); anything else (asterisk-, authority-form) is refused."""
    if target.startswith("/"):
        return target
    m = _ABSOLUTE.match(target)
    if m is None:
        raise BadRequest(400, "invalid request target")
    rest = target[m.end() :].partition("#")[0]
    if not rest.startswith("/"):
        rest = "/" + rest
    return rest
