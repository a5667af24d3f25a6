"""`edgecdn fleet up`: origin, shield, N edges and HAProxy on this machine; as root with two balancers, the
keepalived VIP pair in network namespaces (process/netlab.py). Ctrl-C or SIGTERM removes all of it.

Rules of this file: every process is started here, written with its pid to state.json and stopped by that
pid; every namespace made is removed on the way out, whatever failed; ports are chosen at start.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from edgecdn.config import AdminConfig, OriginServer
from edgecdn.control.fleet import (
    Fleet,
    Node,
    load_fleet,
    render_check_script,
    render_edge,
    render_haproxy,
    render_keepalived,
    validate_fleet,
    write_files,
)
from edgecdn.control.signing import generate_key
from edgecdn.errors import EdgeError, UsageError
from edgecdn.process import netlab

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
LAB_FIRST_PORT = 8100  # the core namespace is empty: fixed ports there cannot collide with anything


class _Stopped(Exception):
    """SIGTERM or SIGINT arrived."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "fleet", metavar="FLEET.toml", help="the fleet description (addresses and origins are replaced)"
    )
    p.add_argument(
        "--origin-root", required=True, metavar="DIR", help="start edgecdn-origin on DIR as the only origin"
    )
    p.add_argument("--origin-test-hooks", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--netns",
        choices=("auto", "on", "off"),
        default="auto",
        help="the keepalived VIP pair in network namespaces (auto: when root with two [[balancers]])",
    )
    p.add_argument(
        "--hold",
        action="append",
        default=[],
        metavar="EDGE",
        help="render EDGE and list it in HAProxy but do not start it (start it later to join)",
    )
    p.add_argument("--run-dir", metavar="DIR", help="configs, caches, logs, state.json (default: temporary)")


class Fleetup:
    """The processes and namespaces of one `fleet up`, stopped and removed by `close`."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.children: dict[str, tuple[subprocess.Popen[bytes], list[str], Path]] = {}
        self.lab: netlab.Lab | None = None

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.run_dir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.children[name] = (proc, argv, log)
        return proc

    def wait_line(self, name: str, marker: str) -> str:
        """The first log line of child `name` containing `marker`; the child must stay alive meanwhile."""
        _proc, _argv, log = self.children[name]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for line in log.read_text(errors="replace").splitlines():
                if marker in line:
                    return line
            self.check_alive(name)
            time.sleep(0.05)
        raise EdgeError(f"{name}: not ready after {READY_TIMEOUT_S:.0f} s ({log})")

    def reap(self) -> None:
        """Collect children that exited (no zombies: a pid file must not name a dead process), say so once."""
        for name, (proc, _argv, log) in self.children.items():
            if proc.returncode is None and proc.poll() is not None:
                print(f"fleet: {name} exited with code {proc.returncode} (log: {log})", file=sys.stderr)

    def check_alive(self, name: str) -> None:
        proc, _argv, log = self.children[name]
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise EdgeError(f"{name} exited ({log}): {' / '.join(tail) or 'no output'}")

    def close(self) -> None:
        running = [p for p, _a, _l in reversed(self.children.values()) if p.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.lab is not None:
            netlab.remove(self.lab)

    def state(self) -> dict[str, Any]:
        return {
            name: {"pid": p.pid, "argv": a, "log": str(log)} for name, (p, a, log) in self.children.items()
        }


def free_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 now (held together while chosen, so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def haproxy_command(sock: str, command: str) -> str:
    """One command on HAProxy's stats socket (e.g. `disable server edges/edge1`), its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(sock)
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def server_states(sock: str) -> dict[str, str]:
    """Edge name → HAProxy's status for it (UP, DOWN, MAINT, "UP 1/2", ...)."""
    rows = csv.DictReader(haproxy_command(sock, "show stat").lstrip("# ").splitlines())
    return {r["svname"]: r["status"] for r in rows if r["pxname"] == "edges" and r["svname"] != "BACKEND"}


def _wait(what: str, ok: Any) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if ok():
                return
        time.sleep(0.05)
    raise EdgeError(f"{what}: not ready after {READY_TIMEOUT_S:.0f} s")


