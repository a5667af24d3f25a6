"""What the public listener tells the public: /_edge/* is the edge's own, no answer names an origin,
and the edge's own refusals are counted as ERROR, never as misses (issue 8 items 3, 4, 14, 16)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgecdn.control.keygen import generate_key
from tests.integration.conftest import OriginClient
from tests.integration.edge_client import admin_url, fetch, get, metric, session, start_edge
from tests.integration.test_http1 import connect, read_reply


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_public_health_names_no_origin(origin: OriginClient, tmp_path: Path) -> None:
    edge = start_edge(origin.url, tmp_path / "cache", "--no-access-log")
    try:
        async with session() as s:
            public = await get(s, edge.url + "/_edge/health")
            admin = await get(s, admin_url(edge) + "/_edge/health")
    finally:
        edge.stop()
    assert (public.status, public.body) == (200, b'{"status":"ok"}')
    assert origin.url.encode() not in public.body
    assert [o["url"] for o in json.loads(admin.body)["origins"]] == [origin.url]  # details stay there


EDGE_TARGETS = [
    ("POST", "/_edge/purge"),
    ("PUT", "/_edge/push/a.txt"),
    ("POST", "/_edge/prefetch"),
    ("GET", "/_edge/stats"),
    ("GET", "/_edge/anything/else"),
    ("GET", "/_edge"),
    ("GET", "/x/../_edge/purge"),  # raw sockets: a client library would normalise these
    ("GET", "/_edge%2Fpurge"),
]


async def test_edge_paths_are_answered_never_forwarded(origin: OriginClient, tmp_path: Path) -> None:
    edge = start_edge(origin.url, tmp_path / "cache", "--no-access-log")
    got = []
    try:
        for method, target in EDGE_TARGETS:
            reader, writer = await connect(edge)
            head = f"{method} {target} HTTP/1.1\r\nHost: a\r\nX-Edge-Signature: sig\r\nContent-Length: 2\r\n"
            writer.write(head.encode() + b"\r\n{}")
            got.append(await read_reply(reader))
            writer.close()
    finally:
        edge.stop()
    assert [(g.status, json.loads(g.body)) for g in got] == [(404, {"error": "not found"})] * len(
        EDGE_TARGETS
    )
    assert origin.all_hits() == {}


async def test_jitter_is_answered_by_the_edge(origin: OriginClient, tmp_path: Path) -> None:
    edge = start_edge(origin.url, tmp_path / "cache", "--no-access-log")
    try:
        async with session() as s:
            got = await get(s, edge.url + "/_edge/jitter?url=/a.txt&client=c1")
            bad = await get(s, edge.url + "/_edge/jitter")
    finally:
        edge.stop()
    assert got.status == 200 and json.loads(got.body)["url"] == "/a.txt"
    assert got.headers["Cache-Control"] == "no-store"
    assert bad.status == 400 and "error" in json.loads(bad.body)
    assert origin.all_hits() == {}


@pytest.fixture
async def bad_header_origin() -> AsyncIterator[str]:
    """An origin whose answer has a malformed field carrying a secret."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nBad Name internal.secret: x\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_origin_failures_name_no_origin(bad_header_origin: str, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    edge = start_edge(dead, tmp_path / "cache", "--no-access-log")
    odd = start_edge(bad_header_origin, tmp_path / "cache2", "--no-access-log")
    try:
        async with session() as s:
            miss = await get(s, edge.url + "/a.txt")
            passed = await fetch(s, "POST", edge.url + "/a.txt")
            malformed = await get(s, odd.url + "/b.txt")
    finally:
        edge.stop()
        odd.stop()
    for got in (miss, passed):
        assert got.status == 502
        assert json.loads(got.body) == {"error": "origin unreachable", "detail": "origin-unreachable"}
        assert dead.removeprefix("http://").encode() not in got.body
        assert got.x_cache == "ERROR"
    assert b"secret" not in malformed.body and bad_header_origin.encode() not in malformed.body
    assert "secret" not in str(malformed.headers)
    assert dead.removeprefix("http://") in edge.stderr_text()  # the full reason goes to the log


async def test_the_edges_own_refusals_count_as_errors_not_misses(
    origin: OriginClient, tmp_path: Path
) -> None:
    key = generate_key("url1")
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[access]\nkeys = ["{key}"]\n[[access.paths]]\nprefix = "/signed/"\nmode = "signed"\n')
    edge = start_edge(origin.url, tmp_path / "cache", "-c", str(cfg), "--no-access-log")
    try:
        async with session() as s:
            refused = await get(s, edge.url + "/signed/a.txt")
            looped = await get(s, edge.url + "/_test/blob/10?t=loop", **{"CDN-Loop": "other, edgecdn"})
            only = await get(s, edge.url + "/_test/blob/10?t=only", **{"Cache-Control": "only-if-cached"})
            admin = admin_url(edge)
            errors = await metric(s, admin, "edgecdn_requests_total", cache_status="ERROR")
            misses = await metric(s, admin, "edgecdn_requests_total", cache_status="MISS")
    finally:
        edge.stop()
    assert [g.status for g in (refused, looped, only)] == [403, 508, 504]
    assert {g.x_cache for g in (refused, looped, only)} == {"ERROR"}
    assert (errors, misses) == (3, 0)
    assert origin.all_hits() == {}
