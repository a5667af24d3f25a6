#!/usr/bin/env python3
"""edgecdn vs nginx proxy_cache: cache-hit req/s, MB/s and p99, side by side on one machine.

Rules of this file: every process it starts is stopped by its pid (or the process group it was
given) before it exits, also on Ctrl-C; nothing listens or connects outside 127.0.0.1; servers run
on core 0, the load generator on core 1, one (server, size) at a time, repetitions interleaved.

    .venv/bin/python loadtests/bench.py [--sizes 1k,64k,1m] [--duration 10] [--out bench.json]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import pwd
import re
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NGINX = "/usr/sbin/nginx"
WRK = "/usr/bin/wrk"
SERVER_CORE = "0"
CLIENT_CORE = "1"
LOOPBACK = "127.0.0.1"
# The lead's acceptance ratios (edgecdn / nginx req/s) by object size.
TARGETS = {1024: 0.4, 64 * 1024: 0.5, 1024 * 1024: 0.8}
# Sizes at or above this are also measured with the bulk client in --modes auto.
BULK_FROM = 512 * 1024
START_TIMEOUT_S = 30.0
# A run during which other processes used more than this share of a core is run again
# (--retry-noisy times), within RETRY_BUDGET_S of extra runs for the whole bench.
NOISY = 0.10
RETRY_BUDGET_S = 60.0
# Core busy shares from which a run counts as limited by that side.
CLIENT_BOUND = 0.95
SERVER_BOUND = 0.90
UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2}
MODE_NOTES = {
    "wrk": "wrk -t1 -c{c}, pinned to core 1",
    "bulk": "bench.py bulk client: 1 process, epoll, {c} keep-alive connections, pinned to "
    "core 1, bodies discarded in the kernel (recv MSG_TRUNC), so it stays far from saturation",
}

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


class BenchError(Exception):
    """A failure to report in one line; exit_code is what the script exits with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ---------------------------------------------------------------------------------------------
# Sizes and options


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in UNITS:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (use e.g. 1k, 64k, 1m)")
    return int(m.group(1)) * UNITS[m.group(2).lower()]


