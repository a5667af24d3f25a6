"""Prometheus metrics. One registry per running edge (not the global one), so tests can build many."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
        self.access_log_dropped = Counter(
            "edgecdn_access_log_dropped",
            "Access log lines not written (full disk, closed stdout, writer behind)",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
