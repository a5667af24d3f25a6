"""A memory-tier hit touches no thread pool, no SQLite and no disk (DESIGN.md §3, the hot path)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, RawTestServer, TestClient, TestServer

from edgecdn.cli import build_parser, config_from_args
from edgecdn.serve.app import Edge, public_server


class _ServerOf(RawTestServer):
    """RawTestServer around an already-built web.Server (the edge's own, with its protocol)."""

    def __init__(self, server: web.Server) -> None:
        super().__init__(server.request_handler, host="127.0.0.1")
        self._edge_server = server

    async def _make_runner(self, **kwargs: Any) -> web.ServerRunner:
        return web.ServerRunner(self._edge_server, **kwargs)


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
        try:
            server: BaseTestServer = _ServerOf(public_server(edge))
            async with TestClient(server) as client:
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
        finally:
            await edge.close()
