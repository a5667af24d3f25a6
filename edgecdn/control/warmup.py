"""`edgecdn prefetch MANIFEST --edge URL…`: warm a fleet in staggered waves through the prefetch task API.

Rules of this file: edges are split into waves that start one after another (错峰), so the origin never
sees the whole fleet at once; each edge has at most `--concurrency` URLs outstanding and `--origin-rate`
caps URLs sent per second over all edges; an edge's failure is counted against its URLs, never hides the
other edges; exit 0 only when every URL is warm (or already fresh) on every edge.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from edgecdn import clock
from edgecdn.control import admin_client
from edgecdn.control.manifest import read_manifest
from edgecdn.control.prefetch import PREFETCH_PATH, PrefetchItem
from edgecdn.control.signing import AdminKey
from edgecdn.errors import UsageError

POLL_S = (0.05, 1.0)  # first and longest pause between status polls of one task
BUSY_RETRIES = 600  # 429 answers (edge queue full) tolerated per edge, one poll pause apart
FAILURES_SHOWN = 50


@dataclass(slots=True)
class Tally:
    """What one edge did with the manifest."""

    edge: str
    warmed: int = 0
    fresh: int = 0
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (url, why)

    def fail(self, url: str, why: str) -> None:
        self.failed += 1
        self.failures.append((url, why))


class RateLimit:
    """A token bucket shared by every edge: at most `rate` URLs sent per second (0: no cap)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = clock.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            now = clock.monotonic()
            start = max(self._next, now)
            self._next = start + n / self.rate
            if start > now:
                await asyncio.sleep(start - now)


Progress = Callable[[int, int], None]  # (URLs done, bytes) increments


def payload(items: list[PrefetchItem]) -> dict[str, Any]:
    return {"urls": [{"url": i.url, "headers": dict(i.headers)} if i.headers else i.url for i in items]}


