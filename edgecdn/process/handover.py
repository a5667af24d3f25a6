"""The listening sockets across restarts: bound once, inherited by workers and by a successor edge.

Rules of this file: a socket is bound by the first edge only; a successor (SIGUSR2, or SIGHUP in single-
process mode) inherits both listening sockets by fd, named in EDGECDN_LISTEN_FDS, and says it is ready on
the pipe named in EDGECDN_READY_FD, so the kernel's accept queue never closes and no connection is refused.
The old edge drains only once its successor is ready; a successor that fails leaves the old edge serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from dataclasses import dataclass

from edgecdn.config import Config, parse_hostport
from edgecdn.errors import EdgeError

log = logging.getLogger("edgecdn")
ENV_FDS = "EDGECDN_LISTEN_FDS"
ENV_READY = "EDGECDN_READY_FD"
BACKLOG = 1024
SUCCESSOR_READY_S = 60.0  # a successor not listening after this is stopped; the old edge keeps serving


@dataclass(frozen=True, slots=True)
class Listeners:
    public: socket.socket
    admin: socket.socket
    inherited: bool  # from a predecessor still serving: its fills are live (no tmp sweep)


def open_listeners(cfg: Config) -> Listeners:
    """The predecessor's sockets when handed over, else both bound here (one line if that fails)."""
    named = os.environ.pop(ENV_FDS, "")
    if named:
        fds = dict(item.split("=", 1) for item in named.split(","))
        public, admin = (socket.socket(fileno=int(fds[name])) for name in ("public", "admin"))
        for sock in (public, admin):
            sock.setblocking(False)
        return Listeners(public, admin, inherited=True)
    try:
        public = _bind(parse_hostport(cfg.server.listen, "server.listen"))
        admin = _bind(parse_hostport(cfg.server.admin_listen, "server.admin_listen"))
    except OSError as e:
        raise EdgeError(f"cannot listen: {e.strerror or e}") from None
    return Listeners(public, admin, inherited=False)


def _bind(address: tuple[str, int]) -> socket.socket:
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    sock.setblocking(False)
    return sock


def say_ready() -> None:
    """Tell the predecessor (if any) that this edge is listening: it may drain now."""
    fd = os.environ.pop(ENV_READY, "")
    if fd:
        try:
            os.write(int(fd), b"1")
            os.close(int(fd))
        except OSError as e:
            log.warning("could not tell the previous edge we are ready: %s", e)


async def start_successor(listeners: Listeners) -> bool:
    """Exec this edge again (same command line, code read anew) on the same sockets; True once it says
    it is listening. False (logged) if it exits or stays silent: this edge keeps serving."""
    read_fd, write_fd = os.pipe()
    fds = (listeners.public.fileno(), listeners.admin.fileno(), write_fd)
    env = dict(os.environ)
    env[ENV_FDS] = f"public={fds[0]},admin={fds[1]}"
    env[ENV_READY] = str(write_fd)
    argv = [sys.executable, "-m", "edgecdn", *sys.argv[1:]]
    try:
        proc = await asyncio.create_subprocess_exec(*argv, pass_fds=fds, env=env)
    except OSError as e:
        os.close(read_fd)
        os.close(write_fd)
        log.error("restart: cannot start a new edge: %s", e)
        return False
    os.close(write_fd)
    loop = asyncio.get_running_loop()
    said: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        if not said.done():
            said.set_result(os.read(read_fd, 1))

    loop.add_reader(read_fd, readable)
    try:
        async with asyncio.timeout(SUCCESSOR_READY_S):
            answer = await said
    except TimeoutError:
        answer = b""
    finally:
        loop.remove_reader(read_fd)
        os.close(read_fd)
    if answer != b"1":
        log.error("restart: the new edge (pid %d) did not start; this one keeps serving", proc.pid)
        if proc.returncode is None:
            proc.kill()
        return False
    log.info("restart: the new edge (pid %d) is listening; this one drains", proc.pid)
    return True
