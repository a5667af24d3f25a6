"""The store at scale: memory per cached object, prefix and tag purge cost, restart to first hit.

    .venv/bin/python loadtests/store_scale.py --objects 100000 [--objects 1000000] [--hot 100000] [--keep DIR]

For each size N it writes N entries straight into a fresh disk tier (in-process, batched transactions, as
the edge would have stored them: realistic headers, one of 1000 tags each, keys /s/<group>/<i>.css with
1000 objects per group; bodies are empty unless --body-bytes), then:

1. starts a real edge on that directory and times spawn → ready → first HIT (restart to first hit);
2. GETs `--hot` objects through it (32 connections), so they sit in its memory tier, and reads the edge's
   RSS before and after (VmRSS), and its per-tier usage from /_edge/stats;
3. purges one prefix (/s/0042/: 1000 objects) and one tag (N/1000 objects) through the signed admin API,
   each timed, with what it removed;
4. stops the edge and times, in-process, what a purge cost before the index (a walk of every record).

A second pass of (2) with the default memory tier (`--memory-size` unset) shows the bound holding.
Also prints the Python heap per memory-tier object (tracemalloc), in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgecdn.cache.disk import DiskTier, SpooledBody, new_body_name  # noqa: E402
from edgecdn.cache.entry import Entry, from_record, to_record  # noqa: E402
from edgecdn.cache.memory import MemoryObject, MemoryTier  # noqa: E402
from edgecdn.control.admin_client import fan_out  # noqa: E402
from edgecdn.control.signing import generate_key, parse_key  # noqa: E402
from edgecdn.http.dates import format_http_date  # noqa: E402
from edgecdn.policy.stored import StoredResponse  # noqa: E402
from tests.integration.conftest import Proc  # noqa: E402
from tests.integration.edge_client import admin_url, start_edge  # noqa: E402

GROUP = 1000  # objects per /s/<group>/ prefix
TAGS = 1000  # distinct tags, one per object
BATCH = 5000  # entries per index transaction while populating


def key_of(i: int) -> str:
    return f"/s/{i // GROUP:04d}/{i:07d}.css"


def entry_of(i: int, now: float, body_name: str | None, size: int) -> Entry:
    date = format_http_date(now)
    headers = (
        ("content-type", "text/css; charset=utf-8"),
        ("etag", f'"{i:08x}-5f3a9c"'),
        ("last-modified", date),
        ("cache-control", "public, max-age=86400"),
        ("date", date),
        ("accept-ranges", "bytes"),
    )
    stored = StoredResponse(
        status=200,
        headers=headers,
        size=size,
        response_time=now,
        initial_age=0.0,
        lifetime=86400.0,
        etag=f'"{i:08x}-5f3a9c"',
        last_modified=date,
        tags=(f"g{i % TAGS}",),
    )
    key = key_of(i)
    return Entry(key, key, stored, body_name)


def populate(directory: Path, n: int, body_bytes: int) -> float:
    disk = DiskTier(directory, 1 << 40)
    now = time.time()
    started = time.perf_counter()
    body = b"x" * body_bytes
    for start in range(0, n, BATCH):
        with disk.index.transact():
            for i in range(start, min(n, start + BATCH)):
                name = new_body_name(key_of(i)) if body_bytes else None
                spooled = None
                if name is not None:
                    path = disk.tmp / name
                    path.write_bytes(body)
                    spooled = SpooledBody(str(path), body_bytes)
                disk.put(entry_of(i, now, name, body_bytes), spooled, 16)
    took = time.perf_counter() - started
    assert disk.count() == n, disk.count()
    disk.close()
    return took


def rss_kib(pid: int) -> int:
    """Resident anonymous memory (the heap): file pages such as SQLite's mmap of the index are shared
    page cache the kernel can drop, printed apart by `file_kib`."""
    return _smaps(pid)["Anonymous:"]


def file_kib(pid: int) -> int:
    rollup = _smaps(pid)
    return rollup["Rss:"] - rollup["Anonymous:"]


def _smaps(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    return {parts[0]: int(parts[1]) for parts in (line.split() for line in lines) if len(parts) == 3}


async def get_all(base: str, keys: list[str], connections: int = 32) -> dict[str, int]:
    seen: dict[str, int] = {}
    queue = iter(keys)
    conn = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=conn, trust_env=False) as s:

        async def worker() -> None:
            for key in queue:
                async with s.get(base + key) as r:
                    await r.read()
                    status = r.headers.get("X-Cache", str(r.status))
                    seen[status] = seen.get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    return seen


async def stats(admin: str) -> dict[str, object]:
    async with aiohttp.ClientSession(trust_env=False) as s, s.get(admin + "/_edge/stats") as r:
        body: dict[str, object] = json.loads(await r.text())
        return body


async def purge(key: str, admin: str, payload: dict[str, object]) -> tuple[float, object]:
    started = time.perf_counter()
    (result,) = await fan_out(parse_key(key), [admin], "POST", "/_edge/purge", payload)
    took = time.perf_counter() - started
    assert result.ok, result.body
    return took, result.body["purged"] if isinstance(result.body, dict) else result.body


def first_hit(origin: str, cache: Path, key: str, *extra: str) -> tuple[Proc, float, float]:
    """Spawn an edge on `cache`; seconds to ready and to the first HIT of `key` (a few tries at most)."""
    started = time.perf_counter()
    edge = start_edge(origin, cache, "--no-access-log", *extra)
    ready = time.perf_counter() - started
    try:
        for _ in range(3):
            with urllib.request.urlopen(edge.url + key, timeout=30) as r:
                r.read()
                if r.headers.get("X-Cache") == "HIT":
                    return edge, ready, time.perf_counter() - started
        raise RuntimeError(f"{key} is no HIT on a restarted edge")
    except BaseException:
        edge.stop()
        raise


async def hot_pass(origin: str, cache: Path, n: int, hot: int, extra: tuple[str, ...]) -> dict[str, object]:
    edge, ready, hit = first_hit(origin, cache, key_of(0), *extra)
    try:
        admin = admin_url(edge)
        before = rss_kib(edge.pid)
        step = max(1, n // hot)
        keys = [key_of(i) for i in range(0, n, step)][:hot]
        started = time.perf_counter()
        seen = await get_all(edge.url, keys)
        took = time.perf_counter() - started
        after = rss_kib(edge.pid)
        file_pages = file_kib(edge.pid)
        usage = (await stats(admin))["store"]
        return {
            "ready_s": ready,
            "first_hit_s": hit,
            "requests": len(keys),
            "x_cache": seen,
            "req_per_s": len(keys) / took,
            "rss_before_mib": before / 1024,
            "rss_after_mib": after / 1024,
            "rss_per_hot_object_b": (after - before) * 1024 / len(keys),
            "file_mib": file_pages / 1024,
            "store": usage,
            "edge": edge,
        }
    except BaseException:
        edge.stop()
        raise


def old_walk(cache: Path) -> float:
    """What a prefix or tag purge cost before the index: every record read (the walk main did)."""
    disk = DiskTier(cache, 1 << 40)
    started = time.perf_counter()
    every_key = disk.keys()
    found = sum(1 for k in every_key if isinstance(disk.get(k), Entry))
    took = time.perf_counter() - started
    disk.close()
    assert found > 0
    return took


def heap_per_object(cache: Path, n: int) -> float:
    """Python heap of memory-tier objects, as the edge holds them (records read back from the index)."""
    disk = DiskTier(cache, 1 << 40)
    entries = [e for i in range(min(n, 20000)) if isinstance(e := disk.get(key_of(i)), Entry)]
    disk.close()
    tier = MemoryTier(1 << 40, 1 << 20)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for e in entries:
        e = from_record(to_record(e))  # a fresh copy, as a promotion from the disk tier makes
        assert isinstance(e, Entry)
        tier.put(e.key, MemoryObject(e, b""))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / len(entries)


async def measure(n: int, hot: int, body_bytes: int, root: Path, origin: str) -> None:
    key = generate_key("scale")
    cache = root / f"cache-{n}"
    if cache.exists():  # --keep: a directory an earlier run populated (less what its purges removed)
        print(f"\n== {n} objects: reusing {cache}")
    else:
        fill_s = populate(cache, n, body_bytes)
        print(f"\n== {n} objects (bodies {body_bytes} B): populated in {fill_s:.1f} s")
    print(f"python heap per memory-tier object (tracemalloc): {heap_per_object(cache, n):.0f} B")
    big = await hot_pass(origin, cache, n, hot, ("--memory-size", "8GiB", "--admin-key", key))
    edge = big.pop("edge")
    assert isinstance(edge, Proc)
    try:
        group = f"/s/{min(42, n // GROUP - 1):04d}/"
        prefix_s, prefix_removed = await purge(key, admin_url(edge), {"prefixes": [group]})
        tag_s, tag_removed = await purge(key, admin_url(edge), {"tags": ["g7"]})
        miss_s, _ = await purge(key, admin_url(edge), {"prefixes": ["/nothing/"]})
    finally:
        edge.stop()
    print(f"restart: ready {big['ready_s']:.2f} s, first HIT {big['first_hit_s']:.2f} s after spawn")
    print(
        f"{big['requests']} hot objects ({big['x_cache']}, {big['req_per_s']:.0f} req/s), memory tier 8 GiB:"
        f" RSS {big['rss_before_mib']:.0f} → {big['rss_after_mib']:.0f} MiB,"
        f" {big['rss_per_hot_object_b']:.0f} B per object in memory (+ {big['file_mib']:.0f} MiB file pages);"
        f" store {big['store']}"
    )
    print(f"prefix purge {group}: {1000 * prefix_s:.1f} ms, removed {prefix_removed}")
    print(f"tag purge g7: {1000 * tag_s:.1f} ms, removed {tag_removed}")
    print(f"prefix purge matching nothing: {1000 * miss_s:.1f} ms")
    print(f"before the index, the walk of every record alone: {old_walk(cache):.2f} s")
    default = await hot_pass(origin, cache, n, hot, ())
    default_edge = default.pop("edge")
    assert isinstance(default_edge, Proc)
    default_edge.stop()
    print(
        f"default memory tier: RSS {default['rss_before_mib']:.0f} → {default['rss_after_mib']:.0f} MiB;"
        f" store {default['store']}"
    )


async def main_async(sizes: list[int], hot: int, body_bytes: int, keep: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="store-scale-") as tmp:
        root = keep or Path(tmp)
        (root / "origin").mkdir(parents=True, exist_ok=True)
        origin = Proc("origin", "serve", str(root / "origin"), "--listen", "127.0.0.1:0")
        try:
            for n in sizes:
                await measure(n, min(hot, n), body_bytes, root, origin.url)
        finally:
            origin.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, action="append", help="cache size to measure (repeatable)")
    p.add_argument("--hot", type=int, default=100_000, help="objects fetched into the memory tier")
    p.add_argument("--body-bytes", type=int, default=0, help="body size of each object (0: no body file)")
    p.add_argument("--keep", type=Path, metavar="DIR", help="populate under DIR, keep it, reuse it")
    args = p.parse_args()
    asyncio.run(main_async(args.objects or [100_000], args.hot, args.body_bytes, args.keep))


if __name__ == "__main__":
    main()
