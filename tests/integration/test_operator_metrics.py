"""What an operator reads: request, byte and latency series after known traffic, purges counted as
requests (objects apart), `/_edge/stats`, and `edgecdn stats` over several edges."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from edgecdn.build_info import __version__
from edgecdn.control.signing import generate_key
from tests.integration.conftest import EdgeFactory, OriginClient
from tests.integration.edge_client import admin_url, get, metric_sum, run_module, session

KEY = generate_key("ops")


async def scrape(admin: str) -> str:
    async with session() as s, s.get(admin + "/metrics") as r:
        return await r.text()


async def stats_of(admin: str) -> dict[str, object]:
    async with session() as s, s.get(admin + "/_edge/stats") as r:
        assert r.status == 200
        body: dict[str, object] = json.loads(await r.text())
        return body


async def settled(admin: str) -> dict[str, object]:
    """The stats once no fill is in flight: a fill answers before it has moved its body into the disk tier."""
    for _ in range(500):
        stats = await stats_of(admin)
        if stats["fills_in_flight"] == 0:
            return stats
        await asyncio.sleep(0.01)
    raise AssertionError(f"fills still in flight: {stats}")


async def test_a_miss_and_three_hits_show_in_requests_bytes_latency_and_stats(
    origin: OriginClient, edge: EdgeFactory
) -> None:
    e = edge(origin.url, "--no-access-log")
    admin = admin_url(e)
    path = "/_test/blob/1000?t=ops-known"
    async with session() as s:
        got = [await get(s, e.url + path) for _ in range(4)]
    stats = await settled(admin)
    text = await scrape(admin)
    assert [g.x_cache for g in got] == ["MISS", "HIT", "HIT", "HIT"]

    def m(name: str, **labels: str) -> float:
        return metric_sum(text, name, **labels)

    assert m("edgecdn_requests_total", cache_status="HIT", status_class="2xx") == 3
    assert m("edgecdn_requests_total", cache_status="MISS", status_class="2xx") == 1
    assert m("edgecdn_request_seconds_count", cache_status="HIT") == 3
    assert m("edgecdn_request_seconds_count", cache_status="MISS") == 1
    assert m("edgecdn_request_seconds_bucket", cache_status="HIT", le="+Inf") == 3
    assert m("edgecdn_sent_bytes_total", cache_status="HIT") == 3000
    assert m("edgecdn_sent_bytes_total", cache_status="MISS") == 1000
    assert m("edgecdn_origin_request_seconds_count", origin=origin.url) == 1
    assert m("edgecdn_origin_errors_total") == 0
    assert m("edgecdn_store_objects", tier="disk") == 1
    assert m("edgecdn_store_limit_bytes", tier="memory") > 0
    assert stats["version"] == __version__
    assert stats["requests"] == {"total": 4, "by_cache_status": {"MISS": 1, "HIT": 3}}
    assert stats["hit_ratio"] == 0.75
    store = stats["store"]
    assert isinstance(store, dict)
    assert store["disk"]["items"] == 1 and store["disk"]["bytes"] >= 1000
    assert store["memory"]["items"] == 1 and store["memory"]["limit"] > 0
    assert stats["fills_in_flight"] == 0
    assert [o["state"] for o in stats["origins"]] == ["up"]  # type: ignore[attr-defined]


async def test_a_purge_counts_one_request_whatever_it_removes_and_catch_up_counts_none(
    origin: OriginClient, edge: EdgeFactory, tmp_path: Path
) -> None:
    # Three changes in the origin's change log: the edge applies them on start, through the purge path.
    (origin.root / "seed.txt").write_bytes(b"x")
    for n in range(3):
        src = tmp_path / f"src{n}.txt"
        src.write_bytes(b"v%d" % n)
        published = await asyncio.to_thread(
            run_module, "origin", "publish", f"{src}=/page{n}.txt", "--root", str(origin.root), admin_key=KEY
        )
        assert published.returncode == 0, published.stdout + published.stderr
    e = edge(origin.url, "--admin-key", KEY, "--follow-changes", "60s", "--no-access-log")
    admin = admin_url(e)
    paths = [f"/_test/blob/{3001 + n}?t=ops-purge" for n in range(4)]
    async with session() as s:
        for p in paths:
            await get(s, e.url + p)
    await settled(admin)  # all four stored: the purge's object count does not depend on timing
    purged = await asyncio.to_thread(
        run_module, "edgecdn", "purge", f"--edge={admin}", "--prefix", "/_test/blob/300", admin_key=KEY
    )
    text = await scrape(admin)
    async with session() as s:
        after = [await get(s, e.url + p) for p in paths]
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert metric_sum(text, "edgecdn_follow_changes_total") == 3
    assert metric_sum(text, "edgecdn_purge_requests_total", kind="hard") == 1
    assert metric_sum(text, "edgecdn_purged_objects_total", kind="hard") == 4
    assert {g.x_cache for g in after} == {"MISS"}


async def test_stats_cli_shows_every_edge_and_fails_when_one_fails(
    origin: OriginClient, edge: EdgeFactory
) -> None:
    edges = [edge(origin.url, "--no-access-log") for _ in range(2)]
    admins = [admin_url(x) for x in edges]
    async with session() as s:
        for x in edges:
            await get(s, x.url + "/_test/blob/10?t=ops-cli")
    ok = await asyncio.to_thread(run_module, "edgecdn", "stats", *(f"--edge={a}" for a in admins))
    edges[1].stop()
    partial = await asyncio.to_thread(run_module, "edgecdn", "stats", *(f"--edge={a}" for a in admins))
    bad = await asyncio.to_thread(run_module, "edgecdn", "stats", "--edge", "not-a-url")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert all(a in ok.stdout for a in admins) and ok.stdout.count(__version__) == 2
    assert partial.returncode == 1 and "cannot connect" in partial.stdout
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
