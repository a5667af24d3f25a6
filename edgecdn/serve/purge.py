"""Purge on one edge: doom the matching fills in flight, then delete or mark stale in both tiers.

Rules of this file: fills are doomed before the store is touched (a store write already under way is
awaited), so when `Purger.run` returns no fill can bring the old object back; store errors propagate. With
workers, the purge is in effect in every worker (`peers`) before this process's own part runs.
"""

from __future__ import annotations

from typing import Protocol

from edgecdn.cache import purge as store_purge
from edgecdn.cache.store import Store
from edgecdn.control.purge import PurgeRequest
from edgecdn.fetch.coalesce import Coalescer
from edgecdn.metrics import Metrics


class Peers(Protocol):
    """The other processes of this edge (a master's workers); each call is in effect in all on return."""

    async def purge(self, req: PurgeRequest) -> list[dict[str, int]]: ...

    async def forget(self, keys: list[str]) -> None: ...


class Purger:
    """What a purge needs of the edge: the store, the coalescer (to doom fills) and the metrics."""

    def __init__(self, store: Store, coalescer: Coalescer, metrics: Metrics) -> None:
        self.store = store
        self.coalescer = coalescer
        self.metrics = metrics
        # The other processes of this edge (a master's workers): in effect in each before run() returns.
        self.peers: Peers | None = None
        # A worker reports its counts to the master, which counts the edge's purged objects once.
        self.counts_objects = True

    async def run(self, req: PurgeRequest) -> dict[str, int]:
        """Counts per kind: objects (variants) matched by urls / prefixes / tags, and fills doomed."""
        theirs = await self.peers.purge(req) if self.peers is not None else []
        in_flight = await self.coalescer.purge(req.matches)
        matched = await store_purge.find(self.store, req.urls, req.prefixes, req.tags)
        await store_purge.apply(self.store, matched, soft=req.soft)
        for url in req.urls:
            self.coalescer.forget(url)
        mine = {
            "urls": len(matched.urls),
            "prefixes": len(matched.prefixes),
            "tags": len(matched.tags),
            "in_flight": in_flight,
            "objects": len(matched.entries()),
        }
        for counts in theirs:  # the first process to look removed them: the largest count is the edge's
            mine = {
                k: mine[k] + counts.get(k, 0) if k == "in_flight" else max(mine[k], counts.get(k, 0))
                for k in mine
            }
        if self.counts_objects:
            # Objects, not requests: the admin route counts requests (the change follower purges too).
            self.metrics.purged_objects.labels("soft" if req.soft else "hard").inc(mine["objects"])
        return mine

    async def pushed(self, keys: list[str]) -> None:
        """A push stored newer objects under `keys`: no other process may answer from an older copy."""
        if self.peers is not None and keys:
            await self.peers.forget(keys)
