"""The origin list for real: failover and fail-back, retries, health checks, mid-body resume, tiers, loops.

Real `edgecdn` and `edgecdn-origin` processes on 127.0.0.1. A scripted origin in this process (port 0)
stands in where an origin must answer differently from the others (a 503, a failing health path).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
import xxhash
from aiohttp import web

from edgecdn.control.signing import generate_key, parse_key
from edgecdn.control.urlsign import sign_url
from origin.blob import blob_bytes
from tests.integration.conftest import OriginClient, OriginFactory, Proc
from tests.integration.edge_client import admin_url, get, metric, session, start_edge

POLL_S = 10.0


def reserve_port() -> int:
    """A free loopback port for a process that must come back on the same address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, body: str, name: str = "edge.toml") -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


async def poll(check: Callable[[], object], what: str, timeout: float = POLL_S) -> None:  # noqa: ASYNC109
    """Bounded polling for a state the edge reaches on its own (a timer, a probe)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)


class Scripted:
    """An origin in this process: `status` for content, `health` for the health path; counts hits."""

    def __init__(self) -> None:
        self.status = 503
        self.health = 200
        self.hits: dict[str, int] = {}
        self.health_hits = 0
        self.health_agents: set[str] = set()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/health":
            self.health_hits += 1
            self.health_agents.add(request.headers.get("User-Agent", ""))
            return web.Response(status=self.health, text="health")
        await request.read()
        self.hits[request.raw_path] = self.hits.get(request.raw_path, 0) + 1
        return web.Response(
            status=self.status, text=f"scripted {self.status}", headers={"Cache-Control": "max-age=60"}
        )


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    origin = Scripted()
    runner = web.AppRunner(web.Application(handler_args={"access_log": None}))
    runner.app.router.add_route("*", "/{tail:.*}", origin.handle)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    origin.url = f"http://{host}:{port}"
    try:
        yield origin
    finally:
        await runner.cleanup()


def hook_origin(root: Path, port: int) -> OriginClient:
    proc = Proc("origin", "serve", str(root), "--listen", f"127.0.0.1:{port}", "--test-hooks")
    return OriginClient(proc, root)


async def health(s: aiohttp.ClientSession, edge: Proc) -> dict[str, str]:
    """Each origin's state, from the admin listener (the public one names no origin)."""
    async with s.get(admin_url(edge) + "/_edge/health") as r:
        body = json.loads(await r.read())
    return {o["url"]: o["state"] for o in body["origins"]}


# -- failover ----------------------------------------------------------------------------------------


async def test_primary_dies_no_request_fails_and_traffic_fails_back(
    origin_factory: OriginFactory, tmp_path: Path
) -> None:
    port = reserve_port()
    root = tmp_path / "primary-root"
    root.mkdir()
    primary = hook_origin(root, port)
    backup = origin_factory()
    cfg = write_config(tmp_path, '[origin]\nmax_fails = 1\ndown_time = "300ms"\n')
    edge = start_edge(primary.url, tmp_path / "cache", "--origin", backup.url, "-c", cfg, "--no-access-log")
    try:
        async with session() as s:
            admin = admin_url(edge)
            cached = "/_test/blob/1000?t=cached"
            assert (await get(s, edge.url + cached)).status == 200
            assert (primary.hits(cached), backup.hits(cached)) == (1, 0)  # sticky on the first

            primary.stop()
            got = [await get(s, edge.url + cached)] + [
                await get(s, edge.url + f"/_test/blob/1000?t=miss{i}") for i in range(5)
            ]
            assert [g.status for g in got] == [200] * 6  # no failure: cached or moved to the backup
            assert got[0].x_cache == "HIT"
            assert all(backup.hits(f"/_test/blob/1000?t=miss{i}") == 1 for i in range(5))
            assert (
                await metric(
                    s,
                    admin,
                    "edgecdn_origin_transitions_total",
                    origin=primary.url,
                    reason="max_fails",
                    to="down",
                )
                == 1
            )
            assert (await health(s, edge))[primary.url] in ("down", "up")  # penalty may already be over
            assert (await health(s, edge))[backup.url] == "up"
            assert f"origin {primary.url} is down (max_fails)" in edge.stderr_text()

            primary = hook_origin(root, port)  # the primary comes back on its address
            n = 0

            async def back_on_primary() -> bool:
                nonlocal n
                n += 1
                path = f"/_test/blob/1000?t=back{n}"
                assert (await get(s, edge.url + path)).status == 200
                return primary.hits(path) == 1

            await poll(back_on_primary, "traffic back on the primary")
            for i in range(3):  # and it stays there (sticky)
                path = f"/_test/blob/1000?t=stay{i}"
                assert (await get(s, edge.url + path)).status == 200
                assert (primary.hits(path), backup.hits(path)) == (1, 0)
            assert (await health(s, edge)) == {primary.url: "up", backup.url: "up"}
            async with s.get(admin + "/_edge/health") as r:  # the admin listener reports the same
                assert [o["state"] for o in json.loads(await r.read())["origins"]] == ["up", "up"]
    finally:
        edge.stop()
        primary.stop()


