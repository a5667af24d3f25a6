"""Prometheus metrics. One registry per running edge (not the global one), so tests can build many."""

from __future__ import annotations

import bisect
import itertools
import platform
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from edgecdn.build_info import __version__

# A `_created` series per counter doubles the exposition and no dashboard reads it.
disable_created_metrics()  # type: ignore[no-untyped-call]


# Hits take well under a millisecond; misses and origin requests take tens of milliseconds to seconds.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LE = (*(repr(float(b)) for b in REQUEST_BUCKETS), "+Inf")  # as prometheus_client writes them
ORIGIN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ServedRow:
    """One cache status's tallies: requests by status class, body bytes, latency bucket counts and sum."""

    __slots__ = ("buckets", "bytes", "classes", "seconds")

    def __init__(self) -> None:
        self.classes = [0] * 10  # by status // 100
        self.bytes = 0
        self.buckets = [0] * (len(REQUEST_BUCKETS) + 1)  # per bucket (not cumulative), +Inf last
        self.seconds = 0.0


class Served:
    """Client requests, body bytes and latency by cache status, counted in plain Python (the hot path
    takes no lock and looks up no metric child); the collectors below expose them when scraped."""

    def __init__(self) -> None:
        self.rows: dict[str, ServedRow] = {}

    def record(self, cache_status: str, status: int, sent: int, seconds: float) -> None:
        row = self.rows.get(cache_status)
        if row is None:
            row = self.rows[cache_status] = ServedRow()
        row.classes[min(status // 100, 9)] += 1
        row.bytes += sent
        row.buckets[bisect.bisect_left(REQUEST_BUCKETS, seconds)] += 1  # le: the first bound >= seconds
        row.seconds += seconds


class ServedView(Collector):
    """One metric family of `Served`."""

    def __init__(self, served: Served) -> None:
        self.served = served


class ServedRequests(ServedView):
    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "edgecdn_requests",
            "Client requests by cache status and status class (2xx..5xx)",
            labels=["cache_status", "status_class"],
        )
        for status, row in list(self.served.rows.items()):
            for cls, n in enumerate(row.classes):
                if n:
                    family.add_metric([status, f"{cls}xx"], n)
        yield family


class ServedBytes(ServedView):
    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "edgecdn_sent_bytes", "Body bytes sent to clients, by cache status", labels=["cache_status"]
        )
        for status, row in list(self.served.rows.items()):
            family.add_metric([status], row.bytes)
        yield family


class ServedSeconds(ServedView):
    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(
            "edgecdn_request_seconds",
            "Time from request head to the end of the response, by cache status (HIT and MISS apart)",
            labels=["cache_status"],
        )
        for status, row in list(self.served.rows.items()):
            cumulative = list(itertools.accumulate(row.buckets))
            family.add_metric([status], list(zip(_LE, cumulative, strict=True)), row.seconds)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.build_info = Gauge(
            "edgecdn_build_info", "Always 1; the labels name the build", ["version", "python"], registry=r
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        # Client requests, bytes and latency: counted by `served.record`, one plain call per request.
        self.served = Served()
        self.requests = ServedRequests(self.served)
        r.register(self.requests)
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
            "edgecdn_origin_retries",
            "Requests moved from this origin to the next, by why",
            ["origin", "reason"],
            registry=r,
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
        self.flights = Gauge("edgecdn_fills_in_flight", "Fills running now", registry=r)
        self.purges = Counter(
            "edgecdn_purge_requests",
            "Purge requests answered by the admin API, by kind",
            ["kind"],
            registry=r,
        )
        self.pushes = Counter(
            "edgecdn_push_requests",
            "Push requests answered by the admin API, by result",
            ["result"],
            registry=r,
        )
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

        # What an operator reads first (serve/observe.py, fetch/pool.py, serve/admin.py, cache/).
        self.sent_bytes = ServedBytes(self.served)
        r.register(self.sent_bytes)
        self.request_seconds = ServedSeconds(self.served)
        r.register(self.request_seconds)
        self.origin_seconds = Histogram(
            "edgecdn_origin_request_seconds",
            "Time from sending a request to an origin to its response head, per origin",
            ["origin"],
            buckets=ORIGIN_BUCKETS,
            registry=r,
        )
        self.origin_errors = Counter(
            "edgecdn_origin_errors",
            "Origin requests that failed (connect, timeout, body, status), per origin and error",
            ["origin", "error"],
            registry=r,
        )
        self.store_bytes = Gauge(
            "edgecdn_store_bytes", "Bytes held by each store tier (memory, disk)", ["tier"], registry=r
        )
        self.store_objects = Gauge(
            "edgecdn_store_objects", "Objects held by each store tier (memory, disk)", ["tier"], registry=r
        )
        self.store_limit_bytes = Gauge(
            "edgecdn_store_limit_bytes", "Configured size limit of each store tier", ["tier"], registry=r
        )
        self.evictions = Counter(
            "edgecdn_store_evictions",
            "Records evicted to stay within a tier's size limit (disk: metadata and body records apart)",
            ["tier"],
            registry=r,
        )
        self.purged_objects = Counter(
            "edgecdn_purged_objects",
            "Objects removed or marked stale by purges (admin API and change-log catch-up), by kind",
            ["kind"],
            registry=r,
        )
        self.follow_changes = Counter(
            "edgecdn_follow_changes", "Origin change-log entries applied by catch-up", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
