"""Misbehaving origins on raw sockets: a reset before the head fails over; a malformed answer is a 502.

Each fake origin is a tiny asyncio server in this process (127.0.0.1, port 0) that reads a request head and
answers with exactly the bytes a test gives it, or resets the connection.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.integration.conftest import OriginClient
from tests.integration.edge_client import get, session, start_edge

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_origin(behaviour: Behaviour) -> AsyncIterator[tuple[str, list[int]]]:
    """A raw origin; yields its URL and a one-element hit counter."""
    hits = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hits[0] += 1
        try:
            await behaviour(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", hits
    finally:
        server.close()
        await server.wait_closed()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def reset_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    reset(writer)


async def reset_after_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    reset(writer)


async def close_after_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")


@pytest.mark.parametrize("behaviour", [reset_at_once, reset_after_head, close_after_head])
async def test_a_primary_that_accepts_then_fails_before_the_head_fails_over(
    origin: OriginClient, tmp_path: Path, behaviour: Behaviour
) -> None:
    (origin.root / "f.txt").write_bytes(b"from the backup")
    cfg = tmp_path / "edge.toml"
    cfg.write_text("[origin]\nmax_fails = 0\n")  # never marked down: every request tries the primary first
    async with raw_origin(behaviour) as (primary, hits):
        edge = start_edge(
            primary, tmp_path / "cache", "--origin", origin.url, "-c", str(cfg), "--no-access-log"
        )
        try:
            async with session() as s:
                got = [await get(s, edge.url + f"/f.txt?n={i}") for i in range(20)]
        finally:
            edge.stop()
    assert [g.status for g in got] == [200] * 20
    assert {g.body for g in got} == {b"from the backup"}
    assert hits[0] >= 20  # each request did try the primary


def answer(raw: bytes) -> Behaviour:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw)
        await writer.drain()

    return behaviour


CACHE = b"Cache-Control: max-age=600\r\n"
BAD_ANSWERS = {
    "status-999": b"HTTP/1.1 999 X\r\n" + CACHE + b"Content-Length: 2\r\n\r\nhi",
    "status-099": b"HTTP/1.1 099 X\r\n" + CACHE + b"Content-Length: 2\r\n\r\nhi",
    "te-chunked-identity": b"HTTP/1.1 200 OK\r\n"
    + CACHE
    + b"Transfer-Encoding: chunked, identity\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    "te-identity": b"HTTP/1.1 200 OK\r\n" + CACHE + b"Transfer-Encoding: identity\r\n\r\nhi",
    "te-twice": b"HTTP/1.1 200 OK\r\n"
    + CACHE
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    "content-length-conflict": b"HTTP/1.1 200 OK\r\n"
    + CACHE
    + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nhi!",
    "content-length-list": b"HTTP/1.1 200 OK\r\n" + CACHE + b"Content-Length: 2, 3\r\n\r\nhi!",
    "content-length-sign": b"HTTP/1.1 200 OK\r\n" + CACHE + b"Content-Length: +2\r\n\r\nhi",
    "control-byte-in-value": b"HTTP/1.1 200 OK\r\n" + CACHE + b"X-A: a\x01b\r\nContent-Length: 2\r\n\r\nhi",
    "nul-in-value": b"HTTP/1.1 200 OK\r\n" + CACHE + b"X-A: a\x00b\r\nContent-Length: 2\r\n\r\nhi",
    "space-in-name": b"HTTP/1.1 200 OK\r\n" + CACHE + b"X A: b\r\nContent-Length: 2\r\n\r\nhi",
    "bare-cr-in-value": b"HTTP/1.1 200 OK\r\n" + CACHE + b"X-A: a\rb\r\nContent-Length: 2\r\n\r\nhi",
    "no-status-line": b"hello\r\n\r\n",
}


@pytest.mark.parametrize("raw", list(BAD_ANSWERS.values()), ids=list(BAD_ANSWERS))
async def test_a_malformed_origin_answer_is_a_502_and_never_stored(tmp_path: Path, raw: bytes) -> None:
    async with raw_origin(answer(raw)) as (url, hits):
        edge = start_edge(url, tmp_path / "cache", "--no-access-log", "-c", str(no_error_ttl(tmp_path)))
        try:
            async with session() as s:
                first = await get(s, edge.url + "/x")
                second = await get(s, edge.url + "/x")
        finally:
            edge.stop()
    assert (first.status, second.status) == (502, 502)
    assert b"hi" not in first.body
    assert hits[0] == 2  # nothing was stored: the second request asked the origin again


def no_error_ttl(tmp_path: Path) -> Path:
    cfg = tmp_path / "edge.toml"
    cfg.write_text("[cache]\nerror_ttl = 0\n")
    return cfg
