"""The change-log follower against a scripted origin: a malformed page is logged, counted and retried with
backoff, the next good page is applied, and a poller that dies is restarted (supervised)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edgecdn.config import CacheConfig, Config, OriginServer, SyncConfig
from edgecdn.control.purge import PurgeRequest
from edgecdn.metrics import Metrics
from edgecdn.serve.follow import BadPage, ChangeFollower, parse_page

GOOD = {"changes": [{"seq": 1, "path": "/a.txt", "etag": '"2"'}], "last": 1, "more": False}
MALFORMED = [
    b"not json",
    b'{"changes": [{"etag": "x"}], "last": 1}',
    b'{"changes": [{"path": 5, "etag": "x"}], "last": 1}',
    b'{"changes": [], "last": "many"}',
    b'{"changes": [], "last": 1, "more": "yes"}',
    b'{"changes": ["/a"], "last": 1}',
    b"[" * 100_000,
]


@pytest.mark.parametrize("raw", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_page_is_refused_whole(raw: bytes) -> None:
    with pytest.raises(BadPage):
        parse_page(raw)


class FakePurger:
    def __init__(self) -> None:
        self.requests: list[PurgeRequest] = []
        self.purged = asyncio.Event()

    async def run(self, req: PurgeRequest) -> dict[str, int]:
        self.requests.append(req)
        self.purged.set()
        return {}


class FakeStore:
    async def record(self, _key: str) -> None:
        return None


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def follower_against(pages: list[bytes], tmp_path: Path) -> tuple[ChangeFollower, FakePurger, Metrics]:
    async def changes(_: web.Request) -> web.Response:
        return web.Response(body=pages.pop(0) if len(pages) > 1 else pages[0])

    app = web.Application()
    app.router.add_get("/_origin/changes", changes)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    cfg = Config(
        origins=(OriginServer(str(server.make_url("")).rstrip("/")),),
        cache=CacheConfig(dir=str(tmp_path)),
        sync=SyncConfig(poll_interval=0.01),
    )
    purger, metrics = FakePurger(), Metrics()
    follower = ChangeFollower(purger, FakeStore(), cfg, metrics)  # type: ignore[arg-type]
    follower._test_server = server  # type: ignore[attr-defined]
    return follower, purger, metrics


async def test_a_malformed_page_is_counted_retried_and_the_next_good_page_applied(tmp_path: Path) -> None:
    follower, purger, metrics = await follower_against([MALFORMED[1], json.dumps(GOOD).encode()], tmp_path)
    try:
        await follower.start()  # the start-up catch-up meets the malformed page
        assert purger.requests == [] and follower.failures == 1
        assert follower.next_wait() == 2 * follower.interval  # backoff
        await asyncio.wait_for(purger.purged.wait(), 10)
    finally:
        await follower.close()
        await follower._test_server.close()  # type: ignore[attr-defined]
    assert [r.urls for r in purger.requests] == [("/a.txt",)]
    assert follower.last == {str(follower.origins[0]): 1}
    assert sample(metrics, "edgecdn_follow_errors_total", cause="malformed") == 1


async def test_a_poller_that_dies_is_restarted_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    follower, purger, metrics = await follower_against([json.dumps(GOOD).encode()], tmp_path)
    real = follower.catch_up
    calls = 0

    async def flaky(session: object) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first background poll hits a bug
            raise RuntimeError("unexpected")
        return await real(session)  # type: ignore[arg-type]

    monkeypatch.setattr(follower, "catch_up", flaky)
    try:
        await follower.start()
        purger.purged.clear()
        follower.last.clear()  # so the restarted poller has something to apply again
        await asyncio.wait_for(purger.purged.wait(), 10)
    finally:
        await follower.close()
        await follower._test_server.close()  # type: ignore[attr-defined]
    assert calls >= 3
    assert sample(metrics, "edgecdn_background_restarts_total", task="change-follower") == 1