def _place(fleet: Fleet, run_dir: Path, host: str, ports: Sequence[int]) -> Fleet:
    """The description with this machine's addresses, cache dirs and sockets."""
    it = iter(ports)

    def node(n: Node) -> Node:
        return dataclasses.replace(
            n,
            public=f"{host}:{next(it)}",
            admin=f"{host}:{next(it)}",
            cache_dir=str(run_dir / "cache" / n.name),
        )

    admin = fleet.admin if fleet.admin.keys else AdminConfig(keys=(generate_key(None),))
    return dataclasses.replace(
        fleet, shield=node(fleet.shield), edges=tuple(node(e) for e in fleet.edges), admin=admin
    )


def _front_for(fleet: Fleet, where: Path, listen: str) -> Fleet:
    front = dataclasses.replace(
        fleet.front,
        listen=listen,
        stats_socket=str(where / "haproxy.sock"),
        pidfile=str(where / "haproxy.pid"),
    )
    return dataclasses.replace(fleet, front=front)


def run(args: argparse.Namespace) -> int:
    fleet = load_fleet(args.fleet)
    if not Path(args.origin_root).is_dir():
        raise UsageError(f"--origin-root {args.origin_root}: not a directory")
    unknown = set(args.hold) - {e.name for e in fleet.edges}
    if unknown:
        raise UsageError(f"--hold {sorted(unknown)[0]}: no such edge in {args.fleet}")
    lab_ok = os.geteuid() == 0 and len(fleet.balancers) >= 2 and shutil.which("keepalived") is not None
    if args.netns == "on" and not lab_ok:
        raise UsageError("--netns on: needs root, two [[balancers]] and keepalived installed")
    use_lab = args.netns == "on" or (args.netns == "auto" and lab_ok)
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(haproxy, os.X_OK):
        raise UsageError("haproxy is not installed (apt-get install haproxy)")
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="edgecdn-fleet-")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    up = Fleetup(run_dir)
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        state = _start(up, fleet, args, haproxy, use_lab)
        (run_dir / "state.json").write_text(json.dumps(state, indent=2) + "\n")
        for name, node in state["nodes"].items():
            print(f"  {name:10} {node['public']}  admin {node['admin']}{'  (held)' if node['held'] else ''}")
        if use_lab:
            print(f"  VIP {state['front']} is reachable in netns {state['netns']['client']}")
        print(f"fleet listening on {state['front']} (state: {run_dir / 'state.json'})", flush=True)
        while True:
            time.sleep(0.2)
            up.reap()
    except _Stopped:
        return 0
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        up.close()
        if not args.run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start(
    up: Fleetup, fleet: Fleet, args: argparse.Namespace, haproxy: str, use_lab: bool
) -> dict[str, Any]:
    run_dir = up.run_dir
    lab = None
    if use_lab:
        lab = up.lab = netlab.create(f"ef{os.getpid()}", [b.name for b in fleet.balancers])
        host = netlab.CORE_ADDRESS
        ports = list(range(LAB_FIRST_PORT, LAB_FIRST_PORT + 3 + 2 * len(fleet.edges)))
    else:
        host, ports = "127.0.0.1", free_ports(4 + 2 * len(fleet.edges))

    def core(argv: list[str]) -> list[str]:
        return lab.exec_argv(lab.core, argv) if lab else argv

    state: dict[str, Any] = {"run_dir": str(run_dir), "netns": None, "origin": f"http://{host}:{ports[-1]}"}
    origin = [sys.executable, "-m", "origin", "serve", args.origin_root, "--listen", f"{host}:{ports[-1]}"]
    up.spawn("origin", core(origin + (["--test-hooks"] if args.origin_test_hooks else [])))
    up.wait_line("origin", "listening on")
    fleet = dataclasses.replace(fleet, origins=(OriginServer(state["origin"]),))
    fleet = _place(fleet, run_dir, host, ports)
    validate_fleet(fleet)
    source = Path(args.fleet).name
    nodes = [fleet.shield, *fleet.edges]
    write_files({f"{n.name}.toml": render_edge(fleet, n, source) for n in nodes}, run_dir / "config")
    state["admin_key"] = fleet.admin.keys[0]
    state["nodes"] = {
        n.name: {
            "public": f"http://{n.public}",
            "admin": f"http://{n.admin}",
            "config": str(run_dir / "config" / f"{n.name}.toml"),
            "held": n.name in args.hold,
        }
        for n in nodes
    }
    serve = [sys.executable, "-m", "edgecdn", "serve", "-c"]
    up.spawn("shield", core([*serve, state["nodes"]["shield"]["config"]]))
    up.wait_line("shield", "listening on")
    started = [e.name for e in fleet.edges if e.name not in args.hold]
    for name in started:
        up.spawn(name, core([*serve, state["nodes"][name]["config"]]))
    for name in started:
        up.wait_line(name, "listening on")
    if lab is None:
        state["front"] = f"http://127.0.0.1:{ports[-2]}"
        placed = _front_for(fleet, run_dir, f"127.0.0.1:{ports[-2]}")
        state["haproxy"] = {"front": _start_haproxy(up, placed, "front", [haproxy], args.hold, source)}
    else:
        state["haproxy"] = _start_pair(up, fleet, lab, haproxy, args.hold, source)
        state["front"] = f"http://{netlab.VIP}:80"
        state["netns"] = {"prefix": lab.prefix, "core": lab.core, "client": lab.client}
    state["processes"] = up.state()
    return state


