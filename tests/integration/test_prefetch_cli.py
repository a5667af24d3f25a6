"""`edgecdn prefetch` against three real edges: waves, a summary per edge, fresh on rerun, exit codes."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from edgecdn import cli
from edgecdn.control.signing import generate_key
from tests.integration.conftest import EdgeFactory, OriginClient
from tests.integration.edge_client import admin_url, get, run_module, session

KEY = generate_key("warm")


def prefetch_cli(*args: str, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    return run_module("edgecdn", "prefetch", *args, admin_key=key)


async def test_prefetch_warms_three_edges_in_waves(
    origin: OriginClient, edge: EdgeFactory, tmp_path: Path
) -> None:
    edges = [edge(origin.url, "--admin-key", KEY, "--no-access-log") for _ in range(3)]
    admins = [admin_url(e) for e in edges]
    urls = [f"/_test/blob/{1000 * (i + 1)}?t=cli-{i}" for i in range(20)]
    manifest = tmp_path / "manifest.txt"
    manifest.write_text(
        "# release 42\n\n" + "\n".join(urls) + "\n/_test/blob/77?t=cli-br  Accept-Encoding: br\n"
    )
    flags = [f"--edge={a}" for a in admins]
    first = await asyncio.to_thread(
        prefetch_cli, str(manifest), *flags, "--waves", "3", "--concurrency", "4", "--origin-rate", "1000"
    )
    again = await asyncio.to_thread(prefetch_cli, str(manifest), *flags)
    async with session() as s:
        hits = [await get(s, e.url + u) for e in edges for u in urls[::5]]
    assert first.returncode == 0, first.stdout + first.stderr
    rows = [line for line in first.stdout.splitlines() if any(a in line for a in admins)]
    assert len(rows) == 3 and all(" 21 " in row for row in rows)  # warmed 21 on each edge
    assert "failed:" not in first.stdout
    assert again.returncode == 0 and again.stdout.count(" 21 ") == 3  # now fresh: 21 each
    assert {h.x_cache for h in hits} == {"HIT"}
    assert all(origin.hits(u) == 3 for u in urls)  # once per edge


async def test_prefetch_fails_with_1_and_lists_failures(
    origin: OriginClient, edge: EdgeFactory, tmp_path: Path
) -> None:
    live = edge(origin.url, "--admin-key", KEY, "--no-access-log")
    dead = edge(origin.url, "--admin-key", KEY, "--no-access-log")
    dead_admin = admin_url(dead)
    dead.stop()
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("/_test/blob/10?t=cli-ok\n/_test/blob/10?t=cli-bad  X-Test-Status: 500\n")
    result = await asyncio.to_thread(
        prefetch_cli, str(manifest), f"--edge={admin_url(live)}", f"--edge={dead_admin}", "--waves", "2"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    line = f"failed: {admin_url(live)} /_test/blob/10?t=cli-bad: origin answered 500 (origin-500)"
    assert line in result.stdout
    assert result.stdout.count(f"failed: {dead_admin}") == 2
    assert "cannot connect" in result.stdout


def test_prefetch_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    good = tmp_path / "m.txt"
    good.write_text("/a\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("/a\nrelative\n")
    edge = "--edge=http://127.0.0.1:1"
    cases = [
        ((str(good), edge), None, "admin key is required"),
        ((str(tmp_path / "nope"), edge), KEY, "no such file"),
        ((str(empty), edge), KEY, "no URLs"),
        ((str(bad), edge), KEY, "bad.txt:2:"),
        ((str(good), "--edge=ftp://x"), KEY, "expected an admin URL"),
        ((str(good), edge, "--waves", "0"), KEY, "--waves"),
        ((str(good), edge, edge), KEY, "given twice"),
    ]
    for args, key, message in cases:
        monkeypatch.delenv("EDGECDN_ADMIN_KEY", raising=False)
        if key is not None:
            monkeypatch.setenv("EDGECDN_ADMIN_KEY", key)
        assert cli.main(["prefetch", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
