"""What a bench prints and writes: the table of medians with its legend, and the JSON file."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from load_generators import WRK
from measure import NOISY
from processes import CLIENT_CORE, SERVER_CORE
from servers import NGINX
from sizes import format_size

# Core busy shares from which a run counts as limited by that side.
CLIENT_BOUND = 0.95
SERVER_BOUND = 0.90
MODE_NOTES = {
    "wrk": "wrk -t1 -c{c}, pinned to core 1",
    "bulk": "bench.py bulk client: 1 process, epoll, {c} keep-alive connections, pinned to "
    "core 1, bodies discarded in the kernel (recv MSG_TRUNC), so it stays far from saturation",
}


def one(row: dict[str, Any], server: str, key: str, spec: str) -> str:
    """One metric ('cpu.client' reaches into the cpu dict); '-' for a server not measured."""
    if server not in row:
        return "-"
    value = row[server]
    for part in key.split("."):
        value = value[part]
    return format(value, spec)


def bound(row: dict[str, Any], server: str) -> str:
    """What limited a run: the client core, the server core, or neither (latency, noise)."""
    if server not in row:
        return "-"
    cpu = row[server]["cpu"]
    if cpu["others"] > NOISY:
        return "noisy"
    if cpu["client_core"] >= CLIENT_BOUND:
        return "client"
    return "server" if cpu["server_core"] >= SERVER_BOUND else "none"


def pair(row: dict[str, Any], key: str, spec: str) -> str:
    return f"{one(row, 'edgecdn', key, spec)}/{one(row, 'nginx', key, spec)}"


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    columns = [
        ("size", 5),
        ("mode", 4),
        ("edge req/s", 10),
        ("nginx req/s", 11),
        ("ratio", 5),
        ("target", 6),
        ("edge MiB/s", 10),
        ("nginx MiB/s", 11),
        ("p99 ms e/n", 11),
        ("client cpu e/n", 14),
        ("core1 e/n", 9),
        ("core0 e/n", 9),
        ("others e/n", 10),
        ("bound e/n", 11),
        ("spread e/n", 10),
    ]
    print()
    print(" ".join(f"{title:>{width}}" for title, width in columns))
    print(" ".join("-" * width for _, width in columns))
    for row in rows:
        target = f">={row['target']}" if row["target"] else "-"
        if "ratio" in row and row["target"] and row["ratio"] < row["target"]:
            target += "!"
        cells = [
            row["size"],
            row["mode"],
            one(row, "edgecdn", "req_s", ".0f"),
            one(row, "nginx", "req_s", ".0f"),
            f"{row['ratio']:.2f}" if "ratio" in row else "-",
            target,
            one(row, "edgecdn", "mib_s", ".1f"),
            one(row, "nginx", "mib_s", ".1f"),
            pair(row, "p99_ms", ".3g"),
            pair(row, "cpu.client", ".0%"),
            pair(row, "cpu.client_core", ".0%"),
            pair(row, "cpu.server_core", ".0%"),
            pair(row, "cpu.others_max", ".0%"),
            f"{bound(row, 'edgecdn')}/{bound(row, 'nginx')}",
            pair(row, "spread", ".0%"),
        ]
        print(" ".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, columns, strict=True)))
    print()
    print(
        f"median of {args.reps} interleaved run(s) of {args.duration:g} s each; servers on core "
        f"{SERVER_CORE}, load generator on core {CLIENT_CORE}; {args.connections} connections"
    )
    for mode in dict.fromkeys(r["mode"] for r in rows):
        print(f"mode {mode}: {MODE_NOTES[mode].format(c=args.connections)}")
    print(
        "client cpu: load generator user+sys / wall (os.wait4); core1/core0 busy: /proc/stat\n"
        "incl. softirq, where loopback TCP is paid. core1 near 100% = the row is client-bound;\n"
        "core0 near 100% = server-bound. others: the most CPU any run saw taken by processes\n"
        "that are not the bench's (over ~5% that run is disturbed; try --nice -10 or a quiet\n"
        f"machine). bound: client = core1 >= {CLIENT_BOUND:.0%} (the ratio is not the server's), "
        f"server = core0 >= {SERVER_BOUND:.0%},\nnone = neither, noisy = others > {NOISY:.0%}. "
        "spread: (max-min)/median of req/s over the runs."
    )
    for row in rows:
        for server in ("edgecdn", "nginx"):
            if row.get(server, {}).get("errors"):
                print(
                    f"WARNING: {row['size']} {row['mode']} {server}: "
                    f"{row[server]['errors']} errors or non-2xx responses"
                )


def rounded(value: Any) -> Any:
    """Floats to 3 decimals, for a JSON file a person can read."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    return (done.stdout + done.stderr).strip().splitlines()[0] if done.stdout + done.stderr else "?"


def machine_info() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        m = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        model = m.group(1) if m else "?"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": tool_version([NGINX, "-v"]),
        "wrk": tool_version([WRK, "--version"]),
    }


def write_json(
    rows: list[dict[str, Any]], warmed: dict[str, dict[str, str]], args: argparse.Namespace
) -> None:
    """Everything, each run included, to --out: the machine, the options, the warm-up, the rows."""
    result = {
        "machine": machine_info(),
        "config": {
            "sizes": [format_size(s) for s in args.size_list],
            "duration_s": args.duration,
            "reps": args.reps,
            "connections": args.connections,
            "edge_args": args.edge_args,
            "server_core": SERVER_CORE,
            "client_core": CLIENT_CORE,
            "modes": {m: MODE_NOTES[m].format(c=args.connections) for m in ("wrk", "bulk")},
        },
        "warm_x_cache": warmed,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(rounded(result), indent=2) + "\n")
    print(f"wrote {args.out}")
