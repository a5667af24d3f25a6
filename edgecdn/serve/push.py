"""Active push: `PUT /_edge/push/<path>` stores a body sent by the origin side; `POST /_edge/push` re-fetches.

Rules of this file: a pushed body streams into a Fill (a temporary file named by hash, never by the request
path) and reaches the store only after the signature over all its bytes checked out; a push older than the
stored object (Last-Modified) does not overwrite it, so pushes may arrive in any order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

import xxhash
from aiohttp import web
from multidict import CIMultiDictProxy

from edgecdn import clock
from edgecdn.cache.disk import SpooledBody, new_body_name
from edgecdn.cache.entry import Entry
from edgecdn.cache.fill import Fill
from edgecdn.control.purge import BadPurge, url_key
from edgecdn.control.signing import body_hasher
from edgecdn.errors import OriginError, StorageError
from edgecdn.fetch.coalesce import Failed, FillRequest, Storing, Uncacheable
from edgecdn.http.dates import parse_http_date
from edgecdn.policy import immutable
from edgecdn.policy.admit import Exchange, NotStorable, admit

if TYPE_CHECKING:
    from edgecdn.serve.app import Edge

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


class PushError(Exception):
    def __init__(self, status: int, error: str, detail: object = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail


class Verifier(Protocol):
    def check(self, request: web.BaseRequest, body_sha256: str) -> None: ...


def push_key(target: str) -> str:
    """The cache key a push stores under; traversal, control characters and non-paths are refused.

    Bodies are named by hash, so a path can never address a file; refusing `..` keeps keys plain too.
    """
    if not target.startswith("/") or "\\" in target or any(c < " " or c == "\x7f" for c in target):
        raise PushError(400, "bad push path", "expected /_edge/push/<path>, plain printable characters")
    path = target.partition("?")[0]
    for segment in path.split("/"):
        decoded = unquote(segment)
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded or "\x00" in decoded:
            raise PushError(400, "bad push path", "path traversal (. or .. segments, encoded slashes)")
    if path in ("", "/"):
        raise PushError(400, "bad push path", "no object path after /_edge/push")
    return target


class Push:
    """One PUT: the entry it would store, then its body, then the commit."""

    def __init__(self, edge: Edge, key: str, entry: Entry, expect_hash: str | None) -> None:
        self.edge = edge
        self.key = key
        self.entry = entry
        self.expect_hash = expect_hash  # a versioned path: the pushed bytes must hash to its name

    @classmethod
    def start(cls, edge: Edge, target: str, headers: CIMultiDictProxy[str]) -> Push:
        key = push_key(target)
        fields = tuple((name, v) for name in PUSH_FIELDS for v in headers.getall(name, ()))
        path = key.partition("?")[0]
        expect = versioned_hash(edge, path)
        if expect is not None:
            fields = immutable.immutable_headers(fields)
        now = clock.now()
        verdict = admit(Exchange(path, 200, fields, now, now), cfg=edge.cfg.cache)
        if isinstance(verdict, NotStorable):
            raise PushError(422, "push not storable", verdict.value)
        if expect is not None:
            verdict = immutable.pin(verdict)
        return cls(edge, key, Entry(key=key, primary=key, stored=verdict), expect)

    async def receive(
        self, body: AsyncIterator[bytes], guard: Verifier, request: web.BaseRequest, lock: asyncio.Lock
    ) -> dict[str, Any]:
        """Stream the body to a temporary file, verify the signature over it, then commit."""
        store, cfg = self.edge.store, self.edge.cfg.cache
        name = new_body_name(self.key)
        fill = await Fill.create(store.disk.tmp, name, memory_limit=cfg.memory_object_max)
        fill.acquire()
        try:
            hasher = body_hasher()
            content = xxhash.xxh3_64() if self.expect_hash is not None else None
            async for chunk in body:
                hasher.update(chunk)
                if content is not None:
                    content.update(chunk)
                await fill.append(chunk)
            await fill.flush()
            guard.check(request, hasher.hexdigest())
            if content is not None and content.hexdigest() != self.expect_hash:
                self.edge.metrics.hash_mismatches.inc()
                raise PushError(422, "hash mismatch", f"the body hashes to {content.hexdigest()}")
            entry = replace(self.entry, body_name=name, stored=replace(self.entry.stored, size=fill.received))
            async with lock:
                return await self._commit(entry, fill)
        finally:
            fill.end()
            fill.release()

    async def _commit(self, entry: Entry, fill: Fill) -> dict[str, Any]:
        store = self.edge.store
        try:
            current = await asyncio.to_thread(store.disk.get, self.key)
        except StorageError as e:
            raise PushError(503, "push failed in the store", str(e)) from None
        if isinstance(current, Entry) and _older(entry, current):
            self.edge.metrics.pushes.labels("older").inc()
            return {"stored": False, "reason": "older", "key": self.key}
        # A fill already running for this key would overwrite the push with what it fetched.
        await self.edge.coalescer.purge(lambda primary, _tags: primary == self.key)
        memory_body = bytes(fill.memory) if fill.memory is not None else None
        store.remember(entry, memory_body)
        try:
            await store.persist(entry, SpooledBody(str(fill.path), fill.received))
        except StorageError as e:
            store.memory.discard(self.key)
            raise PushError(503, "push failed in the store", str(e)) from None
        fill.adopted = True
        self.edge.metrics.pushes.labels("stored").inc()
        return {"stored": True, "key": self.key, "size": fill.received}


def versioned_hash(edge: Edge, path: str) -> str | None:
    """The xxh3-64 a versioned path promises, under the edge's configured pattern."""
    pattern = edge.handler.versioned
    return pattern.parse(path) if pattern is not None else None


def _older(new: Entry, old: Entry) -> bool:
    """A push is older when both carry Last-Modified and the new one's is earlier."""
    new_lm = parse_http_date(new.stored.last_modified)
    old_lm = parse_http_date(old.stored.last_modified)
    return new_lm is not None and old_lm is not None and new_lm < old_lm


async def refetch(edge: Edge, urls: list[str]) -> list[dict[str, Any]]:
    """Fetch each URL from the origins now (through the coalescer) and store it; a status per URL."""
    if len(urls) > MAX_REFETCH_URLS:
        raise PushError(400, "bad push request", f"at most {MAX_REFETCH_URLS} urls")
    try:
        keys = [url_key(u) for u in urls]
    except BadPurge as e:
        raise PushError(400, "bad push request", str(e)) from None
    return list(await asyncio.gather(*(_refetch_one(edge, key) for key in keys)))


async def _refetch_one(edge: Edge, key: str) -> dict[str, Any]:
    path = key.partition("?")[0]
    req = FillRequest(
        primary=key,
        target=key,
        path=path,
        headers=(),
        client_ip=None,
        expect_hash=versioned_hash(edge, path),
    )
    await edge.coalescer.purge(lambda primary, _tags: primary == key)  # a running fill may predate the change
    flight, _ = edge.coalescer.join(key, req)
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
            return {"url": key, "state": "uncacheable", "status": head.status, "reason": head.reason.value}
        if isinstance(head, Failed):
            return {"url": key, "state": "failed", "error": str(head.error)}
        return {"url": key, "state": "revalidated"}
    except OriginError as e:  # the body broke off: the fill raises its error to readers
        return {"url": key, "state": "failed", "error": str(e)}
    finally:
        flight.leave()
