"""The prefetch task API with real processes: warm, skip fresh, share fills with clients, Vary, 429."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from edgecdn.control import admin_client
from edgecdn.control.prefetch import PREFETCH_PATH
from edgecdn.control.signing import generate_key, parse_key
from tests.integration.conftest import OriginClient, Proc
from tests.integration.edge_client import get, metric, origin_and_edge, session

KEY = generate_key("prefetch")
POLL_LIMIT = 500  # status polls per task at most (10 ms apart): bounded even when something hangs


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OriginClient, Proc, str]]:
    config = f'[admin]\nkeys = ["{KEY}"]\n\n[prefetch]\nconcurrency = 1\nqueue = 3\n'
    with origin_and_edge(tmp_path_factory.mktemp("stack"), config, "--no-access-log") as stack:
        yield stack


async def call(
    s: aiohttp.ClientSession, admin: str, method: str, path: str, payload: object = None
) -> admin_client.EdgeResult:
    return await admin_client.send(s, parse_key(KEY), admin, method, path, payload)


async def submit(s: aiohttp.ClientSession, admin: str, payload: object) -> str:
    r = await call(s, admin, "POST", PREFETCH_PATH, payload)
    assert r.status == 202, r.body
    return str(r.body["task"])


async def finished(s: aiohttp.ClientSession, admin: str, task: str) -> dict[str, Any]:
    for _ in range(POLL_LIMIT):
        r = await call(s, admin, "GET", f"{PREFETCH_PATH}/{task}")
        assert r.status == 200, r.body
        if r.body["state"] == "done":
            return dict(r.body)
        await asyncio.sleep(0.01)
    pytest.fail(f"prefetch task {task} not done: {r.body}")


async def test_prefetch_warms_reports_and_skips_fresh(stack: tuple[OriginClient, Proc, str]) -> None:
    origin, edge, admin = stack
    urls = ["/_test/blob/1000?t=pf-a", "/_test/blob/300000?t=pf-b", "/_test/blob/10?t=pf-no-store"]
    no_store = {"url": urls[2], "headers": {"X-Set-Cache-Control": "no-store"}}
    async with session() as s:
        first = await finished(s, admin, await submit(s, admin, {"urls": [*urls[:2], no_store]}))
        again = await finished(s, admin, await submit(s, admin, {"urls": urls[:2]}))
        hits = [await get(s, edge.url + u) for u in urls[:2]]
        warmed_metric = await metric(s, admin, "edgecdn_prefetch_urls_total", result="warmed")
    by_url = {u["url"]: u for u in first["urls"]}
    assert first["counts"]["warmed"] == 2 and first["counts"]["failed"] == 1
    assert by_url[urls[0]]["state"] == "warmed" and by_url[urls[0]]["bytes"] == 1000
    assert by_url[urls[1]]["bytes"] == 300000 and by_url[urls[1]]["key"] == urls[1]
    assert by_url[urls[1]]["ms"] >= 0 and by_url[urls[1]]["status"] == 200
    assert by_url[urls[2]]["state"] == "failed" and "not storable" in by_url[urls[2]]["error"]
    assert [u["state"] for u in again["urls"]] == ["fresh", "fresh"]
    assert [h.x_cache for h in hits] == ["HIT", "HIT"]
    assert [origin.hits(u) for u in urls[:2]] == [1, 1]
    assert warmed_metric == 2


async def test_a_client_joins_the_fill_a_prefetch_started(stack: tuple[OriginClient, Proc, str]) -> None:
    origin, edge, admin = stack
    url = "/_test/blob/200000?t=pf-shared"
    async with session() as s:
        task = await submit(s, admin, {"urls": [{"url": url, "headers": {"X-Test-Gate": "pf-shared"}}]})
        await origin.await_gate("pf-shared")
        client = asyncio.create_task(get(s, edge.url + url))
        for _ in range(POLL_LIMIT):
            if await metric(s, admin, "edgecdn_coalesced_waiters_total") >= 1:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the client never joined the prefetch's fill")
        await asyncio.to_thread(origin.release, "pf-shared")
        got = await client
        done = await finished(s, admin, task)
    assert got.status == 200 and len(got.body) == 200000
    assert done["urls"][0]["state"] == "warmed"
    assert origin.hits(url) == 1


async def test_per_url_headers_warm_the_vary_variant(stack: tuple[OriginClient, Proc, str]) -> None:
    origin, edge, admin = stack
    url = "/_test/blob/5000?t=pf-vary"
    vary = {"X-Set-Vary": "Accept-Encoding"}
    async with session() as s:
        payload = {"headers": vary, "urls": [{"url": url, "headers": {"Accept-Encoding": "br"}}]}
        done = await finished(s, admin, await submit(s, admin, payload))
        br = await get(s, edge.url + url, **{"Accept-Encoding": "br", **vary})
        gzip = await get(s, edge.url + url, **{"Accept-Encoding": "gzip", **vary})
    assert done["urls"][0]["state"] == "warmed" and " vary=" in done["urls"][0]["key"]
    assert done["urls"][0]["headers"] == {"X-Set-Vary": "Accept-Encoding", "Accept-Encoding": "br"}
    assert (br.x_cache, gzip.x_cache) == ("HIT", "MISS")
    assert origin.hits(url) == 2


async def test_queue_overflow_is_429_and_bad_requests_are_4xx(stack: tuple[OriginClient, Proc, str]) -> None:
    origin, _, admin = stack
    gated = {"url": "/_test/blob/10?t=pf-q0", "headers": {"X-Test-Gate": "pf-queue"}}
    async with session() as s:
        task = await submit(s, admin, {"urls": [gated]})
        await origin.await_gate("pf-queue")  # the one worker is busy: what comes next waits
        queued = await submit(s, admin, {"urls": ["/_test/blob/10?t=pf-q1"]})
        full = await call(s, admin, "POST", PREFETCH_PATH, {"urls": ["/a", "/b", "/c"]})
        waiting = await call(s, admin, "GET", f"{PREFETCH_PATH}/{queued}")
        await asyncio.to_thread(origin.release, "pf-queue")
        await finished(s, admin, task)
        await finished(s, admin, queued)
        bad = [
            await call(s, admin, "POST", PREFETCH_PATH, body)
            for body in (
                {"urls": []},
                {"urls": ["ftp://x/y"]},
                {"urls": [{"url": "/a", "headers": {"Host": "x"}}]},
            )
        ]
        unknown = await call(s, admin, "GET", f"{PREFETCH_PATH}/nope")
        async with s.post(admin + PREFETCH_PATH, json={"urls": ["/a"]}) as unsigned:
            unsigned_status = unsigned.status
    assert full.status == 429 and "queue full" in full.body["error"]
    assert full.body["detail"] == {"queued": 1, "limit": 3, "asked": 3}
    assert waiting.body["state"] == "queued"
    assert [b.status for b in bad] == [400, 400, 400]
    assert "not a header a prefetch may send" in bad[2].body["detail"]
    assert unknown.status == 404
    assert unsigned_status in (401, 403)
    assert origin.hits("/a") == 0
