"""The edge's /metrics with workers: the master's own series plus every worker's, merged into one edge.

Rules of this file: a sample is the sum over processes (requests, bytes, fills in flight, memory bytes, CPU
seconds, RSS), except the series in KEEP_MAX, which say one thing about the edge (an origin is up, the
build, a limit) and take the largest, and those in KEEP_MIN (the oldest process start). A worker that does
not answer in time is left out of this scrape, never waited for longer than GATHER_TIMEOUT_S.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

GATHER_TIMEOUT_S = 2.0
KEEP_MAX = frozenset({"edgecdn_build_info", "edgecdn_origin_up", "process_max_fds"})
KEEP_MIN = frozenset({"process_start_time_seconds"})


class _Merged:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merge(expositions: Iterable[str]) -> bytes:
    """Several processes' Prometheus text expositions as one."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in expositions:
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            samples = values.setdefault(merged.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = samples.get(key)
                if old is None:
                    samples[key] = sample.value
                elif family.name in KEEP_MAX:
                    samples[key] = max(old, sample.value)
                elif family.name in KEEP_MIN:
                    samples[key] = min(old, sample.value)
                else:
                    samples[key] = old + sample.value
    for name, merged in families.items():
        for (sample_name, labels), value in values[name].items():
            merged.add_sample(sample_name, dict(labels), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(list(families.values())))
    return generate_latest(registry)
