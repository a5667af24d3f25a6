"""Purge on one edge: doom the matching fills in flight, then delete or mark stale in both tiers.

Rules of this file: fills are doomed before the store is touched (a store write already under way is
awaited), so when `run_purge` returns no fill can bring the old object back; store errors propagate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecdn.cache import purge as store_purge
from edgecdn.control.purge import PurgeRequest

if TYPE_CHECKING:
    from edgecdn.serve.app import Edge


async def run_purge(edge: Edge, req: PurgeRequest) -> dict[str, int]:
    """Counts per kind: objects (variants) matched by urls / prefixes / tags, and fills doomed in flight."""
    in_flight = await edge.coalescer.purge(req.matches)
    matched = await store_purge.find(edge.store, req.urls, req.prefixes, req.tags)
    await store_purge.apply(edge.store, matched, soft=req.soft)
    for url in req.urls:
        edge.coalescer.forget(url)
    edge.metrics.purges.labels("soft" if req.soft else "hard").inc()
    return {
        "urls": len(matched.urls),
        "prefixes": len(matched.prefixes),
        "tags": len(matched.tags),
        "in_flight": in_flight,
    }
