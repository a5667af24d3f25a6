"""Locust scenarios for an edge: EdgeClient (hot-set hits, some misses) and ReleaseDayClient (below).

    pip install -e '.[load]'
    locust -f loadtests/locustfile.py EdgeClient --host http://127.0.0.1:8080 --headless -u 50 -r 10 -t 1m
    make loadtest     # ReleaseDayClient against a local origin and 2 edges (loadtests/release_day.py)

Paths come from EDGECDN_HOT_PATHS (comma separated, default: the objects bench.py writes). A miss
adds a unique query string, which is part of the cache key, so the edge must go to the origin.
EDGECDN_MISS_RATIO (default 0.1) and EDGECDN_THINK_S (default 1.0) set the mix and the mean
think time; each wait is drawn uniformly from 0.5x to 1.5x of it, so users do not march in step.
"""

from __future__ import annotations

import os
import random
import time
import uuid

from locust import HttpUser, task

HOT_PATHS = [
    p.strip()
    for p in os.environ.get(
        "EDGECDN_HOT_PATHS", "/bench/obj-1k.bin,/bench/obj-64k.bin,/bench/obj-1m.bin"
    ).split(",")
    if p.strip()
]
MISS_RATIO = float(os.environ.get("EDGECDN_MISS_RATIO", "0.1"))
THINK_S = float(os.environ.get("EDGECDN_THINK_S", "1.0"))


def jittered_think(user: HttpUser) -> float:
    """Uniform in [0.5, 1.5] x THINK_S."""
    return THINK_S * random.uniform(0.5, 1.5)


class EdgeClient(HttpUser):
    wait_time = jittered_think

    @task
    def get_object(self) -> None:
        path = random.choice(HOT_PATHS)
        if random.random() < MISS_RATIO:
            self.fetch(f"{path}?miss={uuid.uuid4().hex}", name=f"{path} (miss)")
        else:
            self.fetch(path, name=f"{path} (hit)")

    def fetch(self, url: str, name: str) -> None:
        with self.client.get(url, name=name, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
            elif resp.headers.get("X-Cache") is None:
                resp.failure("no X-Cache header")
            else:
                resp.success()


# -- release day -----------------------------------------------------------------------------------
# Run by loadtests/release_day.py (`make loadtest`): EDGECDN_EDGES (comma separated edge URLs),
# EDGECDN_ASSETS (a prefetch manifest.txt of the release), EDGECDN_JITTER (1: ask /_edge/jitter first).

RELEASE_EDGES = [e for e in os.environ.get("EDGECDN_EDGES", "").split(",") if e]
RELEASE_ASSETS_FILE = os.environ.get("EDGECDN_ASSETS", "")
RELEASE_JITTER = os.environ.get("EDGECDN_JITTER", "1") == "1"
ASSETS_PER_CLIENT = int(os.environ.get("EDGECDN_ASSETS_PER_CLIENT", "5"))
ZIPF_S = 1.1  # popularity of the k-th asset ~ 1 / k^s


def release_assets() -> list[str]:
    if not RELEASE_ASSETS_FILE:
        return []
    with open(RELEASE_ASSETS_FILE, encoding="utf-8") as f:
        return [line.split()[0] for line in f if line.startswith("/")]


ASSETS = release_assets()
ZIPF_WEIGHTS = [1 / (k + 1) ** ZIPF_S for k in range(len(ASSETS))]


class ReleaseDayClient(HttpUser):
    """A client on release day: (ask /_edge/jitter and wait), then the entry point and a few assets."""

    wait_time = jittered_think
    host = RELEASE_EDGES[0] if RELEASE_EDGES else "http://127.0.0.1:8080"

    @task
    def release(self) -> None:
        edge = random.choice(RELEASE_EDGES) if RELEASE_EDGES else self.host
        if RELEASE_JITTER:
            query = {"url": "/index.html", "client": uuid.uuid4().hex}
            with self.client.get(
                f"{edge}/_edge/jitter", params=query, name="/_edge/jitter", catch_response=True
            ) as resp:
                delay_ms = resp.json().get("delay_ms", 0) if resp.status_code == 200 else 0
            time.sleep(delay_ms / 1000)  # gevent-patched: only this user waits
        self.fetch(edge + "/index.html", name="/index.html")
        for path in random.choices(ASSETS, ZIPF_WEIGHTS, k=ASSETS_PER_CLIENT) if ASSETS else ():
            self.fetch(edge + path, name="asset")

    def fetch(self, url: str, name: str) -> None:
        with self.client.get(url, name=name, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
            else:
                resp.success()
