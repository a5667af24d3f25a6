#!/usr/bin/env python3
"""Kill the primary origin under load: failed client requests, time to move to the backup, time to fail back.

Rules of this file: loopback only; every process it starts is stopped by its pid before it exits (also on
Ctrl-C); the load is bounded (`--clients` for `--duration` seconds). Not part of the test suite.

    .venv/bin/python loadtests/failover.py [--clients 50] [--duration 20] [--kill-at 5] [--restart-at 12]
                                           [--health-interval 0.5]   # also run active checks
                                           [--down-time 10]          # the passive penalty

Timeline: warm `--objects` cached objects; start the clients, each alternating a cached object and a new
miss (a unique URL, so it must reach an origin); SIGKILL the primary at `--kill-at`; start a new primary on
the same port at `--restart-at`. A miss is attributed to the backup when the backup's hit counter saw it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    def __init__(self, *argv: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
        self.popen = subprocess.Popen(
            [sys.executable, "-m", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        assert self.popen.stdout is not None
        deadline = time.monotonic() + 20
        for line in self.popen.stdout:
            if "listening on " in line:
                self.url = line.split("listening on ")[1].split()[0]
                self.admin = line.split("(admin ")[1].rstrip(")\n") if "(admin " in line else ""
                break
            if time.monotonic() > deadline:
                break
        else:
            raise SystemExit(f"{argv}: did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Sample:
    start: float
    end: float
    kind: str  # "cached" | "miss"
    path: str
    ok: bool


async def client(
    s: aiohttp.ClientSession, base: str, cid: int, objects: int, until: float, out: list[Sample]
) -> None:
    n = 0
    while (now := time.monotonic()) < until:
        n += 1
        kind = "cached" if n % 2 else "miss"
        path = (
            f"/_test/blob/2000?t=warm{n % objects}" if kind == "cached" else f"/_test/blob/2000?t=m{cid}-{n}"
        )
        try:
            async with s.get(base + path) as r:
                body = await r.read()
                ok = r.status == 200 and len(body) == 2000
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        out.append(Sample(now, time.monotonic(), kind, path, ok))


def scrape(admin: str) -> dict[str, float]:
    with OPENER.open(admin + "/metrics", timeout=30) as r:
        text = r.read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def hits(origin_url: str) -> dict[str, int]:
    with OPENER.open(origin_url + "/_test/hits", timeout=30) as r:
        return dict(json.load(r)["hits"])


async def run(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="edgecdn-failover-"))
    for name in ("primary", "backup"):
        (tmp / name).mkdir()
        (tmp / name / "health").write_text("ok")
    port = free_port()
    procs: list[Proc] = []
    try:
        primary = Proc(
            "origin", "serve", str(tmp / "primary"), "--listen", f"127.0.0.1:{port}", "--test-hooks"
        )
        procs.append(primary)
        backup = Proc("origin", "serve", str(tmp / "backup"), "--listen", "127.0.0.1:0", "--test-hooks")
        procs.append(backup)
        cfg = tmp / "edge.toml"
        lines = ["[origin]", f"down_time = {args.down_time}"]
        if args.health_interval:
            lines += ['health_path = "/health"', f"health_interval = {args.health_interval}"]
        cfg.write_text("\n".join(lines) + "\n")
        edge = Proc(
            "edgecdn", "serve", "-c", str(cfg), "--origin", primary.url, "--origin", backup.url,
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--cache-dir", str(tmp / "cache"), "--no-access-log",
        )  # fmt: skip
        procs.append(edge)
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as s:
            for i in range(args.objects):
                async with s.get(f"{edge.url}/_test/blob/2000?t=warm{i}") as r:
                    await r.read()
            t0 = time.monotonic()
            samples: list[Sample] = []
            tasks = [
                asyncio.create_task(client(s, edge.url, c, args.objects, t0 + args.duration, samples))
                for c in range(args.clients)
            ]
            await asyncio.sleep(args.kill_at)
            killed, killed_wall = time.monotonic(), time.time()
            primary.stop(signal.SIGKILL)
            await asyncio.sleep(args.restart_at - args.kill_at)
            primary = Proc(
                "origin", "serve", str(tmp / "primary"), "--listen", f"127.0.0.1:{port}", "--test-hooks"
            )
            procs.append(primary)
            restarted = time.monotonic()
            await asyncio.gather(*tasks)
        on_backup = hits(backup.url)
        metrics = scrape(edge.admin)
        down_at = metrics.get(
            f'edgecdn_origin_transitions_created{{origin="{primary.url}",reason="max_fails",to="down"}}'
        )
        if down_at is None:
            down_at = metrics.get(
                f'edgecdn_origin_transitions_created{{origin="{primary.url}",reason="probe_fall",to="down"}}'
            )
        misses = sorted((x for x in samples if x.kind == "miss"), key=lambda x: x.start)
        after_kill = [x for x in misses if killed <= x.start < restarted]
        # Time until every miss goes to the backup: end of the last miss that started after the kill and
        # still went to (or failed on) the primary; 0 when the first one after the kill already did.
        stragglers = [x for x in after_kill if x.path not in on_backup]
        to_backup = max((x.end - killed for x in stragglers), default=0.0)
        after_restart = [x for x in misses if x.start >= restarted]
        last_on_backup = max((x.start - restarted for x in after_restart if x.path in on_backup), default=0.0)
        failed = [x for x in samples if not x.ok]
        return {
            "clients": args.clients,
            "duration_s": args.duration,
            "active_health_interval_s": args.health_interval or None,
            "down_time_s": args.down_time,
            "requests": len(samples),
            "failed_cached": sum(1 for x in failed if x.kind == "cached"),
            "failed_misses": sum(1 for x in failed if x.kind == "miss"),
            "misses_after_kill": len(after_kill),
            "misses_after_kill_not_on_backup": len(stragglers),
            "time_to_all_on_backup_s": round(to_backup, 3),
            "time_to_primary_marked_down_s": None if down_at is None else round(down_at - killed_wall, 3),
            "requests_retried_on_backup": metrics.get(
                'edgecdn_origin_retries_total{reason="origin-unreachable"}', 0
            ),
            "max_miss_latency_after_kill_ms": round(
                1000 * max((x.end - x.start for x in after_kill), default=0), 1
            ),
            "time_to_fail_back_s": round(last_on_backup, 3),
            "misses_after_restart_on_primary": sum(1 for x in after_restart if x.path not in on_backup),
            "misses_after_restart": len(after_restart),
        }
    finally:
        for p in reversed(procs):
            p.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--kill-at", type=float, default=5.0)
    p.add_argument("--restart-at", type=float, default=10.0)
    p.add_argument("--objects", type=int, default=100)
    p.add_argument("--down-time", type=float, default=10.0, help="origin.down_time (passive penalty)")
    p.add_argument("--health-interval", type=float, default=0.0, help="seconds; 0 = passive checks only")
    args = p.parse_args()
    if not 0 < args.kill_at < args.restart_at < args.duration <= 120 or not 1 <= args.clients <= 500:
        p.error("need 0 < kill-at < restart-at < duration <= 120 and 1 <= clients <= 500")
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
