"""Active health checks: a real GET of `origin.health_path` on every origin, every `health_interval`.

Rules of this file: a check is an HTTP request judged by its status, never a port probe; it is bounded
by `health_timeout`; its verdict goes to the pool (rise / fall there), so this file holds no state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from edgecdn.config import OriginConfig
from edgecdn.errors import OriginError
from edgecdn.fetch.client import OriginClient, with_cdn_loop
from edgecdn.fetch.pool import OriginPool

log = logging.getLogger("edgecdn.origin")
USER_AGENT = "edgecdn-health-check"


class HealthChecker:
    """The background task that probes every origin; started and stopped with the Edge."""

    def __init__(self, pool: OriginPool, client: OriginClient, cfg: OriginConfig) -> None:
        self.pool = pool
        self.client = client
        self.cfg = cfg
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.health_path)

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="edgecdn-health-checks")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.gather(*(self.check(url) for url in self.pool.urls))
            self.pool.up()  # log a passive penalty that ran out when it does, not on the next request
            await asyncio.sleep(self.cfg.health_interval)

    async def check(self, origin: str) -> bool:
        """One probe of one origin; the pool records the verdict."""
        headers = with_cdn_loop((("User-Agent", USER_AGENT),), self.cfg.cdn_id)
        try:
            async with asyncio.timeout(self.cfg.health_timeout):
                resp = await self.client.send(origin, "GET", self.cfg.health_path, headers)
                try:
                    ok = resp.status == self.cfg.health_status
                finally:
                    resp.release()
        except (OriginError, TimeoutError) as e:
            log.debug("health check of %s failed: %s", origin, e)
            ok = False
        self.pool.probe(origin, ok)
        return ok
