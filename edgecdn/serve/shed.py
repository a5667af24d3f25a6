"""The edge's side of overload shedding (policy/shed.py decides): a 503 with a jittered Retry-After."""

from __future__ import annotations

import random

from edgecdn.config import ShedConfig
from edgecdn.fetch.coalesce import Coalescer
from edgecdn.metrics import Metrics
from edgecdn.policy.shed import shed_miss
from edgecdn.policy.status import CacheStatus, cache_status_field
from edgecdn.serve import respond
from edgecdn.serve.writer import ResponseWriter


def refuse(
    cfg: ShedConfig, coalescer: Coalescer, metrics: Metrics, key: str, out: ResponseWriter
) -> ResponseWriter | None:
    """The 503 sent for a miss on `key` while too many fills run, else None (go on and fetch)."""
    verdict = shed_miss(
        coalescer.in_flight, joins_running_fill=coalescer.flying(key), cfg=cfg, u=random.random()
    )
    if verdict is None:
        return None
    metrics.shed.inc()
    return respond.error(
        out,
        503,
        "edge busy: too many origin fills, retry later",
        cache_status=cache_status_field(CacheStatus.MISS, detail="shed"),
        detail={"retry_after": verdict.retry_after},
        extra=(("Retry-After", str(verdict.retry_after)),),
    )
