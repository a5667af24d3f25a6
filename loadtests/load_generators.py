"""One run of a load generator against one server: loadgen (C), wrk or the bulk client, on core 1.

Rules of this file: the generator is a child process of the bench, waited for with os.wait4 (its
own CPU) and stopped by pid if it overruns; its numbers are parsed from its output only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench_error import BenchError
from cpu_usage import Cpu, Snapshot, cpu_between
from processes import CLIENT_CORE, pinned, stop_process
from servers import Server

WRK = "/usr/bin/wrk"
GCC = "/usr/bin/gcc"
HERE = Path(__file__).resolve().parent
BULK_CLIENT = HERE / "bulk_client.py"
LOADGEN_C = HERE / "loadgen.c"

WRK_REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%.0f bytes=%.0f duration_us=%.0f connect=%.0f read=%.0f write=%.0f "
    .. "status=%.0f timeout=%.0f p50_us=%.0f p99_us=%.0f max_us=%.0f\\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class Run:
    req_s: float
    mib_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu: Cpu
    attempts: int = 1  # > 1: repeated because other processes disturbed it


def run_client(argv: list[str], log: Path, server: Server, timeout_s: float) -> tuple[str, Cpu]:
    """Run a load generator to completion; returns its output and the CPU it and the server used."""
    before = Snapshot.take()
    t0 = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = t0 + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"load generator did not finish in {timeout_s:.0f} s: {argv}")
            time.sleep(0.02)
    finally:
        if proc.returncode is None and proc.poll() is None:
            stop_process(proc, grace_s=2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    after = Snapshot.take()
    output = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"load generator exited {proc.returncode}: {argv}\n{output[-2000:]}")
    client_s = usage.ru_utime + usage.ru_stime
    return output, cpu_between(before, after, server.started.proc.pid, client_s, wall)


def run_wrk(server: Server, path: str, args: argparse.Namespace, tmp: Path) -> Run:
    script = tmp / "report.lua"
    if not script.exists():
        script.write_text(WRK_REPORT_LUA)
    argv = pinned(CLIENT_CORE, args.nice, WRK, "-t1", f"-c{args.connections}", "--latency")
    argv += [f"-d{args.duration:g}s", "--timeout", "10s", "-s", str(script), server.url + path]
    output, cpu = run_client(argv, tmp / "client.log", server, args.duration + 60)
    m = re.search(r"^BENCH (.*)$", output, re.MULTILINE)
    if not m:
        raise BenchError(f"could not parse wrk output:\n{output[-2000:]}")
    v = {k: float(x) for k, x in (kv.split("=") for kv in m.group(1).split())}
    seconds = v["duration_us"] / 1e6
    errors = v["connect"] + v["read"] + v["write"] + v["status"] + v["timeout"]
    return Run(
        req_s=v["requests"] / seconds,
        mib_s=v["bytes"] / seconds / 2**20,
        p50_ms=v["p50_us"] / 1e3,
        p99_ms=v["p99_us"] / 1e3,
        errors=int(errors),
        cpu=cpu,
    )


def run_json_client(name: str, argv: list[str], server: Server, args: argparse.Namespace, tmp: Path) -> Run:
    """A client that prints one JSON line (req_s, mib_s, p50_ms, p99_ms, errors): bulk, loadgen."""
    output, cpu = run_client(argv, tmp / "client.log", server, args.duration + 60)
    try:
        v = json.loads(output.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BenchError(f"could not parse {name} output:\n{output[-2000:]}") from None
    return Run(v["req_s"], v["mib_s"], v["p50_ms"], v["p99_ms"], v["errors"], cpu)


def run_bulk(server: Server, path: str, args: argparse.Namespace, tmp: Path) -> Run:
    argv = pinned(CLIENT_CORE, args.nice, sys.executable, str(BULK_CLIENT))
    argv += [str(server.port), path, str(args.connections), f"{args.duration:g}"]
    return run_json_client("bulk client", argv, server, args, tmp)


def build_loadgen(tmp: Path) -> Path:
    """Compile loadgen.c (gcc -O2) into the bench's temp dir."""
    binary = tmp / "loadgen"
    done = subprocess.run(
        [GCC, "-O2", "-Wall", "-o", str(binary), str(LOADGEN_C)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise BenchError(f"gcc could not build {LOADGEN_C}:\n{done.stderr[-2000:]}", exit_code=2)
    return binary


def run_loadgen(server: Server, path: str, connections: int, args: argparse.Namespace, tmp: Path) -> Run:
    argv = pinned(CLIENT_CORE, args.nice, str(tmp / "loadgen"), str(server.port), path)
    argv += [str(connections), f"{args.duration:g}"]
    return run_json_client("loadgen", argv, server, args, tmp)
