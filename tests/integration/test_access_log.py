"""The access log: one line per request, bytes on the wire, flushed on shutdown, never fails a request."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.integration.conftest import OriginClient
from tests.integration.edge_client import admin_url, fetch, get, metric, session, start_edge


async def raw(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    got = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return got


async def test_one_line_per_request_with_bytes_on_the_wire(origin: OriginClient, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    edge = start_edge(origin.url, tmp_path / "cache", "--access-log", str(log))
    big = "/_test/blob/3000000?t=log"  # above the memory tier's object limit: a disk hit, by sendfile
    try:
        async with session() as s:
            miss = await get(s, edge.url + big, **{"User-Agent": 'ua "quoted"'})
            hit = await get(s, edge.url + big)
            passed = await fetch(s, "POST", edge.url + "/_test/blob/10?t=post")  # the origin says 405
            health = await get(s, edge.url + "/_edge/health")
        refused = await raw(edge.url, b"GET / HTTP/1.1\r\nHost: good:80@evil\r\n\r\n")
    finally:
        assert edge.stop() == 0
    assert (miss.x_cache, hit.x_cache, len(hit.body)) == ("MISS", "HIT", 3_000_000)
    assert refused.startswith(b"HTTP/1.1 400 ")
    lines = log.read_text().splitlines()
    assert len(lines) == 5, lines  # flushed at shutdown: nothing lost
    first, second, third, fourth, fifth = (line.split('"') for line in lines)
    assert first[1] == f"GET {big} HTTP/1.1" and first[2].split() == ["200", "3000000"]
    assert first[5] == "ua \\x22quoted\\x22"
    assert first[6].split()[0] == "MISS"
    assert second[2].split() == ["200", "3000000"] and second[6].split()[0] == "HIT"
    assert third[1].startswith("POST ") and third[2].split()[0] == str(passed.status)
    assert third[6].split()[:2] == ["PASS", origin.url]
    assert fourth[1] == "GET /_edge/health HTTP/1.1" and fourth[2].split()[0] == str(health.status)
    assert fifth[1] == "-" and fifth[2].split()[0] == "400" and fifth[-1].split()[0] == "ERROR"


async def test_an_unwritable_log_never_fails_a_request(origin: OriginClient, tmp_path: Path) -> None:
    edge = start_edge(origin.url, tmp_path / "cache", "--access-log", "/dev/full")
    try:
        async with session() as s:
            for i in range(20):
                got = await get(s, edge.url + f"/_test/blob/100?t=full{i}")
                assert got.status == 200 and len(got.body) == 100
            for _ in range(50):  # the writer thread gets its batch after at most FLUSH_S
                if await metric(s, admin_url(edge), "edgecdn_access_log_dropped_total") >= 20:
                    break
                await asyncio.sleep(0.1)
            dropped = await metric(s, admin_url(edge), "edgecdn_access_log_dropped_total")
    finally:
        assert edge.stop() == 0
    assert dropped >= 20
    assert "Traceback" not in edge.stderr_text()
    assert edge.stderr_text().count("access log /dev/full") == 1  # said once, then counted


async def test_sigterm_drains_in_flight_requests_then_flushes_the_log(
    origin: OriginClient, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    edge = start_edge(origin.url, tmp_path / "cache", "--access-log", str(log))
    host, port = edge.url.removeprefix("http://").split(":")
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /_test/blob/1000?t=drain HTTP/1.1\r\nHost: a\r\nX-Test-Gate: drain\r\n\r\n")
        await origin.await_gate("drain", 1)
        edge.signal(signal.SIGTERM)
        refused = False
        for _ in range(100):  # the listener closes at once: new connections are refused
            try:
                _, probe = await asyncio.open_connection(host, int(port))
                probe.close()
                await asyncio.sleep(0.05)
            except (ConnectionRefusedError, ConnectionResetError):  # reset: queued as the listener closed
                refused = True
                break
        origin.release("drain")
        answer = await asyncio.wait_for(reader.read(), 10)  # the whole answer, then the close
        writer.close()
        code = await asyncio.to_thread(edge.popen.wait, 15)
    finally:
        edge.stop()
    assert refused
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in head and len(body) == 1000
    assert code == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and '"GET /_test/blob/1000?t=drain HTTP/1.1" 200 1000' in lines[0]