async def test_retry_statuses_move_idempotent_requests_only(
    scripted: Scripted, origin: OriginClient, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, "[origin]\nmax_fails = 2\ndown_time = 60\n")
    edge = start_edge(scripted.url, tmp_path / "cache", "--origin", origin.url, "-c", cfg, "--no-access-log")
    try:
        async with session() as s:
            admin = admin_url(edge)
            got = await get(s, edge.url + "/_test/blob/100?t=retry")
            assert (got.status, got.body) == (200, blob_bytes(100, "1"))
            assert (scripted.hits["/_test/blob/100?t=retry"], origin.hits("/_test/blob/100?t=retry")) == (
                1,
                1,
            )
            assert await metric(s, admin, "edgecdn_origin_retries_total", reason="origin-503") == 1
            retried_from = {"origin": scripted.url, "reason": "origin-503"}
            assert await metric(s, admin, "edgecdn_origin_retries_total", **retried_from) == 1
            failed = {"origin": scripted.url, "error": "status-503"}
            assert await metric(s, admin, "edgecdn_origin_errors_total", **failed) == 1
            assert await metric(s, admin, "edgecdn_origin_request_seconds_count", origin=origin.url) == 1

            async with s.post(edge.url + "/_test/echo", data=b"x" * 100) as r:
                assert r.status == 503  # sent once, never replayed on another origin
            assert scripted.hits["/_test/echo"] == 1 and origin.hits("/_test/echo") == 0

            # Two 503s took the primary down: new misses go straight to the backup.
            for i in range(3):
                assert (await get(s, edge.url + f"/_test/blob/100?t=skip{i}")).status == 200
            assert not any(k.startswith("/_test/blob/100?t=skip") for k in scripted.hits)
            assert (await health(s, edge))[scripted.url] == "down"
            assert await metric(s, admin, "edgecdn_origin_up", origin=scripted.url) == 0
    finally:
        edge.stop()


async def test_every_origin_failing_answers_the_last_status(scripted: Scripted, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "[origin]\ntries = 1\n")
    edge = start_edge(scripted.url, tmp_path / "cache", "-c", cfg, "--no-access-log")
    try:
        async with session() as s:
            got = await get(s, edge.url + "/all-down")
        assert got.status == 503 and scripted.hits["/all-down"] == 1
    finally:
        edge.stop()


async def test_active_health_check_takes_an_origin_out_and_back(
    scripted: Scripted, origin: OriginClient, tmp_path: Path
) -> None:
    scripted.status = 200
    (origin.root / "health").write_text("ok")  # the backup passes its checks throughout
    cfg = write_config(
        tmp_path,
        '[origin]\nhealth_path = "/health"\nhealth_interval = "50ms"\nrise = 2\nfall = 2\nmax_fails = 0\n',
    )
    edge = start_edge(scripted.url, tmp_path / "cache", "--origin", origin.url, "-c", cfg, "--no-access-log")
    try:
        async with session() as s:
            admin = admin_url(edge)
            assert (await get(s, edge.url + "/_test/blob/10?t=a1")).body == b"scripted 200"
            await poll(lambda: scripted.health_hits >= 2, "health checks reach the origin")
            assert scripted.health_agents == {"edgecdn-health-check"}

            scripted.health = 500  # the content still answers; only the health path says no

            async def primary_down() -> bool:
                return await metric(s, admin, "edgecdn_origin_up", origin=scripted.url) == 0

            await poll(primary_down, "primary marked down by its health check")
            got = await get(s, edge.url + "/_test/blob/10?t=a2")
            assert got.body == blob_bytes(10, "1") and "/_test/blob/10?t=a2" not in scripted.hits
            assert (await health(s, edge)) == {scripted.url: "down", origin.url: "up"}
            assert (
                await metric(
                    s,
                    admin,
                    "edgecdn_origin_transitions_total",
                    origin=scripted.url,
                    reason="probe_fall",
                    to="down",
                )
                == 1
            )

            scripted.health = 200

            async def primary_up() -> bool:
                return await metric(s, admin, "edgecdn_origin_up", origin=scripted.url) == 1

            await poll(primary_up, "primary back up after `rise` good checks")
            assert (await get(s, edge.url + "/_test/blob/10?t=a3")).body == b"scripted 200"
    finally:
        edge.stop()