def _start_haproxy(
    up: Fleetup, fleet: Fleet, name: str, prefix: list[str], hold: list[str], source: str
) -> dict[str, Any]:
    where = Path(fleet.front.stats_socket).parent
    write_files({"haproxy.cfg": render_haproxy(fleet, source)}, where)
    up.spawn(f"haproxy-{name}", [*prefix, "-W", "-db", "-f", str(where / "haproxy.cfg")])
    sock = fleet.front.stats_socket

    def settled() -> bool:
        up.check_alive(f"haproxy-{name}")
        states = server_states(sock)
        return all(states[e.name].startswith("DOWN" if e.name in hold else "UP") for e in fleet.edges)

    _wait(f"haproxy-{name}", settled)
    return {"socket": sock, "pidfile": fleet.front.pidfile, "config": str(where / "haproxy.cfg")}


def _start_pair(
    up: Fleetup, fleet: Fleet, lab: netlab.Lab, haproxy: str, hold: list[str], source: str
) -> dict[str, Any]:
    """HAProxy and keepalived in each balancer namespace; the first one is master before the second starts."""
    vip = dataclasses.replace(fleet.vip, address=netlab.VIP, interface="eth0")
    out: dict[str, Any] = {}
    for lb in sorted(fleet.balancers, key=lambda b: -b.priority):
        where = up.run_dir / lb.name
        placed = _front_for(dataclasses.replace(fleet, vip=vip), where, f"{netlab.VIP}:80")
        ns = lab.ns(lb.name)
        info = _start_haproxy(up, placed, lb.name, lab.exec_argv(ns, [haproxy]), hold, source)
        here = dataclasses.replace(
            lb, address=lab.address(lb.name), check_script=str(where / "check_haproxy.sh")
        )
        peers = tuple(
            here if b == lb else dataclasses.replace(b, address=lab.address(b.name)) for b in fleet.balancers
        )
        placed = dataclasses.replace(placed, balancers=peers)
        write_files(
            {
                "keepalived.conf": render_keepalived(placed, here, source),
                "check_haproxy.sh": render_check_script(placed, source),
            },
            where,
        )
        pids = [f"--pid={where / 'keepalived.pid'}", f"--vrrp_pid={where / 'vrrp.pid'}"]
        argv = ["keepalived", "-n", "-l", "-D", "-P", "-f", str(where / "keepalived.conf"), *pids]
        up.spawn(f"keepalived-{lb.name}", lab.exec_argv(ns, argv))
        if not out:  # the first (highest priority) takes the VIP before the second one starts
            _wait(f"VIP on {lb.name}", lambda ns=ns: netlab.holds(ns, netlab.VIP))
        out[lb.name] = {**info, "ns": ns, "address": here.address, "vrrp_pidfile": str(where / "vrrp.pid")}
    return out