def format_size(n: int) -> str:
    for unit, factor in (("m", 1024**2), ("k", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}b"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench.py",
        description="Benchmark edgecdn against nginx proxy_cache on cache hits (loopback only).",
    )
    p.add_argument("--sizes", default="1k,64k,1m", help="object sizes, comma separated")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    p.add_argument("--reps", type=int, default=3, help="runs per (server, size); median reported")
    p.add_argument("--connections", type=int, default=32, help="client connections (default 32)")
    p.add_argument("--quick", action="store_true", help="smoke test: --duration 3 --reps 1")
    p.add_argument("--out", default="bench.json", help="JSON results file (default bench.json)")
    p.add_argument("--servers", default="edgecdn,nginx", help="edgecdn,nginx or just one of them")
    p.add_argument(
        "--modes",
        default="auto",
        choices=["auto", "wrk", "bulk", "both"],
        help="load generator: auto = wrk for every size plus the bulk client for sizes >= 512k",
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
    try:
        args.size_list = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not args.size_list or not args.server_list:
        p.error("--sizes and --servers must not be empty")
    if unknown := set(args.server_list) - {"edgecdn", "nginx"}:
        p.error(f"--servers: unknown {', '.join(sorted(unknown))} (use edgecdn, nginx)")
    if args.duration <= 0 or args.reps < 1 or args.connections < 1:
        p.error("--duration, --reps and --connections must be positive")
    return args


def modes_for(size: int, choice: str) -> list[str]:
    if choice == "auto":
        return ["wrk", "bulk"] if size >= BULK_FROM else ["wrk"]
    return ["wrk", "bulk"] if choice == "both" else [choice]


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass
class Started:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


class Processes:
    """Every long-running process the bench starts; stop_all() ends them by pid / own group."""

    def __init__(self) -> None:
        self.started: list[Started] = []

    def start(self, name: str, argv: list[str], log: Path, cwd: Path) -> Started:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        started = Started(name, proc, log)
        self.started.append(started)
        return started

    def stop_all(self) -> None:
        for s in reversed(self.started):
            stop_process(s.proc)
        self.started.clear()


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM by pid, SIGKILL after the grace time, then sweep the group it leads (workers)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def wait_for_listen_line(started: Started, pattern: re.Pattern[str]) -> str:
    """Poll the process log for its 'listening on URL' line; the URL must be on 127.0.0.1."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        m = pattern.search(started.log.read_text(errors="replace"))
        if m:
            url = m.group(1)
            if not url.startswith(f"http://{LOOPBACK}:"):
                raise BenchError(f"{started.name} listens on {url}, not on {LOOPBACK}")
            return url
        if started.proc.poll() is not None:
            raise BenchError(
                f"{started.name} exited with code {started.proc.returncode} before listening:\n"
                + log_tail(started.log)
            )
        time.sleep(0.05)
    raise BenchError(
        f"{started.name} did not print its listening line in {START_TIMEOUT_S:.0f} s:\n"
        + log_tail(started.log)
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_for_port(started: Started, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if started.proc.poll() is not None:
            raise BenchError(
                f"{started.name} exited with code {started.proc.returncode}:\n" + log_tail(started.log)
            )
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=1):
            return
        time.sleep(0.05)
    raise BenchError(f"{started.name} is not accepting on {LOOPBACK}:{port}")


@dataclass(frozen=True)
class ProcTable:
    """User+system CPU seconds and parent of every process, read from /proc at one moment."""

    cpu_s: dict[int, float]
    reaped_s: dict[int, float]  # of its children that exited and were waited for
    parent: dict[int, int]
    name: dict[int, str]

    @classmethod
    def read(cls) -> ProcTable:
        cpu_s, reaped_s, parent, name = {}, {}, {}, {}
        tick = os.sysconf("SC_CLK_TCK")
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            pid = int(entry.name)
            parent[pid] = int(fields[1])
            cpu_s[pid] = (int(fields[11]) + int(fields[12])) / tick
            reaped_s[pid] = (int(fields[13]) + int(fields[14])) / tick
            name[pid] = stat[stat.index("(") + 1 : stat.rindex(")")]
        return cls(cpu_s, reaped_s, parent, name)

    def tree(self, root: int) -> set[int]:
        """A process and its live descendants."""
        found, todo = set(), [root]
        while todo:
            pid = todo.pop()
            found.add(pid)
            todo.extend(child for child, parent in self.parent.items() if parent == pid)
        return found

    def tree_s(self, root: int) -> float:
        return sum(self.cpu_s.get(pid, 0.0) for pid in self.tree(root))

    def others_since(self, before: ProcTable, skip: set[int]) -> dict[str, float]:
        """CPU seconds since `before` of every process outside `skip`, with its short-lived
        children (reaped in between: over-counted if they started earlier; fine for a noise gauge).
        """
        used = {}
        for pid, cpu in self.cpu_s.items():
            if pid in skip:
                continue
            spent = cpu - before.cpu_s.get(pid, 0.0) + self.reaped_s[pid] - before.reaped_s.get(pid, 0.0)
            if spent > 0:
                used[f"{self.name[pid]}[{pid}]"] = spent
        return used


# ---------------------------------------------------------------------------------------------
# Origin, edgecdn, nginx


@dataclass
class Server:
    name: str
    url: str
    started: Started

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].rstrip("/"))


def wait_for_module(module: str, timeout_s: float = 0.0) -> None:
    """The origin and the edge are built alongside this script; say so if one is not there yet."""
    path = REPO / module / "__main__.py"
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() >= deadline:
            raise BenchError(f"{path} does not exist yet: `python -m {module}` cannot start")
        time.sleep(1)


def write_objects(root: Path, sizes: list[int]) -> dict[str, bytes]:
    objects = {}
    (root / "bench").mkdir(parents=True, exist_ok=True)
    for size in sizes:
        path = f"/bench/obj-{format_size(size)}.bin"
        body = os.urandom(size)
        (root / path.lstrip("/")).write_bytes(body)
        objects[path] = body
    return objects


def pinned(core: str, nice: int, *argv: str) -> list[str]:
    """argv run on one core, at the given nice level (0 = unchanged)."""
    prefix = ["nice", "-n", str(nice)] if nice else []
    return [*prefix, "taskset", "-c", core, *argv]


def start_origin(procs: Processes, tmp: Path, root: Path) -> Server:
    wait_for_module("origin")
    origin_cmd = [sys.executable, "-m", "origin", "serve"]
    argv = pinned(SERVER_CORE, 0, *origin_cmd, str(root), "--listen", f"{LOOPBACK}:0")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    help_run = subprocess.run(
        [*origin_cmd, "--help"], capture_output=True, text=True, cwd=tmp, env=env, timeout=30
    )
    if "--config" in help_run.stdout:
        # Longer than the whole bench, so no run sees a revalidation.
        config = tmp / "origin.toml"
        config.write_text('default_cache_control = "public, max-age=3600"\n')
        argv += ["--config", str(config)]
    started = procs.start("edgecdn-origin", argv, tmp / "origin.log", tmp)
    url = wait_for_listen_line(started, re.compile(r"edgecdn-origin listening on (http://\S+)"))
    return Server("origin", url.rstrip("/"), started)


def start_edge(procs: Processes, tmp: Path, origin: Server, args: argparse.Namespace) -> Server:
    wait_for_module("edgecdn")
    cache_dir = tmp / "edge-cache"
    cache_dir.mkdir()
    argv = pinned(SERVER_CORE, args.nice, sys.executable, "-m", "edgecdn", "serve")
    argv += ["--origin", origin.url, "--listen", f"{LOOPBACK}:0", "--cache-dir", str(cache_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    help_run = subprocess.run(
        [sys.executable, "-m", "edgecdn", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp,
        env=env,
        timeout=30,
    )
    if "--admin-listen" in help_run.stdout:
        argv += ["--admin-listen", f"{LOOPBACK}:0"]  # never a fixed port another run may hold
    if "--no-access-log" in help_run.stdout:
        argv += ["--no-access-log"]  # as nginx: access_log off
    argv += shlex.split(args.edge_args)
    started = procs.start("edgecdn", argv, tmp / "edgecdn.log", tmp)
    url = wait_for_listen_line(started, re.compile(r"edgecdn listening on (http://\S+)"))
    return Server("edgecdn", url.rstrip("/"), started)


def nginx_config(prefix: Path, origin: Server, port: int) -> str:
    text = (HERE / "nginx-bench.conf.tmpl").read_text()
    # As root, nginx would drop its worker to nobody, who cannot enter the 0700 temp dir.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    replacements = {
        "@USER@": user,
        "@PREFIX@": str(prefix),
        "@PORT@": str(port),
        "@ORIGIN@": origin.url.removeprefix("http://"),
    }
    for key, value in replacements.items():
        text = text.replace(key, value)
    return text


def start_nginx(procs: Processes, tmp: Path, origin: Server, args: argparse.Namespace) -> Server:
    prefix = tmp / "nginx"
    prefix.mkdir()
    port = free_port()  # closed before nginx binds it: a tiny race, accepted.
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, origin, port))
    argv = pinned(SERVER_CORE, args.nice, NGINX, "-p", str(prefix), "-c", str(conf))
    argv += ["-e", str(prefix / "error.log")]
    started = procs.start("nginx", argv, prefix / "stdout.log", tmp)
    wait_for_port(started, port)
    return Server("nginx", f"http://{LOOPBACK}:{port}", started)


def warm(server: Server, path: str, body: bytes, attempts: int = 20) -> str:
    """GET until the server answers X-Cache: HIT with the right bytes; returns the last X-Cache."""
    x_cache = "-"
    conn = http.client.HTTPConnection(LOOPBACK, server.port, timeout=30)
    try:
        for _ in range(attempts):
            conn.request("GET", path)
            resp = conn.getresponse()
            got = resp.read()
            if resp.status != 200:
                raise BenchError(f"{server.name} answered {resp.status} for {path} while warming")
            if got != body:
                print(
                    f"WARNING: {server.name} served {len(got)} bytes for {path} that differ from "
                    f"the origin's {len(body)}",
                    file=sys.stderr,
                )
                return "BAD-BODY"
            x_cache = resp.getheader("X-Cache", "-")
            if x_cache.upper().startswith("HIT"):
                return x_cache
            time.sleep(0.05)
    finally:
        conn.close()
    print(
        f"WARNING: {server.name} never answered X-Cache: HIT for {path} "
        f"(last: {x_cache}); its rows measure something other than hits",
        file=sys.stderr,
    )
    return x_cache


# ---------------------------------------------------------------------------------------------
# Load generators


@dataclass(frozen=True)
class Cpu:
    """CPU shares over one run, 1.0 = one core busy for the whole run."""

    client: float  # load generator user+sys (os.wait4)
    server: float  # server process tree user+sys (/proc/PID/stat)
    server_core: float  # core 0 busy incl. softirq (/proc/stat): loopback TCP work lands here too
    client_core: float  # core 1 busy incl. softirq
    steal: float  # both cores: time the hypervisor took away; high values make a run noisy
    others: float  # user processes not the bench's (other people's tests...): noisy if > ~0.05
    others_top: tuple[str, ...] = ()  # the busiest of them, "name[pid] share"


@dataclass(frozen=True)
class Run:
    req_s: float
    mib_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu: Cpu
    attempts: int = 1  # > 1: repeated because other processes disturbed it


BUSY, STEAL, TOTAL = range(3)


def core_times() -> dict[str, tuple[int, int, int]]:
    """(busy, steal, total) jiffies per core from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            v = [int(x) for x in values[:8]]
            user, nice, system, idle, iowait, irq, softirq, steal = v + [0] * (8 - len(v))
            busy = user + nice + system + irq + softirq
            out[name.removeprefix("cpu")] = (busy, steal, busy + idle + iowait + steal)
    return out


def run_client(argv: list[str], log: Path, server: Server, timeout_s: float) -> tuple[str, Cpu]:
    """Run a load generator to completion; returns its output and the CPU it and the server used."""
    procs0, cores0 = ProcTable.read(), core_times()
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
    procs1, cores1 = ProcTable.read(), core_times()
    server_cpu = procs1.tree_s(server.started.proc.pid) - procs0.tree_s(server.started.proc.pid)
    # Kernel threads (ksoftirqd, kworkers) carry the bench's own loopback traffic too.
    skip = procs1.tree(server.started.proc.pid) | procs1.tree(2) | {os.getpid()}
    others = procs1.others_since(procs0, skip)
    top = sorted(others, key=others.__getitem__, reverse=True)[:3]
    output = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"load generator exited {proc.returncode}: {argv}\n{output[-2000:]}")

    def share(core: str, index: int) -> float:
        total = cores1[core][TOTAL] - cores0[core][TOTAL]
        return (cores1[core][index] - cores0[core][index]) / total if total else 0.0

    client_cpu = usage.ru_utime + usage.ru_stime
    cpu = Cpu(
        client=client_cpu / wall,
        server=server_cpu / wall,
        server_core=share(SERVER_CORE, BUSY),
        client_core=share(CLIENT_CORE, BUSY),
        steal=(share(SERVER_CORE, STEAL) + share(CLIENT_CORE, STEAL)) / 2,
        # Reaped children count whole, so cap at what the cores could have given them.
        others=min(sum(others.values()), len(cores1) * wall - server_cpu - client_cpu) / wall,
        others_top=tuple(f"{name} {others[name] / wall:.0%}" for name in top),
    )
    return output, cpu


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


