"""A release-day fleet on loopback: a versioned site, the origin behind a counting meter, N edges.

Rules of this file: every process is started through Processes (stopped by pid) and listens on
127.0.0.1 only; the site is built with the real pipeline (`edgecdn version`, `edgecdn-origin publish`).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench_error import BenchError
from processes import REPO, Processes, wait_for_listen_line

from edgecdn.control.signing import generate_key

LISTENING = re.compile(r"listening on (http://\S+)")
ADMIN = re.compile(r"\(admin (http://\S+)\)")
KEY = generate_key("loadtest")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Edge:
    url: str
    admin: str


def mixed_sizes(n: int, *, largest: int, seed: int = 9) -> list[int]:
    """Nine in ten small (1-64 KiB), one in ten large (256 KiB up to `largest`)."""
    rng = random.Random(seed)
    big = [s for s in (256 * 1024, 1 << 20, 4 << 20, 10 << 20) if s <= largest] or [largest]
    return [rng.choice([1, 4, 16, 64]) * 1024 if i % 10 else rng.choice(big) for i in range(n)]


def run(*argv: str) -> str:
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO, timeout=600)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv[:3])}: exit {done.returncode}: {done.stderr.strip()[-400:]}")
    return done.stdout


class Fleet:
    def __init__(self, work: Path, procs: Processes) -> None:
        self.work = work
        self.procs = procs
        self.root = work / "www"
        self.dist = work / "dist"
        self.meter_url = ""
        self._edges = 0

    def build_site(self, sizes: list[int], entry: bytes = b"<html>release 1</html>") -> list[str]:
        """Version a site of len(sizes) objects plus an index.html; publish it; the asset paths."""
        site = self.work / "site"
        rng = random.Random(1)
        for i, size in enumerate(sizes):
            (site / f"a{i // 50}").mkdir(parents=True, exist_ok=True)
            (site / f"a{i // 50}" / f"obj{i}.bin").write_bytes(rng.randbytes(size))
        (site / "index.html").write_bytes(entry)
        self.root.mkdir(exist_ok=True)
        run(
            "-m",
            "edgecdn",
            "version",
            str(site),
            "--out",
            str(self.dist),
            "--exclude",
            "index.html",
            "--quiet",
        )
        run(
            "-m",
            "origin",
            "publish",
            str(self.dist / "manifest.json"),
            str(self.dist / "index.html"),
            "--root",
            str(self.root),
        )
        text = (self.dist / "manifest.txt").read_text()
        return [line for line in text.splitlines() if line.startswith("/")]

    def start_origin(self) -> str:
        origin = self.procs.start(
            "origin",
            [sys.executable, "-m", "origin", "serve", str(self.root), "--listen", "127.0.0.1:0"],
            self.work / "origin.log",
            REPO,
        )
        origin_url = wait_for_listen_line(origin, LISTENING)
        meter = self.procs.start(
            "meter",
            [sys.executable, str(REPO / "loadtests" / "origin_meter.py"), "--origin", origin_url],
            self.work / "meter.log",
            REPO,
        )
        self.meter_url = wait_for_listen_line(meter, LISTENING)
        return self.meter_url

    def start_edges(self, n: int, config: str) -> list[Edge]:
        """n fresh edges (new cache directories) with `config` as their TOML, the meter as origin."""
        edges = []
        for _ in range(n):
            self._edges += 1
            k = self._edges
            (self.work / f"edge{k}.toml").write_text(config)
            argv = [sys.executable, "-m", "edgecdn", "serve", "-c", str(self.work / f"edge{k}.toml")]
            argv += ["--origin", self.meter_url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
            argv += ["--cache-dir", str(self.work / f"cache{k}"), "--admin-key", KEY, "--no-access-log"]
            started = self.procs.start(f"edge{k}", argv, self.work / f"edge{k}.log", REPO)
            url = wait_for_listen_line(started, LISTENING)
            edges.append(Edge(url, wait_for_listen_line(started, ADMIN)))
        return edges

    def metrics_text(self, edge: Edge) -> str:
        with _OPENER.open(edge.admin + "/metrics", timeout=10) as r:
            return str(r.read().decode())

    def meter(self) -> dict[str, object]:
        with _OPENER.open(self.meter_url + "/_meter", timeout=10) as r:
            result: dict[str, object] = json.load(r)
            return result

    def reset_meter(self) -> None:
        req = urllib.request.Request(self.meter_url + "/_meter/reset", data=b"", method="POST")
        with _OPENER.open(req, timeout=10):
            pass
