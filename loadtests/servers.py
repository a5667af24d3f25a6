"""The three servers of a bench: the origin, edgecdn and nginx in front of it, warmed to hits.

Rules of this file: each server is started through Processes (so it is stopped by pid), listens on
127.0.0.1 only and runs on core 0; the edge and nginx are configured alike (1 process, the same
access log: a file with every request, or none).
"""

from __future__ import annotations

import argparse
import http.client
import os
import pwd
import re
import shlex
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench_error import BenchError
from processes import (
    LOOPBACK,
    REPO,
    SERVER_CORE,
    Processes,
    Started,
    free_port,
    log_tail,
    pinned,
    wait_for_listen_line,
    wait_for_port,
)

HERE = Path(__file__).resolve().parent
NGINX = "/usr/sbin/nginx"


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


def start_origin(procs: Processes, tmp: Path, root: Path, config: Path) -> Server:
    wait_for_module("origin")
    argv = pinned(SERVER_CORE, 0, sys.executable, "-m", "origin", "serve", str(root))
    argv += ["--listen", f"{LOOPBACK}:0", "--config", str(config)]
    started = procs.start("edgecdn-origin", argv, tmp / "origin.log", tmp)
    url = wait_for_listen_line(started, re.compile(r"edgecdn-origin listening on (http://\S+)"))
    return Server("origin", url.rstrip("/"), started)


def start_edge(
    procs: Processes,
    tmp: Path,
    origin: Server,
    args: argparse.Namespace,
    *,
    name: str,
    access_log: Path | None,
    memory_tier: bool,
) -> Server:
    """An edge like nginx: one process on core 0, logging every request to a file or not at all."""
    wait_for_module("edgecdn")
    work = tmp / name
    work.mkdir(exist_ok=True)
    argv = pinned(SERVER_CORE, args.nice, sys.executable, "-m", "edgecdn", "serve")
    argv += ["--origin", origin.url, "--listen", f"{LOOPBACK}:0", "--admin-listen", f"{LOOPBACK}:0"]
    argv += ["--cache-dir", str(work / "cache")]
    argv += ["--access-log", str(access_log)] if access_log else ["--no-access-log"]
    if not memory_tier:  # every hit is a disk hit
        config = work / "edge.toml"
        config.write_text("[cache]\nmemory_size = 0\nmemory_object_max = 0\n")
        argv += ["-c", str(config)]
    argv += shlex.split(args.edge_args)
    started = procs.start(name, argv, work / "edgecdn.log", tmp)
    url = wait_for_listen_line(started, re.compile(r"edgecdn listening on (http://\S+)"))
    return Server(name, url.rstrip("/"), started)


def start_floor(
    procs: Processes, tmp: Path, root: Path, args: argparse.Namespace, *, access_log: Path | None
) -> Server:
    """The Python floor (floor.py) in the edge's place: what any Python server reaches here, for scale."""
    work = tmp / "floor"
    work.mkdir(exist_ok=True)
    argv = pinned(SERVER_CORE, args.nice, sys.executable, str(HERE / "floor.py"), str(root))
    argv += ["--listen", f"{LOOPBACK}:0"] + (["--access-log", str(access_log)] if access_log else [])
    started = procs.start("floor", argv, work / "floor.log", tmp)
    url = wait_for_listen_line(started, re.compile(r"floor listening on (http://\S+)"))
    return Server("floor", url.rstrip("/"), started)


def nginx_config(prefix: Path, origin: Server, port: int, access_log: Path | None) -> str:
    text = (HERE / "nginx-bench.conf.tmpl").read_text()
    # As root, nginx would drop its worker to nobody, who cannot enter the 0700 temp dir.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    replacements = {
        "@USER@": user,
        "@PREFIX@": str(prefix),
        "@PORT@": str(port),
        "@ORIGIN@": origin.url.removeprefix("http://"),
        "@ACCESS_LOG@": f"access_log {access_log} combined;" if access_log else "access_log off;",
    }
    for key, value in replacements.items():
        text = text.replace(key, value)
    return text


def start_nginx(
    procs: Processes, tmp: Path, origin: Server, args: argparse.Namespace, *, access_log: Path | None
) -> Server:
    prefix = tmp / "nginx"
    prefix.mkdir(exist_ok=True)
    port = free_port()  # closed before nginx binds it: a tiny race, accepted.
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, origin, port, access_log))
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
