"""The coalescer and Fill against a scripted fake origin client: settling, bounds, failures, cancellation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from edgecdn.cache.fill import Fill
from edgecdn.cache.store import Store
from edgecdn.config import CacheConfig, Config, OriginConfig, OriginServer
from edgecdn.errors import OriginBodyError, OriginError, OriginTimeout
from edgecdn.fetch import coalesce
from edgecdn.fetch.client import OriginResponse
from edgecdn.fetch.coalesce import Coalescer, Failed, FillRequest, Flight, Storing, Uncacheable
from edgecdn.fetch.pool import OriginPool
from edgecdn.metrics import Metrics
from edgecdn.policy.admit import NotStorable
from edgecdn.serve.handler import Handler

ORIGIN = "http://a"
CACHEABLE = (("Cache-Control", "max-age=600"), ("Content-Length", "6"))


class FakeRaw:
    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer
        self.released = self.closed = False

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


@dataclass
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = CACHEABLE
    chunks: tuple[bytes, ...] = (b"abc", b"def")
    head_gate: asyncio.Event | None = None  # the head waits for this
    body_gate: asyncio.Event | None = None  # the body's second chunk waits for this


@dataclass
class FakeClient:
    """Answers every send with `answer` (or `by_target[target]`); records what was sent."""

    answer: Answer = field(default_factory=Answer)
    by_target: dict[str, Answer] = field(default_factory=dict)
    sent: list[tuple[tuple[str, str], ...]] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    raws: list[FakeRaw] = field(default_factory=list)

    async def send(
        self, origin: str, method: str, target: str, headers: Any, body: Any = None
    ) -> OriginResponse:
        self.sent.append(tuple(headers))
        self.targets.append(target)
        answer = self.by_target.get(target, self.answer)
        if answer.head_gate is not None:
            await answer.head_gate.wait()
        raw = FakeRaw(answer)
        self.raws.append(raw)
        return OriginResponse(answer.status, answer.headers, raw, origin)  # type: ignore[arg-type]

    async def body(self, resp: OriginResponse) -> AsyncIterator[bytes]:
        answer: Answer = resp.raw.answer  # type: ignore[attr-defined]
        for i, chunk in enumerate(answer.chunks):
            if i and answer.body_gate is not None:
                await answer.body_gate.wait()
            yield chunk


class FakeRequest:
    headers: CIMultiDict[str] = CIMultiDict()


def make(tmp_path: Path, client: FakeClient, **cache: Any) -> Coalescer:
    origin = OriginConfig(retry_deadline=5.0)
    cfg = Config(origins=(OriginServer(ORIGIN),), origin=origin, cache=replace(CacheConfig(), **cache))
    cfg = replace(cfg, cache=replace(cfg.cache, dir=str(tmp_path / "cache")))
    store = Store(cfg.cache)
    pool = OriginPool(cfg.origins, cfg.origin, Metrics())
    return Coalescer(store, client, pool, cfg, Metrics())  # type: ignore[arg-type]


def request(target: str = "/o", **headers: str) -> FillRequest:
    path = target.split("?")[0]
    return FillRequest(
        primary=target, target=target, path=path, headers=tuple(headers.items()), client_ip="10.0.0.1"
    )


async def body_of(flight: Flight) -> bytes:
    head = await flight.head
    assert isinstance(head, Storing)
    out, offset = b"", 0
    while chunk := await head.fill.read(offset, 1 << 16):
        out += chunk
        offset += len(chunk)
    return out


async def settle(c: Coalescer) -> None:
    await asyncio.gather(*c._tasks, return_exceptions=True)


# -- item 7: any failure settles the flight -------------------------------------------------------


async def test_an_unexpected_exception_fails_every_waiter_once_and_is_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("admission bug")

    monkeypatch.setattr(coalesce, "admit", broken)
    c = make(tmp_path, FakeClient())
    flights = [c.join("/o", request())[0] for _ in range(5)]
    heads = await asyncio.wait_for(asyncio.gather(*(f.head for f in flights)), 5)
    assert {type(h) for h in heads} == {Failed}
    assert {h.error.status for h in heads if isinstance(h, Failed)} == {502}
    await settle(c)
    assert all(t.done() for t in c._tasks) and c.in_flight == 0
    assert len([r for r in caplog.records if "failed unexpectedly" in r.getMessage()]) == 1
    assert c.client.raws[0].closed or c.client.raws[0].released  # type: ignore[attr-defined]


async def test_waiters_have_a_bounded_wait_for_a_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coalesce, "HEAD_MARGIN_S", 0.0)
    never = asyncio.Event()
    client = FakeClient(Answer(head_gate=never))
    c = make(tmp_path, client)
    c.cfg = replace(c.cfg, origin=replace(c.cfg.origin, retry_deadline=0.05))
    c.pool.cfg = replace(c.pool.cfg, retry_deadline=3600.0)  # the pool itself would wait for an hour
    flight, _ = c.join("/o", request())
    head = await asyncio.wait_for(flight.head, 5)
    assert isinstance(head, Failed) and isinstance(head.error, OriginTimeout)
    await settle(c)
    assert c.in_flight == 0 and not c._tasks


# -- item 12b: a failure is shared ------------------------------------------------------------------


async def test_a_herd_on_an_origin_answering_500_sends_one_request_per_error_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(coalesce.clock, "monotonic", lambda: now[0])
    gate = asyncio.Event()
    client = FakeClient(Answer(status=500, headers=(), chunks=(b"oops",), head_gate=gate))
    c = make(tmp_path, client, error_ttl=1.0)
    herd = [c.join("/o", request())[0] for _ in range(300)]
    gate.set()
    heads = await asyncio.gather(*(f.head for f in herd))
    assert all(isinstance(h, Failed) and h.error.status == 500 for h in heads)
    later = [c.join("/o", request())[0] for _ in range(50)]  # within the window: no new request
    assert all(isinstance(f.head.result(), Failed) for f in later)
    assert len(client.sent) == 1 and client.raws[0].released
    now[0] += 1.5  # the window passed: one new request
    c.join("/o", request())
    c.join("/o", request())
    await settle(c)
    assert len(client.sent) == 2


async def test_forget_drops_a_shared_failure(tmp_path: Path) -> None:
    client = FakeClient(Answer(status=503, headers=()))
    c = make(tmp_path, client, error_ttl=60.0)
    flight, _ = c.join("/o", request())
    assert isinstance(await flight.head, Failed)
    c.forget("/o")
    c.join("/o", request())
    await settle(c)
    assert len(client.sent) == 2


async def test_request_shaped_errors_are_not_shared(tmp_path: Path) -> None:
    client = FakeClient(Answer(status=431, headers=(("Cache-Control", "max-age=600"),)))
    c = make(tmp_path, client)
    flight, owner = c.join("/o", request())
    head = await flight.head
    assert owner and isinstance(head, Uncacheable) and head.reason is NotStorable.REQUEST_ERROR
    resp = flight.claim_response()
    assert resp is not None and resp.status == 431
    resp.release()


# -- item 12a: joiners of a Vary fill in its body phase ----------------------------------------------


async def test_joiners_of_a_vary_fill_share_it_while_its_body_arrives(tmp_path: Path) -> None:
    gate = asyncio.Event()
    vary = (*CACHEABLE, ("Vary", "Accept-Encoding"))
    client = FakeClient(Answer(headers=vary, body_gate=gate))
    c = make(tmp_path, client)
    first, _ = c.join("/o", request(**{"Accept-Encoding": "gzip"}))
    assert isinstance(await first.head, Storing)  # re-keyed to its variant, body still coming
    same, owner = c.join("/o", request(**{"Accept-Encoding": "gzip, deflate"}))
    other, other_owner = c.join("/o", request(**{"Accept-Encoding": "br"}))
    assert same is first and not owner
    assert other is not first and other_owner
    gate.set()
    assert await body_of(first) == b"abcdef"
    for f in (first, same, other):
        f.leave()
    await settle(c)
    assert len(client.sent) == 2
    assert dict(client.sent[0])["Accept-Encoding"] == "gzip"


# -- item 12a: a lookup that raced the end of its key's fill -------------------------------------------


async def until(check: Any) -> None:
    """Bounded wait for a state other tasks or threads reach (no sleeping on time)."""
    for _ in range(10_000):
        if check():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("state not reached")


async def test_a_lookup_that_raced_its_own_fill_ending_looks_again_instead_of_fetching_twice(
    tmp_path: Path,
) -> None:
    """The disk lookup of /o is held while another key's fill ends, then again while /o's own fill ends.

    Only the settling of /o's own flight makes the lookup look again; it never returns "nothing" after
    /o's fill left the table without having looked after it.
    """
    o_body = asyncio.Event()
    client = FakeClient(by_target={"/o": Answer(body_gate=o_body)})
    c = make(tmp_path, client)
    bucket = hash("/o") % coalesce.SETTLE_BUCKETS
    other = next(k for k in (f"/p{i}" for i in range(100)) if hash(k) % coalesce.SETTLE_BUCKETS != bucket)
    handler = Handler(c.cfg, c.store, c.client, c.pool, c, Metrics())  # type: ignore[arg-type]
    gates = [threading.Event(), threading.Event()]
    calls: list[str] = []
    real = c.store._lookup_disk

    def gated(primary: str, headers: Any) -> Any:
        n = len(calls)
        calls.append(primary)
        found = real(primary, headers)
        if n < len(gates):
            gates[n].wait(10)
        return found

    c.store._lookup_disk = gated  # type: ignore[method-assign]
    running, _ = c.join("/o", request("/o"))  # /o's fill: head in, body held
    assert isinstance(await running.head, Storing)
    lookup = asyncio.create_task(handler.lookup(FakeRequest(), "/o"))  # type: ignore[arg-type]
    await until(lambda: len(calls) == 1)
    quick, _ = c.join(other, request(other))  # another key's fill ends meanwhile
    assert await body_of(quick) == b"abcdef"
    quick.leave()
    await until(lambda: c.in_flight == 1)
    gates[0].set()
    await until(lambda: lookup.done() or len(calls) == 2)
    early = lookup.done()
    if early:  # nothing stored yet and /o still in flight: the request joins it
        assert await lookup is None
        joined, owner = c.join("/o", request("/o"))
        assert joined is running and not owner
        joined.leave()
    o_body.set()
    assert await body_of(running) == b"abcdef"
    running.leave()
    await until(lambda: c.in_flight == 0)
    gates[1].set()
    if not early:  # the lookup looked again while /o's fill ended: it must find what that fill stored
        found = await lookup
        if found is None:
            c.join("/o", request("/o"))[0].leave()
    await settle(c)
    assert client.targets.count("/o") == 1


# -- item 13: a range of an object too large to keep -------------------------------------------------


async def test_a_range_of_a_too_large_object_is_forwarded_with_its_range(tmp_path: Path) -> None:
    big = (("Cache-Control", "max-age=600"), ("Content-Length", str(48 * 2**20)), ("ETag", '"e"'))
    client = FakeClient(Answer(headers=big))
    c = make(tmp_path, client, max_object_size=2**20)
    ranged = request(Range="bytes=0-0", **{"If-Range": '"e"'})
    flight, owner = c.join("/big", ranged)
    head = await flight.head
    assert owner and isinstance(head, Uncacheable) and head.reason is NotStorable.TOO_LARGE
    assert client.raws[0].closed  # the full answer was dropped after its head
    assert dict(client.sent[1])["Range"] == "bytes=0-0" and dict(client.sent[1])["If-Range"] == '"e"'
    resp = flight.claim_response()
    assert resp is not None
    resp.release()
    flight.leave()
    # Known too large now: the next ranged request asks for its range at once, once.
    again, _ = c.join("/big", ranged, shared=False)
    await again.head
    assert len(client.sent) == 3 and dict(client.sent[2])["Range"] == "bytes=0-0"
    assert "Range" not in dict(client.sent[0])


# -- cancellation -----------------------------------------------------------------------------------


async def test_a_cancelled_waiter_leaves_and_the_fill_goes_on_for_the_others(tmp_path: Path) -> None:
    gate = asyncio.Event()
    client = FakeClient(Answer(body_gate=gate))
    c = make(tmp_path, client)
    leaver, _ = c.join("/o", request())
    stayer, _ = c.join("/o", request())

    async def wait_and_leave() -> None:
        try:
            await body_of(leaver)
        finally:
            leaver.leave()

    task = asyncio.create_task(wait_and_leave())
    await asyncio.sleep(0)
    await stayer.head
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    assert await body_of(stayer) == b"abcdef"
    stayer.leave()
    await settle(c)
    assert c.store.memory.get("/o") is not None


async def test_closing_cancels_a_running_fill_and_its_waiters_fail_with_no_file_left(tmp_path: Path) -> None:
    gate = asyncio.Event()
    c = make(tmp_path, FakeClient(Answer(body_gate=gate)))
    flight, _ = c.join("/o", request())
    head = await flight.head
    assert isinstance(head, Storing)
    await c.close(grace=0)
    with pytest.raises(OriginError):
        await body_of(flight)
    flight.leave()
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []
    assert c.in_flight == 0


async def test_cancelled_before_the_head_every_waiter_fails(tmp_path: Path) -> None:
    c = make(tmp_path, FakeClient(Answer(head_gate=asyncio.Event())))
    flights = [c.join("/o", request())[0] for _ in range(3)]
    await asyncio.sleep(0)
    await c.close(grace=0)
    assert all(isinstance(f.head.result(), Failed) for f in flights)


# -- Fill ---------------------------------------------------------------------------------------------


async def test_fill_readers_read_while_it_is_written_and_see_a_failure(tmp_path: Path) -> None:
    fill = await Fill.create(tmp_path, "body", memory_limit=0)
    fill.acquire()
    reader = asyncio.create_task(fill.read(0, 10))
    await asyncio.sleep(0)
    assert not reader.done()  # waits for bytes, never for a flush
    await fill.append(b"hello")
    assert await reader == b"hello"
    await fill.flush()
    assert await fill.read(1, 3) == b"ell"
    late = asyncio.create_task(fill.read(5, 10))
    await asyncio.sleep(0)
    fill.fail(OriginBodyError("cut"))
    with pytest.raises(OriginBodyError):
        await late
    fill.release()
    assert not (tmp_path / "body").exists()


async def test_a_fill_file_stays_while_a_reader_holds_it_and_goes_with_the_last(tmp_path: Path) -> None:
    fill = await Fill.create(tmp_path, "body", memory_limit=1 << 20)
    fill.acquire()
    await fill.append(b"x" * 10)
    await fill.flush()  # a small body has a file once flushed (else the index writer writes it)
    fill.complete = True
    fill.end()
    assert (tmp_path / "body").exists()
    assert await fill.read(0, 100) == b"x" * 10 and await fill.read(10, 100) == b""
    fill.release()
    assert not (tmp_path / "body").exists()


async def test_expired_failures_leave_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(coalesce.clock, "monotonic", lambda: now[0])
    c = make(tmp_path, FakeClient(Answer(status=502, headers=())), error_ttl=1.0)
    for key in ("/a", "/b"):
        await c.join(key, request(key))[0].head
    now[0] += 2
    await c.join("/c", request("/c"))[0].head
    assert list(c._failed) == ["/c"]
