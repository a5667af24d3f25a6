"""Catch-up from the origins' change logs: an edge that missed a purge or push while down repairs itself.

Rules of this file: the position in each origin's log (`last` seq) is saved in the cache directory only after
the changes up to it were applied, so a crash repeats work and never skips it; a change whose ETag the stored
object already has (it was pushed) is skipped; an origin without a change log is logged once, not fatal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from edgecdn.cache.entry import Entry
from edgecdn.control.purge import PurgeRequest
from edgecdn.errors import StorageError
from edgecdn.serve.purge import run_purge

if TYPE_CHECKING:
    from edgecdn.serve.app import Edge

log = logging.getLogger("edgecdn.follow")

CHANGES_PATH = "/_origin/changes"
STATE_FILE = "changes-state.json"
MAX_ANSWER = 4 << 20  # bytes of one /_origin/changes answer
MAX_PAGES = 1000  # pages read in one catch-up before yielding to the next poll
STARTUP_CATCH_UP_S = 10.0  # the edge starts serving after this even if the origin is slow


class ChangeFollower:
    def __init__(self, edge: Edge, interval: float) -> None:
        self.edge = edge
        self.interval = interval
        self.state_path = Path(edge.cfg.cache.dir) / STATE_FILE
        self.last: dict[str, int] = _load(self.state_path)
        self.applied = 0
        self._unsupported: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

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
        self._task = asyncio.create_task(self._poll(self._session))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _poll(self, session: aiohttp.ClientSession) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.catch_up(session)

    async def catch_up(self, session: aiohttp.ClientSession) -> int:
        """Apply every change not seen yet, origin by origin; returns how many were applied."""
        applied = 0
        for origin in (o.url for o in self.edge.cfg.origins):
            try:
                applied += await self._follow(session, origin)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
                log.warning("change log of %s unavailable: %s", origin, e)
            except StorageError as e:
                self.edge.metrics.storage_errors.inc()
                log.warning("applying changes of %s failed, will retry: %s", origin, e)
        self.applied += applied
        return applied

    async def _follow(self, session: aiohttp.ClientSession, origin: str) -> int:
        applied = 0
        for _ in range(MAX_PAGES):
            since = self.last.get(origin, 0)
            page = await self._page(session, origin, since)
            if page is None:
                return applied
            for change in page["changes"]:
                await self._apply(str(change["path"]), str(change["etag"]))
                applied += 1
            last = int(page["last"])
            if last != since:
                self.last[origin] = last
                await asyncio.to_thread(_save, self.state_path, dict(self.last))
            if not page.get("more"):
                return applied
        return applied

    async def _page(self, session: aiohttp.ClientSession, origin: str, since: int) -> dict[str, Any] | None:
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
                raise ValueError(f"{CHANGES_PATH} answer larger than {MAX_ANSWER} bytes")
        page = json.loads(raw)
        if not isinstance(page, dict) or not isinstance(page.get("changes"), list):
            raise ValueError(f"{CHANGES_PATH}: unexpected answer")
        return page

    async def _apply(self, path: str, etag: str) -> None:
        """Purge the path (and its query variants) unless the stored object already is the new one."""
        current = await asyncio.to_thread(self.edge.store.disk.get, path)
        if isinstance(current, Entry) and current.stored.etag == etag:
            return
        await run_purge(self.edge, PurgeRequest(urls=(path,), prefixes=(path + "?",)))


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
