"""Time to warm 3 edges x 200 objects with 1 wave vs 3 waves, and the origin's peak concurrent requests.

    .venv/bin/python loadtests/warmup_waves.py [--objects 200] [--edges 3] [--largest 10MiB]

Each run starts fresh edges (empty caches) in front of the same origin, runs `edgecdn prefetch
manifest.txt --waves N`, and reads the origin meter (loadtests/origin_meter.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_error import BenchError
from processes import Processes
from release_fleet import KEY, Fleet, mixed_sizes, run

from edgecdn.config import parse_size


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, default=200)
    p.add_argument("--edges", type=int, default=3)
    p.add_argument("--largest", default="10MiB", help="largest object size (default 10MiB)")
    p.add_argument("--concurrency", type=int, default=8, help="prefetch --concurrency per edge")
    args = p.parse_args()
    procs = Processes()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="edgecdn-waves-") as tmp:
            fleet = Fleet(Path(tmp), procs)
            sizes = mixed_sizes(args.objects, largest=parse_size(args.largest, "--largest"))
            fleet.build_site(sizes)
            fleet.start_origin()
            for waves in (1, args.edges):
                edges = fleet.start_edges(args.edges, "")
                fleet.reset_meter()
                started = time.monotonic()
                os.environ["EDGECDN_ADMIN_KEY"] = KEY
                run(
                    "-m", "edgecdn", "prefetch", str(fleet.dist / "manifest.txt"),
                    *(f"--edge={e.admin}" for e in edges),
                    "--waves", str(waves), "--concurrency", str(args.concurrency),
                )  # fmt: skip
                took = time.monotonic() - started
                m = fleet.meter()
                rows.append((waves, took, m["total"], m["peak"]))
    except BenchError as e:
        print(f"warmup_waves: {e}", file=sys.stderr)
        return 2
    finally:
        procs.stop_all()
    total = sum(sizes)
    print(f"{args.edges} edges x {args.objects} objects ({total / 2**20:.1f} MiB per edge)")
    print(f"{'waves':>5} {'seconds':>8} {'origin requests':>16} {'origin peak concurrent':>23}")
    for waves, took, requests, peak in rows:
        print(f"{waves:>5} {took:>8.1f} {requests:>16} {peak:>23}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
