"""The access log: one line per request, formatted on the loop, written in batches by one thread.

Rules of this file: a request never waits for the log and never fails because of it — a full disk, a
closed stdout or a writer that cannot keep up drops lines and counts them (`edgecdn_access_log_dropped`);
the byte count is the body bytes the socket took (sendfile included); `close()` writes every line
already formatted (drain and shutdown lose nothing).

Format: nginx "combined" plus the cache status, the origin that answered, the origin's time to the
response head and the total time, both in seconds (`-` when no origin was asked):
    127.0.0.1 - - [30/Nov/2026:20:31:05 +0000] "GET /a HTTP/1.1" 200 6 "-" "curl/8" HIT - - 0.000
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import queue
import threading
import time

from prometheus_client import Counter

from edgecdn import clock
from edgecdn.serve.request import Request
from edgecdn.serve.writer import ResponseWriter

log = logging.getLogger("edgecdn.accesslog")

FLUSH_S = 0.2  # a formatted line waits at most this long on the loop
BATCH_LINES = 512  # ... or until this many are waiting
MAX_PENDING = 256  # batches handed to the writer thread and not written yet; beyond, lines are dropped
CLOSE_S = 5.0  # how long shutdown waits for the writer thread (a stuck stdout pipe must not hang it)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _quoted(value: str | None) -> str:
    if not value:
        return "-"
    if '"' in value or "\\" in value:
        value = value.replace("\\", "\\x5C").replace('"', "\\x22")
    return value


class AccessLog:
    """Lines buffered on the loop, flushed every FLUSH_S or BATCH_LINES to `dest` by a writer thread."""

    def __init__(self, dest: str, dropped: Counter) -> None:
        self.dest = dest  # "stdout", "stderr" or a file path
        self._dropped = dropped
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._stamp = ""
        self._stamp_until = -1.0  # loop time until which `_stamp` is still the current second
        self._batches: queue.Queue[list[str]] = queue.Queue(MAX_PENDING)
        self._stop = threading.Event()
        self._reopen = threading.Event()  # SIGUSR1: the file was moved by logrotate, open the path again
        self._stopped = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._warned: set[int] = set()  # one warning per errno
        self._thread = threading.Thread(target=self._write_batches, name="edgecdn-access-log", daemon=True)
        self._thread.start()

    def request(self, request: Request, out: ResponseWriter, now: float) -> None:
        """The line of one answered request; `now` is the loop time it ended."""
        h = request.headers
        status = out.status if out.started else 499  # nginx's "client closed request"
        cache = out.cache._value_ if out.cache is not None else "-"  # _value_: no enum property call
        up = f"{out.upstream_s:.3f}" if out.upstream_s >= 0 else "-"
        total = now - request.received
        self._add(
            f'{request.remote or "-"} - - [{self._time(now)}] "{request.method} {_quoted(request.target)} '
            f'HTTP/{request.version}" {status} {out.body_sent} "{_quoted(h.get("Referer"))}" '
            f'"{_quoted(h.get("User-Agent"))}" {cache} {out.origin or "-"} {up} {total:.3f}\n'
        )

    def refused(self, remote: str | None, status: int, body_sent: int) -> None:
        """The line of a request refused before it could be parsed (the request line is unknown)."""
        stamp = self._time(self._loop.time())
        self._add(f'{remote or "-"} - - [{stamp}] "-" {status} {body_sent} "-" "-" ERROR - - 0.000\n')

    def flush(self) -> None:
        """Hand what is buffered to the writer thread (dropped and counted if it is too far behind)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines = self._lines, []
        if not lines:
            return
        try:
            self._batches.put_nowait(lines)
        except queue.Full:
            self._dropped.inc(len(lines))

    def reopen(self) -> None:
        """Open the destination path again before the next write (a file only; stdout/stderr stay)."""
        log.info("access log: reopening %s", self.dest)
        self.flush()
        self._reopen.set()

    async def close(self) -> None:
        """Write everything formatted so far, then stop the writer thread (bounded by CLOSE_S)."""
        self.flush()
        self._stop.set()
        try:
            async with asyncio.timeout(CLOSE_S):
                await self._stopped.wait()
        except TimeoutError:
            self._dropped.inc(sum(len(b) for b in list(self._batches.queue)))
            log.warning("access log %s: writer stuck at shutdown, pending lines dropped", self.dest)

    def _add(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= BATCH_LINES:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(FLUSH_S, self.flush)

    def _time(self, now: float) -> str:
        """The wall-clock second as nginx writes it; `now` (loop time) spares a clock read per line."""
        if now < self._stamp_until:
            return self._stamp
        wall = clock.now()
        second = int(wall)
        t = time.gmtime(second)
        self._stamp_until = now + (second + 1 - wall)
        self._stamp = (
            f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
        )
        return self._stamp

    # -- the writer thread -------------------------------------------------------------------------

    def _write_batches(self) -> None:
        try:
            self._write_until_stopped()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop may be gone after a stuck shutdown
                self._loop.call_soon_threadsafe(self._stopped.set)

    def _write_until_stopped(self) -> None:
        fd = self._open()
        while True:
            try:
                batch = self._batches.get(timeout=FLUSH_S)
            except queue.Empty:
                if self._stop.is_set():
                    break
                fd = self._reopened(fd)
                continue
            fd = self._reopened(fd)
            data = memoryview("".join(batch).encode("latin-1", "replace"))
            try:
                if fd < 0:
                    fd = self._open()  # the disk may have room again, the path may exist again
                if fd < 0:
                    raise FileNotFoundError(errno.ENOENT, "not open")
                while data:
                    data = data[os.write(fd, data) :]
            except OSError as e:
                self._dropped.inc(len(batch))
                self._warn_once(e)
                if fd > 2:
                    os.close(fd)
                    fd = -1
        if fd > 2:
            os.close(fd)

    def _reopened(self, fd: int) -> int:
        if not self._reopen.is_set():
            return fd
        self._reopen.clear()
        if fd > 2:
            os.close(fd)
        return self._open()

    def _open(self) -> int:
        if self.dest == "stdout":
            return 1
        if self.dest == "stderr":
            return 2
        try:
            return os.open(self.dest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as e:
            self._warn_once(e)
            return -1

    def _warn_once(self, e: BaseException) -> None:
        code = getattr(e, "errno", 0) or 0
        if code not in self._warned:
            self._warned.add(code)
            why = os.strerror(code) if code else str(e)
            log.warning("access log %s: %s (lines are dropped and counted)", self.dest, why)