async def test_every_origin_down_serves_stale_if_error_within_its_bound(
    origin_factory: OriginFactory, tmp_path: Path
) -> None:
    first, second = origin_factory(), origin_factory()
    edge = start_edge(first.url, tmp_path / "cache", "--origin", second.url, "--no-access-log")
    allowed, strict = "/_test/blob/100?t=sie", "/_test/blob/100?t=strict"
    try:
        async with session() as s:
            cc = "max-age=0, stale-if-error=600"
            assert (await get(s, edge.url + allowed, **{"X-Set-Cache-Control": cc})).status == 200
            assert (await get(s, edge.url + strict, **{"X-Set-Cache-Control": "max-age=0"})).status == 200
            first.stop()
            second.stop()
            got = await get(s, edge.url + allowed)
            assert (got.status, got.body) == (200, blob_bytes(100, "1"))
            assert got.x_cache == "STALE" and "detail=stale-if-error" in got.headers["Cache-Status"]
            refused = await get(s, edge.url + strict)
            assert refused.status in (502, 504)  # stale, but not allowed on error: never served
    finally:
        edge.stop()


# -- mid-body failover -------------------------------------------------------------------------------


async def test_body_broken_mid_way_resumes_from_the_next_origin(
    origin_factory: OriginFactory, tmp_path: Path
) -> None:
    first, second = origin_factory(), origin_factory()
    edge = start_edge(first.url, tmp_path / "cache", "--origin", second.url, "--no-access-log")
    path, size = "/_test/blob/1000000?t=resume", 1_000_000
    try:
        async with session() as s:
            # The hooks go to both origins. The second answers only the rest (< the cut), so only the first
            # breaks; paced chunks let the edge take in most of the body before the cut.
            hooks = {"X-Test-Truncate": "900000", "X-Test-Chunk-Delay-Ms": "5"}
            got = await get(s, edge.url + path, **hooks)
            assert (got.status, len(got.body)) == (200, size)
            assert got.body == blob_bytes(size, "1")
            again = await get(s, edge.url + path)
            assert again.x_cache == "HIT" and again.body == got.body
            assert await metric(s, admin_url(edge), "edgecdn_fill_resumes_total", result="resumed") == 1
        assert (first.hits(path), second.hits(path)) == (1, 1)
        (resume,) = second.requests(path)
        assert resume["headers"]["Range"].startswith("bytes=") and resume["headers"]["Range"].endswith("-")
        assert int(resume["headers"]["Range"][6:-1]) > 0
        assert resume["headers"]["If-Range"].startswith('"blob-')
    finally:
        edge.stop()


async def test_resume_from_a_different_object_aborts_and_stores_nothing(
    origin_factory: OriginFactory, tmp_path: Path
) -> None:
    first, second = origin_factory(), origin_factory()
    (first.root / "obj.bin").write_bytes(b"a" * 300_000)
    (second.root / "obj.bin").write_bytes(b"b" * 300_000)
    os.utime(second.root / "obj.bin", (1_600_000_000, 1_600_000_000))  # another ETag
    edge = start_edge(first.url, tmp_path / "cache", "--origin", second.url, "--no-access-log")
    try:
        async with session() as s:
            with pytest.raises(aiohttp.ClientPayloadError):
                await get(
                    s, edge.url + "/obj.bin", **{"X-Test-Truncate": "200000", "X-Test-Chunk-Delay-Ms": "5"}
                )
            assert await metric(s, admin_url(edge), "edgecdn_fill_resumes_total", result="mismatch") == 1
            got = await get(s, edge.url + "/obj.bin")
            assert got.x_cache == "MISS" and got.body == b"a" * 300_000  # nothing was stored
        assert first.hits("/obj.bin") == 2 and second.hits("/obj.bin") == 1
        assert second.requests("/obj.bin")[0]["headers"]["If-Range"]
    finally:
        edge.stop()


async def test_versioned_body_without_etag_resumes_and_is_verified(
    origin_factory: OriginFactory, tmp_path: Path
) -> None:
    first, second = origin_factory(), origin_factory()
    body = bytes(range(256)) * 3907  # 1 000 192 bytes
    name = f"/app.{xxhash.xxh3_64_hexdigest(body)}.bin"
    for o in (first, second):
        (o.root / name[1:]).write_bytes(body)
    edge = start_edge(first.url, tmp_path / "cache", "--origin", second.url, "--no-access-log")
    hooks = {"X-Test-Truncate": "900000", "X-Test-Chunk-Delay-Ms": "5", "X-Remove-ETag": "1"}
    try:
        async with session() as s:
            got = await get(s, edge.url + name, **hooks)
            assert (got.status, got.body) == (200, body)
            again = await get(s, edge.url + name)
            assert again.x_cache == "HIT" and again.body == body
        (resume,) = second.requests(name)
        assert resume["headers"]["Range"].startswith("bytes=") and "If-Range" not in resume["headers"]
    finally:
        edge.stop()


