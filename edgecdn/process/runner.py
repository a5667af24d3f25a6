"""Run one edge process: bind both listeners, print readiness, drain gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from edgecdn.config import Config, parse_hostport
from edgecdn.control import sdnotify
from edgecdn.errors import EdgeError
from edgecdn.serve import readiness, tls
from edgecdn.serve.admin import admin_runner
from edgecdn.serve.app import Edge, public_protocol
from edgecdn.serve.connection import Connections
from edgecdn.serve.h2connection import tls_protocol
from edgecdn.serve.redirect import listen_redirect

log = logging.getLogger("edgecdn")
SHUTDOWN_GRACE_S = 10.0
BACKLOG = 1024
GC_YOUNG = 10_000  # allocations between young-generation collections (CPython's default: 700)


def run(cfg: Config) -> int:
    """Serve until told to stop; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    raise_fd_limit()
    return _run_loop(lambda: serve(cfg), use_uvloop=cfg.server.uvloop)


def _run_loop(main: Callable[[], Coroutine[Any, Any, int]], *, use_uvloop: bool) -> int:
    factory = None
    if use_uvloop:
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            log.info("uvloop not installed; using the default event loop")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def settle_heap() -> None:
    """What is allocated at start lives for the process: keep the collector from walking it again.

    Requests allocate many short-lived containers; with the default thresholds a full collection
    walks every module-level object now and then (milliseconds at the p99). Objects made at start
    are frozen out of collection, and the young generation is collected less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


def raise_fd_limit() -> None:
    """Lift the soft open-files limit to the hard one: connections plus kept body files need room."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as e:
            log.warning("open-files limit stays at %d: %s", soft, e)


async def serve(cfg: Config) -> int:
    edge = Edge(cfg)
    await edge.start()
    settle_heap()
    connections = Connections()
    admin = admin_runner(edge)
    await admin.setup()
    public: asyncio.Server | None = None
    redirect: asyncio.Server | None = None
    warming = None
    try:
        warming = readiness.start_warming(edge, cfg.server)  # health 503 "warming" until warm_from is fetched
        ahost, aport = parse_hostport(cfg.server.admin_listen, "server.admin_listen")
        try:
            public = await listen_public(edge, connections)
            redirect = await listen_redirect(edge, connections, public)  # server.redirect_listen
            await web.TCPSite(admin, ahost, aport).start()
        except OSError as e:
            raise EdgeError(f"cannot listen: {e.strerror or e}") from None
        stop = asyncio.Event()  # handlers before readiness: a SIGTERM right after it still drains
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        scheme = "https" if cfg.server.tls_cert else "http"
        print(
            f"edgecdn listening on {_url(public.sockets[0].getsockname(), scheme)} "
            f"(admin {_url(admin.addresses[0])})"
            + (f" (redirect {_url(redirect.sockets[0].getsockname())})" if redirect is not None else ""),
            flush=True,
        )
        sdnotify.notify("READY=1")
        await stop.wait()
        await readiness.drain(edge, cfg.server.drain_delay)  # health 503 first, so the balancer moves away
        log.info("draining")
        sdnotify.notify("STOPPING=1")
    finally:
        await readiness.stop_warming(warming)
        if redirect is not None:
            redirect.close()
        await drain(edge, public, connections)
        await admin.cleanup()
        await edge.close()
    return 0


async def listen_public(edge: Edge, connections: Connections) -> asyncio.Server:
    """The public listener: the edge's HTTP/1.1 protocol on `server.listen` (one place to add more)."""
    host, port = parse_hostport(edge.cfg.server.listen, "server.listen")
    loop = asyncio.get_running_loop()
    factory: Callable[[], asyncio.Protocol] = public_protocol(edge, connections)
    context = None
    if edge.cfg.server.tls_cert:  # the certificate is read here, at every listener start
        context = tls.server_context(edge.cfg.server.tls_cert, edge.cfg.server.tls_key)
        factory = tls_protocol(edge, connections)
    return await loop.create_server(
        factory,
        host,
        port,
        backlog=BACKLOG,
        ssl=context,
        ssl_handshake_timeout=edge.cfg.server.header_timeout if context else None,
    )


async def drain(edge: Edge, public: asyncio.Server | None, connections: Connections) -> None:
    """Stop accepting, let requests in flight finish (bounded), then close what is left."""
    edge.ready, edge.unready = False, "draining"
    if public is not None:
        public.close()
    connections.drain()
    await connections.wait_closed(SHUTDOWN_GRACE_S)
    if public is not None:
        await public.wait_closed()


def _url(address: Any, scheme: str = "http") -> str:
    host, port = address[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: edgecdn serve")
