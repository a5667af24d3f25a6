"""What a connection costs the edge in memory: slow readers and joiners of a fill hold bounded buffers.

A reader that does not read holds at most the transport's high-water mark plus one copied chunk
(connection.WRITE_HIGH_WATER, writer.FALLBACK_CHUNK: 48 KiB); a joiner of a fill in progress sends the
fill's file with sendfile and copies at most respond.FILL_READ (64 KiB) of bytes not yet in it.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from tests.integration.conftest import OriginClient
from tests.integration.edge_client import get, session, start_edge
from tests.integration.test_edge_limits import rss_peak_kib

MIB = 1 << 20


async def open_get(url: str, path: str, *, rcvbuf: int | None = None, **headers: str) -> socket.socket:
    """A raw connection that has sent its GET (and reads nothing yet)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    await asyncio.get_running_loop().sock_sendall(
        sock, f"GET {path} HTTP/1.1\r\nHost: a\r\n{extra}\r\n".encode()
    )
    return sock


async def read_response_body(sock: socket.socket) -> int:
    """Read one response to its end; returns the body length (Content-Length framing)."""
    loop = asyncio.get_running_loop()
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await loop.sock_recv(sock, 65536)
        assert chunk, "closed before the head"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(
        next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
    )
    got = len(rest)
    while got < length:
        chunk = await loop.sock_recv(sock, 1 << 20)
        assert chunk, f"closed at {got} of {length}"
        got += len(chunk)
    return got


async def test_100_slow_readers_of_10_mib_hold_bounded_memory(origin: OriginClient, tmp_path: Path) -> None:
    edge = start_edge(origin.url, tmp_path / "cache", "--no-access-log")
    path = "/_test/blob/10485760?t=slow"  # 10 MiB: a disk-tier object, sent with sendfile
    socks: list[socket.socket] = []
    try:
        async with session() as s:
            assert len((await get(s, edge.url + path)).body) == 10 * MIB
            assert (await get(s, edge.url + path)).x_cache == "HIT"
        before = rss_peak_kib(edge.pid)
        socks = [await open_get(edge.url, path, rcvbuf=4096) for _ in range(100)]
        # Each reader takes its head and a little, then stalls; the edge fills what the socket takes.
        for sock in socks:
            assert (await asyncio.get_running_loop().sock_recv(sock, 4096)).startswith(b"HTTP/1.1 200")
        async with session() as s:  # the edge still answers, having tried to push to every reader
            for i in range(3):
                assert (await get(s, edge.url + f"/_test/blob/10?t=alive{i}")).status == 200
        grown = rss_peak_kib(edge.pid) - before
    finally:
        for sock in socks:
            sock.close()
        edge.stop()
    assert grown < 16 * 1024, f"RSS grew {grown // 1024} MiB for 100 stalled readers"


async def test_500_joiners_of_a_cold_2_mib_object_share_its_bytes(
    origin: OriginClient, tmp_path: Path
) -> None:
    edge = start_edge(origin.url, tmp_path / "cache", "--no-access-log")
    path = "/_test/blob/2097152?t=herd"
    socks: list[socket.socket] = []
    try:
        async with session() as s:
            await get(s, edge.url + "/_test/blob/10?t=warm")  # imports and pools are paid for first
        before = rss_peak_kib(edge.pid)
        socks = [await open_get(edge.url, path, **{"X-Test-Gate": "herd"}) for _ in range(500)]
        await origin.await_gate("herd", 1)
        origin.release("herd")
        sizes = await asyncio.gather(*(read_response_body(sock) for sock in socks))
        grown = rss_peak_kib(edge.pid) - before
    finally:
        for sock in socks:
            sock.close()
        edge.stop()
    assert sizes == [2 * MIB] * 500
    assert origin.hits(path) == 1
    # 500 private copies would be 1000 MiB; what a joiner holds is bounded by FILL_READ + the
    # high-water mark (80 KiB), and in practice much less: most bytes go by sendfile from the fill.
    assert grown < 48 * 1024, f"RSS grew {grown // 1024} MiB for 500 joiners"
