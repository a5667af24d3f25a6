"""The admin listener: metrics, health and stats (unsigned reads) and the signed control API.

Rules of this file: every mutating call is verified (signing.py) before it changes anything; bodies are
capped while they stream (413), never read whole first, and verified as received (the listener never
inflates a Content-Encoding: `admin_runner` turns aiohttp's auto_decompress off); every error is JSON
`{"error", "detail"}` with a 4xx and one log line. A purge dooms in-flight fills before it deletes, so when it
answers 200 no fill can store the old object.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from edgecdn import clock
from edgecdn.control import signing
from edgecdn.control.prefetch import PREFETCH_PATH, BadPrefetch, QueueFull, parse_prefetch
from edgecdn.control.purge import BadPurge, parse_purge
from edgecdn.errors import AdminError, ConfigError, StorageError, UsageError
from edgecdn.serve.app import Edge

log = logging.getLogger("edgecdn.admin")

PUSH_PREFIX = "/_edge/push/"
Gather = Callable[[bytes], Awaitable[bytes]]  # a master: its own /metrics → the whole edge's


def json_error(status: int, error: str, detail: object = None) -> web.Response:
    return web.json_response(
        {"error": error, "detail": detail}, status=status, headers={"Cache-Control": "no-store"}
    )


class Guard:
    """Verifies signed admin requests: key ring, time window, replay cache, streamed body cap."""

    def __init__(
        self,
        keys: tuple[str, ...],
        *,
        window: float,
        max_body: int,
        replay: signing.ReplayCache | None = None,
    ) -> None:
        try:
            self.ring = signing.parse_keys(keys)
        except UsageError as e:
            raise ConfigError(f"admin.keys: {e}") from None
        self.window = window
        self.max_body = max_body
        self.replay = replay if replay is not None else signing.ReplayCache(window_s=window)

    def precheck(self, request: web.BaseRequest) -> None:
        """Refuse before reading a body: no key configured, no/malformed signature, unknown key, expired."""
        if not self.ring:
            raise AdminError(
                403,
                "no admin key configured",
                "start the edge with --admin-key KID:SECRET or [admin] keys = [...]",
            )
        verdict = signing.verify(
            self.ring,
            request.method,
            request.raw_path,
            request.headers,
            signing.EMPTY_BODY_SHA256,
            clock.now(),
            signing.ReplayCache(window_s=self.window),  # a throwaway: this is not the real check
            self.window,
        )
        if isinstance(verdict, signing.Rejected) and verdict.reason is not signing.Reason.BAD_SIGNATURE:
            raise AdminError(verdict.reason.status, "unauthorized", verdict.reason.value)

    def check(self, request: web.BaseRequest, body_sha256: str) -> None:
        """The real verification, over the digest of the body as received."""
        verdict = signing.verify(
            self.ring,
            request.method,
            request.raw_path,
            request.headers,
            body_sha256,
            clock.now(),
            self.replay,
            self.window,
        )
        if isinstance(verdict, signing.Rejected):
            raise AdminError(verdict.reason.status, "unauthorized", verdict.reason.value)

    async def read_json(self, request: web.BaseRequest) -> object:
        """The signed, capped JSON body of a request (sent as is: no Content-Encoding)."""
        self.precheck(request)
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            raise AdminError(415, "unsupported encoding", "JSON bodies are sent without Content-Encoding")
        hasher = signing.body_hasher()
        chunks: list[bytes] = []
        async for chunk in capped_body(request, self.max_body):
            hasher.update(chunk)
            chunks.append(chunk)
        self.check(request, hasher.hexdigest())
        try:
            return json.loads(b"".join(chunks))
        except (ValueError, RecursionError) as e:
            raise AdminError(400, "bad JSON", str(e)[:200] or type(e).__name__) from None


async def capped_body(request: web.BaseRequest, limit: int) -> AsyncIterator[bytes]:
    """The request body as it arrives; more than `limit` bytes is a 413 (declared or actual)."""
    if request.content_length is not None and request.content_length > limit:
        raise AdminError(413, "body too large", {"limit": limit})
    received = 0
    async for chunk in request.content.iter_any():
        received += len(chunk)
        if received > limit:
            raise AdminError(413, "body too large", {"limit": limit})
        yield chunk


def admin_app(
    edge: Edge, replay: signing.ReplayCache | None = None, workers: Gather | None = None
) -> web.Application:
    """The admin listener: GET /metrics, /_edge/health, /_edge/stats; signed purge and push.

    `replay`: the edge's replay cache, kept by a master across reloads (one per edge, not per config);
    `workers`: a master's merge of its workers' metrics into its own."""
    cfg = edge.cfg
    guard = Guard(
        cfg.admin.keys, window=cfg.admin.signature_window, max_body=cfg.admin.max_body, replay=replay
    )

    async def metrics(_: web.Request) -> web.Response:
        with contextlib.suppress(StorageError):  # recorded by the store; the other metrics still count
            await edge.reporter.usage()
        body = edge.metrics.render()
        if workers is not None:
            body = await workers(body)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def health(_: web.Request) -> web.Response:
        return edge.health()

    async def stats(_: web.Request) -> web.Response:
        # A StorageError is a JSON 503 (the errors middleware). With workers: the whole edge's counts.
        edge_wide = None
        if workers is not None:
            await edge.reporter.usage()  # the master's own gauges, current before they are merged
            edge_wide = await workers(edge.metrics.render())
        body = await edge.reporter.snapshot(edge_wide)
        return web.json_response(
            body, dumps=lambda o: json.dumps(o, indent=2), headers={"Cache-Control": "no-store"}
        )

    async def purge(request: web.Request) -> web.Response:
        try:
            req = parse_purge(await guard.read_json(request))
        except BadPurge as e:
            raise AdminError(400, "bad purge request", str(e)) from None
        started = clock.monotonic()
        try:
            counts = await edge.purger.run(req)
        except StorageError as e:
            edge.metrics.storage_errors.inc()
            raise AdminError(503, "purge failed in the store", str(e)) from None
        took_ms = 1000 * (clock.monotonic() - started)
        edge.metrics.purges.labels("soft" if req.soft else "hard").inc()  # requests, whatever they removed
        log.info("purge %s: %s in %.1f ms", "soft" if req.soft else "hard", counts, took_ms)
        counts.pop("objects")  # the metric's (objects over all kinds); the answer counts per kind
        return web.json_response({"purged": counts, "soft": req.soft})

    async def push_put(request: web.Request) -> web.Response:
        guard.precheck(request)
        push = edge.pusher.start(request.raw_path[len(PUSH_PREFIX) - 1 :], request.headers)
        body = capped_body(request, cfg.cache.max_object_size)
        result = await edge.pusher.receive(push, body, guard, request)
        await edge.purger.pushed([push.key])  # workers drop an older copy before the answer
        return web.json_response(result)

    async def push_urls(request: web.Request) -> web.Response:
        data = await guard.read_json(request)
        urls = data.get("urls") if isinstance(data, dict) else None
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and u for u in urls):
            raise AdminError(400, "bad push request", 'expected {"urls": ["/path", ...]}')
        results = await edge.pusher.refetch(urls)
        edge.metrics.pushes.labels("refetch").inc()
        await edge.purger.pushed([str(r["url"]) for r in results if r.get("state") == "stored"])
        return web.json_response({"results": results})

    @web.middleware
    async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            resp: web.StreamResponse = await handler(request)
            return resp
        except AdminError as e:
            what = f"{request.method} {request.path[:200]}"
            log.info("admin %s: %d %s (%s)", what, e.status, e.error, e.detail)
            return json_error(e.status, e.error, e.detail)
        except web.HTTPException as e:
            log.info("admin %s %s: %d %s", request.method, request.path[:200], e.status, e.reason)
            return json_error(e.status, e.reason)
        except StorageError as e:  # recorded (counted, logged) by the store where it happened
            return json_error(503, "storage unavailable", e.cause)

    app = web.Application(middlewares=[errors], client_max_size=cfg.admin.max_body)
    add_prefetch_routes(app, edge, guard)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/_edge/health", health)
    app.router.add_get("/_edge/stats", stats)
    app.router.add_post("/_edge/purge", purge)
    app.router.add_put(PUSH_PREFIX + "{tail:.*}", push_put)
    app.router.add_post("/_edge/push", push_urls)
    return app


def add_prefetch_routes(app: web.Application, edge: Edge, guard: Guard) -> None:
    """Signed `POST /_edge/prefetch` (202 + task id) and `GET /_edge/prefetch/<task>` (its state)."""
    prefetcher = edge.prefetcher

    async def submit(request: web.Request) -> web.Response:
        try:
            items = parse_prefetch(await guard.read_json(request), max_urls=edge.cfg.prefetch.max_urls)
            task = prefetcher.submit(items)
        except BadPrefetch as e:
            raise AdminError(400, "bad prefetch request", str(e)) from None
        except QueueFull as e:
            raise AdminError(429, str(e), e.detail) from None
        return web.json_response({"task": task.id, "urls": len(task.results)}, status=202)

    async def status(request: web.Request) -> web.Response:
        guard.precheck(request)
        guard.check(request, signing.EMPTY_BODY_SHA256)
        task = prefetcher.get(request.match_info["task"])
        if task is None:
            raise AdminError(
                404, "no such prefetch task", "unknown, or finished longer than keep_results ago"
            )
        return web.json_response(task.to_json())

    app.router.add_post(PREFETCH_PATH, submit)
    app.router.add_get(PREFETCH_PATH + "/{task}", status)


def admin_runner(
    edge: Edge, replay: signing.ReplayCache | None = None, workers: Gather | None = None
) -> web.AppRunner:
    """The admin listener's runner: bodies reach the handlers as received, never inflated by aiohttp
    (a gzip bomb costs nothing before its 401, and a signature covers the bytes that were sent)."""
    return web.AppRunner(admin_app(edge, replay, workers), access_log=None, auto_decompress=False)
