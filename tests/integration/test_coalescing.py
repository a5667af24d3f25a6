"""Coalescing and failure handling with a gated origin: one fetch per object, no lost or partial bodies."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.conftest import EdgeFactory, OriginClient, Proc
from tests.integration.edge_client import Got, admin_url, get, metric, session, start_edge


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OriginClient, Proc]]:
    root = tmp_path_factory.mktemp("root")
    origin_proc = Proc("origin", "serve", str(root), "--listen", "127.0.0.1:0", "--test-hooks")
    edge = start_edge(origin_proc.url, tmp_path_factory.mktemp("cache"), "--no-access-log")
    try:
        yield OriginClient(origin_proc, root), edge
    finally:
        edge.stop()
        origin_proc.stop()


async def test_200_concurrent_clients_cause_one_origin_request(
    stack: tuple[OriginClient, Proc],
) -> None:
    origin, edge = stack
    path = "/_test/blob/50000?t=herd"
    async with session() as s:
        s.connector._limit = 0  # type: ignore[union-attr]  # 200 real connections at once
        tasks = [asyncio.create_task(get(s, edge.url + path, **{"X-Test-Gate": "herd"})) for _ in range(200)]
        await origin.await_gate("herd", 1)
        before = await metric(s, admin_url(edge), "edgecdn_coalesced_waiters_total")
        for _ in range(1000):  # every client is inside the edge, waiting on the one fill
            if before >= 199:
                break
            await asyncio.sleep(0.01)
            before = await metric(s, admin_url(edge), "edgecdn_coalesced_waiters_total")
        origin.release("herd")
        results = await asyncio.gather(*tasks)
    assert {r.status for r in results} == {200}
    assert {len(r.body) for r in results} == {50000}
    assert len({r.body for r in results}) == 1
    assert origin.hits(path) == 1


@pytest.mark.parametrize(
    ("size", "half"),
    [(400_000, 200_000), (3_000_000, 100_000)],
    ids=["memory-sized", "disk-sized-before-first-flush"],
)
async def test_waiters_read_while_the_fill_is_still_running(
    stack: tuple[OriginClient, Proc], size: int, half: int
) -> None:
    origin, edge = stack
    path = f"/_test/blob/{size}?t=rww"
    async with session() as s:
        owner = await s.get(edge.url + path, headers={"X-Test-Gate-After": f"rww{size}:{half}"})
        waiter = await s.get(edge.url + path)
        # The gate holds the rest of the body; both clients already get the first half.
        got_owner = await asyncio.wait_for(owner.content.readexactly(half), 10)
        got_waiter = await asyncio.wait_for(waiter.content.readexactly(half), 10)
        assert got_owner == got_waiter
        origin.release(f"rww{size}")
        rest = await waiter.read()
        await owner.read()
    assert len(got_waiter) + len(rest) == size
    assert origin.hits(path) == 1


async def test_client_disconnect_does_not_cancel_the_fill(stack: tuple[OriginClient, Proc]) -> None:
    origin, edge = stack
    path = "/_test/blob/300000?t=abandon"
    async with session() as s:
        first = await s.get(edge.url + path, headers={"X-Test-Gate-After": "abandon:1000"})
        await first.content.readexactly(1000)
        first.close()  # the client that started the fill goes away
        waiter = asyncio.create_task(get(s, edge.url + path))
        origin.release("abandon")
        got = await waiter
    assert got.status == 200 and len(got.body) == 300_000
    async with session() as s:
        again = await get(s, edge.url + path)
    assert again.x_cache == "HIT"
    assert origin.hits(path) == 1, edge.stderr_text()[-3000:]


async def test_uncacheable_answer_leaves_hit_for_miss_marker(stack: tuple[OriginClient, Proc]) -> None:
    origin, edge = stack
    path = "/_test/blob/100?t=hfm"
    no_store = {"X-Set-Cache-Control": "no-store"}
    async with session() as s:
        await get(s, edge.url + path, **no_store)
        # With the marker, two concurrent requests both reach the origin: nobody queues behind a fill.
        tasks = [
            asyncio.create_task(get(s, edge.url + path, **no_store, **{"X-Test-Gate": "hfm"}))
            for _ in range(2)
        ]
        await origin.await_gate("hfm", 2)
        origin.release("hfm")
        results = await asyncio.gather(*tasks)
    assert all(r.status == 200 for r in results)
    assert origin.hits(path) == 3


async def test_failed_fill_fails_all_waiters_at_once(stack: tuple[OriginClient, Proc]) -> None:
    origin, edge = stack
    path = "/_test/blob/100000?t=fail"
    async with session() as s:
        tasks = [
            asyncio.create_task(get(s, edge.url + path, **{"X-Test-Gate": "fail", "X-Test-Truncate": "10"}))
            for _ in range(20)
        ]
        await origin.await_gate("fail", 1)
        origin.release("fail")
        results = await asyncio.gather(*tasks, return_exceptions=True)
    # Every waiter saw a broken body (an exception or a short read), none got a fake complete one.
    for r in results:
        assert isinstance(r, (aiohttp.ClientError, asyncio.IncompleteReadError)) or len(r.body) < 100_000
    assert origin.hits(path) == 1
    async with session() as s:
        got = await get(s, edge.url + path)
    assert got.x_cache == "MISS" and len(got.body) == 100_000


async def test_disk_tier_survives_restart(
    stack: tuple[OriginClient, Proc], tmp_path: Path, edge: EdgeFactory
) -> None:
    origin, _ = stack
    cache = tmp_path / "restart-cache"
    path = "/_test/blob/2000000?t=restart"  # past the memory tier: served from disk after restart
    small = "/_test/blob/100?t=restart-small"
    first = edge(origin.url, "--no-access-log", cache_dir=cache)
    async with session() as s:
        await get(s, first.url + path)
        await get(s, first.url + small)
    assert first.stop() == 0
    second = edge(origin.url, "--no-access-log", cache_dir=cache)
    async with session() as s:
        big, tiny = await get(s, second.url + path), await get(s, second.url + small)
    assert (big.x_cache, tiny.x_cache) == ("HIT", "HIT")
    assert len(big.body) == 2_000_000
    assert origin.hits(path) == 1 and origin.hits(small) == 1


async def test_crash_during_fill_never_serves_a_partial_body(
    stack: tuple[OriginClient, Proc], tmp_path: Path, edge: EdgeFactory
) -> None:
    origin, _ = stack
    cache = tmp_path / "crash-cache"
    path = "/_test/blob/3000000?t=crash"
    crashing = edge(origin.url, "--no-access-log", cache_dir=cache)
    async with session() as s:
        resp = await s.get(crashing.url + path, headers={"X-Test-Gate-After": "crash:1000000"})
        await resp.content.readexactly(1_000_000)
        os.kill(crashing.pid, signal.SIGKILL)  # crash with a half-written body on disk
        crashing.stop()
        resp.close()
    origin.release("crash")
    assert any((cache / "tmp").iterdir())  # the crash left a half-written body behind
    restarted = edge(origin.url, "--no-access-log", cache_dir=cache)
    async with session() as s:
        got = await get(s, restarted.url + path)
    assert got.x_cache == "MISS" and len(got.body) == 3_000_000
    assert restarted.stop() == 0  # a clean stop finishes its own fill first
    assert not any((cache / "tmp").iterdir())  # and the crash's orphan was swept at start


async def wait_waiters(s: aiohttp.ClientSession, edge: Proc, before: float, n: int) -> None:
    """Bounded wait until n more requests joined a flight (every client is inside the edge)."""
    for _ in range(1000):
        if await metric(s, admin_url(edge), "edgecdn_coalesced_waiters_total") - before >= n:
            return
        await asyncio.sleep(0.01)


async def test_many_clients_on_hot_keys_fetch_each_key_once(stack: tuple[OriginClient, Proc]) -> None:
    """100 connections, 3000 requests over 60 cold keys (half with Vary): each key reaches the origin once.

    Lookups queue in the thread pool behind each other, so many of them end after the fill of their key
    did: such a lookup must look again rather than start a second fill.
    """
    origin, edge = stack
    paths = [f"/_test/blob/{1000 + i}?t=hot{i}" for i in range(60)]
    hooks = [
        {"X-Set-Cache-Control": "max-age=600", **({"X-Set-Vary": "Accept-Encoding"} if i % 2 else {})}
        for i in range(60)
    ]
    limit = asyncio.Semaphore(100)

    async def one(n: int) -> Got:
        async with limit:
            return await get(s, edge.url + paths[n % 60], **hooks[n % 60], **{"Accept-Encoding": "gzip"})

    async with session() as s:
        s.connector._limit = 100  # type: ignore[union-attr]
        results = await asyncio.gather(*(one(n) for n in range(3000)))
    assert {r.status for r in results} == {200}
    assert {p: origin.hits(p) for p in paths} == dict.fromkeys(paths, 1)


async def test_a_herd_on_a_failing_origin_sends_one_request(tmp_path: Path) -> None:
    """300 clients on an origin answering 500 share one failure; so do later ones within cache.error_ttl."""
    root = tmp_path / "root"
    root.mkdir()
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[cache]\nerror_ttl = "1h"\n')
    origin_proc = Proc("origin", "serve", str(root), "--listen", "127.0.0.1:0", "--test-hooks")
    origin = OriginClient(origin_proc, root)
    edge = start_edge(origin.url, tmp_path / "cache", "-c", str(cfg), "--no-access-log")
    path = "/_test/blob/100?t=herd500"
    failing = {"X-Test-Status": "500", "X-Test-Gate": "herd500"}
    try:
        async with session() as s:
            s.connector._limit = 0  # type: ignore[union-attr]
            before = await metric(s, admin_url(edge), "edgecdn_coalesced_waiters_total")
            herd = [asyncio.create_task(get(s, edge.url + path, **failing)) for _ in range(300)]
            await origin.await_gate("herd500", 1)
            await wait_waiters(s, edge, before, 299)
            origin.release("herd500")
            results = await asyncio.gather(*herd)
            later = [await get(s, edge.url + path, **failing) for _ in range(20)]
        assert [r.status for r in results + later] == [500] * 320
        assert origin.hits(path) == 1
    finally:
        edge.stop()
        origin_proc.stop()


async def test_a_range_of_an_object_too_large_to_store_asks_the_origin_for_the_range(
    origin: OriginClient, tmp_path: Path
) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[cache]\nmax_object_size = "1MiB"\n')
    edge = start_edge(origin.url, tmp_path / "cache", "-c", str(cfg), "--no-access-log")
    path = f"/_test/blob/{48 * 2**20}?t=bigrange"
    try:
        async with session() as s:
            got = [await get(s, edge.url + path, Range="bytes=0-0") for _ in range(3)]
            tail = await get(s, edge.url + path, Range="bytes=-10")
    finally:
        edge.stop()
    assert [(g.status, len(g.body)) for g in got] == [(206, 1)] * 3
    assert (tail.status, len(tail.body)) == (206, 10)
    seen = origin.requests(path)
    # The first request learns the size from a whole-object head (dropped at once); after that, the range.
    assert [r["headers"].get("Range") for r in seen[1:]] == ["bytes=0-0"] * 3 + ["bytes=-10"]
    assert len(seen) == 5


async def test_fifty_accept_encodings_make_at_most_four_origin_fetches(
    stack: tuple[OriginClient, Proc],
) -> None:
    origin, edge = stack
    path = "/_test/blob/2000?t=ae50"
    codings = ["gzip", "br", "zstd", "deflate", "x-gzip", "identity", "*", "compress"]
    values = sorted({f"{a};q=0.{i % 10}, {b}" for i, a in enumerate(codings) for b in codings})[:50]
    vary = {"X-Set-Vary": "Accept-Encoding", "X-Set-Cache-Control": "max-age=600"}
    async with session() as s:
        got = [await get(s, edge.url + path, **vary, **{"Accept-Encoding": v}) for v in values]
    assert len(values) == 50 and {g.status for g in got} == {200}
    assert origin.hits(path) <= 4
    assert {r["headers"]["Accept-Encoding"] for r in origin.requests(path)} <= {
        "br",
        "zstd",
        "gzip",
        "identity",
    }


async def test_clients_of_a_vary_object_join_its_fill_while_the_body_arrives(
    stack: tuple[OriginClient, Proc],
) -> None:
    origin, edge = stack
    path = "/_test/blob/400000?t=varyjoin"
    vary = {"X-Set-Vary": "Accept-Encoding", "X-Set-Cache-Control": "max-age=600", "Accept-Encoding": "gzip"}
    async with session() as s:
        first = await s.get(edge.url + path, headers={**vary, "X-Test-Gate-After": "varyjoin:100000"})
        await asyncio.wait_for(first.content.readexactly(100_000), 10)  # head in, body held
        before = await metric(s, admin_url(edge), "edgecdn_coalesced_waiters_total")
        joiners = [asyncio.create_task(get(s, edge.url + path, **vary)) for _ in range(20)]
        await wait_waiters(s, edge, before, 20)
        origin.release("varyjoin")
        rest = await first.read()
        got = await asyncio.gather(*joiners)
    assert len(rest) == 300_000 and {len(g.body) for g in got} == {400_000}
    assert origin.hits(path) == 1
