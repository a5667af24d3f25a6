#!/usr/bin/env python3
"""edgecdn vs nginx proxy_cache: hits, pass-through and fills, req/s and p99, side by side.

Rules of this file: every process it starts is stopped by its pid (or the process group it was
given) before it exits, also on Ctrl-C; nothing listens or connects outside 127.0.0.1; servers run
on core 0, the load generator on core 1, one (server, scenario) at a time, repetitions interleaved;
each row is measured with both servers logging every request to a file, then with both logging off.

    .venv/bin/python loadtests/bench.py [--rows mem-1k,...] [--duration 10] [--nice -10] [--quick]

This file is the command line and the order of a bench; the parts live next to it: scenarios.py
(the rows and the origin's files), servers.py (origin, edges, nginx), load_generators.py with
loadgen.c (the C client), wrk and bulk_client.py, cpu_usage.py, measure.py (runs and medians),
report.py (table and JSON), processes.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bulk_client
from bench_error import BenchError
from load_generators import GCC, WRK, build_loadgen
from measure import NOISY, RETRY_BUDGET_S, RetryBudget, measure
from processes import SERVER_CORE, Processes
from report import print_table, write_json
from scenarios import SCENARIOS, Scenario, write_origin
from servers import NGINX, Server, start_edge, start_floor, start_nginx, start_origin, warm

LOG_MODES = ("log", "nolog")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench.py",
        description="Benchmark edgecdn against nginx proxy_cache on cache hits (loopback only).",
    )
    names = ",".join(sc.name for sc in SCENARIOS)
    p.add_argument("--rows", default=names, help=f"scenarios, comma separated (default {names})")
    p.add_argument("--logs", default="log,nolog", help="log,nolog (default) or one of them")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    p.add_argument("--reps", type=int, default=3, help="runs per (server, size); median reported")
    p.add_argument("--connections", type=int, default=32, help="client connections (default 32)")
    p.add_argument("--quick", action="store_true", help="smoke test: --duration 3 --reps 1")
    p.add_argument("--out", default="bench.json", help="JSON results file (default bench.json)")
    p.add_argument("--servers", default="edgecdn,nginx", help="edgecdn,nginx or just one of them")
    p.add_argument(
        "--client",
        default="loadgen",
        choices=["loadgen", "wrk", "bulk"],
        help="load generator for hit rows: loadgen (C, built with gcc; default), wrk, bulk (Python)",
    )
    p.add_argument("--edge-args", default="", help='extra arguments for "edgecdn serve" (quoted)')
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="nice level for the servers and the load generator, e.g. -10 on a shared machine "
        "so other people's processes disturb the runs less (needs root; default 0)",
    )
    p.add_argument(
        "--retry-noisy",
        type=int,
        default=1,
        metavar="N",
        help=f"repeat a run up to N times while other processes took > {NOISY * 100:.0f}%% of a core "
        f"during it (at most {RETRY_BUDGET_S:.0f} s extra in all; default 1, 0 = never)",
    )
    p.add_argument(
        "--floor",
        action="store_true",
        help="memory-hit rows with loadtests/floor.py (uvloop + httptools, no cache policy) in the edge's "
        "place: the most any Python server reaches on this machine, for scale",
    )
    p.add_argument("--check", action="store_true", help="exit 1 if a ratio misses its target")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, configs)")
    # argparse would take "--edge-args --no-uvloop" for two options; glue the value on.
    argv = list(argv)
    for i, arg in enumerate(argv[:-1]):
        if arg == "--edge-args":
            argv[i : i + 2] = [f"--edge-args={argv[i + 1]}"]
            break
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.reps = 3.0, 1
    by_name = {sc.name: sc for sc in SCENARIOS}
    args.scenarios = [by_name.get(n.strip()) for n in args.rows.split(",") if n.strip()]
    if None in args.scenarios or not args.scenarios:
        p.error(f"--rows: choose from {', '.join(by_name)}")
    if args.floor and any(not sc.name.startswith("mem-") for sc in args.scenarios):
        p.error("--floor measures memory hits only: add --rows mem-1k,mem-64k,mem-1m (or a part of them)")
    args.log_modes = [m.strip() for m in args.logs.split(",") if m.strip()]
    if not args.log_modes or set(args.log_modes) - set(LOG_MODES):
        p.error("--logs: log, nolog or both")
    args.command = " ".join(["loadtests/bench.py", *argv])
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not args.server_list:
        p.error("--servers must not be empty")
    if unknown := set(args.server_list) - {"edgecdn", "nginx"}:
        p.error(f"--servers: unknown {', '.join(sorted(unknown))} (use edgecdn, nginx)")
    if args.duration <= 0 or args.reps < 1 or args.connections < 1:
        p.error("--duration, --reps and --connections must be positive")
    return args


def check_tools(args: argparse.Namespace) -> None:
    if "nginx" in args.server_list and not os.access(NGINX, os.X_OK):
        raise BenchError(f"{NGINX} not found: apt-get install -y nginx-light", exit_code=2)
    if args.client == "wrk" and not os.access(WRK, os.X_OK):
        raise BenchError(f"{WRK} not found: apt-get install -y wrk", exit_code=2)
    if not os.access(GCC, os.X_OK):
        raise BenchError(
            f"{GCC} not found: apt-get install -y gcc (it builds loadtests/loadgen.c)", exit_code=2
        )
    if shutil.which("taskset") is None:
        raise BenchError("taskset not found: apt-get install -y util-linux", exit_code=2)
    if len(os.sched_getaffinity(0)) < 2 or not {0, 1} <= os.sched_getaffinity(0):
        raise BenchError("needs cores 0 and 1 (server on 0, load generator on 1)", exit_code=2)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C so the cleanup below runs."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def start_servers(
    procs: Processes, tmp: Path, origin: Server, args: argparse.Namespace, log_mode: str
) -> dict[str, Server]:
    """Both edges (memory tier on, and off for disk rows) and nginx, all logging alike."""
    servers: dict[str, Server] = {}
    logs = tmp / f"logs-{log_mode}"
    logs.mkdir(exist_ok=True)
    if args.floor and "edgecdn" in args.server_list:
        log = logs / "floor.access.log" if log_mode == "log" else None
        servers["edgecdn"] = start_floor(procs, tmp, tmp / "origin-root", args, access_log=log)
    elif "edgecdn" in args.server_list:
        for name, memory_tier in (("edgecdn", True), ("edgecdn-disk", False)):
            if any(sc.edge == name for sc in args.scenarios):
                log = logs / f"{name}.access.log" if log_mode == "log" else None
                servers[name] = start_edge(
                    procs, tmp, origin, args, name=name, access_log=log, memory_tier=memory_tier
                )
    if "nginx" in args.server_list:
        log = logs / "nginx.access.log" if log_mode == "log" else None
        servers["nginx"] = start_nginx(procs, tmp, origin, args, access_log=log)
    return servers


def warm_all(
    servers: dict[str, Server], scenarios: list[Scenario], bodies: dict[str, bytes]
) -> dict[str, Any]:
    warmed: dict[str, Any] = {}
    for sc in scenarios:
        if not sc.hits:
            continue
        for name in (sc.edge, "nginx"):
            if name in servers:
                warmed.setdefault(name, {})[sc.path] = warm(servers[name], sc.path, bodies[sc.path])
    return warmed


def bench(args: argparse.Namespace) -> int:
    check_tools(args)
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="edgecdn-bench-"))
    try:
        build_loadgen(tmp)
        bodies = write_origin(tmp / "origin-root", tmp / "origin.toml")
        origin = start_origin(procs, tmp, tmp / "origin-root", tmp / "origin.toml")
        print(f"origin   {origin.url}")
        rows: list[dict[str, Any]] = []
        warmed: dict[str, Any] = {}
        budget = RetryBudget(RETRY_BUDGET_S)
        for log_mode in args.log_modes:
            servers = start_servers(procs, tmp, origin, args, log_mode)
            for server in servers.values():
                pid = server.started.proc.pid
                print(f"{server.name:12} {server.url}  (pid {pid}, core {SERVER_CORE}, {log_mode})")
            warmed[log_mode] = warm_all(servers, args.scenarios, bodies)
            rows += measure(servers, args.scenarios, log_mode, args, tmp, budget)
            for server in servers.values():
                procs.stop(server.started)
        print_table(rows, args)
        write_json(rows, warmed, args)
        missed = [r for r in rows if r.get("ratio") is not None and r["ratio"] < r["target"]]
        return 1 if args.check and missed else 0
    finally:
        procs.stop_all()
        if args.keep_tmp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["_bulk-client"]:  # the old spelling of `python loadtests/bulk_client.py`
        return bulk_client.main(argv[1:])
    args = parse_args(argv)
    try:
        with terminate_as_interrupt():
            return bench(args)
    except BenchError as e:
        print(f"bench.py: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("bench.py: interrupted; every process it started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
