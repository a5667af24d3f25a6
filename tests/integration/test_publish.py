"""`edgecdn-origin publish` with real edges: atomic placement, the change log, purge/push, catch-up."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from edgecdn.control.signing import generate_key
from origin import cli as origin_cli
from tests.integration.conftest import EdgeFactory, OriginClient
from tests.integration.edge_client import admin_url, get, run_module, session

KEY = generate_key("pub")


def publish(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("origin", "publish", *args, admin_key=KEY)


def changes(origin: OriginClient, since: int = 0) -> dict[str, object]:
    with urllib.request.urlopen(f"{origin.url}/_origin/changes?since={since}", timeout=10) as r:
        result: dict[str, object] = json.load(r)
        return result


def source(tmp_path: Path, name: str, body: bytes) -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(body)
    return path


async def test_publish_places_the_file_logs_it_and_purges_or_pushes_on_every_edge(
    origin: OriginClient, edge: EdgeFactory, tmp_path: Path
) -> None:
    (origin.root / "page.txt").write_bytes(b"version 1")
    edges = [edge(origin.url, "--admin-key", KEY, "--no-access-log") for _ in range(2)]
    admins = [f"--edge={admin_url(e)}" for e in edges]
    async with session() as s:
        for e in edges:
            assert (await get(s, e.url + "/page.txt")).body == b"version 1"
        purged = await asyncio.to_thread(
            publish,
            f"{source(tmp_path, 'p.txt', b'version 2')}=/page.txt",
            "--root",
            str(origin.root),
            *admins,
        )
        after_purge = [await get(s, e.url + "/page.txt") for e in edges]
        pushed = await asyncio.to_thread(
            publish,
            f"{source(tmp_path, 'p.txt', b'version 3!')}=/page.txt",
            "--root",
            str(origin.root),
            "--push",
            *admins,
        )
        after_push = [await get(s, e.url + "/page.txt") for e in edges]
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert all(a.removeprefix("--edge=") in purged.stdout for a in admins)
    assert [(g.x_cache, g.body) for g in after_push] == [("HIT", b"version 3!")] * 2
    assert [g.body for g in after_purge] == [b"version 2"] * 2
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert origin.hits("/page.txt") == 4  # 2 first fills + 2 after the purge; the push needed none
    log = changes(origin)
    assert [c["path"] for c in log["changes"]] == ["/page.txt", "/page.txt"]  # type: ignore[index]
    assert [c["seq"] for c in log["changes"]] == [1, 2]  # type: ignore[index]
    assert log["changes"][1]["etag"] == after_push[0].headers["ETag"]  # type: ignore[index]
    assert changes(origin, since=2)["changes"] == []
    assert not [p for p in origin.root.iterdir() if p.name.endswith(".tmp")]  # placed by rename


async def test_an_edge_down_during_a_publish_catches_up_on_start_and_by_polling(
    origin: OriginClient, edge: EdgeFactory, tmp_path: Path
) -> None:
    (origin.root / "app.css").write_bytes(b"old css")
    cache = tmp_path / "edge-cache"
    args = ("--admin-key", KEY, "--follow-changes", "0.2s", "--no-access-log")
    first = edge(origin.url, *args, cache_dir=cache)
    async with session() as s:
        assert (await get(s, first.url + "/app.css")).body == b"old css"
        assert (await get(s, first.url + "/app.css?v=2")).x_cache == "MISS"
        dead_admin = admin_url(first)
        first.stop()
        missed = await asyncio.to_thread(
            publish,
            f"{source(tmp_path, 'a.css', b'new css')}=/app.css",
            "--root",
            str(origin.root),
            f"--edge={dead_admin}",
        )
        started = time.monotonic()
        back = edge(origin.url, *args, cache_dir=cache)
        got = await get(s, back.url + "/app.css")
        restart_to_new = time.monotonic() - started
        query_variant = await get(s, back.url + "/app.css?v=2")

        # While it runs, a publish that tells no edge at all reaches it within one polling interval.
        quiet = await asyncio.to_thread(
            publish, f"{source(tmp_path, 'a.css', b'newest css')}=/app.css", "--root", str(origin.root)
        )
        published = time.monotonic()
        for _ in range(300):
            polled = await get(s, back.url + "/app.css")
            if polled.body == b"newest css":
                break
            await asyncio.sleep(0.02)
        poll_delay = time.monotonic() - published
    assert missed.returncode == 1 and "cannot connect" in missed.stdout
    assert got.body == b"new css" and got.x_cache == "MISS"
    assert query_variant.x_cache == "MISS"  # the query variants of a changed path go too
    assert quiet.returncode == 0
    assert polled.body == b"newest css"
    assert poll_delay < 2.0
    print(f"restart → new object served: {restart_to_new:.2f} s; poll catch-up: {poll_delay:.2f} s")


def test_publish_refuses_paths_outside_root_and_missing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGECDN_ADMIN_KEY", KEY)
    root = tmp_path / "root"
    root.mkdir()
    src = source(tmp_path, "x.txt", b"x")
    cases = [
        ((f"{src}=/../escape.txt",), "without . or .. segments"),
        ((f"{src}=relative.txt",), "absolute URL path"),
        ((f"{tmp_path / 'missing'}",), "not a file"),
        ((f"{src}", "--edge", "not-a-url"), "expected an admin URL"),
        ((f"{src}", "--root", str(tmp_path / "nope")), "not a directory"),
    ]
    for args, message in cases:
        assert (
            origin_cli.main(["publish", *args, "--root", str(root)][: None if "--root" not in args else -2])
            == 2
        )
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert list(root.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()