async def warm_edge(
    session: aiohttp.ClientSession,
    key: AdminKey,
    edge: str,
    items: list[PrefetchItem],
    *,
    concurrency: int,
    limit: RateLimit,
    progress: Progress,
) -> Tally:
    """Keep up to `concurrency` URLs outstanding on one edge until every item has an outcome."""
    tally = Tally(edge)
    started = clock.monotonic()
    todo = list(reversed(items))
    outstanding: dict[str, list[PrefetchItem]] = {}  # task id -> its URLs
    busy = 0
    pause = POLL_S[0]
    while todo or outstanding:
        free = concurrency - sum(map(len, outstanding.values()))
        if todo and (free >= max(1, concurrency // 2) or not outstanding):
            batch = [todo.pop() for _ in range(min(free, len(todo)))]
            await limit.take(len(batch))
            r = await admin_client.send(session, key, edge, "POST", PREFETCH_PATH, payload(batch))
            if r.status == 202 and isinstance(r.body, dict):
                outstanding[str(r.body["task"])] = batch
                pause = POLL_S[0]
                continue
            if r.status == 429 and busy < BUSY_RETRIES:
                busy += 1
                todo.extend(reversed(batch))
            else:
                _give_up(tally, batch + list(reversed(todo)), r.error or f"HTTP {r.status}", progress)
                todo.clear()
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, POLL_S[1])
        for task_id in list(outstanding):
            r = await admin_client.send(session, key, edge, "GET", f"{PREFETCH_PATH}/{task_id}", None)
            if r.status == 200 and isinstance(r.body, dict) and r.body.get("state") != "done":
                continue
            batch = outstanding.pop(task_id)
            if r.status == 200 and isinstance(r.body, dict):
                _count(tally, r.body.get("urls", []), progress)
            else:
                _give_up(tally, batch, r.error or f"HTTP {r.status}", progress)
    tally.seconds = clock.monotonic() - started
    return tally


def _count(tally: Tally, urls: list[dict[str, Any]], progress: Progress) -> None:
    size = 0
    for u in urls:
        state = u.get("state")
        if state == "warmed":
            tally.warmed += 1
            size += int(u.get("bytes", 0))  # bytes moved; a fresh object's size is not counted
        elif state == "fresh":
            tally.fresh += 1
        else:
            tally.fail(str(u.get("url")), str(u.get("error", state)))
    tally.bytes += size
    progress(len(urls), size)


def _give_up(tally: Tally, items: list[PrefetchItem], why: str, progress: Progress) -> None:
    for item in items:
        tally.fail(item.url, why)
    progress(len(items), 0)


def waves_of(edges: list[str], waves: int) -> list[list[str]]:
    """Edges split into `waves` groups in order, sizes differing by at most one; no empty wave."""
    n = max(1, min(waves, len(edges)))
    size, extra = divmod(len(edges), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (i < extra)
        out.append(edges[start:end])
        start = end
    return out


# -- `edgecdn prefetch` ----------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", metavar="MANIFEST", type=Path, help="manifest.txt or manifest.json")
    p.add_argument(
        "--edge", action="append", required=True, metavar="URL", help="edge admin URL (repeatable)"
    )
    p.add_argument(
        "--waves", type=int, default=1, metavar="N", help="split the edges into N waves (default 1)"
    )
    p.add_argument(
        "--wave-interval",
        type=float,
        default=0.0,
        metavar="S",
        help="pause between waves, seconds (default 0)",
    )
    p.add_argument(
        "--concurrency", type=int, default=8, metavar="N", help="URLs in flight per edge (default 8)"
    )
    p.add_argument(
        "--origin-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="URLs sent per second, all edges (0: no cap)",
    )
    p.add_argument("--key", metavar="KID:SECRET", help=f"admin key (default: ${admin_client.KEY_ENV})")


def run(args: argparse.Namespace) -> int:
    if args.waves < 1 or args.concurrency < 1 or args.wave_interval < 0 or args.origin_rate < 0:
        raise UsageError("--waves and --concurrency must be >= 1, --wave-interval and --origin-rate >= 0")
    key = admin_client.key_from(args.key)
    edges = [admin_client.edge_url(e) for e in args.edge]
    if len(set(edges)) != len(edges):
        raise UsageError("--edge: an edge is given twice")
    items = read_manifest(args.manifest)
    if not items:
        raise UsageError(f"{args.manifest}: no URLs in the manifest")
    tallies = asyncio.run(warm_fleet(key, waves_of(edges, args.waves), items, args))
    report(tallies)
    return 0 if all(t.failed == 0 for t in tallies) else 1


async def warm_fleet(
    key: AdminKey, waves: list[list[str]], items: list[PrefetchItem], args: argparse.Namespace
) -> list[Tally]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    limit = RateLimit(args.origin_rate)
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[mib]:.1f} MiB"),
        TimeElapsedColumn(),
    )
    tallies: list[Tally] = []
    async with admin_client.session() as session:
        with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
            for n, wave in enumerate(waves, start=1):
                if n > 1 and args.wave_interval:
                    await asyncio.sleep(args.wave_interval)
                task = bar.add_task(
                    f"wave {n}/{len(waves)} ({len(wave)} edge{'s' * (len(wave) > 1)})",
                    total=len(items) * len(wave),
                    mib=0.0,
                )

                def progress(done: int, size: int, task: Any = task) -> None:
                    mib = bar.tasks[task].fields["mib"] + size / 2**20
                    bar.update(task, advance=done, mib=mib)

                tallies += await asyncio.gather(
                    *(
                        warm_edge(
                            session,
                            key,
                            e,
                            items,
                            concurrency=args.concurrency,
                            limit=limit,
                            progress=progress,
                        )
                        for e in wave
                    )
                )
    return tallies


def report(tallies: list[Tally]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="prefetch")
    table.add_column("edge", no_wrap=True)
    for column in ("warmed", "fresh", "failed", "MiB", "seconds"):
        table.add_column(column, justify="right")
    for t in tallies:
        table.add_row(
            t.edge, str(t.warmed), str(t.fresh), str(t.failed), f"{t.bytes / 2**20:.1f}", f"{t.seconds:.1f}"
        )
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    failures = [(t.edge, url, why) for t in tallies for url, why in t.failures]
    for edge, url, why in failures[:FAILURES_SHOWN]:
        console.print(f"failed: {edge} {url}: {why}", markup=False, highlight=False)
    if len(failures) > FAILURES_SHOWN:
        console.print(f"... and {len(failures) - FAILURES_SHOWN} more failures")
