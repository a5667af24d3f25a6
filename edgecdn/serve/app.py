"""The edge of one process: its shared state, the public listener's dispatch and protocol factory."""

from __future__ import annotations

import asyncio
import json
import logging
import posixpath
from collections.abc import Callable
from typing import Any

from aiohttp import web

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
from edgecdn.policy.status import CacheStatus
from edgecdn.serve.accesslog import AccessLog
from edgecdn.serve.connection import Connections, HttpConnection, Limits
from edgecdn.serve.follow import ChangeFollower
from edgecdn.serve.handler import Handler
from edgecdn.serve.parser import BadRequest
from edgecdn.serve.prefetch import Prefetcher
from edgecdn.serve.purge import Purger
from edgecdn.serve.push import Pusher
from edgecdn.serve.request import Request
from edgecdn.serve.stats import Stats
from edgecdn.serve.writer import Fields, ResponseWriter

log = logging.getLogger("edgecdn")
HEAD_FIELDS = 8  # a request head may hold this many times server.max_header_size in all (431 beyond)


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
        self.access_log: AccessLog | None = None
        # The edge's own paths on the public listener, the one place they are routed.
        self.own_routes: dict[str, Callable[[Request, ResponseWriter], None]] = {
            "/_edge/health": self.public_health,
            "/_edge/jitter": self.public_jitter,
        }
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, *, sweep: bool = True) -> None:
        """sweep=False: other processes of this edge may be filling (a worker, a successor edge)."""
        self._loop = asyncio.get_running_loop()
        dest = self.cfg.server.access_log
        if dest is not False:
            self.access_log = AccessLog("stdout" if dest is True else dest, self.metrics.access_log_dropped)
        swept = await self.store.sweep() if sweep else 0
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
        if self.access_log is not None:
            await self.access_log.close()

    async def dispatch(self, request: Request, out: ResponseWriter) -> None:
        """The public listener: every path is content except /_edge/*, the edge's own namespace."""
        try:
            if _own_path(request.path):
                self.own(request, out)
            else:
                await self.handler(request, out)
        finally:
            if self.access_log is not None and self._loop is not None:
                self.access_log.request(request, out, self._loop.time())

    def own(self, request: Request, out: ResponseWriter) -> None:
        """/_edge/* on the public listener: answered here, never forwarded; names no origin.

        The routes are `self.own_routes`; admin routes and anything else answer 404 (the admin listener
        has the details).
        """
        route = self.own_routes.get(request.path)
        if route is None:
            _json(out, 404, {"error": "not found"})
        else:
            route(request, out)

    def public_health(self, _: Request, out: ResponseWriter) -> None:
        """200 {"status":"ok"} when serving, else 503 "starting", "warming" or "draining"."""
        _json(out, 200 if self.ready else 503, {"status": self.state})

    def public_jitter(self, request: Request, out: ResponseWriter) -> None:
        """When this client should start downloading `url` (control/jitter.py); 400 for a bad query."""
        q = request.query
        status, body = jitter.answer(self.cfg.jitter, q.get("url"), q.get("client"), now=clock.now())
        _json(out, status, body)

    @property
    def state(self) -> str:
        return "ok" if self.ready else self.unready

    def health(self) -> web.Response:
        """The admin listener's health: readiness plus each origin's state (never on the public side)."""
        body = {"status": self.state, "origins": self.pool.states()}
        return web.json_response(
            body, status=200 if self.ready else 503, headers={"Cache-Control": "no-store"}
        )

    def refused(self, remote: str | None, bad: BadRequest, out: ResponseWriter) -> None:
        """A request refused at the framing level: its 4xx, counted, no traceback."""
        _json(out, bad.status, {"error": bad.reason}, cache=CacheStatus.ERROR)
        self.handler.observe.record(CacheStatus.ERROR.value, bad.status, out.body_sent, 0.0)
        if self.access_log is not None:
            self.access_log.refused(remote, bad.status, out.body_sent)


def _own_path(path: str) -> bool:
    if "/." in path:
        path = posixpath.normpath(path)  # "/x/../_edge/purge" is still the edge's own
    return path == "/_edge" or path.startswith("/_edge/")


def _json(out: ResponseWriter, status: int, body: dict[str, Any], cache: CacheStatus | None = None) -> None:
    fields = Fields((("Content-Type", "application/json"), ("Cache-Control", "no-store")))
    if cache is not None:
        fields.extra.append(("X-Cache", cache.value))
    out.send(status, fields, json.dumps(body, separators=(",", ":")).encode(), cache=cache)


def public_protocol(edge: Edge, connections: Connections) -> Callable[[], HttpConnection]:
    """The public listener's protocol factory: HTTP/1.1 connections feeding `edge.dispatch`."""
    limits = public_limits(edge.cfg)
    return lambda: HttpConnection(edge.dispatch, limits, connections, edge.refused)


def public_limits(config: Config) -> Limits:
    """HTTP/1.1 limits of the public side (the TLS redirect listener has the same)."""
    cfg = config.server
    return Limits(
        header_timeout=cfg.header_timeout,
        keepalive_timeout=cfg.keepalive_timeout,
        body_timeout=cfg.body_timeout,
        max_line=cfg.max_header_size,
        max_head=HEAD_FIELDS * cfg.max_header_size,
    )
