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
from scenarios import P99_LIMIT
from servers import NGINX

# Core busy shares from which a run counts as limited by that side.
CLIENT_BOUND = 0.95
SERVER_BOUND = 0.90
CLIENT_NOTES = {
    "loadgen": "loadtests/loadgen.c (gcc -O2): 1 thread, epoll, keep-alive, bodies discarded in the "
    "kernel (recv MSG_TRUNC), pinned to core 1",
    "wrk": "wrk -t1, pinned to core 1",
    "bulk": "bulk_client.py: 1 Python process, epoll, bodies discarded in the kernel, pinned to core 1",
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
        ("row", 9),
        ("log", 5),
        ("edge req/s", 10),
        ("nginx req/s", 11),
        ("ratio", 5),
        ("target", 7),
        ("p99 ms e/n", 11),
        ("p99 x", 5),
        ("MiB/s e/n", 13),
        ("core0 e/n", 9),
        ("core1 e/n", 9),
        ("bound e/n", 13),
        ("spread e/n", 10),
    ]
    print()
    print(" ".join(f"{title:>{width}}" for title, width in columns))
    print(" ".join("-" * width for _, width in columns))
    for row in rows:
        target = f">={row['target']}"
        if "ratio" in row and row["ratio"] < row["target"]:
            target += "!"
        p99 = f"{row['p99_ratio']:.2f}" if "p99_ratio" in row else "-"
        if row["scenario"].startswith("mem-") and "p99_ratio" in row and row["p99_ratio"] > P99_LIMIT:
            p99 += "!"
        cells = [
            row["scenario"],
            row["log"],
            one(row, "edgecdn", "req_s", ".0f"),
            one(row, "nginx", "req_s", ".0f"),
            f"{row['ratio']:.2f}" if "ratio" in row else "-",
            target,
            pair(row, "p99_ms", ".3g"),
            p99,
            pair(row, "mib_s", ".0f"),
            pair(row, "cpu.server_core", ".0%"),
            pair(row, "cpu.client_core", ".0%"),
            f"{bound(row, 'edgecdn')}/{bound(row, 'nginx')}",
            pair(row, "spread", ".0%"),
        ]
        print(" ".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, columns, strict=True)))
    print()
    print(f"command: {args.command}")
    print(
        f"median of {args.reps} interleaved run(s) of {args.duration:g} s each; servers on core "
        f"{SERVER_CORE} (edge: 1 process, nginx: 1 worker), load generator on core {CLIENT_CORE}; "
        f"{args.connections} connections (fills: 64)"
    )
    print(f"client: {CLIENT_NOTES[args.client]}")
    if getattr(args, "floor", False):
        print(
            "FLOOR: the edge column is loadtests/floor.py (uvloop + httptools, prebuilt answers, no cache\n"
            "policy), not edgecdn: the most a Python server reaches on this machine, for scale."
        )
    print(
        "rows: mem-* memory-tier hits; disk-* hits with the edge's memory tier off (nginx serves its\n"
        "cache files); pass-1k a no-store object (every request to the origin); fill-200b distinct\n"
        "cacheable 200-byte objects, each a miss that is fetched and stored (req/s = fills/s).\n"
        "log: both servers write every request to a file (edge --access-log FILE, nginx access_log\n"
        "combined); nolog: both off. ratio = edgecdn / nginx req/s; target from issue 7 (! = missed);\n"
        f"p99 x = edgecdn p99 / nginx p99 (memory hits: <= {P99_LIMIT:g} asked)."
    )
    print(
        "core0/core1 busy: /proc/stat incl. softirq (loopback TCP). bound: client = core1 >= "
        f"{CLIENT_BOUND:.0%}, server = core0 >= {SERVER_BOUND:.0%}, none = neither, noisy = others > "
        f"{NOISY:.0%}. spread: (max-min)/median of req/s over the runs."
    )
    for row in rows:
        for server in ("edgecdn", "nginx"):
            if row.get(server, {}).get("errors"):
                print(
                    f"WARNING: {row['scenario']} {row['log']} {server}: "
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


def write_json(rows: list[dict[str, Any]], warmed: dict[str, Any], args: argparse.Namespace) -> None:
    """Everything, each run included, to --out: the machine, the options, the warm-up, the rows."""
    result = {
        "machine": machine_info(),
        "command": args.command,
        "config": {
            "rows": [sc.name for sc in args.scenarios],
            "logs": args.log_modes,
            "duration_s": args.duration,
            "reps": args.reps,
            "connections": args.connections,
            "edge_args": args.edge_args,
            "nice": args.nice,
            "server_core": SERVER_CORE,
            "client_core": CLIENT_CORE,
            "client": CLIENT_NOTES[args.client],
        },
        "warm_x_cache": warmed,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(rounded(result), indent=2) + "\n")
    print(f"wrote {args.out}")
