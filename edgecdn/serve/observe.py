"""What each client request adds to the metrics: requests, bytes and latency by cache status.

Rules of this file: one call per finished request (`Observer.record`), from wherever the serving path
ends; the metric children for a (cache status, status class) pair are looked up once and kept, so the
hot path costs one dict lookup and three increments.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from edgecdn.metrics import Metrics


class Observer:
    """Counts finished requests into the request, bytes and latency metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._children: dict[tuple[str, int], tuple[Counter, Counter, Histogram]] = {}

    def record(self, cache_status: str, status: int, bytes_sent: int, seconds: float) -> None:
        pair = (cache_status, status // 100)
        children = self._children.get(pair)
        if children is None:
            children = self._children.setdefault(pair, self._make(cache_status, status))
        requests, sent, latency = children
        requests.inc()
        sent.inc(bytes_sent)
        latency.observe(seconds)

    def _make(self, cache_status: str, status: int) -> tuple[Counter, Counter, Histogram]:
        m = self.metrics
        return (
            m.requests.labels(cache_status, f"{status // 100}xx"),
            m.sent_bytes.labels(cache_status),
            m.request_seconds.labels(cache_status),
        )
