"""Serving a sliced object: a Range (or a whole GET) answered from stored slices, fetching missing ones.

Rules of this file: only the slices that hold the bytes asked are fetched, each one through the coalescer
(one origin request per slice however many clients ask); slices are streamed one after the other, never
assembled in memory; the response is built from one representation only: a slice of another one before
the first byte went out restarts the request once, after it aborts the connection. None means "not for
the slice path": the handler carries on as for any other object.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import IO, NoReturn

from edgecdn import clock
from edgecdn.cache import slices
from edgecdn.cache.entry import Entry
from edgecdn.cache.fill import Fill
from edgecdn.cache.store import Store
from edgecdn.config import Config
from edgecdn.errors import OriginError, StorageError
from edgecdn.fetch.coalesce import Coalescer, Failed, FillRequest, Flight, Revalidated, Storing, Uncacheable
from edgecdn.http.conditional import Precondition, if_range_matches
from edgecdn.http.ranges import ByteRange, FullBody, Unsatisfiable
from edgecdn.metrics import Metrics
from edgecdn.policy.decide import Fresh, Miss, RequestFacts, decide, ttl_left
from edgecdn.policy.freshness import current_age
from edgecdn.policy.slice import (
    Refused,
    Representation,
    SliceAsk,
    first_slice,
    plan_span,
    slices_for,
    slicing_applies,
    within,
)
from edgecdn.policy.status import CacheStatus, cache_status_field
from edgecdn.policy.stored import StoredResponse
from edgecdn.serve import respond
from edgecdn.serve import shed as shedding
from edgecdn.serve.request import Request
from edgecdn.serve.writer import Fields, ResponseWriter

log = logging.getLogger("edgecdn.slices")

CHUNK = 256 * 1024
UNSLICEABLE_MAX = 10_000  # objects remembered as not sliceable (oldest forgotten first)


class _Changed(Exception):
    """A slice of another representation than the one being answered."""


@dataclass(slots=True)
class Source:
    """One slice to copy from: a stored body file, or a fill in progress (read-while-write)."""

    index: int
    entry: Entry
    rep: Representation
    hit: bool
    revalidated: bool = False  # stale, and the origin said 304 to it
    file: IO[bytes] | None = None
    fill: Fill | None = None
    flight: Flight | None = None

    async def copy(self, out: ResponseWriter, offset: int, count: int) -> None:
        if self.file is not None:
            await out.sendfile(self.file.fileno(), offset, count)  # a stored slice: zero-copy
            return
        assert self.fill is not None
        end = offset + count
        while offset < end:
            chunk = await self.fill.read(offset, min(CHUNK, end - offset))
            if not chunk:
                raise ConnectionResetError("slice shorter than its record")
            await out.write(chunk)
            offset += len(chunk)

    async def close(self) -> None:
        if self.flight is not None:
            self.flight.leave()
            self.flight = None
        if self.file is not None:
            await asyncio.to_thread(self.file.close)
            self.file = None


Fetched = Source | Uncacheable | OriginError | ResponseWriter  # a writer: the shed 503 went out on it


class Slicer:
    """What the slice path needs of the edge: the config, the store, the coalescer, the metrics."""

    def __init__(self, cfg: Config, store: Store, coalescer: Coalescer, metrics: Metrics) -> None:
        self.cfg = cfg
        self.store = store
        self.coalescer = coalescer
        self.metrics = metrics
        self.enabled = any(rule.slice for rule in cfg.cache.rules)  # else one attribute read per request
        # primary -> until: the origin would not slice it (a 200, no strong ETag): the ordinary path, for
        # cache.hit_for_miss, instead of one refused slice request before every ordinary one.
        self._unsliceable: OrderedDict[str, float] = OrderedDict()

    async def serve(
        self, request: Request, out: ResponseWriter, primary: str, facts: RequestFacts
    ) -> ResponseWriter | None:
        """The answer from slices, or None when this request is not one for the slice path."""
        if not self.enabled or facts.has_auth or not slicing_applies(request.path, self.cfg.cache):
            return None
        now = clock.now()
        if not isinstance(decide(facts, None, now=now), Miss) or self._unsliceable.get(primary, 0.0) > now:
            return None  # a method, request no-store or only-if-cached: the ordinary path says so
        for _ in range(2):  # a representation that changes twice while we look is a 502
            try:
                try:
                    return await self._answer(request, out, primary, facts)
                except _Changed:
                    await self._drop(primary)
            except StorageError as e:  # recorded (counted, logged once per cause) by the store
                self.metrics.storage_errors.inc()
                if out.started:  # the head is out: only a cut connection is honest now
                    raise ConnectionResetError(f"slices of {primary}: {e}") from None
                return None  # nothing sent yet: the ordinary path answers from the origin
        field = cache_status_field(CacheStatus.ERROR, fwd="miss", detail="slice-changed")
        return respond.error(out, 502, "the object changed while it was being sliced", cache_status=field)

    async def _answer(
        self, request: Request, out: ResponseWriter, primary: str, facts: RequestFacts
    ) -> ResponseWriter | None:
        record = await self.store.blocking(slices.record, self.store.disk, primary)
        rep = record.representation if record is not None else None
        size = rep.slice_size if rep is not None else self.cfg.cache.slice_size
        range_field = request.headers.get("Range") if request.method == "GET" else None
        first = first_slice(range_field, size)
        got = await self._slice(request, primary, facts, first, rep, size, shed=out)
        if isinstance(got, Uncacheable) and got.status == 416 and first != 0:
            first = 0  # asked beyond the end: slice 0 tells the length, for a 416 of our own
            got = await self._slice(request, primary, facts, first, rep, size, shed=out)
        if not isinstance(got, Source):
            return self._not_served(out, primary, got)
        sources = [got]  # the one open at a time, closed however the answer ends
        try:
            if record is not None and got.rep != record.representation:
                raise _Changed(primary)
            stored = got.entry.stored
            if not if_range_matches(
                request.headers.get("If-Range"), etag=got.rep.etag, last_modified=stored.last_modified
            ):
                range_field = None
            span = plan_span(range_field, got.rep.length)
            fields, age = _representation_fields(stored)
            if isinstance(span, Unsatisfiable):
                return _unsatisfiable(out, fields, got.rep, got.hit, age=age)
            whole = isinstance(span, FullBody)
            if isinstance(span, FullBody):
                span = ByteRange(0, got.rep.length - 1)
            listed = record.body_of if record is not None else lambda _: None
            hit = got.hit and all(i == got.index or listed(i) for i in slices_for(span, got.rep.slice_size))
            _mark(out, fields, hit, got.revalidated, age=age, ttl=ttl_left(stored, age))
            pre = respond.precondition(request, replace(stored, status=200))
            if pre is not Precondition.PROCEED:
                return respond.not_modified(out, fields, pre)
            if not whole:
                fields["Content-Range"] = span.content_range(got.rep.length)
            out.start(200 if whole else 206, fields, length=span.length)
            if request.method != "HEAD":
                out.flush()  # the head first: a slice that breaks later must cut a started response
                await self._stream(request, out, primary, facts, span, sources)
            await out.end()
            return out
        finally:
            for src in sources:
                await src.close()

    async def _stream(
        self,
        request: Request,
        out: ResponseWriter,
        primary: str,
        facts: RequestFacts,
        span: ByteRange,
        sources: list[Source],
    ) -> None:
        """The bytes of `span`, slice after slice, from `sources[0]` on; one slice open at a time."""
        rep = sources[0].rep
        for index in slices_for(span, rep.slice_size):
            if sources[-1].index != index:
                await sources.pop().close()
                sources.append(await self._next(request, primary, facts, index, rep))
            offset, count = within(index, span, rep.slice_size)
            await sources[-1].copy(out, offset, count)

    async def _next(
        self, request: Request, primary: str, facts: RequestFacts, index: int, rep: Representation
    ) -> Source:
        """The next slice of a response already under way; anything but one of `rep` cuts it off."""
        try:
            fetched = await self._slice(request, primary, facts, index, rep, rep.slice_size)
        except _Changed:
            fetched = Uncacheable(Refused.CHANGED, 200)
        if isinstance(fetched, Source) and fetched.rep == rep:
            return fetched
        if isinstance(fetched, Source):
            await fetched.close()
        await self._drop(primary)
        _abort(f"slice {index} of {primary} changed or failed mid-response")

    async def _slice(
        self,
        request: Request,
        primary: str,
        facts: RequestFacts,
        index: int,
        rep: Representation | None,
        size: int,
        *,
        shed: ResponseWriter | None = None,
    ) -> Fetched:
        """Slice `index`: stored and fresh, else from its (coalesced) fill."""
        found = await self.store.blocking(slices.open_slice, self.store.disk, primary, index)
        stale: tuple[Entry, IO[bytes]] | None = None
        if found is not None:
            stored_rep, entry, file = found
            if rep is None or stored_rep == rep:
                if isinstance(decide(facts, entry.stored, now=clock.now()), Fresh):
                    return Source(index, entry, stored_rep, hit=True, file=file)
                rep, stale = stored_rep, (entry, file)  # revalidated, not fetched again, when unchanged
            else:
                await asyncio.to_thread(file.close)
        got: Fetched | None = None
        try:
            got = await self._fill(request, primary, index, rep, size, stale, shed=shed)
        finally:
            if stale is not None and not (isinstance(got, Source) and got.file is stale[1]):
                await asyncio.to_thread(stale[1].close)
        return got

    async def _fill(
        self,
        request: Request,
        primary: str,
        index: int,
        rep: Representation | None,
        size: int,
        stale: tuple[Entry, IO[bytes]] | None,
        *,
        shed: ResponseWriter | None,
    ) -> Fetched:
        """Slice `index` through its (coalesced) fill, or a 304 that keeps the stale one.

        With `shed` (the first slice of a request), a miss over the fill limit is answered 503 on it.
        """
        key = slices.slice_key(primary, index)
        if (
            shed is not None
            and (busy := shedding.refuse(self.cfg.shed, self.coalescer, self.metrics, key, shed)) is not None
        ):
            return busy
        fill_request = FillRequest(
            primary=primary,
            target=request.raw_path,
            path=request.path,
            headers=tuple(request.headers.items()),
            client_ip=request.remote,
            revalidate=stale[0] if stale is not None else None,
            slice=SliceAsk(index, size, expect=rep),
        )
        flight, owner = self.coalescer.join(key, fill_request)
        try:
            head = await asyncio.shield(flight.head)
        except BaseException:  # the client went away meanwhile: the fill carries on without it
            flight.leave()
            raise
        match head:
            case Storing(entry=entry, fill=fill, length=length) if flight.part is not None:
                arrived = fill.complete or (length is not None and fill.received >= length)
                hit = arrived and not owner  # the whole slice is in: as good as a stored one
                return Source(index, entry, flight.part.representation, hit=hit, fill=fill, flight=flight)
            case Uncacheable(reason=Refused.CHANGED) if rep is not None:
                flight.leave()
                raise _Changed(primary)
            case Failed(error=err):
                flight.leave()
                return err
            case Uncacheable() as refused:
                flight.leave()
                return refused
            case Revalidated(entry=entry) if stale is not None and rep is not None:
                flight.leave()
                return Source(index, entry, rep, hit=False, revalidated=True, file=stale[1])
            case Revalidated():  # joined another request's revalidation: the slice is stored again
                flight.leave()
                found = await self.store.blocking(slices.open_slice, self.store.disk, primary, index)
                if found is not None and found[0] == (rep or found[0]):
                    return Source(index, found[1], found[0], hit=False, revalidated=True, file=found[2])
                if found is not None:
                    await asyncio.to_thread(found[2].close)
                return OriginError("slice revalidated meanwhile, then gone")
            case Storing():
                flight.leave()
                return OriginError("slice fill gave no part")

    def _not_served(self, out: ResponseWriter, primary: str, got: Fetched) -> ResponseWriter | None:
        if isinstance(got, OriginError):
            log.warning("slice of %s: %s", primary, got)
            field = cache_status_field(CacheStatus.ERROR, fwd="miss", detail=got.detail)
            return respond.origin_error(out, got, cache_status=field)
        if isinstance(got, ResponseWriter):
            return got
        # The origin does not slice this object: the ordinary path answers, now and for a while.
        self._unsliceable[primary] = clock.now() + self.cfg.cache.hit_for_miss
        self._unsliceable.move_to_end(primary)
        while len(self._unsliceable) > UNSLICEABLE_MAX:
            self._unsliceable.popitem(last=False)
        return None

    async def _drop(self, primary: str) -> None:
        dropped = await self.store.blocking(slices.drop, self.store.disk, primary)
        log.info("%s: %d slices of an older representation dropped", primary, len(dropped))


# Set per response here, never taken from the stored slice's own fields.
_PER_RESPONSE = frozenset({"content-range", "content-length", "accept-ranges"})


def _representation_fields(stored: StoredResponse) -> tuple[Fields, float]:
    """The stored slice's fields, less what describes the slice itself, plus Accept-Ranges; and its age."""
    fields = Fields(tuple((n, v) for n, v in respond.client_fields(stored) if n.lower() not in _PER_RESPONSE))
    fields["Accept-Ranges"] = "bytes"
    return fields, current_age(stored.initial_age, stored.response_time, now=clock.now())


