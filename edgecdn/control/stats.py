"""`edgecdn stats --edge URL…`: one table row per edge from its `/_edge/stats` (an unsigned read).

Rules of this file: every edge is asked at once (admin_client.fan_out); an edge that fails is a row with
its error and makes the exit status 1, never hides the others.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from edgecdn.control import admin_client

STATS_PATH = "/_edge/stats"
COLUMNS = ("status", "version", "uptime", "requests", "hit ratio", "memory", "disk", "fills", "origins up")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--edge", action="append", required=True, metavar="URL", help="edge admin URL (repeatable)"
    )


def run(args: argparse.Namespace) -> int:
    """Ask every edge at once; 0 only when every edge answered its stats."""
    edges = [admin_client.edge_url(e) for e in args.edge]
    results = asyncio.run(admin_client.fan_out(None, edges, "GET", STATS_PATH, None))
    Console(width=None if sys.stdout.isatty() else 200).print(stats_table(results))
    return 0 if all(r.ok and isinstance(r.body, dict) for r in results) else 1


def stats_table(results: list[admin_client.EdgeResult]) -> Table:
    table = Table(title="edge stats")
    table.add_column("edge", no_wrap=True)
    for column in COLUMNS:
        table.add_column(column, justify="right")
    table.add_column("error", overflow="fold")
    for r in results:
        body = r.body if r.ok and isinstance(r.body, dict) else None
        status = str(r.status) if r.status is not None else "-"
        if body is None:
            table.add_row(r.edge, status, *("" for _ in COLUMNS[1:]), r.error or "not a stats answer")
            continue
        table.add_row(r.edge, status, *row(body), "")
    return table


def row(body: dict[str, Any]) -> tuple[str, ...]:
    """The cells of one edge's stats; a field the edge did not send is shown as '?'."""
    store = _dict(body.get("store"))
    requests = _dict(body.get("requests"))
    origins = body.get("origins")
    origins = origins if isinstance(origins, list) else []
    ratio = body.get("hit_ratio")
    up = sum(1 for o in origins if isinstance(o, dict) and o.get("state") == "up")
    return (
        str(body.get("version", "?")),
        _duration(body.get("uptime_s")),
        str(requests.get("total", "?")),
        f"{ratio:.1%}" if isinstance(ratio, int | float) else "-",
        _tier(store.get("memory")),
        _tier(store.get("disk")),
        str(body.get("fills_in_flight", "?")),
        f"{up}/{len(origins)}",
    )


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tier(usage: object) -> str:
    """`items · used / limit` of one store tier."""
    if not isinstance(usage, dict):
        return "?"
    return f"{usage.get('items', '?')} · {_bytes(usage.get('bytes'))} / {_bytes(usage.get('limit'))}"


def _bytes(n: object) -> str:
    if not isinstance(n, int):
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    s = int(seconds)
    return (
        f"{s // 86400}d{s // 3600 % 24}h" if s >= 86400 else f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s"
    )