def run_bulk(server: Server, path: str, args: argparse.Namespace, tmp: Path) -> Run:
    argv = pinned(CLIENT_CORE, args.nice, sys.executable, str(Path(__file__).resolve()))
    argv += ["_bulk-client", str(server.port), path, str(args.connections), f"{args.duration:g}"]
    output, cpu = run_client(argv, tmp / "client.log", server, args.duration + 60)
    try:
        v = json.loads(output.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BenchError(f"could not parse bulk client output:\n{output[-2000:]}") from None
    return Run(v["req_s"], v["mib_s"], v["p50_ms"], v["p99_ms"], v["errors"], cpu)


@dataclass
class _Conn:
    sock: socket.socket
    head: bytearray = field(default_factory=bytearray)
    left: int = -1  # body bytes still to come; -1 while reading the head
    t0: float = 0.0


def bulk_client(port: int, path: str, connections: int, duration: float) -> dict[str, Any]:
    """Keep-alive GET loop on N connections; bodies are dropped in the kernel (MSG_TRUNC)."""
    request = f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n\r\n".encode()
    sink = bytearray(4 * 2**20)
    sel = selectors.EpollSelector()
    latencies: list[float] = []
    done_bytes = errors = 0

    def connect() -> _Conn:
        sock = socket.create_connection((LOOPBACK, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conn = _Conn(sock)
        sel.register(sock, selectors.EVENT_READ, conn)
        send(conn)
        return conn

    def send(conn: _Conn) -> None:
        conn.head.clear()
        conn.left = -1
        conn.t0 = time.perf_counter()
        conn.sock.sendall(request)  # a tiny request always fits the empty send buffer

    def reconnect(conn: _Conn) -> None:
        sel.unregister(conn.sock)
        conn.sock.close()
        try:
            connect()
        except OSError as e:
            raise SystemExit(f"bulk client: cannot reconnect to {LOOPBACK}:{port}: {e}") from None

    try:
        for _ in range(connections):
            connect()
    except OSError as e:
        raise SystemExit(f"bulk client: cannot connect to {LOOPBACK}:{port}: {e}") from None
    start = time.perf_counter()
    end = start + duration
    while (now := time.perf_counter()) < end:
        for key, _ in sel.select(end - now):
            conn: _Conn = key.data
            try:
                if conn.left < 0:
                    chunk = conn.sock.recv(8192)
                    n = len(chunk)
                    conn.head += chunk
                else:
                    n = conn.sock.recv_into(sink, min(conn.left, len(sink)), socket.MSG_TRUNC)
            except BlockingIOError:
                continue
            except OSError:
                errors += 1
                reconnect(conn)
                continue
            if n == 0:
                errors += 1
                reconnect(conn)
                continue
            done_bytes += n
            if conn.left < 0:
                end_of_head = conn.head.find(b"\r\n\r\n")
                if end_of_head < 0:
                    continue
                head = bytes(conn.head[:end_of_head]).lower()
                m = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
                if not head.startswith((b"http/1.1 2", b"http/1.0 2")) or not m:
                    errors += 1  # not a 2xx with a length: not a cache hit we can measure
                    reconnect(conn)
                    continue
                conn.left = int(m.group(1)) - (len(conn.head) - end_of_head - 4)
            else:
                conn.left -= n
            if conn.left == 0:
                latencies.append(time.perf_counter() - conn.t0)
                send(conn)
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1e3 if latencies else 0

    return {
        "requests": len(latencies),
        "req_s": len(latencies) / elapsed,
        "mib_s": done_bytes / elapsed / 2**20,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": errors,
    }


# ---------------------------------------------------------------------------------------------
# Measurement and report


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


def check_alive(servers: list[Server]) -> None:
    """Name a server that exited, or stopped accepting (a draining edge is still alive)."""
    for server in servers:
        code = server.started.proc.poll()
        if code is not None:
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        else:
            try:
                socket.create_connection((LOOPBACK, server.port), timeout=2).close()
                continue
            except OSError as e:
                how = f"still running but not accepting: {e.strerror or e}"
        raise BenchError(
            f"{server.name} (pid {server.started.proc.pid}) stopped during the bench ({how}). "
            f"If its log says it drained, something outside the bench sent it SIGTERM/SIGINT "
            f"(a `pkill -f` elsewhere?). Its log ends:\n{log_tail(server.started.log)}"
        )


@dataclass
class RetryBudget:
    """Seconds of repeated runs left; keeps the whole bench bounded on a busy machine."""

    left_s: float


def measure_one(
    server: Server, path: str, mode: str, args: argparse.Namespace, tmp: Path, budget: RetryBudget
) -> Run:
    """One run; repeated while another process disturbed it, keeping the least disturbed one."""
    client = {"wrk": run_wrk, "bulk": run_bulk}[mode]
    run = client(server, path, args, tmp)
    for attempt in range(2, args.retry_noisy + 2):
        if run.cpu.others <= NOISY or budget.left_s <= 0:
            break
        print(
            f"    other processes used {run.cpu.others:.0%} CPU during that run "
            f"({', '.join(run.cpu.others_top) or '?'}): running it again",
            flush=True,
        )
        t0 = time.monotonic()
        again = client(server, path, args, tmp)
        budget.left_s -= time.monotonic() - t0
        if again.cpu.others < run.cpu.others:
            run = again
        run = replace(run, attempts=attempt)
    return run


def measure(
    servers: list[Server], objects: dict[str, bytes], args: argparse.Namespace, tmp: Path
) -> list[dict[str, Any]]:
    rows = []
    budget = RetryBudget(RETRY_BUDGET_S)
    for path, body in objects.items():
        size = len(body)
        for mode in modes_for(size, args.modes):
            runs: dict[str, list[Run]] = {s.name: [] for s in servers}
            for rep in range(args.reps):
                for server in servers:  # interleaved: edgecdn, nginx, edgecdn, nginx, ...
                    try:
                        run = measure_one(server, path, mode, args, tmp, budget)
                    except BenchError:
                        check_alive(servers)  # a dead server explains a failed client best
                        raise
                    check_alive(servers)
                    runs[server.name].append(run)
                    print(
                        f"  {format_size(size):>4} {mode:4} {server.name:7} rep {rep + 1}: "
                        f"{run.req_s:9.0f} req/s {run.mib_s:8.1f} MiB/s "
                        f"p99 {run.p99_ms:7.2f} ms  client {run.cpu.client:4.0%} "
                        f"server {run.cpu.server:4.0%}  core0 {run.cpu.server_core:4.0%} "
                        f"core1 {run.cpu.client_core:4.0%} steal {run.cpu.steal:3.0%} "
                        f"others {run.cpu.others:3.0%}",
                        flush=True,
                    )
                    time.sleep(0.5)
            row: dict[str, Any] = {
                "size": format_size(size),
                "size_bytes": size,
                "path": path,
                "mode": mode,
            }
            row.update({name: median_run(r) for name, r in runs.items()})
            if "edgecdn" in row and "nginx" in row and row["nginx"]["req_s"]:
                row["ratio"] = row["edgecdn"]["req_s"] / row["nginx"]["req_s"]
            # With two modes, only the less client-bound one (bulk, the last) is held to the target.
            row["target"] = TARGETS.get(size) if mode == modes_for(size, args.modes)[-1] else None
            rows.append(row)
    return rows


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


def check_tools(args: argparse.Namespace) -> None:
    if "nginx" in args.server_list and not os.access(NGINX, os.X_OK):
        raise BenchError(f"{NGINX} not found: apt-get install -y nginx-light", exit_code=2)
    if not os.access(WRK, os.X_OK):
        raise BenchError(f"{WRK} not found: apt-get install -y wrk", exit_code=2)
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


def bench(args: argparse.Namespace) -> int:
    check_tools(args)
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="edgecdn-bench-"))
    try:
        objects = write_objects(tmp / "origin-root", args.size_list)
        origin = start_origin(procs, tmp, tmp / "origin-root")
        print(f"origin   {origin.url}")
        servers = []
        if "edgecdn" in args.server_list:
            servers.append(start_edge(procs, tmp, origin, args))
        if "nginx" in args.server_list:
            servers.append(start_nginx(procs, tmp, origin, args))
        for server in servers:
            print(f"{server.name:8} {server.url}  (pid {server.started.proc.pid}, core {SERVER_CORE})")
        warmed = {s.name: {p: warm(s, p, body) for p, body in objects.items()} for s in servers}
        rows = measure(servers, objects, args, tmp)
        print_table(rows, args)
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
        missed = [r for r in rows if r.get("ratio") is not None and r["target"] and r["ratio"] < r["target"]]
        return 1 if args.check and missed else 0
    finally:
        procs.stop_all()
        if args.keep_tmp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["_bulk-client"]:
        port, path, connections, duration = argv[1:5]
        print(json.dumps(bulk_client(int(port), path, int(connections), float(duration))))
        return 0
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
