"""Catch-up from the origins' change logs: an edge that missed a purge or push while down repairs itself.

Rules of this file: the position in each origin's log (`last` seq) is saved in the cache directory only after
the changes up to it were applied, so a crash repeats work and never skips it; a change whose ETag the stored
object already has (it was pushed) is skipped; an origin without a change log is logged once, not fatal.
A malformed page, an unreachable origin or a store failure is logged, counted and retried with backoff; the
polling task is supervised: it never ends for good while the edge runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from edgecdn.cache.disk import storage_error
from edgecdn.cache.entry import Entry
from edgecdn.cache.store import Store
from edgecdn.config import Config
from edgecdn.control.purge import PurgeRequest
from edgecdn.errors import StorageError
from edgecdn.metrics import Metrics
from edgecdn.serve.purge import Purger

log = logging.getLogger("edgecdn.follow")

CHANGES_PATH = "/_origin/changes"
STATE_FILE = "changes-state.json"
MAX_ANSWER = 4 << 20  # bytes of one /_origin/changes answer
MAX_PAGES = 1000  # pages read in one catch-up before yielding to the next poll
STARTUP_CATCH_UP_S = 10.0  # the edge starts serving after this even if the origin is slow
MAX_BACKOFF = 32  # after failures the next poll waits up to this many intervals (doubling)
MAX_PATH = 8192


class BadPage(ValueError):
    """A /_origin/changes answer that is not the expected shape."""


@dataclass(frozen=True, slots=True)
class Page:
    changes: tuple[tuple[str, str], ...]  # (path, etag)
    last: int
    more: bool


def parse_page(raw: bytes) -> Page:
    """Validate a whole page before any of it is applied: a bad page changes nothing."""
    try:
        data: Any = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise BadPage(f"not JSON: {str(e)[:100]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("changes"), list):
        raise BadPage('expected {"changes": [...], "last": N}')
    last, more = data.get("last"), data.get("more", False)
    if not isinstance(last, int) or isinstance(last, bool) or last < 0 or not isinstance(more, bool):
        raise BadPage("last: expected a sequence number >= 0, more: true or false")
    changes = []
    for change in data["changes"]:
        path = change.get("path") if isinstance(change, dict) else None
        etag = change.get("etag") if isinstance(change, dict) else None
        if not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_PATH:
            raise BadPage("a change without an absolute path")
        if not isinstance(etag, str):
            raise BadPage(f"change of {path[:100]}: etag must be a string")
        changes.append((path, etag))
    return Page(tuple(changes), last, more)


class ChangeFollower:
    """Needs of the edge only what it uses: purge, the stored records, the config, the metrics."""

    def __init__(self, purger: Purger, store: Store, cfg: Config, metrics: Metrics) -> None:
        self.purger = purger
        self.store = store
        self.metrics = metrics
        self.origins = tuple(o.url for o in cfg.origins)
        self.interval = cfg.sync.poll_interval
        self.state_path = Path(cfg.cache.dir) / STATE_FILE
        self.last: dict[str, int] = _load(self.state_path)
        self.applied = 0
        self.failures = 0  # consecutive catch-ups with a failure: the backoff exponent
        self._unsupported: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        """Catch up once before the edge serves (bounded), then poll every `interval` seconds."""
        timeout = aiohttp.ClientTimeout(total=max(STARTUP_CATCH_UP_S, self.interval))
        self._session = aiohttp.ClientSession(timeout=timeout, trust_env=False)
        try:
            await asyncio.wait_for(self.catch_up(self._session), STARTUP_CATCH_UP_S)
        except TimeoutError:
            log.warning(
                "start-up catch-up took longer than %.0f s; continuing in the background", STARTUP_CATCH_UP_S
            )
        self._spawn()

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _spawn(self) -> None:
        assert self._session is not None
        self._task = asyncio.create_task(self._poll(self._session), name="edgecdn-change-follower")
        self._task.add_done_callback(self._supervise)

    def _supervise(self, task: asyncio.Task[None]) -> None:
        """The poller must not end while the edge runs: log, count and restart it if it does."""
        if self._closing or task.cancelled():
            return
        error = task.exception()
        log.error("change follower stopped (%r); restarting it", error)
        self.metrics.background_restarts.labels("change-follower").inc()
        self._spawn()

    def next_wait(self) -> float:
        """The interval, doubled per consecutive failed catch-up (up to MAX_BACKOFF intervals)."""
        return self.interval * min(1 << self.failures, MAX_BACKOFF)

    async def _poll(self, session: aiohttp.ClientSession) -> None:
        while True:
            await asyncio.sleep(self.next_wait())
            await self.catch_up(session)

    async def catch_up(self, session: aiohttp.ClientSession) -> int:
        """Apply every change not seen yet, origin by origin; returns how many were applied."""
        applied = 0
        failed = False
        for origin in self.origins:
            try:
                applied += await self._follow(session, origin)
            except BadPage as e:
                failed = True
                self._failed("malformed", f"change log of {origin} is malformed, will retry: {e}")
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
                failed = True
                self._failed("unavailable", f"change log of {origin} unavailable, will retry: {e}")
            except StorageError as e:
                failed = True
                self._failed("storage", f"applying changes of {origin} failed, will retry: {e}")
        self.failures = min(self.failures + 1, 30) if failed else 0
        self.applied += applied
        return applied

    def _failed(self, cause: str, message: str) -> None:
        self.metrics.follow_errors.labels(cause).inc()
        if self.failures == 0:  # one line when a problem starts, not one per retry
            log.warning(message)
        else:
            log.debug(message)

    async def _follow(self, session: aiohttp.ClientSession, origin: str) -> int:
        applied = 0
        for _ in range(MAX_PAGES):
            since = self.last.get(origin, 0)
            page = await self._page(session, origin, since)
            if page is None:
                return applied
            for path, etag in page.changes:
                await self._apply(path, etag)
                applied += 1
            if page.last != since:
                self.last[origin] = page.last
                try:
                    await asyncio.to_thread(_save, self.state_path, dict(self.last))
                except OSError as e:
                    raise storage_error("saving the change-log position failed", e) from e
            if not page.more:
                return applied
        return applied

    async def _page(self, session: aiohttp.ClientSession, origin: str, since: int) -> Page | None:
        async with session.get(f"{origin}{CHANGES_PATH}?since={since}", allow_redirects=False) as r:
            if r.status == 404:
                if origin not in self._unsupported:
                    self._unsupported.add(origin)
                    log.info("%s has no change log (%s): not following it", origin, CHANGES_PATH)
                return None
            if r.status != 200:
                raise ValueError(f"{CHANGES_PATH} answered {r.status}")
            raw = await r.content.read(MAX_ANSWER + 1)
            if len(raw) > MAX_ANSWER:
                raise BadPage(f"answer larger than {MAX_ANSWER} bytes")
        return parse_page(raw)

    async def _apply(self, path: str, etag: str) -> None:
        """Purge the path (and its query variants) unless the stored object already is the new one."""
        current = await self.store.record(path)
        if isinstance(current, Entry) and current.stored.etag == etag:
            return
        await self.purger.run(PurgeRequest(urls=(path,), prefixes=(path + "?",)))
        self.metrics.follow_changes.inc()


def _load(path: Path) -> dict[str, int]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): int(v) for k, v in raw.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def _save(path: Path, state: dict[str, int]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, path)
