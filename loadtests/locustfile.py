"""A locust scenario for an edge: mostly hits on a hot set, some misses, jittered think time.

    pip install -e '.[load]'
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 --headless -u 50 -r 10 -t 1m

Paths come from EDGECDN_HOT_PATHS (comma separated, default: the objects bench.py writes). A miss
adds a unique query string, which is part of the cache key, so the edge must go to the origin.
EDGECDN_MISS_RATIO (default 0.1) and EDGECDN_THINK_S (default 1.0) set the mix and the mean
think time; each wait is drawn uniformly from 0.5x to 1.5x of it, so users do not march in step.
"""

from __future__ import annotations

import os
import random
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
