"""Purge latency: from starting `edgecdn purge` to "no edge serves the old object", over 3 local edges.

    .venv/bin/python loadtests/purge_latency.py [--rounds 20] [--edges 3]

Each round changes a file on the origin, runs the real CLI (a new process, as an operator would), and polls
every edge until each serves the new bytes. Prints the median and p90 of the end-to-end time, and of the
time the CLI process itself took (most of it is Python start-up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgecdn.control.admin_client import fan_out  # noqa: E402
from edgecdn.control.signing import generate_key, parse_key  # noqa: E402
from tests.integration.conftest import Proc  # noqa: E402
from tests.integration.edge_client import admin_url, start_edge  # noqa: E402


async def wait_new(s: aiohttp.ClientSession, urls: list[str], new: bytes) -> None:
    pending = set(urls)
    while pending:
        for url in list(pending):
            async with s.get(url) as r:
                if await r.read() == new:
                    pending.discard(url)


async def measure(rounds: int, n_edges: int) -> None:
    key = generate_key("bench")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        (root / "obj.txt").write_bytes(b"round -1")
        origin = Proc("origin", "serve", str(root), "--listen", "127.0.0.1:0")
        edges = [
            start_edge(origin.url, Path(tmp) / f"c{i}", "--admin-key", key, "--no-access-log")
            for i in range(n_edges)
        ]
        try:
            urls = [e.url + "/obj.txt" for e in edges]
            env = dict(os.environ, EDGECDN_ADMIN_KEY=key)
            total, cli, api = [], [], []
            admins = [admin_url(e) for e in edges]
            async with aiohttp.ClientSession(trust_env=False) as s:
                for i in range(rounds):
                    for url in urls:  # every edge holds the old object
                        async with s.get(url) as r:
                            await r.read()
                    new = f"round {i}".encode()
                    (root / "obj.txt").write_bytes(new)
                    start = time.perf_counter()
                    argv = [
                        sys.executable,
                        "-m",
                        "edgecdn",
                        "purge",
                        *(f"--edge={admin_url(e)}" for e in edges),
                    ]
                    proc = await asyncio.create_subprocess_exec(
                        *argv, "/obj.txt", env=env, cwd=REPO, stdout=subprocess.DEVNULL
                    )
                    assert await proc.wait() == 0
                    cli.append(time.perf_counter() - start)
                    await wait_new(s, urls, new)
                    total.append(time.perf_counter() - start)
                    # The same purge without process start-up: the signed fan-out alone.
                    for url in urls:
                        async with s.get(url) as r:
                            await r.read()
                    newer = f"round {i} again".encode()
                    (root / "obj.txt").write_bytes(newer)
                    start = time.perf_counter()
                    results = await fan_out(
                        parse_key(key), admins, "POST", "/_edge/purge", {"urls": ["/obj.txt"]}
                    )
                    assert all(r.ok for r in results)
                    await wait_new(s, urls, newer)
                    api.append(time.perf_counter() - start)
                    await asyncio.sleep(1.01)  # a new signature each round (one-second timestamps)
        finally:
            for e in edges:
                e.stop()
            origin.stop()

    def ms(xs: list[float], q: float) -> str:
        return (
            f"{1000 * statistics.quantiles(xs, n=100)[int(q) - 1]:.0f} ms"
            if q != 50
            else f"{1000 * statistics.median(xs):.0f} ms"
        )

    print(f"{rounds} rounds, {n_edges} edges")
    print(f"CLI start -> no edge serves the old object: median {ms(total, 50)}, p90 {ms(total, 90)}")
    print(f"CLI process alone (start-up + signed fan-out):  median {ms(cli, 50)}, p90 {ms(cli, 90)}")
    print(f"in-process signed fan-out -> no edge serves old: median {ms(api, 50)}, p90 {ms(api, 90)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--edges", type=int, default=3)
    args = p.parse_args()
    asyncio.run(measure(args.rounds, args.edges))


if __name__ == "__main__":
    main()
