"""Request coalescing: one origin fetch per object however many clients ask at once.

Rules of this file: a flight belongs to the cache, not to the client that started it (it runs in its own
task); every waiter that joins a flight leaves it exactly once; a flight that fails fails all its waiters at
once, whatever the exception, and within a bounded time; a failure is the answer for its key for
`cache.error_ttl`; an uncacheable answer leaves a hit-for-miss marker so later requests skip the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

import xxhash
from multidict import CIMultiDict

from edgecdn import clock
from edgecdn.cache import slices
from edgecdn.cache.disk import new_body_name
from edgecdn.cache.entry import Entry
from edgecdn.cache.fill import Fill
from edgecdn.cache.store import Store
from edgecdn.config import Config
from edgecdn.errors import HashMismatch, OriginError, OriginTimeout, StorageError
from edgecdn.fetch.client import (
    OriginClient,
    OriginResponse,
    check_length,
    fill_allow,
    status_error,
    upstream_headers,
)
from edgecdn.fetch.pool import OriginPool
from edgecdn.fetch.resume import ResumeTarget, resumable_body
from edgecdn.fetch.shared_fill import SharedFills, stored_elsewhere
from edgecdn.http.fields import Headers, get_one
from edgecdn.metrics import Metrics
from edgecdn.policy import immutable
from edgecdn.policy.admit import REQUEST_SHAPED, Exchange, NotStorable, admit
from edgecdn.policy.key import variant_key
from edgecdn.policy.revalidate import conditional_headers, merge_304, validators_match
from edgecdn.policy.slice import Part, Refused, SliceAsk, check_part

log = logging.getLogger("edgecdn.fill")

HIT_FOR_MISS_MAX = 100_000  # markers kept at most (oldest dropped first); also failed keys kept
HEAD_MARGIN_S = 5.0  # a waiter waits origin.retry_deadline plus this for a head, then the flight fails
SETTLE_BUCKETS = 4096  # per-key settle counters, by hash: a collision costs a spare lookup, nothing else
UNCLAIMED_RESPONSE_S = 10.0  # an uncacheable response nobody took is closed after this
ERROR_STATUSES = frozenset({500, 502, 503, 504})  # RFC 5861 §4: "errors" for stale-if-error


@dataclass(frozen=True, slots=True)
class FillRequest:
    primary: str
    target: str  # path and query, as sent upstream
    path: str  # path only, for operator rules
    headers: Headers  # the starting client's request fields
    client_ip: str | None
    revalidate: Entry | None = None  # the stored entry, when this is a revalidation
    expect_hash: str | None = None  # a versioned URL's xxh3-64: the body is verified, then immutable
    slice: SliceAsk | None = None  # a slice fill (serve/slices.py): its key is the slice's key


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

    reason: NotStorable | Refused
    status: int


@dataclass(frozen=True, slots=True)
class Failed:
    error: OriginError


FlightHead = Storing | Revalidated | Uncacheable | Failed


class Flight:
    def __init__(self, key: str, primary: str = "") -> None:
        self.key = key
        self.primary = primary or key
        self.tags: tuple[str, ...] | None = None  # known once the response head is admitted
        self.doomed = False  # a purge matched it: it must not store anything
        self.writing: asyncio.Future[None] | None = None  # set while a store write is under way
        self.head: asyncio.Future[FlightHead] = asyncio.get_running_loop().create_future()
        self.fill: Fill | None = None
        self.part: Part | None = None  # a slice fill's accepted part, stored with its record
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
        self._active: set[Flight] = set()  # every running fill, joinable or not, until its write ends
        self._tasks: set[asyncio.Task[None]] = set()
        self._hit_for_miss: OrderedDict[str, float] = OrderedDict()
        self._failed: OrderedDict[str, tuple[float, Failed]] = OrderedDict()  # key: (until, failure)
        # primary -> (Vary names, flight) while a fill re-keyed to its variant runs: joiners key alike.
        self._varying: dict[str, tuple[tuple[str, ...], Flight]] = {}
        tokens = tuple(r.token_header for r in cfg.access.paths if r.token_header)
        self.allow = fill_allow((*cfg.origin.forward_headers, *tokens))
        # Counts flights leaving the table; a lookup that raced one of them looks again.
        self.settled = 0
        self._settles = [0] * SETTLE_BUCKETS
        self.shared: SharedFills | None = None  # set in a worker of several: fills coalesce across them

    @property
    def in_flight(self) -> int:
        """Fills that new requests can join (what overload shedding counts)."""
        return len(self._flights)

    @property
    def running(self) -> int:
        """Fill tasks not ended yet: a small object already answered from memory may still be on its way
        into the disk tier."""
        return len(self._active)

    def flying(self, key: str) -> bool:
        """Is a shared fill for `key` running? (Joining it costs the origin nothing.)"""
        return key in self._flights

    def settled_for(self, primary: str) -> int:
        """Moves whenever a flight of `primary` leaves the table (its object is in the store by then).

        A lookup that found nothing while this moved raced that flight's end: it looks again.
        """
        return self._settles[hash(primary) % SETTLE_BUCKETS]

    def join(self, key: str, req: FillRequest, *, shared: bool = True) -> tuple[Flight, bool]:
        """Join the flight for `key`, starting it if there is none; True when this call started it."""
        varying = self._varying.get(key)
        if varying is not None:
            key = variant_key(key, varying[0], CIMultiDict(req.headers))
        failed = self._recent_failure(key)
        if failed is not None:
            self.metrics.coalesced.inc()
            settled = Flight(key, req.primary)
            settled.head.set_result(failed)
            settled.join()
            return settled, False
        flight = self._flights.get(key) if shared else None
        owner = flight is None
        if flight is None:
            flight = Flight(key, req.primary)
            self._active.add(flight)
            if shared:
                self._flights[key] = flight
            task = asyncio.create_task(self._run(flight, req))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            bound = self.cfg.origin.retry_deadline + HEAD_MARGIN_S
            overdue = asyncio.get_running_loop().call_later(bound, self._overdue, flight, task, bound)
            flight.head.add_done_callback(lambda _: overdue.cancel())
        else:
            self.metrics.coalesced.inc()
        flight.join()
        return flight, owner

    def _recent_failure(self, key: str) -> Failed | None:
        entry = self._failed.get(key)
        if entry is None:
            return None
        if entry[0] < clock.monotonic():
            del self._failed[key]
            return None
        return entry[1]

    def _overdue(self, flight: Flight, task: asyncio.Task[None], bound: float) -> None:
        """No head after the bound: every waiter gets a 504 now, and the stuck fill is cancelled."""
        if flight.head.done():
            return
        log.error("fill of %s had no response head after %.0fs: cancelled", flight.primary, bound)
        self._settle(flight, Failed(OriginTimeout(f"no response head within {bound:.0f}s")))
        task.cancel()

    def refresh(self, key: str, req: FillRequest) -> None:
        """Start a background revalidation unless one is already running (stale-while-revalidate)."""
        if key in self._flights or self._recent_failure(key) is not None:
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
        """Drop what is known about a key: its hit-for-miss marker and a recent failure."""
        self._hit_for_miss.pop(primary, None)
        for key in [k for k in self._failed if k.partition("\x00")[0] == primary]:
            del self._failed[key]

    async def purge(self, match: Callable[[str, tuple[str, ...] | None], bool]) -> int:
        """Doom the running fills whose (primary, tags) match, so none of them stores anything.

        Doomed flights leave the table at once (later requests start a fresh fill), and a store write
        already under way is awaited, so the caller's own removal runs after it. `tags` is None while
        the response head is not in yet; `match` decides whether that counts (tag purges doom them).
        """
        writes: list[asyncio.Future[None]] = []
        doomed = 0
        for flight in list(self._active):
            if flight.doomed or not match(flight.primary, flight.tags):
                continue
            flight.doomed = True
            doomed += 1
            self._unregister(flight)
            if flight.writing is not None:
                writes.append(flight.writing)
        if writes:
            await asyncio.wait([asyncio.shield(w) for w in writes])
        return doomed

    async def close(self, grace: float = 10.0) -> None:
        """Let running fills finish (bounded by `grace`), then cancel what is left."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the fill task -----------------------------------------------------------------------------

    def adopt(self, key: str, req: FillRequest, resp: OriginResponse) -> Flight:
        """A fill of `key` from an answer the edge already has (a POST's response that RFC 9110 §9.3.3
        lets later GETs reuse): admitted and stored like any fill; the caller answers from the flight
        (an uncacheable answer is offered to it, as to an owner) and leaves it."""
        flight = Flight(key, req.primary)
        self._active.add(flight)
        self._flights[key] = flight  # a fill of the old answer was doomed by the invalidation before
        task = asyncio.create_task(self._run(flight, req, adopted=resp))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        flight.join()
        return flight

    async def _run(self, flight: Flight, req: FillRequest, adopted: OriginResponse | None = None) -> None:
        self.metrics.flights.inc()
        try:
            if adopted is None and self.shared is not None and self._flights.get(flight.key) is flight:
                async with self.shared.turn(flight.key) as waited:  # one fill per edge, not per worker
                    # A miss may have raced another worker's fill ending: what it stored is the answer.
                    # (Not for a slice: its answer must carry the part, which only a fetch tells.)
                    look = (waited or req.revalidate is None) and req.slice is None
                    if not (look and await self._stored_elsewhere(flight, req)):
                        await self._fetch(flight, req)
            else:
                await self._fetch(flight, req, adopted)
        except asyncio.CancelledError:
            self._settle(flight, Failed(OriginError("fill cancelled")))
            raise
        except Exception:
            # A bug or an unexpected library error: logged once, and every waiter gets a 502 at once.
            log.exception("fill of %s failed unexpectedly", req.primary)
            self.metrics.fills.labels("failed").inc()
            self._settle(flight, Failed(OriginError("fill failed")))
        finally:
            self.metrics.flights.dec()
            self._unregister(flight)
            self._active.discard(flight)

    async def _stored_elsewhere(self, flight: Flight, req: FillRequest) -> bool:
        """Another worker filled this key while we waited for its lock: answer from what it stored."""
        found = await stored_elsewhere(self.store, flight.key, CIMultiDict(req.headers), req.revalidate)
        if found is None:
            return False
        entry, fill = found
        if flight.doomed:  # a purge came meanwhile: what was stored may be its victim
            fill.acquire()
            fill.release()
            return False
        flight._attach(fill)
        fill.acquire()
        self.metrics.fills.labels("shared").inc()
        self._settle(flight, Storing(entry, fill, entry.stored.size))
        fill.release()
        return True

    def _unregister(self, flight: Flight) -> None:
        varying = self._varying.get(flight.primary)
        if varying is not None and varying[1] is flight:
            del self._varying[flight.primary]
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
            self.settled += 1
            self._settles[hash(flight.primary) % SETTLE_BUCKETS] += 1

    def _settle(self, flight: Flight, head: FlightHead) -> None:
        if not flight.head.done():
            flight.head.set_result(head)
            if isinstance(head, Failed):
                self._remember_failure(flight, head)
        if not isinstance(head, Storing):
            self._unregister(flight)

    def _remember_failure(self, flight: Flight, head: Failed) -> None:
        """A struggling origin is asked once per `cache.error_ttl` (a wrong versioned body is not one).

        Only a shared flight speaks for its key: one that ran alone (a request with Authorization, a
        hit-for-miss pass) failed for its own request, not for everybody's.
        """
        if flight.doomed or self.cfg.cache.error_ttl <= 0 or isinstance(head.error, HashMismatch):
            return
        if self._flights.get(flight.key) is not flight:
            return
        now = clock.monotonic()
        self._failed[flight.key] = (now + self.cfg.cache.error_ttl, head)
        self._failed.move_to_end(flight.key)
        # One TTL for all: the oldest entries expire first, so the table holds about one window's failures.
        while self._failed and (
            len(self._failed) > HIT_FOR_MISS_MAX or next(iter(self._failed.values()))[0] < now
        ):
            self._failed.popitem(last=False)

    async def _fetch(self, flight: Flight, req: FillRequest, adopted: OriginResponse | None = None) -> None:
        base = upstream_headers(req.headers, client_ip=req.client_ip, allow=self.allow)
        # The client's own range: asked for when the object is known not to be kept (too large, or
        # uncacheable), so a few bytes of it never pull the whole body (sliced paths ask by req.slice).
        ranged = tuple((n, v) for n, v in req.headers if n.lower() in ("range", "if-range"))
        ranged = base + ranged if any(n.lower() == "range" for n, _ in ranged) else ()
        headers = base
        if req.revalidate is not None:
            headers += tuple(conditional_headers(req.revalidate.stored).items())
        if req.slice is not None:  # a stale slice is revalidated: If-None-Match goes before If-Range
            headers, ranged = headers + slice_fields(req.slice), ()
        elif ranged and req.revalidate is None and self.is_hit_for_miss(req.primary, now=clock.now()):
            headers = ranged
        request_time = clock.now()
        if adopted is not None:
            resp = adopted
        else:
            try:
                resp = await self._send(req, headers)
            except OriginError as e:
                self._fail(flight, e)
                return
        try:
            await self._answered(
                flight, req, resp, base, ranged if headers is not ranged else (), request_time
            )
        except BaseException:
            if not flight.head.done():  # nobody took the response: its connection is not reused
                resp.abort()
            raise

    async def _answered(
        self,
        flight: Flight,
        req: FillRequest,
        resp: OriginResponse,
        base: Headers,
        ranged: Headers,
        request_time: float,
    ) -> None:
        """Admission of the origin's answer: revalidated, failed, uncacheable, or a fill to run."""
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
            entry = replace(old, stored=merged)
            if not flight.doomed:
                writing = flight.writing = asyncio.get_running_loop().create_future()
                try:
                    entry = await self.store.update(old, merged)
                except StorageError:
                    self.metrics.storage_errors.inc()
                finally:
                    writing.set_result(None)
            self.metrics.fills.labels("revalidated").inc()
            self._settle(flight, Revalidated(entry))
            return
        if old is not None and resp.status in ERROR_STATUSES:
            resp.release()
            self._settle(flight, Failed(status_error(resp.status)))
            return
        if req.slice is not None and resp.status >= 500:
            resp.release()  # an origin in trouble says nothing about the representation: keep the slices
            self._fail(flight, status_error(resp.status))
            return
        if req.slice is not None:
            part = check_part(req.slice, resp.status, resp.headers)
            if isinstance(part, Refused):
                resp.abort()  # a 200 here may be the whole object: not a byte more of it
                self._settle(flight, Uncacheable(part, resp.status))
                return
            flight.part = part
        has_auth = any(n.lower() == "authorization" for n, _ in req.headers)
        versioned = req.expect_hash is not None and resp.status == 200
        fields = immutable.immutable_headers(resp.headers) if versioned else resp.headers
        verdict = admit(
            Exchange(
                req.path,
                resp.status,
                fields,
                request_time,
                response_time,
                has_auth,
                slice=req.slice is not None,
            ),
            cfg=self.cfg.cache,
        )
        if req.slice is not None and not isinstance(verdict, NotStorable) and verdict.vary:
            resp.abort()
            self._settle(flight, Uncacheable(Refused.VARY, resp.status))
            return
        if versioned and not isinstance(verdict, NotStorable):
            verdict = immutable.pin(verdict)
        if isinstance(verdict, NotStorable) and resp.status >= 500 and resp.status not in REQUEST_SHAPED:
            # An origin in trouble: its waiters (and joiners for cache.error_ttl) share this one failure.
            resp.release()
            self._fail(flight, status_error(resp.status))
            return
        if isinstance(verdict, NotStorable):
            self.metrics.fills.labels("uncacheable").inc()
            if not has_auth:  # an answer to Authorization says nothing of other requests' answers
                self._mark_hit_for_miss(req.primary, response_time)
            if req.slice is not None:
                resp.abort()  # the slice path passes the client's own request instead
            elif verdict is NotStorable.TOO_LARGE and ranged:
                resp.abort()  # the client wants a part of an object this edge will not keep: ask for it
                try:
                    resp = await self._send(req, ranged)
                except OriginError as e:
                    self._fail(flight, e)
                    return
            flight._offer(resp)
            self._settle(flight, Uncacheable(verdict, resp.status))
            return
        flight.tags = verdict.tags
        await self._fill(
            flight,
            req,
            resp,
            base,
            Entry(
                key=flight.key
                if req.slice is not None
                else variant_key(req.primary, verdict.vary, CIMultiDict(req.headers)),
                primary=req.primary,
                stored=verdict,
            ),
        )

    def _fail(self, flight: Flight, error: OriginError) -> None:
        self.metrics.fills.labels("failed").inc()
        self._settle(flight, Failed(error))

    def _mark_hit_for_miss(self, primary: str, now: float) -> None:
        self._hit_for_miss[primary] = now + self.cfg.cache.hit_for_miss
        self._hit_for_miss.move_to_end(primary)
        while len(self._hit_for_miss) > HIT_FOR_MISS_MAX:
            self._hit_for_miss.popitem(last=False)

    async def _send(self, req: FillRequest, headers: Headers) -> OriginResponse:
        """The pool's retry loop: next origin on a retryable error or a retry status."""
        return await self.pool.send(
            self.client, "GET", req.target, headers, key=req.primary, client_ip=req.client_ip
        )

    def _body(self, req: FillRequest, resp: OriginResponse, headers: Headers) -> AsyncIterator[bytes]:
        """The origin body; one that breaks mid-way resumes from the next origin (fetch/resume.py)."""
        if req.slice is not None:
            return self.client.body(resp)  # a slice is asked again whole, never resumed
        want = ResumeTarget(req.primary, req.target, headers, req.client_ip, req.expect_hash is not None)
        return resumable_body(self.client, self.pool, want, resp)

    async def _fill(
        self, flight: Flight, req: FillRequest, resp: OriginResponse, headers: Headers, entry: Entry
    ) -> None:
        length_field = get_one(resp.headers, "content-length")
        length = int(length_field) if length_field and length_field.isdigit() else None
        cfg = self.cfg.cache
        small = length is None or length <= cfg.memory_object_max
        body_name = new_body_name(entry.key)
        entry = replace(entry, body_name=body_name)
        try:
            fill = await self.store.new_fill(body_name, memory_limit=cfg.memory_object_max if small else 0)
        except StorageError as e:
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
            if flight.key == flight.primary:
                # Until the store has the Vary marker, joiners of the primary are keyed by these names too.
                self._varying[flight.primary] = (entry.stored.vary, flight)
            flight.key = entry.key
        expect = req.expect_hash if resp.status == 200 else None
        # A small versioned body is verified before its head is shown, so a mismatch can still be a 502.
        verify_first = expect is not None and length is not None and length <= cfg.memory_object_max
        if not verify_first:
            self._settle(flight, Storing(entry, fill, length))
        hasher = xxhash.xxh3_64() if expect is not None else None
        held = b""  # a versioned body's newest chunk: readers get the last bytes only once verified
        try:
            async for chunk in self._body(req, resp, headers):
                if hasher is not None:
                    hasher.update(chunk)  # ~10 GB/s: per chunk on the loop costs microseconds
                    chunk, held = held, chunk
                    if not chunk:
                        continue
                await fill.append(chunk)
            check_length(resp, fill.received + len(held))
            if hasher is not None and hasher.hexdigest() != expect:
                self.metrics.hash_mismatches.inc()
                raise HashMismatch(f"{req.path}: body hashes to {hasher.hexdigest()}, not {expect}")
            if held:
                await fill.append(held)
            fill.finish()  # readers may end: storing it runs after them, never before them
            if verify_first:
                self._settle(flight, Storing(entry, fill, length))
            entry = replace(entry, stored=replace(entry.stored, size=fill.received))
            small_done = fill.memory is not None and fill.received <= self.cfg.cache.max_object_size
            if small_done and not flight.doomed and flight.part is None:
                # Visible in memory before the next await, so no request falls between fill and store.
                self.store.remember(entry, fill.whole())
                self._unregister(flight)
        except OriginError as e:
            resp.abort()
            self.metrics.fills.labels("failed").inc()
            log.warning("fill of %s failed: %s", req.primary, e)
            fill.fail(e)
            self._settle(flight, Failed(e))  # only when no head was shown yet (a verified-first fill)
            fill.release()
            return
        except StorageError as e:
            # The disk failed, not the origin: the store has counted and logged it (once per cause).
            # Readers already streaming are cut; nothing is stored, and the failure is not remembered as
            # the key's answer (doomed), so the next request goes to the origin again.
            resp.abort()
            self.metrics.fills.labels("failed").inc()
            fill.fail(OriginError(f"cache store failed: {e.cause}"))
            flight.doomed = True
            self._settle(flight, Failed(OriginError("cache store failed")))
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
                self._mark_hit_for_miss(entry.primary, clock.now())
                return
            if flight.doomed:
                self.metrics.fills.labels("purged").inc()
                return
            writing = flight.writing = asyncio.get_running_loop().create_future()
            try:
                if flight.part is not None:
                    await self._commit_slice(entry, fill, flight.part)
                else:
                    await self.store.commit(entry, fill)
            finally:
                writing.set_result(None)
            self.metrics.fills.labels("stored").inc()
        except StorageError as e:
            log.warning("storing %s failed, served from origin only: %s", entry.primary, e)
            self.metrics.storage_errors.inc()
        finally:
            self._unregister(flight)
            fill.end()
            fill.release()

    async def _commit_slice(self, entry: Entry, fill: Fill, part: Part) -> None:
        """A slice goes to the disk tier only, listed in its object's record (cache/slices.py)."""
        body = await fill.spool()
        dropped = await self.store.blocking(
            slices.put, self.store.disk, entry, body, part.index, part.representation
        )
        fill.adopted = True
        if dropped:
            log.info("%s: %d slices of another representation dropped", entry.primary, len(dropped))


def slice_fields(ask: SliceAsk) -> Headers:
    """RFC 9110 §14.2, §13.1.5: one slice, and only of the representation the stored slices belong to."""
    fields: Headers = (("Range", ask.range_field),)
    if ask.expect is not None:
        fields += (("If-Range", ask.expect.etag),)
    return fields
