"""Content-hash versioned URLs with real processes: verified on fill, immutable, a mismatch never stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import xxhash

from tests.integration.conftest import OriginClient, Proc
from tests.integration.edge_client import admin_url, fills_stored, get, metric, session, start_edge

IMMUTABLE = "public, max-age=31536000, immutable"
SMALL_MAX = 64 * 1024  # cache.memory_object_max: at most this is verified before the head is sent

Stack = tuple[OriginClient, Proc, str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("root")
    config = tmp_path_factory.mktemp("cfg") / "edge.toml"
    config.write_text(f"[cache]\nmemory_object_max = {SMALL_MAX}\n")
    origin_proc = Proc("origin", "serve", str(root), "--listen", "127.0.0.1:0", "--test-hooks")
    edge = start_edge(origin_proc.url, tmp_path_factory.mktemp("cache"), "-c", str(config), "--no-access-log")
    try:
        yield OriginClient(origin_proc, root), edge, admin_url(edge)
    finally:
        edge.stop()
        origin_proc.stop()


def publish(root: Path, stem: str, ext: str, body: bytes, *, served: bytes | None = None) -> str:
    """Put `body` under its content-hash name; `served` replaces the bytes (a corrupted origin)."""
    name = f"{stem}.{xxhash.xxh3_64_hexdigest(body)}{ext}"
    (root / name).write_bytes(body if served is None else served)
    return "/" + name


async def test_versioned_object_is_verified_stored_and_served_immutable(stack: Stack) -> None:
    origin, edge, _ = stack
    path = publish(origin.root, "app", ".js", b"console.log('v1')\n" * 100)
    async with session() as s:
        # The origin's own freshness is replaced: a versioned name's bytes never change.
        first = await get(s, edge.url + path, **{"X-Set-Cache-Control": "max-age=0, must-revalidate"})
        second = await get(s, edge.url + path)
    assert first.status == 200 and first.x_cache == "MISS"
    assert second.x_cache == "HIT" and second.body == first.body
    assert first.headers["Cache-Control"] == second.headers["Cache-Control"] == IMMUTABLE
    assert origin.hits(path) == 1


async def test_one_changed_byte_is_502_nothing_stored_and_counted(stack: Stack) -> None:
    origin, edge, admin = stack
    body = b"body { color: red }\n" * 50
    path = publish(origin.root, "site", ".css", body, served=body[:-1] + b"!")
    async with session() as s:
        before = await metric(s, admin, "edgecdn_versioned_hash_mismatches_total")
        first = await get(s, edge.url + path)
        second = await get(s, edge.url + path)
        after = await metric(s, admin, "edgecdn_versioned_hash_mismatches_total")
    assert first.status == second.status == 502
    assert first.headers["Content-Type"].startswith("application/json")
    assert b"hash" in first.body
    assert after - before == 2
    assert origin.hits(path) == 2  # nothing was stored: the second request went to the origin again


async def test_large_mismatch_after_headers_aborts_the_connection_and_stores_nothing(stack: Stack) -> None:
    origin, edge, admin = stack
    body = bytes(range(256)) * (4 * SMALL_MAX // 256)  # streamed: the head goes out before the hash is known
    path = publish(origin.root, "big", ".bin", body, served=body[:-1] + b"\x00")
    async with session() as s:
        before = await metric(s, admin, "edgecdn_versioned_hash_mismatches_total")
        for _ in range(2):
            with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
                await get(s, edge.url + path)
        after = await metric(s, admin, "edgecdn_versioned_hash_mismatches_total")
    assert after - before == 2
    assert origin.hits(path) == 2


async def test_range_on_an_uncached_versioned_object_fetches_and_verifies_the_whole(stack: Stack) -> None:
    origin, edge, admin = stack
    body = bytes(range(256)) * 1000
    path = publish(origin.root, "data", ".bin", body)
    async with session() as s:
        stored = await metric(s, admin, "edgecdn_fills_total", result="stored")
        part = await get(s, edge.url + path, Range="bytes=1000-1999")
        await fills_stored(s, admin, stored + 1)  # the range is answered before the fill ends
        whole = await get(s, edge.url + path)
    assert part.status == 206 and part.body == body[1000:2000]
    assert whole.x_cache == "HIT" and whole.body == body
    assert origin.hits(path) == 1
    assert "Range" not in origin.requests(path)[0]["headers"]