# -- tiers and loops ---------------------------------------------------------------------------------


async def test_two_tiers_one_origin_request_and_cdn_loop(origin: OriginClient, tmp_path: Path) -> None:
    shield = start_edge(
        origin.url,
        tmp_path / "shield",
        "-c",
        write_config(tmp_path, '[origin]\ncdn_id = "shield"\n', "s.toml"),
    )
    edge = start_edge(
        shield.url, tmp_path / "edge", "-c", write_config(tmp_path, '[origin]\ncdn_id = "edge"\n', "e.toml")
    )
    path = "/_test/blob/5000?t=tier"
    try:
        async with session() as s:
            for _ in range(3):
                got = await get(s, edge.url + path)
                assert got.status == 200 and got.body == blob_bytes(5000, "1")
            refused = await get(s, edge.url + path + "&loop", **{"CDN-Loop": "other, edge; x=1"})
            assert refused.status == 508
        assert origin.hits(path) == 1
        assert origin.hits(path + "&loop") == 0
        (seen,) = origin.requests(path)
        assert seen["headers"]["CDN-Loop"] == "edge, shield"
        assert seen["headers"]["Via"] == "1.1 edgecdn, 1.1 edgecdn"
    finally:
        edge.stop()
        shield.stop()


async def test_an_edge_that_is_its_own_origin_answers_508(tmp_path: Path) -> None:
    port = reserve_port()
    edge = Proc(
        "edgecdn",
        "serve",
        "--origin",
        f"http://127.0.0.1:{port}",
        "--listen",
        f"127.0.0.1:{port}",
        "--admin-listen",
        "127.0.0.1:0",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-access-log",
    )
    try:
        async with session() as s:
            got = await get(s, edge.url + "/self")
        assert got.status == 508
    finally:
        edge.stop()


# -- never SSRF --------------------------------------------------------------------------------------


async def test_absolute_form_target_and_foreign_host_still_go_to_the_configured_origin(
    origin: OriginClient, tmp_path: Path
) -> None:
    edge = start_edge(origin.url, tmp_path / "cache", "--no-access-log")
    host, port = edge.url.removeprefix("http://").rsplit(":", 1)
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"GET http://169.254.169.254/_test/blob/10?t=ssrf HTTP/1.1\r\n"
            b"Host: 169.254.169.254\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert head.startswith(b"HTTP/1.1 200")
        assert origin.hits("/_test/blob/10?t=ssrf") == 1
        (seen,) = origin.requests("/_test/blob/10?t=ssrf")
        assert seen["headers"]["Host"] == origin.url.removeprefix("http://")
    finally:
        edge.stop()


# -- signed URLs and token traverse ------------------------------------------------------------------


async def test_signed_urls_and_token_traverse(origin: OriginClient, tmp_path: Path) -> None:
    key = generate_key("url1")
    (origin.root / "tok").mkdir()
    (origin.root / "tok" / "a.txt").write_text("token-protected")
    cfg = write_config(
        tmp_path,
        f'[access]\nkeys = ["{key}"]\n'
        '[[access.paths]]\nprefix = "/_test/blob/"\nmode = "signed"\n'
        '[[access.paths]]\nprefix = "/tok/"\nmode = "token_traverse"\ntoken_param = "token"\n',
    )
    edge = start_edge(origin.url, tmp_path / "cache", "-c", cfg, "--no-access-log")
    ring_key = parse_key(key)
    now = int(time.time())
    path = "/_test/blob/100?t=signed"
    try:
        async with session() as s:
            for bad in (
                path,
                sign_url(ring_key, path, now - 10),  # expired
                sign_url(ring_key, path, now + 60).replace("t=signed", "t=other"),
            ):
                refused = await get(s, edge.url + bad)
                assert refused.status == 403, bad
            first = await get(s, edge.url + sign_url(ring_key, path, now + 60))
            second = await get(s, edge.url + sign_url(ring_key, path, now + 120))
            assert (first.status, first.x_cache, second.x_cache) == (200, "MISS", "HIT")
            assert origin.all_hits() == {path: 1}  # the origin saw the target without auth params

            assert (await get(s, edge.url + "/tok/a.txt")).status == 403  # no token: refused
            got = await get(s, edge.url + "/tok/a.txt?token=alice")
            again = await get(s, edge.url + "/tok/a.txt?token=bob")
            assert (got.status, got.body, again.x_cache) == (200, b"token-protected", "HIT")
        assert origin.hits("/tok/a.txt?token=alice") == 1  # the token went to the origin
        assert origin.hits("/tok/a.txt?token=bob") == 0  # and is not part of the cache key
    finally:
        edge.stop()
