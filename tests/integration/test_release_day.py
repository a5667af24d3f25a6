"""Release day end to end: version → publish → `edgecdn prefetch --waves 3` on 3 edges → a jittered swarm.

Objects are 1 KiB to 2 MiB (not 10 MiB) so the scenario stays within seconds on a shared 2-core box;
sizes do not change what is proven: each object reaches each edge once, then clients cost the origin
nothing.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import aiohttp

from edgecdn.control.signing import generate_key
from tests.integration.conftest import EdgeFactory, OriginFactory
from tests.integration.edge_client import admin_url, fetch, run_module, session

KEY = generate_key("release")
OBJECTS = 200
CLIENTS = 300
JITTER = '[jitter]\nwindow = "1s"\n'


def sizes(n: int) -> list[int]:
    """Mostly small, some medium, a few large: 1 KiB .. 2 MiB."""
    rng = random.Random(9)
    return [
        rng.choice([1, 4, 16, 64]) * 1024 if i % 10 else rng.choice([256, 1024, 2048]) * 1024
        for i in range(n)
    ]


async def client(
    s: aiohttp.ClientSession, edge: str, path: str, client_id: str, gate: asyncio.Semaphore
) -> str:
    """Ask /_edge/jitter, wait as told (the window is 1 s), download; the X-Cache it got."""
    async with gate, s.get(f"{edge}/_edge/jitter", params={"url": path, "client": client_id}) as r:
        answer = json.loads(await r.read())
    await asyncio.sleep(answer["delay_ms"] / 1000)
    async with gate:
        got = await fetch(s, "GET", edge + path)
    return got.x_cache if got.status == 200 else f"HTTP {got.status}"


async def test_release_day(origin_factory: OriginFactory, edge: EdgeFactory, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    rng = random.Random(1)
    for i, size in enumerate(sizes(OBJECTS)):
        (site / f"a{i // 50}").mkdir(exist_ok=True)
        (site / f"a{i // 50}" / f"obj{i}.bin").write_bytes(rng.randbytes(size))
    root = tmp_path / "www"
    root.mkdir()
    dist = tmp_path / "dist"
    versioned = run_module("edgecdn", "version", str(site), "--out", str(dist), "--quiet")
    published = run_module("origin", "publish", str(dist / "manifest.json"), "--root", str(root))
    assert versioned.returncode == 0 and published.returncode == 0, versioned.stderr + published.stderr
    origin = origin_factory(root)
    config = tmp_path / "edge.toml"
    config.write_text(JITTER)
    edges = [edge(origin.url, "-c", str(config), "--admin-key", KEY, "--no-access-log") for _ in range(3)]

    warmed = await asyncio.to_thread(
        run_module,
        "edgecdn",
        "prefetch",
        str(dist / "manifest.txt"),
        *(f"--edge={admin_url(e)}" for e in edges),
        "--waves",
        "3",
        admin_key=KEY,
    )
    assert warmed.returncode == 0, warmed.stdout + warmed.stderr
    after_warm = origin.all_hits()
    paths = [line for line in (dist / "manifest.txt").read_text().splitlines() if line.startswith("/")]
    assert len(paths) == OBJECTS
    assert {after_warm.get(p, 0) for p in paths} == {3}  # each object once per edge, no more

    gate = asyncio.Semaphore(64)
    async with session() as s:
        statuses = await asyncio.gather(
            *(
                client(s, edges[i % 3].url, paths[rng.randrange(OBJECTS)], f"client-{i}", gate)
                for i in range(CLIENTS)
            )
        )
    assert set(statuses) == {"HIT"}
    assert origin.all_hits() == after_warm  # the swarm cost the origin nothing
