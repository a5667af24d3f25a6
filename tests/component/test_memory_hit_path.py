"""A memory-tier hit touches no thread pool, no SQLite and no disk (DESIGN.md §3, the hot path)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edgecdn.cli import build_parser, config_from_args
from edgecdn.serve.app import Edge, public_protocol
from edgecdn.serve.connection import Connections


class Forbidden:
    """Stands in for the disk tier: any use of it fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"disk tier touched on a memory hit: {name}")


async def origin_app() -> web.Application:
    async def obj(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000, headers={"Cache-Control": "max-age=300", "ETag": '"v1"'})

    app = web.Application()
    app.router.add_get("/obj", obj)
    return app


async def test_memory_hit_uses_no_thread_and_no_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
                first = await client.get("/obj")
                assert first.headers["X-Cache"] == "MISS"
                await first.read()
                disk, edge.store.disk = edge.store.disk, Forbidden()  # type: ignore[assignment]

                async def no_threads(*_: object, **__: object) -> None:
                    raise AssertionError("a thread hop on a memory hit")

                monkeypatch.setattr(asyncio, "to_thread", no_threads)
                for headers in ({}, {"Range": "bytes=0-9"}, {"If-None-Match": '"v1"'}):
                    got = await client.get("/obj", headers=headers)
                    assert got.headers["X-Cache"] == "HIT", await got.text()
                    assert got.status in (200, 206, 304)
                    await got.read()
                monkeypatch.undo()
                edge.store.disk = disk
            server.close()
            connections.drain()
            await connections.wait_closed(5)
        finally:
            await edge.close()
