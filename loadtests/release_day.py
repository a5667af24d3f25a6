"""`make loadtest`: the release-day locust scenario, jitter on vs off, side by side.

    .venv/bin/python loadtests/release_day.py [--duration 60] [--users 100] [--window 10s] [--prefetch]

Builds a versioned site (200 objects, Zipf-popular), starts the origin behind a counting meter and,
for each mode, 2 fresh edges (cold caches, release day); locust's ReleaseDayClient users all arrive at
once, ask /_edge/jitter (when on), then fetch index.html and a few assets. Halfway through, a new
index.html is published and purged on both edges. Prints hit ratio, origin requests per second over
time, peak concurrent origin requests, and p50/p99 of asset requests. Bounded: each mode runs
--duration / 2 seconds.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_error import BenchError
from processes import REPO, Processes
from release_fleet import KEY, Edge, Fleet, mixed_sizes, run

BUCKET_S = 5


def edge_hits(fleet: Fleet, edges: list[Edge]) -> tuple[float, float]:
    """(hits, all requests) summed over the edges' edgecdn_requests_total."""
    hits = total = 0.0
    for e in edges:
        for line in fleet.metrics_text(e).splitlines():
            if line.startswith("edgecdn_requests_total{"):
                value = float(line.rsplit(" ", 1)[1])
                total += value
                hits += value if 'cache_status="HIT"' in line else 0.0
    return hits, total


def locust_row(prefix: Path, name: str) -> dict[str, str]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        return next((row for row in csv.DictReader(f) if row["Name"] == name), {})


def one_mode(fleet: Fleet, jitter: bool, args: argparse.Namespace) -> dict[str, object]:
    window = args.window if jitter else "0"
    edges = fleet.start_edges(2, f'[jitter]\nwindow = "{window}"\n')
    if args.prefetch:
        run(
            "-m",
            "edgecdn",
            "prefetch",
            str(fleet.dist / "manifest.txt"),
            *(f"--edge={e.admin}" for e in edges),
        )
    fleet.reset_meter()
    seconds = args.duration // 2
    prefix = fleet.work / ("jitter-on" if jitter else "jitter-off")
    env = dict(
        os.environ,
        EDGECDN_EDGES=",".join(e.url for e in edges),
        EDGECDN_ASSETS=str(fleet.dist / "manifest.txt"),
        EDGECDN_JITTER="1" if jitter else "0",
        EDGECDN_THINK_S="1.0",
    )
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(REPO / "loadtests" / "locustfile.py"),
        "ReleaseDayClient",
    ]
    argv += ["--headless", "-u", str(args.users), "-r", str(args.users), "-t", f"{seconds}s"]
    argv += ["--csv", str(prefix), "--only-summary", "--stop-timeout", "5", "--loglevel", "WARNING"]
    timer = threading.Timer(seconds / 2, switch_entry_point, (fleet, edges))
    timer.start()
    try:
        done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        timer.cancel()
    if not Path(f"{prefix}_stats.csv").exists():
        raise BenchError(f"locust wrote no stats (exit {done.returncode}): {done.stderr.strip()[-400:]}")
    meter = fleet.meter()
    hits, total = edge_hits(fleet, edges)
    asset = locust_row(prefix, "asset")
    return {
        "hit ratio": f"{hits / total:.3f}" if total else "-",
        "client requests": str(int(total)),
        "failures": asset.get("Failure Count", "-"),
        "origin requests": str(meter["total"]),
        "origin peak concurrent": str(meter["peak"]),
        "asset p50 ms": asset.get("50%", "-"),
        "asset p99 ms": asset.get("99%", "-"),
        "per_second": meter["per_second"],
    }


def switch_entry_point(fleet: Fleet, edges: list[Edge]) -> None:
    """Mid-run publish of a new index.html, purged on every edge (as in the README's release walk)."""
    new = fleet.work / "index.html"
    new.write_text(f"<html>release 2 at {time.time()}</html>")
    env = dict(os.environ, EDGECDN_ADMIN_KEY=KEY)
    subprocess.run(
        [sys.executable, "-m", "origin", "publish", f"{new}=/index.html", "--root", str(fleet.root)]
        + [f"--edge={e.admin}" for e in edges],
        env=env, cwd=REPO, capture_output=True, timeout=60,
    )  # fmt: skip


def report(results: dict[str, dict[str, object]]) -> None:
    names = list(results)
    print(f"{'':<24}" + "".join(f"{n:>14}" for n in names))
    for key in results[names[0]]:
        if key != "per_second":
            print(f"{key:<24}" + "".join(f"{results[n][key]!s:>14}" for n in names))
    print(f"\norigin requests per second, mean over {BUCKET_S} s buckets:")
    for n in names:
        series: list[int] = results[n]["per_second"]  # type: ignore[assignment]
        buckets = [sum(series[i : i + BUCKET_S]) / BUCKET_S for i in range(0, len(series), BUCKET_S)]
        print(f"  {n:<12}" + " ".join(f"{b:6.1f}" for b in buckets))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=60, help="seconds for both modes together (default 60)")
    p.add_argument("--users", type=int, default=100, help="locust users, all arriving at once (default 100)")
    p.add_argument("--window", default="10s", help="jitter window when on (default 10s)")
    p.add_argument("--objects", type=int, default=200)
    p.add_argument("--prefetch", action="store_true", help="warm the edges before the clients arrive")
    args = p.parse_args()
    if not 10 <= args.duration <= 3600 or not 1 <= args.users <= 10_000:
        print("release_day: --duration 10..3600, --users 1..10000", file=sys.stderr)
        return 2
    procs = Processes()
    try:
        with tempfile.TemporaryDirectory(prefix="edgecdn-release-day-") as tmp:
            fleet = Fleet(Path(tmp), procs)
            fleet.build_site(mixed_sizes(args.objects, largest=1 << 20))
            fleet.start_origin()
            results = {"jitter on": one_mode(fleet, True, args), "jitter off": one_mode(fleet, False, args)}
    except BenchError as e:
        print(f"release_day: {e}", file=sys.stderr)
        return 2
    finally:
        procs.stop_all()
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
