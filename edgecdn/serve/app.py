"""The edge as aiohttp sees it: the public server (content), the admin app, and their shared state."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from edgecdn import clock
from edgecdn.cache.store import Store
from edgecdn.config import Config
from edgecdn.control import jitter
from edgecdn.control.versioning import configured_pattern
from edgecdn.fetch.client import OriginClient
from edgecdn.fetch.coalesce import Coalescer
from edgecdn.fetch.health import HealthChecker
from edgecdn.fetch.pool import OriginPool
from edgecdn.metrics import Metrics
from edgecdn.serve.follow import ChangeFollower
from edgecdn.serve.handler import Handler
from edgecdn.serve.prefetch import Prefetcher
from edgecdn.serve.purge import Purger
from edgecdn.serve.push import Pusher
from edgecdn.serve.stats import Stats

log = logging.getLogger("edgecdn")
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf "%{X-Cache}o" "%{Cache-Status}o"'


class Edge:
    """Everything one serving process holds: store, origin client, coalescer, handler, metrics."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.store = Store(cfg.cache, self.metrics)
        self.client = OriginClient(cfg.origin)
        self.pool = OriginPool(cfg.origins, cfg.origin, self.metrics)
        self.checker = HealthChecker(self.pool, self.client, cfg.origin)
        self.coalescer = Coalescer(self.store, self.client, self.pool, cfg, self.metrics)
        self.handler = Handler(cfg, self.store, self.client, self.pool, self.coalescer, self.metrics)
        self.purger = Purger(self.store, self.coalescer, self.metrics)
        self.reporter = Stats(self.store, self.coalescer, self.pool, self.metrics)  # /_edge/stats
        self.pusher = Pusher(self.store, self.coalescer, self.metrics, cfg.cache)
        versioned = configured_pattern(cfg.cache.versioned_pattern)
        self.prefetcher = Prefetcher(cfg.prefetch, self.store, self.coalescer, versioned, self.metrics)
        follow = cfg.sync.poll_interval > 0
        self.follower = ChangeFollower(self.purger, self.store, cfg, self.metrics) if follow else None
        self.ready = False
        self.unready = "starting"  # /_edge/health's status while not ready: "warming", "draining"

    async def start(self) -> None:
        swept = await self.store.sweep()
        if swept:
            log.info("removed %d unfinished bodies left by an earlier crash", swept)
        await self.client.start()
        self.checker.start()
        if self.follower is not None:
            await self.follower.start()  # catch up on missed publishes before serving
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        if self.follower is not None:
            await self.follower.close()
        await self.prefetcher.close()
        await self.checker.stop()
        await self.coalescer.close()
        await self.client.close()
        await asyncio.to_thread(self.store.close)

    async def dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        """The public listener: every path is content except /_edge/health."""
        if request.path == "/_edge/health":
            return self.health()
        if request.path == "/_edge/jitter":
            q = request.query
            code, body = jitter.answer(self.cfg.jitter, q.get("url"), q.get("client"), now=clock.now())
            return web.json_response(body, status=code, headers={"Cache-Control": "no-store"})
        return await self.handler(request)

    def health(self) -> web.Response:
        body = {"status": "ok" if self.ready else self.unready, "origins": self.pool.states()}
        return web.json_response(
            body, status=200 if self.ready else 503, headers={"Cache-Control": "no-store"}
        )

    async def stats(self) -> dict[str, Any]:
        return await self.reporter.snapshot()


class EdgeRequestHandler(RequestHandler):
    """aiohttp's connection protocol plus a deadline for each request head (slowloris).

    A timer starts with the first byte of a head and is cancelled when the head is complete; a client
    that trickles a head for longer than `server.header_timeout` is disconnected.
    """

    head_timeout = 10.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._disarm()
        elif data and self._payload_parser is None and self._head_timer is None:
            self._head_timer = self._loop.call_later(self.head_timeout, self._head_expired)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        self.force_close()


class EdgeServer(web.Server):
    """web.Server that makes EdgeRequestHandler connections."""

    def __init__(self, handler: Any, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.head_timeout = head_timeout

    def __call__(self) -> RequestHandler:
        proto = EdgeRequestHandler(self, loop=self._loop, **self._kwargs)
        proto.head_timeout = self.head_timeout
        return proto


def public_server(edge: Edge) -> web.Server:
    cfg = edge.cfg.server
    kwargs: dict[str, Any] = {
        "keepalive_timeout": cfg.keepalive_timeout,
        "max_field_size": cfg.max_header_size,
        "max_line_size": cfg.max_header_size,
    }
    if cfg.access_log:
        kwargs["access_log"] = logging.getLogger("edgecdn.access")
        kwargs["access_log_format"] = ACCESS_LOG_FORMAT
    else:
        kwargs["access_log"] = None
    return EdgeServer(edge.dispatch, head_timeout=cfg.header_timeout, **kwargs)
