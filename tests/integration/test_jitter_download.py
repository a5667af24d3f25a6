"""`GET /_edge/jitter` on the public listener and `edgecdn download`: wait, resume, verify."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import xxhash

from origin.blob import blob_bytes
from tests.integration.conftest import OriginClient, Proc
from tests.integration.edge_client import get, origin_and_edge, run_module, session

CONFIG = '[jitter]\nwindow = "10s"\n\n[[jitter.rules]]\nprefix = "/now/"\nwindow = 0\n'
Stack = tuple[OriginClient, Proc, str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with origin_and_edge(tmp_path_factory.mktemp("stack"), CONFIG, "--no-access-log") as s:
        yield s


async def test_jitter_answers_on_the_public_listener_and_never_reaches_the_origin(stack: Stack) -> None:
    origin, edge, _ = stack
    async with session() as s:
        first = await get(s, edge.url + "/_edge/jitter?url=/game/patch.bin&client=c1")
        again = await get(s, edge.url + "/_edge/jitter?url=/game/patch.bin&client=c1")
        now = await get(s, edge.url + "/_edge/jitter?url=/now/x.bin")
        bad = await get(s, edge.url + "/_edge/jitter?client=c1")
    body = json.loads(first.body)
    assert first.status == 200 and first.headers["Content-Type"].startswith("application/json")
    assert body["url"] == "/game/patch.bin" and body["window_ms"] == 10_000
    assert 0 <= body["delay_ms"] < 10_000
    second = json.loads(again.body)
    asked = [(b["not_before"] - b["delay_ms"]) // 10_000 for b in (body, second)]
    if asked[0] == asked[1]:  # the same release window (ms apart): the same place
        assert second["delay_ms"] == body["delay_ms"]
    assert json.loads(now.body)["delay_ms"] == 0
    assert bad.status == 400 and json.loads(bad.body)["error"] == "bad jitter request"
    assert not [t for t in origin.all_hits() if t.startswith("/_edge")]


async def test_download_verifies_a_versioned_url_through_the_edge(stack: Stack, tmp_path: Path) -> None:
    origin, edge, _ = stack
    body = bytes(range(256)) * 1000
    name = f"patch.{xxhash.xxh3_64_hexdigest(body)}.bin"
    (origin.root / "now").mkdir(exist_ok=True)
    (origin.root / "now" / name).write_bytes(body)
    (origin.root / "now" / "bad.0123456789abcdef.bin").write_bytes(b"not what the name promises")
    out = tmp_path / "got.bin"
    ok = await asyncio.to_thread(run_module, "edgecdn", "download", f"{edge.url}/now/{name}", "-o", str(out))
    bad_out = tmp_path / "bad.bin"
    bad = await asyncio.to_thread(
        run_module, "edgecdn", "download", f"{origin.url}/now/bad.0123456789abcdef.bin", "-o", str(bad_out)
    )
    assert ok.returncode == 0, ok.stderr
    assert "xxh3-64 verified" in ok.stdout and out.read_bytes() == body
    assert bad.returncode == 1 and "hashes to" in bad.stderr and len(bad.stderr.strip().splitlines()) <= 2
    assert not bad_out.exists() and not (tmp_path / "bad.bin.part").exists()


async def test_download_resumes_with_range_after_a_broken_connection(stack: Stack, tmp_path: Path) -> None:
    origin, _, _ = stack
    target = "/_test/blob/300000?v=resume"
    out = tmp_path / "blob.bin"
    got = await asyncio.to_thread(
        run_module,
        "edgecdn",
        "download",
        origin.url + target,
        "-o",
        str(out),
        "--no-jitter",
        "-H",
        "X-Test-Truncate: 100000",
    )
    seen = origin.requests(target)
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == blob_bytes(300000, "resume")
    starts = [int(r["headers"]["Range"][6:-1]) for r in seen[1:]]  # bytes=N-
    assert "Range" not in seen[0]["headers"] and len(starts) >= 2
    assert starts == sorted(set(starts)) and starts[0] > 0  # each resume continues where the last broke
    assert all(r["headers"].get("If-Range") for r in seen[1:])
    assert got.stderr.count("resuming") == len(starts)


def test_download_bad_input_exits_2(tmp_path: Path) -> None:
    for args, message in [
        (("ftp://x/y",), "expected an http(s) URL"),
        (("http://127.0.0.1:1/",), "no file name"),
        (("http://127.0.0.1:1/a", "-o", str(tmp_path / "no" / "dir")), "is not a directory"),
        (("http://127.0.0.1:1/a", "-H", "nocolon"), "expected NAME:VALUE"),
    ]:
        r = run_module("edgecdn", "download", *args)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
