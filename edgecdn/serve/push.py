"""Active push: `PUT /_edge/push/<path>` stores a body sent by the origin side; `POST /_edge/push` re-fetches.

Rules of this file: a pushed body streams into a Fill (a temporary file named by hash, never by the request
path) and reaches the store only after the signature over all its bytes checked out; a push older than the
stored object (Last-Modified) does not overwrite it, so pushes may arrive in any order. A body is stored as
received: a `Content-Encoding: gzip` push is signed, hashed and served compressed, never inflated here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import unquote

import xxhash
from aiohttp import web
from multidict import CIMultiDictProxy

from edgecdn import clock
from edgecdn.cache import slices
from edgecdn.cache.disk import new_body_name
from edgecdn.cache.entry import Entry
from edgecdn.cache.fill import Fill
from edgecdn.cache.store import Store
from edgecdn.config import CacheConfig
from edgecdn.control.purge import BadPurge, url_key
from edgecdn.control.signing import body_hasher
from edgecdn.control.versioning import configured_pattern
from edgecdn.errors import AdminError, OriginError, StorageError
from edgecdn.fetch.coalesce import Coalescer, Failed, FillRequest, Storing, Uncacheable
from edgecdn.http.dates import parse_http_date
from edgecdn.metrics import Metrics
from edgecdn.policy import immutable
from edgecdn.policy.admit import Exchange, NotStorable, admit

# Request fields a push may set on the stored object; anything else sent is ignored.
PUSH_FIELDS = (
    "Content-Type",
    "Content-Encoding",
    "Content-Language",
    "Cache-Control",
    "Expires",
    "ETag",
    "Last-Modified",
    "Surrogate-Key",
    "Cache-Tag",
)
MAX_REFETCH_URLS = 1000
READ_CHUNK = 1 << 20


class Verifier(Protocol):
    def check(self, request: web.BaseRequest, body_sha256: str) -> None: ...


def push_key(target: str) -> str:
    """The cache key a push stores under; traversal, control characters and non-paths are refused.

    Bodies are named by hash, so a path can never address a file; refusing `..` keeps keys plain too.
    """
    if not target.startswith("/") or "\\" in target or any(c < " " or c == "\x7f" for c in target):
        raise AdminError(400, "bad push path", "expected /_edge/push/<path>, plain printable characters")
    path = target.partition("?")[0]
    for segment in path.split("/"):
        decoded = unquote(segment)
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded or "\x00" in decoded:
            raise AdminError(400, "bad push path", "path traversal (. or .. segments, encoded slashes)")
    if path in ("", "/"):
        raise AdminError(400, "bad push path", "no object path after /_edge/push")
    return target


@dataclass(frozen=True, slots=True)
class Push:
    """One PUT, before its body: the key, the entry it would store, the hash a versioned path promises."""

    key: str
    entry: Entry
    expect_hash: str | None


class Pusher:
    """What push needs of the edge: the store, the coalescer (to doom fills and refetch), the metrics."""

    def __init__(self, store: Store, coalescer: Coalescer, metrics: Metrics, cfg: CacheConfig) -> None:
        self.store = store
        self.coalescer = coalescer
        self.metrics = metrics
        self.cfg = cfg
        self.versioned = configured_pattern(cfg.versioned_pattern)
        self.lock = asyncio.Lock()  # the older-than check and the commit of a push happen as one step

    def expected_hash(self, path: str) -> str | None:
        """The xxh3-64 a versioned path promises, under the edge's configured pattern."""
        return self.versioned.parse(path) if self.versioned is not None else None

    def start(self, target: str, headers: CIMultiDictProxy[str]) -> Push:
        """The entry a PUT would store, from its path and the fields it may set (PUSH_FIELDS).

        Content-Encoding is stored as sent: the body is kept as received, never inflated.
        """
        key = push_key(target)
        fields = tuple((name, v) for name in PUSH_FIELDS for v in headers.getall(name, ()))
        path = key.partition("?")[0]
        expect = self.expected_hash(path)
        if expect is not None:
            fields = immutable.immutable_headers(fields)
        now = clock.now()
        verdict = admit(Exchange(path, 200, fields, now, now), cfg=self.cfg)
        if isinstance(verdict, NotStorable):
            raise AdminError(422, "push not storable", verdict.value)
        if expect is not None:
            verdict = immutable.pin(verdict)
        return Push(key, Entry(key=key, primary=key, stored=verdict), expect)

    async def receive(
        self, push: Push, body: AsyncIterator[bytes], guard: Verifier, request: web.BaseRequest
    ) -> dict[str, Any]:
        """Stream the body to a temporary file, verify the signature over it, then commit."""
        name = new_body_name(push.key)
        try:
            fill = await self.store.new_fill(name, memory_limit=self.cfg.memory_object_max)
        except StorageError as e:
            raise AdminError(503, "push failed in the store", str(e)) from None
        fill.acquire()
        try:
            hasher = body_hasher()
            content = xxhash.xxh3_64() if push.expect_hash is not None else None
            try:
                async for chunk in body:
                    hasher.update(chunk)
                    if content is not None:
                        content.update(chunk)
                    await fill.append(chunk)
            except StorageError as e:
                fill.fail(e)
                raise AdminError(503, "push failed in the store", str(e)) from None
            guard.check(request, hasher.hexdigest())
            if content is not None and content.hexdigest() != push.expect_hash:
                self.metrics.hash_mismatches.inc()
                raise AdminError(422, "hash mismatch", f"the body hashes to {content.hexdigest()}")
            entry = replace(push.entry, body_name=name, stored=replace(push.entry.stored, size=fill.received))
            async with self.lock:
                return await self._commit(push.key, entry, fill)
        finally:
            fill.end()
            fill.release()

    async def _commit(self, key: str, entry: Entry, fill: Fill) -> dict[str, Any]:
        try:
            current = await self.store.record(key)
            if isinstance(current, Entry) and _older(entry, current):
                self.metrics.pushes.labels("older").inc()
                return {"stored": False, "reason": "older", "key": key}
            # A fill already running for this key would overwrite the push with what it fetched.
            await self.coalescer.purge(lambda primary, _tags: primary == key)
            await self.store.commit(entry, fill)
            await self.store.blocking(slices.drop, self.store.disk, key)  # old slices never outlive a push
        except StorageError as e:
            raise AdminError(503, "push failed in the store", str(e)) from None
        self.metrics.pushes.labels("stored").inc()
        return {"stored": True, "key": key, "size": fill.received}

    async def refetch(self, urls: list[str]) -> list[dict[str, Any]]:
        """Fetch each URL from the origins now (through the coalescer) and store it; a status per URL."""
        if len(urls) > MAX_REFETCH_URLS:
            raise AdminError(400, "bad push request", f"at most {MAX_REFETCH_URLS} urls")
        try:
            keys = [url_key(u) for u in urls]
        except BadPurge as e:
            raise AdminError(400, "bad push request", str(e)) from None
        return list(await asyncio.gather(*(self._refetch_one(key) for key in keys)))

    async def _refetch_one(self, key: str) -> dict[str, Any]:
        path = key.partition("?")[0]
        req = FillRequest(
            primary=key,
            target=key,
            path=path,
            headers=(),
            client_ip=None,
            expect_hash=self.expected_hash(path),
        )
        await self.coalescer.purge(lambda primary, _tags: primary == key)  # a running fill may predate it
        flight, _ = self.coalescer.join(key, req)
        try:
            head = await asyncio.shield(flight.head)
            if isinstance(head, Storing):
                offset = 0
                while chunk := await head.fill.read(offset, READ_CHUNK):
                    offset += len(chunk)
                return {"url": key, "state": "stored", "bytes": offset}
            if isinstance(head, Uncacheable):
                resp = flight.claim_response()
                if resp is not None:
                    resp.abort()
                why = head.reason.value
                return {"url": key, "state": "uncacheable", "status": head.status, "reason": why}
            if isinstance(head, Failed):
                return {"url": key, "state": "failed", "error": str(head.error)}
            return {"url": key, "state": "revalidated"}
        except OriginError as e:  # the body broke off: the fill raises its error to readers
            return {"url": key, "state": "failed", "error": str(e)}
        finally:
            flight.leave()


def _older(new: Entry, old: Entry) -> bool:
    """A push is older when both carry Last-Modified and the new one's is earlier."""
    new_lm = parse_http_date(new.stored.last_modified)
    old_lm = parse_http_date(old.stored.last_modified)
    return new_lm is not None and old_lm is not None and new_lm < old_lm
