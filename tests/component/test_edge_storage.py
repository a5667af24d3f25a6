"""A disk tier that fails under a whole in-process edge: the client gets the origin's answer, never a 500,
a fill cut by a full disk leaves nothing behind, and both are counted by cause."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edgecdn.cache import disk as disk_module
from edgecdn.cache import fill as fill_module
from edgecdn.cache.entry import Entry
from edgecdn.cli import build_parser, config_from_args
from edgecdn.serve.app import Edge, public_protocol
from edgecdn.serve.connection import Connections
from tests.component.test_store import disk_full_after

SIZE = 3 * 2**20  # past the memory tier's per-object bound: a disk object, written in several flushes


def origin_app(hits: dict[str, int]) -> web.Application:

    async def obj(request: web.Request) -> web.Response:
        hits[request.path] = hits.get(request.path, 0) + 1
        return web.Response(body=b"o" * SIZE, headers={"Cache-Control": "max-age=300"})

    app = web.Application()
    app.router.add_get("/{name}", obj)
    return app


@pytest.fixture
async def edge_client(tmp_path: Path) -> AsyncIterator[tuple[Edge, aiohttp.ClientSession, dict[str, int]]]:
    """An edge's public protocol on port 0 in this loop, a client for it, and the origin's hit counts."""
    hits: dict[str, int] = {}
    app = origin_app(hits)
    async with TestServer(app, host="127.0.0.1") as origin:
        origin_url = str(origin.make_url("")).rstrip("/")
        argv = ["serve", "--origin", origin_url, "--cache-dir", str(tmp_path / "cache"), "--no-access-log"]
        edge = Edge(config_from_args(build_parser().parse_args(argv)))
        await edge.start()
        connections = Connections()
        server = await asyncio.get_running_loop().create_server(
            public_protocol(edge, connections), "127.0.0.1", 0
        )
        try:
            url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            async with aiohttp.ClientSession(url) as client:
                yield edge, client, hits
        finally:
            server.close()
            connections.drain()
            await connections.wait_closed(5)
            await edge.close()


async def test_a_disk_lookup_raising_eio_is_answered_from_the_origin(
    edge_client: tuple[Edge, aiohttp.ClientSession, dict[str, int]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    edge, client, hits = edge_client
    first = await client.get("/obj")
    assert (first.headers["X-Cache"], len(await first.read())) == ("MISS", SIZE)
    await edge.coalescer.close(grace=5.0)  # the fill has committed: the next request reads the disk tier
    assert isinstance(await edge.store.record("/obj"), Entry)

    def eio(*_: object, **__: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(disk_module, "open", eio, raising=False)
    got = await client.get("/obj")
    body = await got.read()
    assert got.status == 200 and len(body) == SIZE and got.headers["X-Cache"] != "HIT"
    assert hits["/obj"] == 2
    assert edge.store.faults.counts["EIO"] >= 1


async def test_a_disk_full_mid_fill_cuts_the_client_leaves_nothing_and_is_counted(
    edge_client: tuple[Edge, aiohttp.ClientSession, dict[str, int]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    edge, client, hits = edge_client
    monkeypatch.setattr(fill_module, "_pwrite_all", disk_full_after(1))
    got = await client.get("/full")
    with pytest.raises(aiohttp.ClientPayloadError):
        await got.read()
    await edge.coalescer.close(grace=5.0)
    monkeypatch.undo()
    assert edge.store.faults.counts == {"ENOSPC": 1}
    assert list(edge.store.disk.tmp.iterdir()) == []
    assert await edge.store.record("/full") is None
    assert not [
        r for r in caplog.records if r.exc_info and r.name.startswith("edgecdn")
    ]  # no bug, no traceback
    # Within cache.error_ttl: a disk failure is not the key's answer, so the next client goes to the origin.
    again = await client.get("/full")
    assert again.headers["X-Cache"] == "MISS" and len(await again.read()) == SIZE
    assert hits["/full"] == 2
