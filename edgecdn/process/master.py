"""The master of `server.workers` > 1: owns the sockets and the admin API, supervises the workers.

Rules of this file: the public socket is bound once, here, and inherited by every worker (one accept queue
that outlives any worker, so a reload or a crash never refuses a connection); the admin listener and its
replay cache live here only, so a signed call is accepted once per edge. A purge or push is answered only
once every worker acknowledged it (`ACK_TIMEOUT_S`); a worker that does not is killed, so it can never
answer from its memory tier again, and started anew. A worker that dies is started again after a backoff,
logged and counted. Signals are process/signals.py's; a reload starts the new workers before the old ones
are told to drain (bounded by the worker's own grace plus `STOP_MARGIN_S`, then killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from edgecdn.config import Config
from edgecdn.control import sdnotify, signing
from edgecdn.control.purge import PurgeRequest
from edgecdn.process import handover, runner, signals
from edgecdn.process.gather import GATHER_TIMEOUT_S, merge
from edgecdn.process.ipc import Channel, Message
from edgecdn.process.signals import Action
from edgecdn.process.worker import ENV_FDS
from edgecdn.serve import readiness
from edgecdn.serve.admin import admin_runner
from edgecdn.serve.app import Edge

log = logging.getLogger("edgecdn.master")
WORKER_READY_S = 30.0  # a new worker not accepting after this fails its start (a reload keeps the old ones)
ACK_TIMEOUT_S = 10.0  # a worker that has not applied a purge by then is killed (and restarted)
STOP_MARGIN_S = 5.0  # past the worker's own drain bound, a worker still running is killed
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 30.0
STABLE_S = 10.0  # a worker that lived this long resets its slot's backoff


@dataclass(eq=False)
class Worker:
    slot: int
    generation: int
    proc: asyncio.subprocess.Process
    channel: Channel
    ready: asyncio.Future[int]
    started: float
    stopping: bool = False  # told to stop: its exit is expected, not restarted
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Master:
    def __init__(self, cfg: Config, listeners: handover.Listeners) -> None:
        self.cfg = cfg
        self.listeners = listeners
        self.generation = 0
        self.workers: set[Worker] = set()
        self.failures: dict[int, int] = {}  # slot -> consecutive quick deaths
        self.stopping = False
        self.edge: Edge | None = None
        self.admin: web.AppRunner | None = None
        self.replay = signing.ReplayCache(window_s=cfg.admin.signature_window)
        self.background: set[asyncio.Task[Any]] = set()  # old workers draining after a reload

    # -- workers -------------------------------------------------------------------------------------

    async def spawn(self, cfg: Config, slot: int, generation: int) -> Worker:
        mine, theirs = socket.socketpair()
        public = self.listeners.public.fileno()
        env = dict(os.environ)
        env[ENV_FDS] = f"{public},{theirs.fileno()}"
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "edgecdn.process.worker",
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(public, theirs.fileno()),
                env=env,
            )
        finally:
            theirs.close()
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps(cfg))
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        proc.stdin.close()
        channel = await Channel.open(mine)
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        worker = Worker(slot, generation, proc, channel, ready, time.monotonic())
        worker.tasks.append(asyncio.create_task(self._listen(worker)))
        worker.tasks.append(asyncio.create_task(self._watch(worker)))
        self.workers.add(worker)
        return worker

    async def _listen(self, worker: Worker) -> None:
        while (message := await worker.channel.receive()) is not None:
            if "ready" in message and not worker.ready.done():
                worker.ready.set_result(int(message["ready"]))
            elif "invalidated" in message:  # a worker's unsafe request: every process drops the keys
                keys = [str(k) for k in message["invalidated"]]
                if self.edge is not None:
                    for key in keys:
                        self.edge.store.forget_memory(key)
                self.later(self.forget(keys, skip=worker))  # not the sender: it may be storing the new one
            else:
                worker.channel.answered(message)
        worker.channel.close()

    async def _watch(self, worker: Worker) -> None:
        code = await worker.proc.wait()
        self.workers.discard(worker)
        worker.channel.close()
        if not worker.ready.done():
            worker.ready.set_exception(ChildProcessError(f"worker exited with code {code}"))
        if worker.stopping or self.stopping or worker.generation != self.generation:
            return
        lived = time.monotonic() - worker.started
        failures = 0 if lived >= STABLE_S else self.failures.get(worker.slot, 0) + 1
        self.failures[worker.slot] = failures
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, failures - 1)) if failures else 0.0
        log.warning(
            "worker %d (pid %d) exited with code %d after %.1f s; starting it again in %.1f s",
            worker.slot,
            worker.proc.pid,
            code,
            lived,
            delay,
        )
        if self.edge is not None:
            self.edge.metrics.worker_restarts.inc()
        await asyncio.sleep(delay)
        if not self.stopping and worker.generation == self.generation:
            await self.spawn(self.cfg, worker.slot, worker.generation)

    async def start_generation(self, cfg: Config) -> list[Worker] | None:
        """Start `cfg.server.workers` workers and wait until each accepts; None (logged, killed) if not."""
        generation = self.generation + 1
        started = [await self.spawn(cfg, slot, generation) for slot in range(cfg.server.workers)]
        try:
            async with asyncio.timeout(WORKER_READY_S):
                await asyncio.gather(*(w.ready for w in started))
        except (TimeoutError, ChildProcessError) as e:
            log.error("workers did not start (%s); stopping them", e or "timed out")
            await self.stop_workers(started, signal.SIGKILL)
            return None
        self.generation = generation
        return started

    async def stop_workers(self, workers: list[Worker], sig: int = signal.SIGTERM) -> None:
        """Signal them, wait for them to exit (bounded), kill what is left."""
        for w in workers:
            w.stopping = True
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(sig)
        if not workers:
            return
        waits = [asyncio.ensure_future(w.proc.wait()) for w in workers]
        _, late = await asyncio.wait(waits, timeout=runner.SHUTDOWN_GRACE_S + STOP_MARGIN_S)
        for w in workers:
            if w.proc.returncode is None:
                log.warning("worker pid %d did not stop in time: killed", w.proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
        if late:
            await asyncio.wait(late)

    def signal_all(self, sig: int) -> None:
        for w in self.workers:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(sig)

    # -- one edge: every worker applies a purge before it is answered -----------------------------------

    async def broadcast(self, op: str, *, skip: Worker | None = None, **fields: object) -> list[Message]:
        workers = [w for w in self.workers if w is not skip]
        answers = await asyncio.gather(*(self._ask(w, op, fields, ACK_TIMEOUT_S) for w in workers))
        late = [
            w
            for w, a in zip(workers, answers, strict=True)
            if (a is None or "error" in a) and w.proc.returncode is None
        ]
        for w in late:
            log.error("worker pid %d did not apply %s within %.0f s: killed", w.proc.pid, op, ACK_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()
        for w in late:
            await w.proc.wait()  # gone before the caller answers: it cannot serve an old object
        return [a for a in answers if a is not None and "error" not in a]

    async def _ask(self, worker: Worker, op: str, fields: dict[str, object], bound: float) -> Message | None:
        try:
            async with asyncio.timeout(bound):
                return await worker.channel.ask(op, **fields)
        except TimeoutError:
            return None
        except ConnectionError:
            return {}  # it is exiting: its memory tier goes with it

    async def purge(self, req: PurgeRequest) -> list[dict[str, int]]:
        answers = await self.broadcast(
            "purge", urls=req.urls, prefixes=req.prefixes, tags=req.tags, soft=req.soft
        )
        return [a["purged"] for a in answers if isinstance(a.get("purged"), dict)]

    async def forget(self, keys: list[str], skip: Worker | None = None) -> None:
        await self.broadcast("forget", skip=skip, keys=keys)

    async def metrics(self, own: bytes) -> bytes:
        """/metrics for the whole edge: the master's series merged with each worker's (process/gather.py)."""
        workers = list(self.workers)
        answers = await asyncio.gather(*(self._ask(w, "metrics", {}, GATHER_TIMEOUT_S) for w in workers))
        texts = [a["text"] for a in answers if a is not None and isinstance(a.get("text"), str)]
        return merge([own.decode(), *texts])

    # -- the admin listener ----------------------------------------------------------------------------

    async def open_admin(self, cfg: Config) -> None:
        """The admin API on `cfg` (an Edge without a public listener); the previous one closes after.

        Its fills (push re-fetch, prefetch, warm-up) do not take the workers' fill locks: a re-fetch must
        ask the origin even though the store holds the object."""
        old_edge, old_admin = self.edge, self.admin
        edge = Edge(cfg)
        await edge.start(sweep=False)
        edge.purger.peers = self
        admin = admin_runner(edge, self.replay, self.metrics)
        await admin.setup()
        await web.SockSite(admin, self.listeners.admin.dup()).start()
        self.edge, self.admin = edge, admin
        if old_admin is not None:
            await old_admin.cleanup()
        if old_edge is not None:
            await old_edge.close()

    async def close_admin(self) -> None:
        if self.admin is not None:
            await self.admin.cleanup()
        if self.edge is not None:
            await self.edge.close()
        self.edge = self.admin = None

    # -- signals ---------------------------------------------------------------------------------------

    async def reload(self, reload: runner.Reload | None) -> None:
        began = time.monotonic()
        cfg = runner.checked(reload)
        if cfg is None:
            return
        for name in ("listen", "admin_listen"):
            if getattr(cfg.server, name) != getattr(self.cfg.server, name):
                log.warning("reload: server.%s changed: the sockets stay; restart (SIGUSR2) to move", name)
        sdnotify.notify(runner.reloading())
        old = [w for w in self.workers if w.generation == self.generation]
        generation = self.generation
        started = await self.start_generation(cfg)
        if started is not None:
            try:
                await self.open_admin(cfg)
            except Exception as e:  # a store that cannot open, say: the running edge stays as it is
                log.error("reload: the admin listener failed on the new config (%s)", e)
                self.generation = generation
                await self.stop_workers(started, signal.SIGKILL)
                started = None
        if started is None:
            log.error("reload: the new workers failed; the old ones keep serving")
            sdnotify.notify("READY=1")
            return
        self.cfg = cfg
        drain = self.later(self.stop_workers(old))
        drain.add_done_callback(lambda _: log.info("reload: the old workers have exited"))
        log.info("reload: %d new workers serving in %.2f s", len(started), time.monotonic() - began)
        sdnotify.notify("READY=1")

    def later(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `work` in the background, kept referenced until it ends."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def warm(self, cfg: Config) -> asyncio.Task[None] | None:
        """`warm_from`: every worker's health says 503 "warming" until the master fetched the manifest."""
        if not cfg.server.warm_from or self.edge is None:
            return None
        await self.broadcast("warming")
        task = readiness.start_warming(self.edge, cfg.server)
        if task is not None:
            task.add_done_callback(lambda _: self.later(self.broadcast("ready")))
        return task

    async def stop(self, grace: bool) -> None:
        """SIGTERM: health 503 for drain_delay, then the workers drain. SIGQUIT (grace False): now."""
        if grace and self.edge is not None and self.cfg.server.drain_delay > 0:
            await self.broadcast("draining")
            await readiness.drain(self.edge, self.cfg.server.drain_delay)
        self.stopping = True
        await self.stop_workers(list(self.workers), signal.SIGTERM if grace else signal.SIGQUIT)


