"""The disk tier failing under a real edge: a body file of the wrong size, a corrupt index, too many variants.

Each fault is a miss served from the origin, never a short or stale answer, and each is counted by cause.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.integration.conftest import EdgeFactory, OriginClient
from tests.integration.edge_client import admin_url, fills_stored, get, metric, session

SIZE = 2_000_000  # past the memory tier's per-object bound: answered from the disk tier


async def committed_body(s: aiohttp.ClientSession, admin: str, cache: Path, size: int) -> Path:
    """The body file of `size` bytes, once no fill runs any more (its fill committed it and left)."""
    for _ in range(500):  # bounded: 10 s at most
        if await metric(s, admin, "edgecdn_fills_in_flight") == 0:
            (path,) = [p for p in (cache / "index").rglob("*.val") if p.stat().st_size == size]
            return path
        await asyncio.sleep(0.02)
    raise AssertionError("the fill never finished")


async def test_a_body_file_shorter_than_its_entry_is_a_miss_and_is_counted(
    origin: OriginClient, edge: EdgeFactory, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    proc = edge(origin.url, "--no-access-log", cache_dir=cache)
    admin = admin_url(proc)
    path = f"/_test/blob/{SIZE}?t=truncated"
    async with session() as s:
        first = await get(s, proc.url + path)
        hit = await get(s, proc.url + path)
        stored = await committed_body(s, admin, cache, SIZE)
        with stored.open("r+b") as f:
            f.truncate(1000)
        after = await get(s, proc.url + path)
        again = await get(s, proc.url + path)
        faults = await metric(s, admin, "edgecdn_storage_faults_total", cause="size-mismatch")
    assert first.x_cache == "MISS" and len(first.body) == SIZE and hit.x_cache == "HIT"
    assert after.x_cache == "MISS" and after.body == first.body  # full bytes, from the origin
    assert again.x_cache == "HIT" and again.body == first.body
    assert origin.hits(path) == 2
    assert faults == 1


async def test_a_corrupt_index_is_moved_aside_and_the_edge_starts_empty(
    origin: OriginClient, edge: EdgeFactory, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    (cache / "index").mkdir(parents=True)
    (cache / "index" / "cache.db").write_bytes(b"this is not a SQLite database\n" * 200)
    (origin.root / "page.txt").write_text("served")
    proc = edge(origin.url, "--no-access-log", cache_dir=cache)
    async with session() as s:
        first = await get(s, proc.url + "/page.txt")
        second = await get(s, proc.url + "/page.txt")
        faults = await metric(s, admin_url(proc), "edgecdn_storage_faults_total", cause="corrupt-index")
    assert (first.status, first.body, first.x_cache) == (200, b"served", "MISS")
    assert second.x_cache == "HIT"
    (aside,) = cache.glob("index.corrupt-*")
    assert (aside / "cache.db").read_bytes().startswith(b"this is not")
    assert faults == 1
    assert "is corrupt" in proc.stderr_text()


async def test_the_variant_cap_holds_under_concurrent_fills(origin: OriginClient, edge: EdgeFactory) -> None:
    proc = edge(origin.url, "--no-access-log")
    path = "/_test/blob/100?t=vary-cap"
    hdrs = {"X-Set-Vary": "X-Variant", "X-Set-Cache-Control": "max-age=600"}
    values = [f"v{i}" for i in range(300)]
    async with session() as s:
        gate = asyncio.Semaphore(30)

        async def one(value: str) -> str:
            async with gate:
                return (await get(s, proc.url + path, **hdrs, **{"X-Variant": value})).x_cache

        filled = await asyncio.gather(*(one(v) for v in values))
        rescan = [await one(v) for v in values]  # sequential: each miss stores one more and evicts one
        # The index learns of a fill after its client is answered: wait (bounded) until every miss is.
        await fills_stored(s, admin_url(proc), (filled + rescan).count("MISS"))
        evicted = await metric(s, admin_url(proc), "edgecdn_variants_evicted_total")
    assert set(filled) <= {"MISS", "HIT"}
    assert rescan.count("HIT") <= 16
    assert origin.hits(path) >= len(values) * 2 - 16
    assert evicted >= 2 * len(values) - 16 - 16