def _mark(
    out: ResponseWriter, fields: Fields, hit: bool, revalidated: bool = False, *, age: float, ttl: float
) -> None:
    if hit:
        status = CacheStatus.HIT
        field = cache_status_field(CacheStatus.HIT, ttl=ttl, detail="slices")
    elif revalidated:
        status = CacheStatus.REVALIDATED
        field = cache_status_field(CacheStatus.REVALIDATED, fwd="stale", fwd_status=304, detail="slices")
    else:
        status = CacheStatus.MISS
        field = cache_status_field(CacheStatus.MISS, fwd="miss", fwd_status=206, stored=True, detail="slices")
    respond.base_headers(out, fields, age=age, status=status, cache_status=field)


def _unsatisfiable(
    out: ResponseWriter, fields: Fields, rep: Representation, hit: bool, *, age: float
) -> ResponseWriter:
    _mark(out, fields, hit, age=age, ttl=0)
    fields["Content-Range"] = f"bytes */{rep.length}"
    out.send(416, fields.only(respond.EDGE_FIELDS | {"content-range", "date"}), b"")
    return out


def _abort(why: str) -> NoReturn:
    """Headers are out: the only honest end is a cut connection (the client sees a short body)."""
    log.warning("%s: connection aborted", why)
    raise ConnectionResetError(why)
