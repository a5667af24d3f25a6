"""`edgecdn purge` against three real edges: concurrent fan-out, a per-edge table, exit codes."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from edgecdn import cli
from edgecdn.control.signing import generate_key
from tests.integration.conftest import EdgeFactory, OriginClient
from tests.integration.edge_client import admin_url, get, run_module, session

KEY = generate_key("cli")


def purge_cli(*args: str, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    return run_module("edgecdn", "purge", *args, admin_key=key)


async def test_purge_cli_purges_every_edge_and_fails_when_one_edge_fails(
    origin: OriginClient, edge: EdgeFactory
) -> None:
    edges = [edge(origin.url, "--admin-key", KEY, "--no-access-log") for _ in range(3)]
    admins = [admin_url(e) for e in edges]
    paths = ["/_test/blob/500?t=cli-a", "/_test/blob/600?t=cli-b"]
    tagged = "/_test/blob/700?t=cli-tag"
    async with session() as s:
        for e in edges:
            for p in paths:
                await get(s, e.url + p)
            await get(s, e.url + tagged, **{"X-Set-Surrogate-Key": "cli-tag"})

        ok = await asyncio.to_thread(
            purge_cli, *(f"--edge={a}" for a in admins), "--tag", "cli-tag", edges[0].url + paths[0]
        )
        after = [await get(s, e.url + p) for e in edges for p in (paths[0], tagged)]
        kept = [await get(s, e.url + paths[1]) for e in edges]

        edges[2].stop()
        partial = await asyncio.to_thread(purge_cli, *(f"--edge={a}" for a in admins), paths[1])
        purged_on_live = [await get(s, e.url + paths[1]) for e in edges[:2]]
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert all(a in ok.stdout for a in admins)
    assert ok.stdout.count(" 200 ") == 3
    assert {g.x_cache for g in after} == {"MISS"}
    assert {g.x_cache for g in kept} == {"HIT"}
    assert origin.hits(paths[0]) == 6 and origin.hits(tagged) == 6
    assert partial.returncode == 1
    assert "cannot connect" in partial.stdout
    assert {g.x_cache for g in purged_on_live} == {"MISS"}


def test_purge_cli_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = [
        (("--edge", "http://127.0.0.1:1"), KEY, "nothing to purge"),
        (("--edge", "http://127.0.0.1:1", "/x"), None, "admin key is required"),
        (("--edge", "http://127.0.0.1:1", "/x"), "kid:short", "secret must be"),
        (("--edge", "not-a-url", "/x"), KEY, "expected an admin URL"),
        (("--edge", "http://127.0.0.1:1", "--prefix", "no-slash"), KEY, "must start with /"),
        (("--edge", "http://127.0.0.1:1", "ftp://x/y"), KEY, "not an http(s) URL"),
    ]
    for args, key, message in cases:
        monkeypatch.delenv("EDGECDN_ADMIN_KEY", raising=False)
        if key is not None:
            monkeypatch.setenv("EDGECDN_ADMIN_KEY", key)
        assert cli.main(["purge", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


async def test_purge_cli_shows_why_an_edge_refused_the_key(origin: OriginClient, edge: EdgeFactory) -> None:
    admin = admin_url(edge(origin.url, "--admin-key", KEY, "--no-access-log"))
    wrong_secret = KEY.partition(":")[0] + ":" + generate_key("x").partition(":")[2]
    unknown = await asyncio.to_thread(purge_cli, f"--edge={admin}", "/x", key=generate_key("other"))
    forged = await asyncio.to_thread(purge_cli, f"--edge={admin}", "/x", key=wrong_secret)
    assert unknown.returncode == 1 and forged.returncode == 1
    assert "unauthorized (unknown-key)" in unknown.stdout, unknown.stdout
    assert "unauthorized (bad-signature)" in forged.stdout, forged.stdout
