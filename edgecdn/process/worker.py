"""One worker of a master: accepts on the master's socket, answers its purges, drains when told.

Rules of this file: the config arrives pickled on stdin from the master (its own child, so trusted); the
listening socket and the IPC channel are inherited fds named in EDGECDN_WORKER_FDS. A worker never sweeps the
shared tmp directory (other workers are filling), never follows origin changes (the master does and
broadcasts), and coalesces its fills with the other workers (fetch/shared_fill.py). SIGTERM: stop accepting,
finish in-flight requests (bounded), exit 0. SIGQUIT: exit now. SIGUSR1: reopen the access log. SIGINT and
SIGHUP are the master's to act on (a terminal's Ctrl-C reaches the whole group).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import socket
import sys

from edgecdn.config import Config
from edgecdn.control.purge import PurgeRequest
from edgecdn.fetch.shared_fill import SharedFills
from edgecdn.process import runner
from edgecdn.process.ipc import Channel, Message
from edgecdn.serve.app import Edge
from edgecdn.serve.connection import Connections

log = logging.getLogger("edgecdn.worker")
ENV_FDS = "EDGECDN_WORKER_FDS"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg: Config = pickle.load(sys.stdin.buffer)  # written by our own master
    public_fd, ipc_fd = (int(fd) for fd in os.environ.pop(ENV_FDS).split(","))
    runner.raise_fd_limit()
    return runner.run_loop(lambda: work(cfg, public_fd, ipc_fd), use_uvloop=cfg.server.uvloop)


async def work(cfg: Config, public_fd: int, ipc_fd: int) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, lambda: None)
    edge = Edge(cfg)
    edge.follower = None  # the master follows origin changes and broadcasts the purges
    edge.purger.counts_objects = False  # the master counts the edge's purged objects once
    edge.coalescer.shared = SharedFills(cfg.cache.dir, wait_s=cfg.origin.retry_deadline)
    await edge.start(sweep=False)
    runner.settle_heap()
    connections = Connections()
    channel = await Channel.open(socket.socket(fileno=ipc_fd))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGQUIT, lambda: os._exit(0))
    if edge.access_log is not None:
        loop.add_signal_handler(signal.SIGUSR1, edge.access_log.reopen)
    # An unsafe method invalidates for the whole edge (RFC 9111 §4.4): the master tells the other workers.
    edge.handler.peers_forget = lambda key: channel.send({"invalidated": [key]})
    serving = asyncio.create_task(channel.serve(lambda m: answer(edge, m)))
    serving.add_done_callback(lambda _: stop.set())  # the master is gone: drain and exit
    sock = socket.socket(fileno=public_fd)
    sock.setblocking(False)
    public = await runner.listen_public(edge, connections, sock)  # TLS and HTTP/2 as configured
    channel.send({"ready": os.getpid()})
    await stop.wait()
    try:
        await runner.drain(edge, public, connections)
    finally:
        serving.cancel()
        channel.close()
        await edge.close()
        edge.coalescer.shared.close()
    return 0


async def answer(edge: Edge, message: Message) -> Message:
    """One request of the master, in effect in this worker when the answer leaves; a failure is an
    error answer (the master then stops this worker rather than leave it serving what it could not drop)."""
    try:
        return await _apply(edge, message)
    except Exception as e:
        log.exception("%s failed in worker %d", message.get("op"), os.getpid())
        return {"error": f"{type(e).__name__}: {e}"[:200]}


async def _apply(edge: Edge, message: Message) -> Message:
    match message.get("op"):
        case "purge":
            req = PurgeRequest(
                urls=tuple(message["urls"]),
                prefixes=tuple(message["prefixes"]),
                tags=tuple(message["tags"]),
                soft=bool(message["soft"]),
            )
            return {"purged": await edge.purger.run(req)}
        case "forget":
            keys = frozenset(str(k) for k in message["keys"])
            await edge.coalescer.purge(lambda primary, _tags: primary in keys)
            for key in keys:
                edge.store.forget_memory(key)
            return {"ok": True}
        case "metrics":  # this worker's series; the master merges them (the disk tier's are the master's)
            edge.reporter.record({"memory": edge.store.memory_usage()})
            return {"text": edge.metrics.render().decode()}
        case "draining" | "warming":
            edge.ready, edge.unready = False, message["op"]
            return {"ok": True}
        case "ready":
            if edge.unready == "warming":  # not once draining began
                edge.ready = True
            return {"ok": True}
        case other:
            return {"error": f"unknown op {other!r}"}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
