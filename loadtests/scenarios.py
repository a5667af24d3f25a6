"""What a bench measures: one row per scenario, each against edgecdn and nginx, logging on and off.

Rules of this file: a scenario is data (path, size, which edge instance, target ratio); the origin
files and rules it needs are written by `write_origin`; distinct URLs for fills carry `{n}`, which
the load generator numbers, and a run id, so no run finds what an earlier one stored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KIB, MIB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    path: str
    size: int
    edge: str  # which edge instance answers it: "edgecdn" (default config) or "edgecdn-disk"
    target: float  # edgecdn / nginx req/s asked for by issue 7
    connections: int | None = None  # None: --connections
    hits: bool = True  # warmed to X-Cache: HIT before it is measured

    def target_path(self, run_id: str) -> str:
        return self.path.replace("{run}", run_id)


SCENARIOS = (
    Scenario("mem-1k", "memory hit 1 KiB", "/bench/obj-1k.bin", KIB, "edgecdn", 1.2),
    Scenario("mem-64k", "memory hit 64 KiB", "/bench/obj-64k.bin", 64 * KIB, "edgecdn", 1.0),
    Scenario("mem-1m", "memory hit 1 MiB", "/bench/obj-1m.bin", MIB, "edgecdn", 1.0),
    Scenario("disk-1m", "disk hit 1 MiB (memory tier off)", "/bench/obj-1m.bin", MIB, "edgecdn-disk", 0.8),
    Scenario("disk-16m", "disk hit 16 MiB", "/bench/obj-16m.bin", 16 * MIB, "edgecdn-disk", 0.8),
    Scenario(
        "pass-1k", "pass-through 1 KiB no-store", "/bench/nostore-1k.bin", KIB, "edgecdn", 0.5, hits=False
    ),
    Scenario(
        "fill-200b",
        "cacheable misses, 200 B, distinct (fills/s)",
        "/bench/fill-200b.bin?r={run}&n={n}",
        200,
        "edgecdn",
        0.5,
        connections=64,
        hits=False,
    ),
)
# Issue 7: memory-hit p99 no worse than 2x nginx's.
P99_LIMIT = 2.0


def write_origin(root: Path, config: Path) -> dict[str, bytes]:
    """The origin's files and its Cache-Control rules; returns the bodies by path."""
    (root / "bench").mkdir(parents=True, exist_ok=True)
    bodies = {}
    for s in SCENARIOS:
        path = s.path.split("?")[0]
        if path not in bodies:
            bodies[path] = os.urandom(s.size)
            (root / path.lstrip("/")).write_bytes(bodies[path])
    # Longer than the whole bench, so no run sees a revalidation; the pass-through object is no-store.
    config.write_text(
        'default_cache_control = "public, max-age=3600"\n'
        '[[rules]]\npattern = "/bench/nostore-*"\ncache_control = "no-store"\n'
    )
    return bodies
