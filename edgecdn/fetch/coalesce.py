"""Request coalescing: one origin fetch per object however many clients ask at once.

Rules of this file: a flight belongs to the cache, not to the client that started it (it runs in its own
task); every waiter that joins a flight leaves it exactly once; a flight that fails fails all its waiters at
once; an uncacheable answer leaves a hit-for-miss marker so later requests skip the queue.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass, replace

from edgecdn import clock
from edgecdn.cache.disk import SpooledBody
from edgecdn.cache.entry import Entry
from edgecdn.cache.fill import Fill
from edgecdn.cache.store import Store
from edgecdn.config import Config
from edgecdn.errors import OriginError, StorageError
from edgecdn.fetch.client import (
    FILL_DROP,
    OriginClient,
    OriginResponse,
    check_length,
    upstream_headers,
)
from edgecdn.fetch.pool import OriginPool
from edgecdn.http.fields import Headers, get_one
from edgecdn.metrics import Metrics
from edgecdn.policy.admit import Exchange, NotStorable, admit
from edgecdn.policy.key import key_digest, variant_key
from edgecdn.policy.revalidate import conditional_headers, merge_304, validators_match

log = logging.getLogger("edgecdn.fill")

HIT_FOR_MISS_MAX = 100_000  # markers kept at most (oldest dropped first)
UNCLAIMED_RESPONSE_S = 10.0  # an uncacheable response nobody took is closed after this
ERROR_STATUSES = frozenset({500, 502, 503, 504})  # RFC 5861 §4: "errors" for stale-if-error


class _MultiDictView:
    """Request headers as the key functions want them (a tuple of pairs is what a fill keeps)."""

    def __init__(self, headers: Headers) -> None:
        self._headers = headers

    def getall(self, key: str, default: list[str]) -> list[str]:
        lkey = key.lower()
        return [v for n, v in self._headers if n.lower() == lkey] or default


@dataclass(frozen=True, slots=True)
class FillRequest:
    primary: str
    target: str  # path and query, as sent upstream
    path: str  # path only, for operator rules
    headers: Headers  # the starting client's request fields
    client_ip: str | None
    revalidate: Entry | None = None  # the stored entry, when this is a revalidation


@dataclass(frozen=True, slots=True)
class Storing:
    """A storable response: its body is being written to `fill`; read it from there."""

    entry: Entry
    fill: Fill
    length: int | None  # Content-Length, when the origin sent one


@dataclass(frozen=True, slots=True)
class Revalidated:
    """The origin said 304: the stored body is still good, with these refreshed headers."""

    entry: Entry


@dataclass(frozen=True, slots=True)
class Uncacheable:
    """Not storable. The flight's owner claims the live response; other waiters go to the origin."""

    reason: NotStorable
    status: int


@dataclass(frozen=True, slots=True)
class Failed:
    error: OriginError


FlightHead = Storing | Revalidated | Uncacheable | Failed


class Flight:
    def __init__(self, key: str) -> None:
        self.key = key
        self.head: asyncio.Future[FlightHead] = asyncio.get_running_loop().create_future()
        self.fill: Fill | None = None
        self._early_readers = 0  # waiters that joined before the fill existed
        self._response: OriginResponse | None = None

    def join(self) -> None:
        if self.fill is not None:
            self.fill.acquire()
        else:
            self._early_readers += 1

    def leave(self) -> None:
        if self.fill is not None:
            self.fill.release()
        else:
            self._early_readers -= 1

    def claim_response(self) -> OriginResponse | None:
        """The live uncacheable response, for exactly one caller (the flight's owner)."""
        resp, self._response = self._response, None
        return resp

    def _attach(self, fill: Fill) -> None:
        for _ in range(self._early_readers):
            fill.acquire()
        self._early_readers = 0
        self.fill = fill

    def _offer(self, resp: OriginResponse) -> None:
        self._response = resp
        asyncio.get_running_loop().call_later(UNCLAIMED_RESPONSE_S, self._close_unclaimed)

    def _close_unclaimed(self) -> None:
        resp = self.claim_response()
        if resp is not None:
            resp.abort()