async def supervise(cfg: Config, reload: runner.Reload | None = None) -> int:
    listeners = handover.open_listeners(cfg)
    master = Master(cfg, listeners)
    actions = signals.install()
    warming: asyncio.Task[None] | None = None
    try:
        await master.open_admin(cfg)  # sweeps nothing: a predecessor's or an earlier crash's tmp files
        if not listeners.inherited:
            assert master.edge is not None
            swept = await master.edge.store.sweep()  # before any worker fills
            if swept:
                log.info("removed %d unfinished bodies left by an earlier crash", swept)
        if await master.start_generation(cfg) is None:
            master.stopping = True
            return 1
        warming = await master.warm(cfg)
        runner.announce(listeners, cfg)
        while True:
            action = await actions.get()
            if action is Action.RELOAD:
                await master.reload(reload)
            elif action is Action.REOPEN:
                if master.edge is not None and master.edge.access_log is not None:
                    master.edge.access_log.reopen()
                master.signal_all(signal.SIGUSR1)
            elif action is Action.RESTART:
                if await handover.start_successor(listeners):
                    await master.close_admin()  # the successor answers admin calls from now on
                    master.edge = master.admin = None
                    master.stopping = True
                    await master.stop_workers(list(master.workers))
                    break
            else:
                if action is Action.STOP:
                    log.info("draining")
                    sdnotify.notify("STOPPING=1")
                if action is Action.QUIT or not await signals.unless_quit(actions, master.stop(grace=True)):
                    await master.stop(grace=False)
                break
    finally:
        await readiness.stop_warming(warming)
        master.stopping = True
        await master.stop_workers(list(master.workers), signal.SIGKILL)
        await master.close_admin()
    return 0


def run(cfg: Config, reload: runner.Reload | None = None) -> int:
    """`edgecdn serve` with `server.workers` > 1: the master's loop until it is told to stop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    runner.raise_fd_limit()
    return runner.run_loop(lambda: supervise(cfg, reload), use_uvloop=cfg.server.uvloop)
