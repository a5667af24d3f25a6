"""The request handler: receive → key → lookup → decide → fetch (coalesced) → store → respond.

Rules of this file: each phase is a short named method; the decision is matched exhaustively and ends in
assert_never; nothing here reads bytes from disk itself or makes a cache decision (policy/ does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import assert_never

from edgecdn import clock
from edgecdn.cache.entry import VaryMarker
from edgecdn.cache.memory import MemoryObject
from edgecdn.cache.store import DiskObject, Found, Store
from edgecdn.config import Config
from edgecdn.control.versioning import configured_pattern
from edgecdn.errors import OriginError, StorageError
from edgecdn.fetch.client import OriginClient, sent_as_a_fill
from edgecdn.fetch.coalesce import (
    Coalescer,
    Failed,
    FillRequest,
    Flight,
    Revalidated,
    Storing,
    Uncacheable,
)
from edgecdn.fetch.pool import OriginPool
from edgecdn.http.conditional import Precondition
from edgecdn.metrics import Metrics
from edgecdn.policy.decide import (
    Decision,
    Fresh,
    Miss,
    OnlyIfCached,
    Pass,
    PassReason,
    RequestFacts,
    Revalidate,
    StaleWhileRevalidate,
    decide,
    request_facts,
    ttl_left,
    usable_on_error,
)
from edgecdn.policy.freshness import current_age
from edgecdn.policy.invalidate import invalidated_keys, post_answer_reusable
from edgecdn.policy.key import primary_key, variant_key
from edgecdn.policy.status import CacheStatus, cache_status_field
from edgecdn.serve import access, observe, proxy, respond, shed
from edgecdn.serve.request import Request
from edgecdn.serve.slices import Slicer
from edgecdn.serve.writer import ResponseWriter

log = logging.getLogger("edgecdn.handler")

HIT_FIELDS_KEPT = 4096  # memoised Cache-Status values of hits (by status and ttl)
MAX_LOOKUPS = 4  # a lookup that raced fills of its key ending looks again, at most this often in all
MAX_VARY_RETRIES = 2  # a waiter whose variant differs from the fill's looks up again at most this often


class Handler:
    def __init__(
        self,
        cfg: Config,
        store: Store,
        client: OriginClient,
        pool: OriginPool,
        coalescer: Coalescer,
        metrics: Metrics,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.client = client
        self.pool = pool
        self.coalescer = coalescer
        self.metrics = metrics
        self.versioned = configured_pattern(cfg.cache.versioned_pattern)
        self.observe = observe.Observer(metrics)  # requests, bytes, latency: one call per request
        self._hit_fields: dict[tuple[str, int], str] = {}
        self.slicer = Slicer(cfg, store, coalescer, metrics)  # paths with `slice = true` (serve/slices.py)
        self.peers_forget: Callable[[str], None] | None = None  # set in a worker (process/worker.py)

    async def __call__(self, request: Request, out: ResponseWriter) -> None:
        started = clock.monotonic()
        try:
            await self.handle(request, out)
        except ConnectionResetError:
            # The client went away mid-response; any fill it started carries on for the others.
            out.keep_alive = False
            self.observe.record("ABORTED", 499, out.body_sent, clock.monotonic() - started)
            raise
        except OriginError as e:
            # The origin's body broke off after the head went out: the response stays unfinished, so
            # the connection is cut and the client sees a broken body, never a short complete one.
            log.info("%s %s: %s", request.method, request.path, e)
            if not out.started:
                field = cache_status_field(CacheStatus.ERROR, detail=e.detail)
                respond.origin_error(out, e, cache_status=field)
        cache = out.cache._value_ if out.cache is not None else "NONE"
        self.observe.record(cache, out.status, out.body_sent, clock.monotonic() - started)

    async def handle(self, request: Request, out: ResponseWriter) -> ResponseWriter:
        admitted = access.check(request, self.cfg, out)
        if isinstance(admitted, ResponseWriter):
            return admitted
        request = admitted.request
        primary = primary_key(admitted.key_target)
        h = request.headers
        facts = request_facts(
            request.method,
            h.getall("Cache-Control", []),
            h.getall("Pragma", []),
            "Authorization" in h,
        )
        if request.method not in ("GET", "HEAD"):
            return await self.pass_through(request, out, primary, PassReason.METHOD)
        if self.slicer.enabled:
            sliced = await self.slicer.serve(request, out, primary, facts)
            if sliced is not None:
                return sliced
        for attempt in range(MAX_VARY_RETRIES + 1):
            found: Found | None = None
            if not attempt:  # the memory tier answers without awaiting anything
                found = self.store.lookup_memory(primary, request.headers)
            if found is None:
                found = await self.lookup(request, primary)
            resp = await self.act(request, out, primary, facts, found)
            if resp is not None:
                return resp
        return await self.pass_through(request, out, primary, PassReason.HIT_FOR_MISS)

    def hit_field(self, status: CacheStatus, ttl: int) -> str:
        """`Cache-Status` of a hit, built once per (status, ttl) rather than per request."""
        key = (status._value_, ttl)  # a str key: hashing an enum member is a Python-level call
        field = self._hit_fields.get(key)
        if field is None:
            if len(self._hit_fields) > HIT_FIELDS_KEPT:
                self._hit_fields.clear()
            field = self._hit_fields[key] = cache_status_field(status, ttl=ttl)
        return field

    async def lookup(self, request: Request, primary: str) -> Found | None:
        hit = self.store.lookup_memory(primary, request.headers)
        if hit is not None:
            return hit
        try:
            for _ in range(MAX_LOOKUPS):
                settled = self.coalescer.settled_for(primary)
                found = await self.store.lookup(primary, request.headers)
                if found is not None or self.coalescer.settled_for(primary) == settled:
                    break
                # A fill of this key finished while we were in the disk index: it has stored the object.
            return found
        except StorageError:  # recorded (counted, logged once per cause) by the store
            self.metrics.storage_errors.inc()
            return None

    async def act(
        self, request: Request, out: ResponseWriter, primary: str, facts: RequestFacts, found: Found | None
    ) -> ResponseWriter | None:
        """One decision and what follows from it; None means "look up again" (a Vary race)."""
        now = clock.now()
        # A memory object keeps when decide() stops answering Fresh for requests without directives
        # or credentials (its age only grows): until then that decision is reused, not recomputed.
        memo = found if isinstance(found, MemoryObject) and not facts.cc.directives else None
        decision: Decision
        if memo is not None and now < memo.fresh_until and not facts.has_auth:
            stored = memo.entry.stored
            decision = Fresh(stored, current_age(stored.initial_age, stored.response_time, now=now))
        else:
            decision = decide(facts, found.entry.stored if found else None, now=now)
        match decision:
            case Fresh(entry=e, age=age, stale=stale):
                assert found is not None
                if memo is not None and not stale and not facts.has_auth:
                    memo.fresh_until = now + ttl_left(e, age)
                status = CacheStatus.STALE if stale else CacheStatus.HIT
                field = self.hit_field(status, int(ttl_left(e, age)))
                return await respond.from_cache(
                    request,
                    out,
                    found,
                    respond.base_headers(
                        out, respond.fields_of(found), age=age, status=status, cache_status=field
                    ),
                )
            case StaleWhileRevalidate(entry=e, age=age):
                assert found is not None
                self.coalescer.refresh(found.entry.key, self.fill_request(request, primary, found))
                field = cache_status_field(
                    CacheStatus.UPDATING, ttl=ttl_left(e, age), detail="stale-while-revalidate"
                )
                return await respond.from_cache(
                    request,
                    out,
                    found,
                    respond.base_headers(
                        out,
                        respond.fields_of(found),
                        age=age,
                        status=CacheStatus.UPDATING,
                        cache_status=field,
                    ),
                )
            case Revalidate():
                assert found is not None
                return await self.fetch(request, out, primary, found, fwd="stale")
            case Miss(alone=alone):
                key = self.flight_key(request, primary)
                if (busy := shed.refuse(self.cfg.shed, self.coalescer, self.metrics, key, out)) is not None:
                    return busy
                if alone or self.coalescer.is_hit_for_miss(primary, now=now):
                    return await self.fetch(request, out, primary, None, fwd="uri-miss", shared=False)
                return await self.fetch(request, out, primary, None, fwd="miss")
            case Pass(reason=reason):
                await _release(found)  # a stored object this request may not use (Authorization, say)
                return await self.pass_through(request, out, primary, reason)
            case OnlyIfCached():
                await _release(found)
                return respond.error(
                    out,
                    504,
                    "not cached (only-if-cached)",
                    cache_status=cache_status_field(CacheStatus.ERROR, detail="only-if-cached"),
                )
            case unreachable:
                assert_never(unreachable)

    def fill_request(self, request: Request, primary: str, found: Found | None) -> FillRequest:
        return FillRequest(
            primary=primary,
            target=request.raw_path,
            path=request.path,
            headers=tuple(request.headers.items()),
            client_ip=request.remote,
            revalidate=found.entry if found is not None else None,
            expect_hash=self.versioned.parse(request.path) if self.versioned is not None else None,
        )

    async def fetch(
        self,
        request: Request,
        out: ResponseWriter,
        primary: str,
        found: Found | None,
        *,
        fwd: str,
        shared: bool = True,
    ) -> ResponseWriter | None:
        """Join (or start) the fill for this object and answer from it."""
        key = found.entry.key if found is not None else self.flight_key(request, primary)
        flight, owner = self.coalescer.join(key, self.fill_request(request, primary, found), shared=shared)
        try:
            return await self.answer(request, out, primary, found, flight, owner, fwd)
        finally:
            flight.leave()
            if isinstance(found, DiskObject):
                found.file.close()

    def flight_key(self, request: Request, primary: str) -> str:
        marker = self.store.memory.get(primary)
        if isinstance(marker, VaryMarker):
            return variant_key(primary, marker.names, request.headers)
        return primary

    async def answer(
        self,
        request: Request,
        out: ResponseWriter,
        primary: str,
        found: Found | None,
        flight: Flight,
        owner: bool,
        fwd: str,
    ) -> ResponseWriter | None:
        loop = asyncio.get_running_loop()
        waited = loop.time()
        head = await asyncio.shield(flight.head)
        out.upstream_s = loop.time() - waited  # the origin's time to its head (a joiner: what it waited)
        now = clock.now()
        match head:
            case Storing(entry=entry, fill=fill, length=length):
                if variant_key(primary, entry.stored.vary, request.headers) != entry.key:
                    return None  # this fill is another variant: look up again
                arrived = fill.complete or (length is not None and fill.received >= length)
                if not owner and arrived:  # the whole body is in: as good as a hit
                    status = CacheStatus.HIT
                    field = cache_status_field(status, ttl=entry.stored.lifetime)
                else:
                    status = CacheStatus.EXPIRED if found is not None else CacheStatus.MISS
                    field = cache_status_field(
                        status,
                        fwd=fwd,
                        fwd_status=entry.stored.status,
                        stored=True,
                        detail=None if owner else "coalesced",
                    )
                fields = respond.stored_fields(entry.stored)
                age = current_age(entry.stored.initial_age, entry.stored.response_time, now=now)
                headers = respond.base_headers(out, fields, age=age, status=status, cache_status=field)
                pre = respond.precondition(request, entry.stored)
                if pre is not Precondition.PROCEED:
                    return respond.not_modified(out, headers, pre)
                return await respond.from_fill(request, out, fill, entry.stored, length, headers)
            case Revalidated(entry=entry):
                assert found is not None
                revalidated: Found
                if isinstance(found, MemoryObject):
                    revalidated = MemoryObject(entry, found.body, file=found.file)
                else:
                    revalidated = DiskObject(entry, found.file)
                age = current_age(entry.stored.initial_age, entry.stored.response_time, now=now)
                field = cache_status_field(CacheStatus.REVALIDATED, fwd=fwd, fwd_status=304)
                fields = respond.fields_of(revalidated)
                headers = respond.base_headers(
                    out, fields, age=age, status=CacheStatus.REVALIDATED, cache_status=field
                )
                return await respond.from_cache(request, out, revalidated, headers)
            case Uncacheable(reason=reason, status=status):
                resp = flight.claim_response() if owner else None
                if resp is None:
                    return await self.pass_through(request, out, primary, PassReason.HIT_FOR_MISS)
                field = cache_status_field(CacheStatus.MISS, fwd=fwd, fwd_status=status, detail=reason.value)
                return await proxy.relay(request, out, resp, self.client, field, CacheStatus.MISS)
            case Failed(error=err):
                return await self.origin_failed(request, out, found, err, now=now)
            case unreachable:
                assert_never(unreachable)

    async def origin_failed(
        self, request: Request, out: ResponseWriter, found: Found | None, err: OriginError, *, now: float
    ) -> ResponseWriter:
        """stale-if-error when allowed (RFC 5861 §4), else 502/504 saying why."""
        if found is not None and usable_on_error(found.entry.stored, now=now):
            stored = found.entry.stored
            age = current_age(stored.initial_age, stored.response_time, now=now)
            field = cache_status_field(CacheStatus.STALE, fwd="stale", detail="stale-if-error")
            headers = respond.base_headers(
                out, respond.fields_of(found), age=age, status=CacheStatus.STALE, cache_status=field
            )
            return await respond.from_cache(request, out, found, headers)
        log.warning("%s %s: %s", request.method, request.path, err)
        field = cache_status_field(CacheStatus.ERROR, fwd="miss", detail=err.detail)
        return respond.origin_error(out, err, cache_status=field)

    async def pass_through(
        self, request: Request, out: ResponseWriter, primary: str, reason: PassReason
    ) -> ResponseWriter:
        field = proxy.pass_status(reason.value)
        try:
            resp = await proxy.send(request, out, self.client, self.pool, primary)
        except OriginError as e:
            log.warning("%s %s: %s", request.method, request.path, e)
            field = cache_status_field(CacheStatus.ERROR, fwd="bypass", detail=e.detail)
            return respond.origin_error(out, e, cache_status=field)
        for key in invalidated_keys(
            request.method, resp.status, request.raw_path, request.host, resp.headers
        ):
            await self.invalidate(key)
        if post_answer_reusable(
            request.method, resp.status, request.raw_path, request.host, resp.headers
        ) and sent_as_a_fill(tuple(request.headers.items()), self.coalescer.allow):
            # The POST's answer is the target's new representation: stored as its fill, sent from it.
            flight = self.coalescer.adopt(primary, self.fill_request(request, primary, None), resp)
            try:
                answered = await self.answer(request, out, primary, None, flight, True, "method")
            finally:
                flight.leave()
            if answered is None:  # the variant is chosen by these very request fields: cannot happen
                raise OriginError("the POST's answer was filed under another variant")
            return answered
        return await proxy.relay(request, out, resp, self.client, field)

    async def invalidate(self, primary: str) -> None:
        """Drop a key from both tiers; a store failure is logged, never fails the request.

        With workers, `peers_forget` tells the edge's other processes to drop it from their memory tiers.
        """
        if self.peers_forget is not None:
            self.peers_forget(primary)
        self.coalescer.forget(primary)
        # A fill of this key still writing to disk would land after the remove: doom it and wait for it.
        await self.coalescer.purge(lambda key, _tags: key == primary)
        try:
            await self.store.remove(primary)
        except StorageError as e:
            self.metrics.storage_errors.inc()
            log.warning("invalidating %s failed: %s", primary, e)


async def _release(found: Found | None) -> None:
    """Close a disk object's file when the answer will not come from it."""
    if isinstance(found, DiskObject) and not found.file.closed:
        await asyncio.to_thread(found.file.close)