class Coalescer:
    def __init__(
        self, store: Store, client: OriginClient, pool: OriginPool, cfg: Config, metrics: Metrics
    ) -> None:
        self.store = store
        self.client = client
        self.pool = pool
        self.cfg = cfg
        self.metrics = metrics
        self._flights: dict[str, Flight] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._hit_for_miss: OrderedDict[str, float] = OrderedDict()
        # Counts flights leaving the table; a lookup that raced one of them looks again.
        self.settled = 0

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    def join(self, key: str, req: FillRequest, *, shared: bool = True) -> tuple[Flight, bool]:
        """Join the flight for `key`, starting it if there is none; True when this call started it."""
        flight = self._flights.get(key) if shared else None
        owner = flight is None
        if flight is None:
            flight = Flight(key)
            if shared:
                self._flights[key] = flight
            task = asyncio.create_task(self._run(flight, req))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self.metrics.coalesced.inc()
        flight.join()
        return flight, owner

    def refresh(self, key: str, req: FillRequest) -> None:
        """Start a background revalidation unless one is already running (stale-while-revalidate)."""
        if key in self._flights:
            return
        flight, _ = self.join(key, req)
        flight.leave()

    def is_hit_for_miss(self, primary: str, *, now: float) -> bool:
        until = self._hit_for_miss.get(primary)
        if until is None:
            return False
        if until < now:
            del self._hit_for_miss[primary]
            return False
        return True

    def forget(self, primary: str) -> None:
        """Drop what is known about a key: its hit-for-miss marker, and in-flight fills stop storing."""
        self._hit_for_miss.pop(primary, None)

    async def close(self, grace: float = 10.0) -> None:
        """Let running fills finish (bounded by `grace`), then cancel what is left."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the fill task -----------------------------------------------------------------------------

    async def _run(self, flight: Flight, req: FillRequest) -> None:
        self.metrics.flights.inc()
        try:
            await self._fetch(flight, req)
        except asyncio.CancelledError:
            self._settle(flight, Failed(OriginError("fill cancelled")))
            raise
        finally:
            self.metrics.flights.dec()
            self._unregister(flight)

    def _unregister(self, flight: Flight) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
            self.settled += 1

    def _settle(self, flight: Flight, head: FlightHead) -> None:
        if not flight.head.done():
            flight.head.set_result(head)
        if not isinstance(head, Storing):
            self._unregister(flight)

    async def _fetch(self, flight: Flight, req: FillRequest) -> None:
        headers = upstream_headers(req.headers, client_ip=req.client_ip, drop=FILL_DROP)
        if req.revalidate is not None:
            headers += tuple(conditional_headers(req.revalidate.stored).items())
        request_time = clock.now()
        try:
            resp = await self._send(req, headers)
        except OriginError as e:
            self.metrics.fills.labels("failed").inc()
            self._settle(flight, Failed(e))
            return
        response_time = clock.now()
        old = req.revalidate
        if old is not None and resp.status == 304 and validators_match(old.stored, resp.headers):
            resp.release()
            merged = merge_304(
                old.stored,
                resp.headers,
                path=req.path,
                request_time=request_time,
                response_time=response_time,
                cfg=self.cfg.cache,
            )
            try:
                entry = await self.store.update(old, merged)
            except StorageError:
                self.metrics.storage_errors.inc()
                entry = replace(old, stored=merged)
            self.metrics.fills.labels("revalidated").inc()
            self._settle(flight, Revalidated(entry))
            return
        if old is not None and resp.status in ERROR_STATUSES:
            resp.release()
            self._settle(flight, Failed(_status_error(resp.status)))
            return
        has_auth = any(n.lower() == "authorization" for n, _ in req.headers)
        verdict = admit(
            Exchange(req.path, resp.status, resp.headers, request_time, response_time, has_auth),
            cfg=self.cfg.cache,
        )
        if isinstance(verdict, NotStorable):
            self.metrics.fills.labels("uncacheable").inc()
            self._hit_for_miss[req.primary] = response_time + self.cfg.cache.hit_for_miss
            while len(self._hit_for_miss) > HIT_FOR_MISS_MAX:
                self._hit_for_miss.popitem(last=False)
            flight._offer(resp)
            self._settle(flight, Uncacheable(verdict, resp.status))
            return
        await self._fill(
            flight,
            req,
            resp,
            Entry(
                key=variant_key(req.primary, verdict.vary, _MultiDictView(req.headers)),
                primary=req.primary,
                stored=verdict,
            ),
        )

    async def _send(self, req: FillRequest, headers: Headers) -> OriginResponse:
        """Try the pool's origins in order while the error is retryable."""
        error: OriginError | None = None
        for origin in self.pool.order(req.primary, req.client_ip):
            try:
                resp = await self.client.send(origin, "GET", req.target, headers)
            except OriginError as e:
                self.metrics.origin_requests.labels(type(e).__name__).inc()
                self.pool.report(origin, ok=False)
                error = e
                if not e.retryable:
                    break
                continue
            self.metrics.origin_requests.labels(f"{resp.status // 100}xx").inc()
            self.pool.report(origin, ok=resp.status < 500)
            return resp
        assert error is not None
        raise error

    async def _fill(self, flight: Flight, req: FillRequest, resp: OriginResponse, entry: Entry) -> None:
        length_field = get_one(resp.headers, "content-length")
        length = int(length_field) if length_field and length_field.isdigit() else None
        cfg = self.cfg.cache
        small = length is None or length <= cfg.memory_object_max
        body_name = key_digest(entry.key)[:24] + secrets.token_hex(4)
        entry = replace(entry, body_name=body_name)
        try:
            fill = await Fill.create(
                self.store.disk.tmp, body_name, memory_limit=cfg.memory_object_max if small else 0
            )
        except OSError as e:
            log.warning("cannot create fill file: %s", e)
            self.metrics.storage_errors.inc()
            flight._offer(resp)
            self._settle(flight, Uncacheable(NotStorable.TOO_LARGE, resp.status))
            return
        flight._attach(fill)
        fill.acquire()  # the fill task's own reference, released at the end
        if entry.key != flight.key and self._flights.get(flight.key) is flight:
            del self._flights[flight.key]  # re-key to the variant: other variants start their own
            self._flights.setdefault(entry.key, flight)
            flight.key = entry.key
        self._settle(flight, Storing(entry, fill, length))
        try:
            async for chunk in self.client.body(resp):
                await fill.append(chunk)
            check_length(resp, fill.received)
            fill.complete = True
            entry = replace(entry, stored=replace(entry.stored, size=fill.received))
            if fill.memory is not None and fill.received <= self.cfg.cache.max_object_size:
                # Visible in memory before the next await, so no request falls between fill and store.
                self.store.remember(entry, bytes(fill.memory))
                self._unregister(flight)
            await fill.flush()
        except OriginError as e:
            resp.abort()
            self.metrics.fills.labels("failed").inc()
            log.warning("fill of %s failed: %s", req.primary, e)
            fill.fail(e)
            fill.release()
            return
        except BaseException as e:
            resp.abort()
            fill.fail(OriginError(f"fill aborted: {e!r}"))
            fill.release()
            raise
        resp.release()
        await self._commit(flight, entry, fill)

    async def _commit(self, flight: Flight, entry: Entry, fill: Fill) -> None:
        try:
            if fill.received > self.cfg.cache.max_object_size:
                self.metrics.fills.labels("too_large").inc()
                return
            if fill.memory is None:
                self.store.remember(entry, None)
            await self.store.persist(entry, SpooledBody(str(fill.path), fill.received))
            fill.adopted = True
            self.metrics.fills.labels("stored").inc()
        except StorageError as e:
            log.warning("storing %s failed, served from origin only: %s", entry.primary, e)
            self.metrics.storage_errors.inc()
        finally:
            self._unregister(flight)
            fill.end()
            fill.release()


def _status_error(status: int) -> OriginError:
    err = OriginError(f"origin answered {status}")
    err.status = status
    err.detail = f"origin-{status}"
    return err
