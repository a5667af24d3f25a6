"""Run one edge process: bind both listeners, print readiness, drain gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
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
from edgecdn.serve import readiness
from edgecdn.serve.admin import admin_runner
from edgecdn.serve.app import Edge, public_server

log = logging.getLogger("edgecdn")
SHUTDOWN_GRACE_S = 10.0


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
    public = web.ServerRunner(public_server(edge), shutdown_timeout=SHUTDOWN_GRACE_S)
    admin = admin_runner(edge)
    await public.setup()
    await admin.setup()
    warming = None
    try:
        warming = readiness.start_warming(edge, cfg.server)  # health 503 "warming" until warm_from is fetched
        host, port = parse_hostport(cfg.server.listen, "server.listen")
        ahost, aport = parse_hostport(cfg.server.admin_listen, "server.admin_listen")
        try:
            await web.TCPSite(public, host, port, backlog=1024).start()
            await web.TCPSite(admin, ahost, aport).start()
        except OSError as e:
            raise EdgeError(f"cannot listen: {e.strerror or e}") from None
        stop = asyncio.Event()  # handlers before readiness: a SIGTERM right after it still drains
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"edgecdn listening on {_url(public)} (admin {_url(admin)})",
            flush=True,
        )
        sdnotify.notify("READY=1")
        await stop.wait()
        await readiness.drain(edge, cfg.server.drain_delay)  # health 503 first, so the balancer moves away
        log.info("draining")
        sdnotify.notify("STOPPING=1")
    finally:
        await readiness.stop_warming(warming)
        await public.cleanup()
        await admin.cleanup()
        await edge.close()
    return 0


def _url(runner: web.BaseRunner) -> str:
    host, port = runner.addresses[0][:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: edgecdn serve")
