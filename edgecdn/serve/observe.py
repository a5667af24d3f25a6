"""What each client request adds to the metrics: requests, bytes and latency by cache status.

Rules of this file: one call per finished request (`Observer.record`), from wherever the serving path
ends; it costs one dict lookup and four additions on plain Python numbers (metrics.Served), which the
registry turns into the request, bytes and latency series when scraped.
"""

from __future__ import annotations

from edgecdn.metrics import Metrics


class Observer:
    """Counts finished requests into the request, bytes and latency metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.record = metrics.served.record  # (cache status, status, body bytes, seconds)
