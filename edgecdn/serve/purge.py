"""Purge on one edge: doom the matching fills in flight, then delete or mark stale in both tiers.

Rules of this file: fills are doomed before the store is touched (a store write already under way is
awaited), so when `Purger.run` returns no fill can bring the old object back; store errors propagate.
"""

from __future__ import annotations

from edgecdn.cache import purge as store_purge
from edgecdn.cache.store import Store
from edgecdn.control.purge import PurgeRequest
from edgecdn.fetch.coalesce import Coalescer
from edgecdn.metrics import Metrics


class Purger:
    """What a purge needs of the edge: the store, the coalescer (to doom fills) and the metrics."""

    def __init__(self, store: Store, coalescer: Coalescer, metrics: Metrics) -> None:
        self.store = store
        self.coalescer = coalescer
        self.metrics = metrics

    async def run(self, req: PurgeRequest) -> dict[str, int]:
        """Counts per kind: objects (variants) matched by urls / prefixes / tags, and fills doomed."""
        in_flight = await self.coalescer.purge(req.matches)
        matched = await store_purge.find(self.store, req.urls, req.prefixes, req.tags)
        await store_purge.apply(self.store, matched, soft=req.soft)
        for url in req.urls:
            self.coalescer.forget(url)
        # Objects, not requests: the admin route counts requests (the change follower purges too).
        self.metrics.purged_objects.labels("soft" if req.soft else "hard").inc(len(matched.entries()))
        return {
            "urls": len(matched.urls),
            "prefixes": len(matched.prefixes),
            "tags": len(matched.tags),
            "in_flight": in_flight,
        }
