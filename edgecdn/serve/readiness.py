"""Readiness toward a load balancer: warm up before saying 200, say 503 "draining" before stopping.

Rules of this file: /_edge/health is what the balancer follows, so it turns 200 only once the warm-up is
done (or timed out) and turns 503 a full `drain_delay` before the listener stops accepting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from edgecdn.config import ServerConfig
from edgecdn.control.manifest import read_manifest
from edgecdn.control.prefetch import PrefetchItem, UrlResult, UrlState
from edgecdn.errors import ConfigError, StorageError, UsageError

if TYPE_CHECKING:
    from edgecdn.serve.app import Edge

log = logging.getLogger("edgecdn")
MAX_MANIFEST_URLS = 100_000
WARM_CONCURRENCY = 32  # URLs fetched at once: a joining edge must not stampede its origin


def warm_items(path: str) -> list[PrefetchItem]:
    """The URLs (and request headers) of a prefetch manifest, as `edgecdn prefetch` reads it."""
    try:
        items = read_manifest(Path(path))
    except UsageError as e:
        raise ConfigError(f"server.warm_from: {e}") from None
    if len(items) > MAX_MANIFEST_URLS:
        raise ConfigError(f"server.warm_from: {path}: more than {MAX_MANIFEST_URLS} URLs")
    return items


def start_warming(edge: Edge, cfg: ServerConfig) -> asyncio.Task[None] | None:
    """With `warm_from`: health says 503 "warming" until the manifest is fetched (at most `warm_timeout`)."""
    if not cfg.warm_from:
        return None
    items = warm_items(cfg.warm_from)
    edge.ready, edge.unready = False, "warming"
    return asyncio.create_task(_warm(edge, items, cfg.warm_timeout))


async def _warm(edge: Edge, items: list[PrefetchItem], limit: float) -> None:
    """Each URL warmed like a prefetch (fresh ones skipped, fills shared with live traffic)."""
    results = [UrlResult(item) for item in items]
    todo: Iterator[UrlResult] = iter(results)

    async def worker() -> None:
        for result in todo:
            try:
                await edge.prefetcher.warm(result)
            except StorageError as e:
                result.state, result.error = UrlState.FAILED, f"store: {e}"

    try:
        async with asyncio.timeout(limit):
            await asyncio.gather(*(worker() for _ in range(min(WARM_CONCURRENCY, len(results)))))
    except TimeoutError:
        log.warning("warm-up: timed out after %.1f s; serving anyway", limit)
    warm = sum(r.state in (UrlState.WARMED, UrlState.FRESH) for r in results)
    log.info("warm-up: %d of %d URLs warm", warm, len(results))
    if edge.unready == "warming":  # not once a SIGTERM started draining
        edge.ready = True


async def stop_warming(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def drain(edge: Edge, delay: float) -> None:
    """Say 503 "draining" on /_edge/health for `delay` seconds while still serving, so the balancer's
    checks take this edge out before it stops accepting."""
    edge.ready, edge.unready = False, "draining"
    if delay > 0:
        log.info("draining: health says 503 for %.1f s before the listener closes", delay)
        await asyncio.sleep(delay)
