"""Signals as nginx has them, turned into actions the master (or a single-process edge) takes in order.

Rules of this file: a handler only queues an action; the main task acts on one at a time, so a SIGHUP that
arrives during a reload waits for it to finish.
  SIGHUP   reload: re-read and validate the config; invalid keeps everything as it is
  SIGTERM  stop: health 503 for drain_delay, stop accepting, finish in-flight requests (bounded), exit 0
  SIGINT   the same as SIGTERM
  SIGQUIT  quit: stop now (in-flight requests are cut)
  SIGUSR1  reopen the access log (after logrotate moved it)
  SIGUSR2  restart: start a new edge on the same listening sockets, drain this one once it is ready
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import signal
from collections.abc import Coroutine
from typing import Any


class Action(enum.Enum):
    RELOAD = "reload"
    STOP = "stop"
    QUIT = "quit"
    REOPEN = "reopen"
    RESTART = "restart"


SIGNALS = {
    signal.SIGHUP: Action.RELOAD,
    signal.SIGTERM: Action.STOP,
    signal.SIGINT: Action.STOP,
    signal.SIGQUIT: Action.QUIT,
    signal.SIGUSR1: Action.REOPEN,
    signal.SIGUSR2: Action.RESTART,
}


def install() -> asyncio.Queue[Action]:
    """Route the signals above into a queue (before readiness: a signal right after it is acted on)."""
    actions: asyncio.Queue[Action] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for sig, action in SIGNALS.items():
        loop.add_signal_handler(sig, actions.put_nowait, action)
    return actions


async def unless_quit(actions: asyncio.Queue[Action], work: Coroutine[Any, Any, None]) -> bool:
    """Run `work` (a drain) unless SIGQUIT comes first, which cancels it; True if it ran to its end.
    Other signals meanwhile are dropped: the edge is stopping."""
    task = asyncio.ensure_future(work)
    while True:
        getter = asyncio.ensure_future(actions.get())
        await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done() and getter.result() is Action.QUIT:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return False
        if task.done():
            getter.cancel()
            await task
            return True
