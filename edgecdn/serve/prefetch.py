"""Prefetch on one edge: workers that warm queued URLs through the coalescer, like any other fill.

Rules of this file: at most `prefetch.concurrency` URLs are warmed at once (the queue waits in
control/prefetch.py); a prefetch joins the fill a client already started and a client joins a
prefetch's fill, so the origin sees one request either way; an already fresh URL is not fetched.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from multidict import CIMultiDict

from edgecdn import clock
from edgecdn.cache.entry import VaryMarker
from edgecdn.cache.store import DiskObject, Found, Store
from edgecdn.config import PrefetchConfig
from edgecdn.control.prefetch import PrefetchItem, Registry, Task, UrlResult, UrlState
from edgecdn.control.versioning import VersionPattern
from edgecdn.errors import OriginError, StorageError
from edgecdn.fetch.coalesce import Coalescer, Failed, FillRequest, Revalidated, Storing, Uncacheable
from edgecdn.metrics import Metrics
from edgecdn.policy.decide import Fresh, decide, request_facts
from edgecdn.policy.key import variant_key

log = logging.getLogger("edgecdn.prefetch")

READ_CHUNK = 1 << 20
MAX_VARY_TRIES = 3  # a fill of another variant was running: look up again at most this often
GET_FACTS = request_facts("GET", [], [], False)


class Prefetcher:
    """The task registry of one edge and the workers that drain its queue."""

    def __init__(
        self,
        cfg: PrefetchConfig,
        store: Store,
        coalescer: Coalescer,
        versioned: VersionPattern | None,
        metrics: Metrics,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.coalescer = coalescer
        self.versioned = versioned
        self.metrics = metrics
        self.registry = Registry(cfg)
        self._workers: set[asyncio.Task[None]] = set()

    def submit(self, items: tuple[PrefetchItem, ...]) -> Task:
        """Queue a task (QueueFull when it does not fit) and start workers up to the concurrency."""
        task = self.registry.submit(secrets.token_hex(8), items, now=clock.now())
        while len(self._workers) < min(self.cfg.concurrency, len(self.registry.waiting)):
            worker = asyncio.create_task(self._work())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        return task

    def get(self, task_id: str) -> Task | None:
        return self.registry.get(task_id, now=clock.now())

    async def close(self) -> None:
        for worker in list(self._workers):
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def _work(self) -> None:
        while (job := self.registry.next()) is not None:
            task, result = job
            started = clock.monotonic()
            try:
                await self.warm(result)
            except StorageError as e:
                self.metrics.storage_errors.inc()
                result.state, result.error = UrlState.FAILED, f"store: {e}"
            result.seconds = clock.monotonic() - started
            self.metrics.prefetches.labels(result.state.value).inc()
            self.registry.finish(task, result, now=clock.now())

    async def warm(self, result: UrlResult) -> None:
        """Fill one URL (the variant its headers select) unless it is fresh; the outcome goes in `result`."""
        primary = result.item.url
        headers = CIMultiDict(result.item.headers)
        for _ in range(MAX_VARY_TRIES):
            found = await self.store.lookup(primary, headers)
            try:
                if found is not None and isinstance(
                    decide(GET_FACTS, found.entry.stored, now=clock.now()), Fresh
                ):
                    result.state, result.key = UrlState.FRESH, _shown(found.entry.key)
                    result.bytes = found.entry.stored.size
                    return
                if await self._fill(result, primary, headers, found):
                    return
            finally:
                if isinstance(found, DiskObject):
                    found.file.close()
        result.state, result.error = UrlState.FAILED, "variants kept changing while warming"

    async def _fill(
        self, result: UrlResult, primary: str, headers: CIMultiDict[str], found: Found | None
    ) -> bool:
        """Join or start the fill; False when the fill was another variant's (look up again)."""
        path = primary.partition("?")[0]
        req = FillRequest(
            primary=primary,
            target=primary,
            path=path,
            headers=tuple(headers.items()),
            client_ip=None,
            revalidate=found.entry if found is not None else None,
            expect_hash=self.versioned.parse(path) if self.versioned is not None else None,
        )
        key = found.entry.key if found is not None else self._flight_key(primary, headers)
        flight, owner = self.coalescer.join(key, req)
        try:
            head = await asyncio.shield(flight.head)
            match head:
                case Storing(entry=entry, fill=fill):
                    if variant_key(primary, entry.stored.vary, headers) != entry.key:
                        return False
                    offset = 0
                    while chunk := await fill.read(offset, READ_CHUNK):
                        offset += len(chunk)
                    result.state, result.bytes = UrlState.WARMED, offset
                    result.key, result.status = _shown(entry.key), entry.stored.status
                case Revalidated(entry=entry):
                    result.state, result.bytes = UrlState.WARMED, entry.stored.size
                    result.key, result.status = _shown(entry.key), 304
                case Uncacheable(reason=reason, status=status):
                    resp = flight.claim_response() if owner else None
                    if resp is not None:
                        resp.abort()
                    result.state, result.status = UrlState.FAILED, status
                    result.error = f"not storable: {reason.value} (origin answered {status})"
                case Failed(error=err):
                    result.state, result.error = UrlState.FAILED, f"{err} ({err.detail})"
        except OriginError as e:  # the body broke off mid-way: the fill raises its error to readers
            result.state, result.error = UrlState.FAILED, str(e)
        finally:
            flight.leave()
        return True

    def _flight_key(self, primary: str, headers: CIMultiDict[str]) -> str:
        marker = self.store.memory.get(primary)
        if isinstance(marker, VaryMarker):
            return variant_key(primary, marker.names, headers)
        return primary


def _shown(key: str) -> str:
    """A cache key for JSON: a variant's separator made visible."""
    return key.replace("\x00", " vary=")
