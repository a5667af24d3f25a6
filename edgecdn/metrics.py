"""Prometheus metrics. One registry per running edge (not the global one), so tests can build many."""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from edgecdn.build_info import __version__

# A `_created` series per counter doubles the exposition and no dashboard reads it.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.build_info = Gauge(
            "edgecdn_build_info", "Always 1; the labels name the build", ["version", "python"], registry=r
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.requests = Counter(
            "edgecdn_requests", "Client requests by cache status", ["cache_status"], registry=r
        )
        self.origin_requests = Counter(
            "edgecdn_origin_requests",
            "Requests sent to origins by outcome",
            ["outcome"],
            registry=r,
        )
        self.origin_up = Gauge(
            "edgecdn_origin_up", "1 when the origin is up, 0 when down", ["origin"], registry=r
        )
        self.origin_transitions = Counter(
            "edgecdn_origin_transitions",
            "Origin health state changes",
            ["origin", "to", "reason"],
            registry=r,
        )
        self.origin_retries = Counter(
            "edgecdn_origin_retries", "Requests moved to the next origin, by why", ["reason"], registry=r
        )
        self.origin_probes = Counter(
            "edgecdn_origin_probes", "Active health checks by result", ["origin", "result"], registry=r
        )
        self.fill_resumes = Counter(
            "edgecdn_fill_resumes",
            "Bodies that broke mid-way and were resumed from the next origin, by result",
            ["result"],
            registry=r,
        )
        self.fills = Counter("edgecdn_fills", "Cache fills by result", ["result"], registry=r)
        self.coalesced = Counter(
            "edgecdn_coalesced_waiters", "Requests that joined a fill already in flight", registry=r
        )
        self.storage_errors = Counter(
            "edgecdn_storage_errors",
            "Store operations that failed (served from origin)",
            registry=r,
        )
        self.storage_faults = Counter(
            "edgecdn_storage_faults",
            "Storage errors by cause (errno name, timeout, index, size-mismatch), counted where they happen",
            ["cause"],
            registry=r,
        )
        self.variants_evicted = Counter(
            "edgecdn_variants_evicted",
            "Vary variants dropped by the cache.max_variants cap (from both tiers)",
            registry=r,
        )
        self.follow_errors = Counter(
            "edgecdn_follow_errors",
            "Change-log catch-ups that failed and will be retried, by cause",
            ["cause"],
            registry=r,
        )
        self.background_restarts = Counter(
            "edgecdn_background_restarts",
            "Background tasks that ended unexpectedly and were restarted",
            ["task"],
            registry=r,
        )
        self.memory_bytes = Gauge("edgecdn_memory_tier_bytes", "Bytes in the memory tier", registry=r)
        self.disk_bytes = Gauge("edgecdn_disk_tier_bytes", "Bytes in the disk tier", registry=r)
        self.flights = Gauge("edgecdn_fills_in_flight", "Fills running now", registry=r)
        self.purges = Counter("edgecdn_purges", "Admin purge requests by kind", ["kind"], registry=r)
        self.pushes = Counter("edgecdn_pushes", "Admin pushes by result", ["result"], registry=r)
        self.hash_mismatches = Counter(
            "edgecdn_versioned_hash_mismatches",
            "Fills of versioned URLs whose body did not hash to the name (not stored)",
            registry=r,
        )
        # Warm-up and overload shedding (serve/prefetch.py, serve/shed.py).
        self.prefetches = Counter(
            "edgecdn_prefetch_urls",
            "Prefetched URLs by outcome (warmed, fresh, failed)",
            ["result"],
            registry=r,
        )
        self.shed = Counter(
            "edgecdn_shed_requests", "Misses answered 503 because too many fills were running", registry=r
        )
        self.access_log_dropped = Counter(
            "edgecdn_access_log_dropped",
            "Access log lines not written (full disk, closed stdout, writer behind)",
            registry=r,
        )
        # Master and workers (process/master.py): a worker that died and was started again.
        self.worker_restarts = Counter(
            "edgecdn_worker_restarts", "Worker processes restarted after they died", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
