"""A memory-tier hit touches no thread pool, no SQLite and no disk (DESIGN.md §3, the hot path)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edgecdn import clock
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


@contextlib.asynccontextmanager
async def edge_serving(tmp_path: Path) -> AsyncIterator[tuple[Edge, aiohttp.ClientSession]]:
    """An in-process edge in front of `origin_app`, and a client session to it."""
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
                yield edge, client
            server.close()
            connections.drain()
            await connections.wait_closed(5)
        finally:
            await edge.close()


async def test_memory_hit_uses_no_thread_and_no_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with edge_serving(tmp_path) as (edge, client):
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


async def test_a_memoised_fresh_hit_expires_with_the_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A memory object's memoised "fresh until" never outlives its freshness; only plain requests use it."""
    async with edge_serving(tmp_path) as (_, client):

        async def x_cache(headers: dict[str, str] | None = None) -> str:
            async with client.get("/obj", headers=headers or {}) as got:
                await got.read()
                return got.headers["X-Cache"]

        assert await x_cache() == "MISS"
        assert await x_cache() == "HIT"
        assert await x_cache() == "HIT"  # answered from the memo
        # A request with its own directives or credentials is decided afresh, memo or not.
        assert await x_cache({"Cache-Control": "max-age=0"}) != "HIT"
        assert await x_cache({"Authorization": "Bearer t"}) != "HIT"
        assert await x_cache() == "HIT"
        later = time.time() + 600  # past max-age=300
        monkeypatch.setattr(clock, "now", lambda: later)
        assert await x_cache() != "HIT"
