"""`/_edge/stats` and the store gauges: what an operator asks of one edge, read from its parts.

Rules of this file: nothing here counts anything itself; requests come from the request counter
(serve/observe.py), usage from the store, states from the origin pool. Eviction counters are fed from the
tiers' running totals, so a scrape adds exactly what was evicted since the last one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from edgecdn import clock
from edgecdn.build_info import __version__
from edgecdn.cache.store import Store
from edgecdn.fetch.coalesce import Coalescer
from edgecdn.fetch.pool import OriginPool
from edgecdn.metrics import Metrics

# Answered from the cache without fetching a body from an origin (REVALIDATED asked it with a 304).
FROM_CACHE = frozenset({"HIT", "STALE", "UPDATING", "REVALIDATED"})


def requests_by_status(families: Iterable[Metric]) -> dict[str, int]:
    """Client requests so far by cache status (X-Cache), summed over status classes."""
    counts: dict[str, int] = {}
    for family in families:
        if family.name != "edgecdn_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                status = sample.labels["cache_status"]
                counts[status] = counts.get(status, 0) + int(sample.value)
    return counts


def memory_usage(families: Iterable[Metric]) -> dict[str, int]:
    """The memory tier as the (merged) store gauges tell it: with workers, every process's tier summed."""
    names = {
        "edgecdn_store_objects": "items",
        "edgecdn_store_bytes": "bytes",
        "edgecdn_store_limit_bytes": "limit",
        "edgecdn_store_evictions_total": "evicted",
    }
    usage = dict.fromkeys(names.values(), 0)
    for family in families:
        for sample in family.samples:
            if sample.name in names and sample.labels.get("tier") == "memory":
                usage[names[sample.name]] += int(sample.value)
    return usage


class Stats:
    """What the stats route and the metrics scrape need: the store, the fills, the origins, the metrics."""

    def __init__(self, store: Store, coalescer: Coalescer, pool: OriginPool, metrics: Metrics) -> None:
        self.store = store
        self.coalescer = coalescer
        self.pool = pool
        self.metrics = metrics
        self.started = clock.monotonic()
        self._evicted = {"memory": 0, "disk": 0}

    async def usage(self) -> dict[str, dict[str, int]]:
        """Per-tier usage, also set into the store gauges and eviction counters."""
        usage = await self.store.usage()
        self.record(usage)
        return usage

    def record(self, usage: dict[str, dict[str, int]]) -> None:
        """Set the store gauges and eviction counters of the tiers in `usage` (a worker: memory only)."""
        m = self.metrics
        for tier, u in usage.items():
            m.store_bytes.labels(tier).set(u["bytes"])
            m.store_objects.labels(tier).set(u["items"])
            m.store_limit_bytes.labels(tier).set(u["limit"])
            new = u["evicted"] - self._evicted[tier]
            if new > 0:
                m.evictions.labels(tier).inc(new)
                self._evicted[tier] = u["evicted"]

    async def snapshot(self, edge_wide: bytes | None = None) -> dict[str, Any]:
        """The `/_edge/stats` body; `edge_wide`: a master's /metrics merged over its workers, where the
        requests and the memory tiers are counted (the disk tier is one, the master's view of it)."""
        usage = await self.usage()
        if edge_wide is None:
            requests = requests_by_status(self.metrics.requests.collect())
        else:
            families = list(text_string_to_metric_families(edge_wide.decode()))
            requests = requests_by_status(families)
            usage["memory"] = memory_usage(families)
        total = sum(requests.values())
        from_cache = sum(n for status, n in requests.items() if status in FROM_CACHE)
        return {
            "version": __version__,
            "uptime_s": round(clock.monotonic() - self.started, 3),
            "requests": {"total": total, "by_cache_status": requests},
            "hit_ratio": round(from_cache / total, 4) if total else None,
            "store": usage,
            "fills_in_flight": self.coalescer.running,
            "origins": self.pool.states(),
        }
