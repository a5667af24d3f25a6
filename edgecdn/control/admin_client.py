"""The client side of the signed admin API, shared by `edgecdn purge` (and later prefetch and publish).

Rules of this file: the key comes from `--key` or `EDGECDN_ADMIN_KEY`, never from a file the command
guesses; every request is signed over the exact bytes sent; an edge's failure is a value, not an exception,
so one dead edge never hides the others' results.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import aiohttp

from edgecdn import clock
from edgecdn.control.signing import AdminKey, body_digest, parse_key, sign
from edgecdn.errors import UsageError

KEY_ENV = "EDGECDN_ADMIN_KEY"
TIMEOUT_S = 30.0
_EDGE_RE = re.compile(r"https?://[^/\s?#]+/?")


def key_from(arg: str | None) -> AdminKey:
    """The admin key from `--key`, else from the environment; missing or malformed is a UsageError."""
    text = arg if arg is not None else os.environ.get(KEY_ENV)
    if not text:
        raise UsageError(f"an admin key is required: --key KID:SECRET or {KEY_ENV}")
    return parse_key(text)


def edge_url(value: str) -> str:
    """An edge admin base URL like http://127.0.0.1:8081."""
    if not _EDGE_RE.fullmatch(value):
        raise UsageError(f"--edge {value!r}: expected an admin URL like http://127.0.0.1:8081")
    return value.rstrip("/")


@dataclass(frozen=True, slots=True)
class EdgeResult:
    edge: str
    status: int | None  # None: no HTTP answer at all
    body: Any  # the decoded JSON answer, or the error text
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def error(self) -> str:
        if self.status is None:
            return str(self.body)
        if isinstance(self.body, dict) and "error" in self.body:
            detail = self.body.get("detail")  # the edge's reason: bad-signature, unknown-key, ...
            why = f" ({detail})" if isinstance(detail, str) and detail else ""
            return f"{self.body['error']}{why}"
        return "" if self.ok else f"HTTP {self.status}"


def signed_headers(key: AdminKey, method: str, path: str, body: bytes) -> dict[str, str]:
    return sign(key, method, path, body_digest(body), clock.now())


async def send(
    session: aiohttp.ClientSession,
    key: AdminKey | None,
    edge: str,
    method: str,
    path: str,
    payload: object,
) -> EdgeResult:
    """One JSON request to one edge, signed unless `key` is None (the unsigned reads: stats, health);
    no body when `payload` is None; connection problems become an EdgeResult."""
    body = b"" if payload is None else json.dumps(payload).encode()
    headers = signed_headers(key, method, path, body) if key is not None else {}
    if payload is not None:
        headers["Content-Type"] = "application/json"
    started = clock.monotonic()
    try:
        async with session.request(method, edge + path, data=body, headers=headers) as r:
            text = await r.text()
            try:
                decoded: Any = json.loads(text)
            except ValueError:
                decoded = text[:200]
            return EdgeResult(edge, r.status, decoded, clock.monotonic() - started)
    except aiohttp.ClientConnectorError as e:
        why = f"cannot connect: {e.os_error.strerror or e.os_error}"
        return EdgeResult(edge, None, why, clock.monotonic() - started)
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        return EdgeResult(edge, None, f"{type(e).__name__}: {e}"[:120], clock.monotonic() - started)


def session() -> aiohttp.ClientSession:
    """A client session for admin calls: bounded per request, no proxies from the environment."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S), trust_env=False)


async def fan_out(
    key: AdminKey | None, edges: list[str], method: str, path: str, payload: object
) -> list[EdgeResult]:
    """The same request to every edge at once; results in the order of `edges`."""
    async with session() as s:
        return list(await asyncio.gather(*(send(s, key, e, method, path, payload) for e in edges)))
