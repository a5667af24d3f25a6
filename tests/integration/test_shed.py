"""Overload shedding with real processes: new misses get 503 + Retry-After; hits and joiners do not."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.integration.edge_client import get, metric, origin_and_edge, session

CONFIG = "[shed]\nmax_fills = 1\nretry_after_min = 2\nretry_after_max = 4\n"


async def test_misses_over_max_fills_are_shed_hits_and_joiners_are_not(tmp_path: Path) -> None:
    with origin_and_edge(tmp_path, CONFIG, "--no-access-log") as (origin, edge, admin):
        cached, slow, other = (
            "/_test/blob/100?t=shed-hit",
            "/_test/blob/100?t=shed-slow",
            "/_test/blob/100?t=o",
        )
        async with session() as s:
            assert (await get(s, edge.url + cached)).status == 200
            first = asyncio.create_task(get(s, edge.url + slow, **{"X-Test-Gate": "shed"}))
            await origin.await_gate("shed")  # one fill runs: the limit is reached
            joiner = asyncio.create_task(get(s, edge.url + slow))
            refused = await get(s, edge.url + other)
            hit = await get(s, edge.url + cached)
            await asyncio.to_thread(origin.release, "shed")
            slow_got, joined = await first, await joiner
            after = await get(s, edge.url + other)
            shed_count = await metric(s, admin, "edgecdn_shed_requests_total")
        hits = (origin.hits(slow), origin.hits(other))
    assert refused.status == 503 and 2 <= int(refused.headers["Retry-After"]) <= 4
    assert json.loads(refused.body)["error"].startswith("edge busy")
    assert "shed" in refused.headers["Cache-Status"]
    assert hit.x_cache == "HIT"
    assert (slow_got.status, joined.status, after.status) == (200, 200, 200)
    assert hits == (1, 1)  # the shed miss never reached the origin
    assert shed_count == 1
