"""The measurement plan: every scenario row, repetitions interleaved across servers, medians.

Rules of this file: one (server, scenario) is loaded at a time; a run another process disturbed is
repeated within a bounded budget; a failed run is blamed on a dead server before the client.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench_error import BenchError
from load_generators import Run, run_bulk, run_loadgen, run_wrk
from scenarios import Scenario
from servers import Server, check_alive

# A run during which other processes used more than this share of a core is run again
# (--retry-noisy times), within RETRY_BUDGET_S of extra runs for the whole bench.
NOISY = 0.10
RETRY_BUDGET_S = 90.0


def median_run(runs: list[Run]) -> dict[str, Any]:
    """Each metric's median over the repetitions, plus the req/s spread and every run."""
    out: dict[str, Any] = {
        name: statistics.median(getattr(r, name) for r in runs)
        for name in ("req_s", "mib_s", "p50_ms", "p99_ms")
    }
    out["cpu"] = {
        name: statistics.median(getattr(r.cpu, name) for r in runs)
        for name in ("client", "server", "client_core", "server_core", "steal", "others")
    }
    out["cpu"]["others_max"] = max(r.cpu.others for r in runs)
    rates = [r.req_s for r in runs]
    out["errors"] = sum(r.errors for r in runs)
    out["spread"] = (max(rates) - min(rates)) / out["req_s"] if out["req_s"] else 0.0
    out["runs"] = [asdict(r) for r in runs]
    return out


@dataclass
class RetryBudget:
    """Seconds of repeated runs left; keeps the whole bench bounded on a busy machine."""

    left_s: float


def run_once(server: Server, path: str, connections: int, args: argparse.Namespace, tmp: Path) -> Run:
    if args.client == "loadgen" or "{n}" in path:  # distinct URLs: only loadgen numbers them
        return run_loadgen(server, path, connections, args, tmp)
    client = {"wrk": run_wrk, "bulk": run_bulk}[args.client]
    return client(server, path, argparse.Namespace(**{**vars(args), "connections": connections}), tmp)


def measure_one(
    server: Server, scenario: Scenario, run_id: str, args: argparse.Namespace, tmp: Path, budget: RetryBudget
) -> Run:
    """One run; repeated while another process disturbed it, keeping the least disturbed one."""
    connections = scenario.connections or args.connections
    run = run_once(server, scenario.target_path(run_id), connections, args, tmp)
    for attempt in range(2, args.retry_noisy + 2):
        if run.cpu.others <= NOISY or budget.left_s <= 0:
            break
        print(
            f"    other processes used {run.cpu.others:.0%} CPU during that run "
            f"({', '.join(run.cpu.others_top) or '?'}): running it again",
            flush=True,
        )
        t0 = time.monotonic()
        again = run_once(server, scenario.target_path(f"{run_id}a{attempt}"), connections, args, tmp)
        budget.left_s -= time.monotonic() - t0
        if again.cpu.others < run.cpu.others:
            run = again
        run = replace(run, attempts=attempt)
    return run


def measure(
    servers: dict[str, Server],
    scenarios: list[Scenario],
    log_mode: str,
    args: argparse.Namespace,
    tmp: Path,
    budget: RetryBudget,
) -> list[dict[str, Any]]:
    rows = []
    for sc in scenarios:
        pair = {"edgecdn": servers.get(sc.edge), "nginx": servers.get("nginx")}
        measured = {side: server for side, server in pair.items() if server is not None}
        runs: dict[str, list[Run]] = {side: [] for side in measured}
        for rep in range(args.reps):
            for side, server in measured.items():  # interleaved: edgecdn, nginx, edgecdn, nginx, ...
                run_id = f"{log_mode}-{side}-{rep}-{time.monotonic_ns()}"
                try:
                    run = measure_one(server, sc, run_id, args, tmp, budget)
                except BenchError:
                    check_alive(list(servers.values()))  # a dead server explains a failed client best
                    raise
                check_alive(list(servers.values()))
                runs[side].append(run)
                print(
                    f"  {sc.name:9} log={log_mode:5} {side:7} rep {rep + 1}: {run.req_s:9.0f} req/s "
                    f"{run.mib_s:8.1f} MiB/s p99 {run.p99_ms:7.2f} ms  client {run.cpu.client:4.0%} "
                    f"server {run.cpu.server:4.0%}  core0 {run.cpu.server_core:4.0%} "
                    f"core1 {run.cpu.client_core:4.0%} others {run.cpu.others:3.0%}"
                    + (f"  errors {run.errors}" if run.errors else ""),
                    flush=True,
                )
                time.sleep(0.3)
        row: dict[str, Any] = {
            "scenario": sc.name,
            "what": sc.what,
            "log": log_mode,
            "path": sc.path,
            "size_bytes": sc.size,
            "target": sc.target,
        }
        row.update({side: median_run(r) for side, r in runs.items()})
        if "edgecdn" in row and "nginx" in row and row["nginx"]["req_s"]:
            row["ratio"] = row["edgecdn"]["req_s"] / row["nginx"]["req_s"]
            if row["nginx"]["p99_ms"]:
                row["p99_ratio"] = row["edgecdn"]["p99_ms"] / row["nginx"]["p99_ms"]
        rows.append(row)
    return rows
