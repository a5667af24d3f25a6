"""Never hang, never leak: origin timeouts, unreachable origins, slow heads, big bodies, CLI errors."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, OriginClient, Proc
from tests.integration.edge_client import get, run_module, session, start_edge


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_origin_is_502_with_reason(tmp_path: Path) -> None:
    edge = start_edge(f"http://127.0.0.1:{closed_port()}", tmp_path)
    try:
        async with session() as s:
            got = await get(s, edge.url + "/anything")
    finally:
        edge.stop()
    assert got.status == 502
    assert "origin-unreachable" in got.headers["Cache-Status"]
    assert got.headers["Content-Type"].startswith("application/json")


async def test_first_byte_timeout_is_504(origin: OriginClient, tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[origin]\nfirst_byte_timeout = "300ms"\n')
    edge = start_edge(origin.url, tmp_path / "cache", "-c", str(cfg))
    try:
        async with session() as s:
            got = await get(s, edge.url + "/_test/blob/10?t=slow", **{"X-Test-Gate": "never"})
    finally:
        edge.stop()
        origin.release("never")
    assert got.status == 504
    assert "origin-timeout" in got.headers["Cache-Status"]


async def test_slow_request_head_is_disconnected(origin: OriginClient, tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[server]\nheader_timeout = "300ms"\n')
    edge = start_edge(origin.url, tmp_path / "cache", "-c", str(cfg))
    try:
        host, port = edge.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        await writer.drain()
        started = time.monotonic()
        data = await asyncio.wait_for(reader.read(), 10)  # EOF when the edge gives up on us
        elapsed = time.monotonic() - started
        writer.close()
    finally:
        edge.stop()
    assert data == b""
    assert elapsed < 5


def rss_peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


async def test_one_gib_object_streams_in_bounded_memory(origin: OriginClient, tmp_path: Path) -> None:
    size = 1 << 30
    edge = start_edge(origin.url, tmp_path / "cache")
    try:
        async with session() as s:
            await get(s, edge.url + "/_test/blob/10?t=warm")  # imports and pools are paid for first
            before = rss_peak_kib(edge.pid)
            received = 0
            async with s.get(edge.url + f"/_test/blob/{size}?t=gib") as r:
                async for chunk in r.content.iter_chunked(1 << 20):
                    received += len(chunk)
            after = rss_peak_kib(edge.pid)
    finally:
        edge.stop()
    assert received == size
    assert (after - before) < 100 * 1024, f"RSS grew {(after - before) // 1024} MiB"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("edgecdn", *args)


def test_check_config_names_the_key_and_suggests(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text('origins = ["http://127.0.0.1:9000"]\n[cache]\nmax_objet_size = "1GiB"\n')
    got = run_cli("check-config", str(cfg))
    assert got.returncode == 2
    assert got.stderr.strip() == (
        "edgecdn: error: cache.max_objet_size: unknown key; did you mean max_object_size?"
    )
    assert "Traceback" not in got.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["serve"],  # no origin
        ["serve", "--origin", "ftp://x"],
        ["serve", "--origin", "http://127.0.0.1:1", "--listen", "nope"],
        ["serve", "--origin", "http://127.0.0.1:1", "--memory-size", "lots"],
        ["check-config", "/nonexistent.toml"],
        ["no-such-command"],
    ],
    ids=["no-origin", "bad-origin", "bad-listen", "bad-size", "missing-file", "bad-command"],
)
def test_bad_cli_input_is_one_line_and_exit_2(args: list[str]) -> None:
    got = run_cli(*args)
    assert got.returncode == 2, got
    assert len(got.stderr.strip().splitlines()) == 1, got.stderr
    assert "Traceback" not in got.stderr


def test_flags_override_the_config_file(origin: OriginClient, tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'origins = ["{origin.url}"]\n[server]\nlisten = "127.0.0.1:1"\n')
    edge = Proc(
        "edgecdn",
        "serve",
        "-c",
        str(cfg),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    try:
        assert not edge.url.endswith(":1")
        (origin.root / "f.txt").write_text("from config's origin")
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(edge.url + "/f.txt") as r:
            assert r.read() == b"from config's origin"
    finally:
        edge.stop()


def test_every_deploy_example_config_is_valid() -> None:
    examples = sorted((REPO / "deploy").glob("*.toml"))
    edge_examples = [p for p in examples if not p.name.startswith("origin")]
    assert edge_examples, "deploy/ should carry an example edge config"
    for path in edge_examples:
        got = run_cli("check-config", str(path))
        assert got.returncode == 0, (path, got.stderr)


async def test_stalled_body_times_out_and_is_not_stored(origin: OriginClient, tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[origin]\nbetween_bytes_timeout = "300ms"\n')
    edge = start_edge(origin.url, tmp_path / "cache", "-c", str(cfg))
    path = "/_test/blob/400000?t=stall"
    try:
        async with session() as s:
            with pytest.raises(Exception):  # noqa: B017 - the client sees a broken body
                await get(s, edge.url + path, **{"X-Test-Chunk-Delay-Ms": "2000"})
            got = await get(s, edge.url + path)
    finally:
        edge.stop()
    assert got.x_cache == "MISS" and len(got.body) == 400_000
    assert origin.hits(path) == 2
