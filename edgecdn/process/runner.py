"""Run one edge process: both listeners, readiness, signals (process/signals.py), a bounded drain.

With `server.workers` > 1 the master (process/master.py) runs instead, and its workers reuse the pieces here.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from edgecdn.config import Config
from edgecdn.control import sdnotify
from edgecdn.errors import ConfigError, UsageError
from edgecdn.process import handover, signals
from edgecdn.process.signals import Action
from edgecdn.serve import readiness, tls
from edgecdn.serve.admin import admin_runner
from edgecdn.serve.app import Edge, public_protocol
from edgecdn.serve.connection import Connections
from edgecdn.serve.h2connection import tls_protocol
from edgecdn.serve.redirect import listen_redirect

log = logging.getLogger("edgecdn")
SHUTDOWN_GRACE_S = 10.0
BACKLOG = handover.BACKLOG
Reload = Callable[[], Config]
GC_YOUNG = 10_000  # allocations between young-generation collections (CPython's default: 700)


def run(cfg: Config, reload: Reload | None = None) -> int:
    """Serve until told to stop; returns the exit code. `reload` re-reads the config (SIGHUP)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    raise_fd_limit()
    return run_loop(lambda: serve(cfg, reload), use_uvloop=cfg.server.uvloop)


def run_loop(main: Callable[[], Coroutine[Any, Any, int]], *, use_uvloop: bool) -> int:
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


async def serve(cfg: Config, reload: Reload | None = None) -> int:
    """One process serving both listeners; SIGHUP/SIGUSR2 hand the sockets to a successor process."""
    listeners = handover.open_listeners(cfg)
    edge = Edge(cfg)
    await edge.start(sweep=not listeners.inherited)  # a predecessor still finishing has live fills
    settle_heap()
    connections = Connections()
    admin = admin_runner(edge)
    await admin.setup()
    public: asyncio.Server | None = None
    redirect: asyncio.Server | None = None
    warming = None
    grace = SHUTDOWN_GRACE_S
    try:
        warming = readiness.start_warming(edge, cfg.server)  # health 503 "warming" until warm_from is fetched
        actions = signals.install()  # before readiness: a SIGTERM right after it still drains
        public = await listen_public(edge, connections, listeners.public)
        redirect = await listen_redirect(edge, connections, public)  # server.redirect_listen
        await web.SockSite(admin, listeners.admin).start()
        announce(listeners, cfg, redirect)
        while True:
            action = await actions.get()
            if action is Action.REOPEN:
                if edge.access_log is not None:
                    edge.access_log.reopen()
            elif action in (Action.RELOAD, Action.RESTART):
                if action is Action.RESTART or checked(reload) is not None:
                    sdnotify.notify(reloading())  # the successor's MAINPID= and READY=1 end it
                    if await handover.start_successor(listeners):
                        break  # the successor accepts on the same sockets now: finish what is in flight
                    sdnotify.notify("READY=1")
            elif action is Action.QUIT:
                grace = 0.0
                break
            else:
                # health 503 first, so balancers move away; SIGQUIT meanwhile: stop now
                if not await signals.unless_quit(actions, readiness.drain(edge, cfg.server.drain_delay)):
                    grace = 0.0
                log.info("draining")
                sdnotify.notify("STOPPING=1")
                break
    finally:
        await readiness.stop_warming(warming)
        if redirect is not None:
            redirect.close()
        await drain(edge, public, connections, grace)
        await admin.cleanup()
        await edge.close()
    return 0


def announce(listeners: handover.Listeners, cfg: Config, redirect: asyncio.Server | None = None) -> None:
    """Ready: the line tests and operators wait for, systemd's READY=1, and the predecessor's go-ahead."""
    admin = listeners.admin.getsockname()
    scheme = "https" if cfg.server.tls_cert else "http"
    also = f" (redirect {_url(redirect.sockets[0].getsockname())})" if redirect is not None else ""
    print(
        f"edgecdn listening on {_url(listeners.public.getsockname(), scheme)} (admin {_url(admin)}){also} "
        f"pid {os.getpid()}",
        flush=True,
    )
    sdnotify.notify(f"MAINPID={os.getpid()}\nREADY=1" if listeners.inherited else "READY=1")
    handover.say_ready()


def reloading() -> str:
    """systemd's reload notification (it wants the monotonic clock with it)."""
    return f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}"


def checked(reload: Reload | None) -> Config | None:
    """SIGHUP: the config re-read and validated as `check-config` does; None (logged) if it is invalid."""
    if reload is None:
        return None
    try:
        cfg = reload()
    except (ConfigError, UsageError) as e:
        log.error("reload: the config is invalid, nothing changed: %s", e)
        return None
    log.info("reload: the config is valid")
    return cfg


async def listen_public(edge: Edge, connections: Connections, sock: socket.socket) -> asyncio.Server:
    """The public listener: the edge's HTTP/1.1 protocol on a bound (or inherited) socket."""
    loop = asyncio.get_running_loop()
    factory: Callable[[], asyncio.Protocol] = public_protocol(edge, connections)
    context = None
    if edge.cfg.server.tls_cert:  # the certificate is read here, at every listener start (and reload)
        context = tls.server_context(edge.cfg.server.tls_cert, edge.cfg.server.tls_key)
        factory = tls_protocol(edge, connections)
    return await loop.create_server(
        factory,
        sock=sock,
        backlog=BACKLOG,
        ssl=context,
        ssl_handshake_timeout=edge.cfg.server.header_timeout if context else None,
    )


async def drain(
    edge: Edge, public: asyncio.Server | None, connections: Connections, grace: float = SHUTDOWN_GRACE_S
) -> None:
    """Stop accepting, let requests in flight finish (bounded), then close what is left."""
    edge.ready, edge.unready = False, "draining"
    if public is not None:
        public.close()
    connections.drain()
    await connections.wait_closed(grace)
    if public is not None:
        await public.wait_closed()


def _url(address: Any, scheme: str = "http") -> str:
    host, port = address[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: edgecdn serve")
