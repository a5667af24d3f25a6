"""Fleet figures for deploy/README.md: consistent URI hash vs round robin over 3 edges, Zipf workload.

    .venv/bin/python loadtests/fleet_measure.py [--objects 10000] [--requests 20000] [--zipf 1.0]

Each variant (URI hash with hash-balance-factor 150, then 0; round robin) runs `edgecdn fleet up
--netns off` (origin → shield → 3 edges → HAProxy on free loopback ports), sends the same Zipf-popular
request sequence through the front, and reports the fleet hit ratio (X-Cache HIT), the requests that left
the edge tier (MISS: sent to the shield), the origin's requests (behind the shield) and the copies stored
across the edges. For the URI hash variants also how many objects move when an edge leaves and returns
(HAProxy stats socket). Figures are counts and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgecdn.process.fleet import haproxy_command, server_states  # noqa: E402

READY = re.compile(r"fleet listening on (http://\S+)")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def description(path: Path, balance: str, factor: int) -> Path:
    edges = "".join(
        f'[[edges]]\nname = "edge{i}"\npublic = "10.0.1.{i}:80"\nadmin = "10.0.1.{i}:81"\n' for i in (1, 2, 3)
    )
    path.write_text(
        'origins = ["http://127.0.0.1:9"]\n[front]\n'
        f'balance = "{balance}"\nhash_balance_factor = {factor}\n'
        'check_interval = "200ms"\nserved_by_header = "X-Served-By"\n'
        '[shield]\npublic = "10.0.1.100:80"\nadmin = "10.0.1.100:81"\n' + edges
    )
    return path


def start(work: Path, root: Path, balance: str, factor: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    run = work / f"run-{balance}-{factor}"
    fleet = description(work / f"{balance}-{factor}.toml", balance, factor)
    argv = [sys.executable, "-m", "edgecdn", "fleet", "up", str(fleet)]
    argv += ["--origin-root", str(root), "--origin-test-hooks", "--netns", "off", "--run-dir", str(run)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if READY.search(line):
            return proc, json.loads((run / "state.json").read_text())
    raise SystemExit(f"fleet up ({balance}) did not start; see {run}/logs")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


async def replay(front: str, paths: list[str], conc: int = 16) -> list[tuple[str, str, str]]:
    """(path, X-Cache, served by) for each request, in order of the sequence."""
    out: list[tuple[str, str, str]] = [("", "", "")] * len(paths)
    queue = iter(enumerate(paths))
    conn = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=conn, trust_env=False, auto_decompress=False) as s:

        async def worker() -> None:
            for i, path in queue:
                async with s.get(front + path) as r:
                    await r.read()
                    out[i] = (path, r.headers.get("X-Cache", ""), r.headers.get("X-Served-By", ""))

        await asyncio.gather(*(worker() for _ in range(conc)))
    return out


def origin_requests(state: dict[str, Any]) -> int:
    with OPENER.open(state["origin"] + "/_test/hits", timeout=30) as r:
        return sum(json.load(r)["hits"].values())


def measure(work: Path, root: Path, balance: str, factor: int, seq: list[str]) -> dict[str, Any]:
    proc, state = start(work, root, balance, factor)
    try:
        t = time.monotonic()
        got = asyncio.run(replay(state["front"], seq))
        secs = time.monotonic() - t
        hits = sum(x == "HIT" for _, x, _ in got)
        copies = len({(p, e) for p, x, e in got if x == "MISS"})
        figures = {
            "balance": balance,
            "hash_balance_factor": factor if balance == "uri" else None,
            "requests": len(seq),
            "fleet_hit_ratio": round(hits / len(seq), 4),
            "edge_tier_misses": sum(x == "MISS" for _, x, _ in got),
            "origin_requests": origin_requests(state),
            "copies_stored_on_edges": copies,
            "distinct_objects_requested": len(set(seq)),
            "requests_per_s": round(len(seq) / secs),
        }
        if balance == "uri":
            figures |= moves(state, sorted(set(seq)))
        return figures
    finally:
        stop(proc)


def moves(state: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """Objects whose edge changes when edge1 leaves (disable server) and when it returns."""
    sock = state["haproxy"]["front"]["socket"]
    before = {p: e for p, _x, e in asyncio.run(replay(state["front"], paths))}
    haproxy_command(sock, "disable server edges/edge1")
    while not server_states(sock)["edge1"].startswith("MAINT"):
        time.sleep(0.01)
    gone = {p: e for p, _x, e in asyncio.run(replay(state["front"], paths))}
    haproxy_command(sock, "enable server edges/edge1")
    while not server_states(sock)["edge1"].startswith("UP"):
        time.sleep(0.01)
    back = {p: e for p, _x, e in asyncio.run(replay(state["front"], paths))}
    return {
        "objects_on_edge1": sum(e == "edge1" for e in before.values()),
        "moved_when_edge1_left": sum(before[p] != gone[p] for p in paths),
        "moved_other_than_edge1s": sum(before[p] != gone[p] and before[p] != "edge1" for p in paths),
        "differ_after_edge1_returned": sum(before[p] != back[p] for p in paths),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent s (popularity ∝ 1/rank^s)")
    ap.add_argument("--seed", type=int, default=12)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    weights = [1 / (rank**args.zipf) for rank in range(1, args.objects + 1)]
    seq = [f"/z{i:05d}.txt" for i in rng.choices(range(args.objects), weights, k=args.requests)]
    with tempfile.TemporaryDirectory(prefix="fleet-measure-") as d:
        work = Path(d)
        root = work / "root"
        root.mkdir()
        for i in range(args.objects):
            (root / f"z{i:05d}.txt").write_bytes(f"object {i}\n".encode() * 8)
        for balance, factor in (("uri", 150), ("uri", 0), ("roundrobin", 0)):
            print(json.dumps(measure(work, root, balance, factor, seq)), flush=True)


if __name__ == "__main__":
    main()
