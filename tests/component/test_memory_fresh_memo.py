"""A memory object's memoised "fresh until" never outlives its freshness, and only plain requests use it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edgecdn import clock
from edgecdn.cli import build_parser, config_from_args
from edgecdn.serve.app import Edge, public_protocol
from edgecdn.serve.connection import Connections


async def origin_app() -> web.Application:
    async def obj(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * 100, headers={"Cache-Control": "max-age=60", "ETag": '"v1"'})

    app = web.Application()
    app.router.add_get("/obj", obj)
    return app


async def test_a_memoised_fresh_hit_expires_with_the_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with TestServer(await origin_app(), host="127.0.0.1") as origin:
        origin_url = str(origin.make_url("")).rstrip("/")
        cfg = config_from_args(
            build_parser().parse_args(["serve", "--origin", origin_url, "--cache-dir", str(tmp_path)])
        )
        edge = Edge(cfg)
        await edge.start()
        connections = Connections()
        server = await asyncio.get_running_loop().create_server(
            public_protocol(edge, connections), "127.0.0.1", 0
        )
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            async with aiohttp.ClientSession(url) as client:

                async def x_cache(headers: dict[str, str] | None = None) -> str:
                    async with client.get("/obj", headers=headers or {}) as got:
                        await got.read()
                        return got.headers["X-Cache"]

                assert await x_cache() == "MISS"
                assert await x_cache() == "HIT"
                assert await x_cache() == "HIT"  # answered from the memo
                # A request with its own directives is decided afresh, memo or not.
                assert await x_cache({"Cache-Control": "max-age=0"}) != "HIT"
                assert await x_cache({"Authorization": "Bearer t"}) != "HIT"  # not stored for it
                assert await x_cache() == "HIT"
                later = time.time() + 120  # past max-age=60
                monkeypatch.setattr(clock, "now", lambda: later)
                assert await x_cache() != "HIT"
            server.close()
            connections.drain()
            await connections.wait_closed(5)
        finally:
            await edge.close()
