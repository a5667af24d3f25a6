"""Coalescing across the worker processes of one edge: one origin fill per object, not one per worker.

Rules of this file: a shared fill holds a per-key file lock (fcntl.flock on one of LOCK_STRIPES files below
the cache directory) from before its origin request until its object is in the disk tier; a fill in another
worker that waited for the lock and then finds a new record serves that stored object instead of asking
the origin. Waiting is bounded (`wait_s`): past it the fill goes to the origin anyway (a second request, never
a failed one). Inside one process the coalescer already shares a flight, so a stripe is locked once per
process (reference-counted). Nothing here blocks the loop longer than one non-blocking flock call.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

from edgecdn.cache.disk import INLINE_MAX
from edgecdn.cache.entry import Entry, VaryMarker
from edgecdn.cache.fill import Fill
from edgecdn.cache.store import Store
from edgecdn.errors import StorageError
from edgecdn.policy.key import HeaderView, key_digest, variant_key

LOCK_STRIPES = 4096  # a collision makes two keys' fills take turns, never share an answer
POLL_FIRST_S = 0.002
POLL_MAX_S = 0.05


class SharedFills:
    """The per-key fill locks of one cache directory, shared by every process of the edge."""

    def __init__(self, cache_dir: str, *, wait_s: float) -> None:
        self.directory = Path(cache_dir) / "locks"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.wait_s = wait_s
        self._fds: dict[int, int] = {}
        self._held: dict[int, int] = {}  # stripe -> fills of this process holding it

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[bool]:
        """Hold `key`'s lock for the body; yields True when another process held it first (so it may
        have stored the object meanwhile: look before asking the origin)."""
        stripe = int(key_digest(key)[:8], 16) % LOCK_STRIPES
        waited = False
        if not self._held.get(stripe):
            got, waited = await self._lock(stripe)
            if not got and not self._held.get(stripe):
                yield True  # waited too long: go ahead without the lock (and do not release it after)
                return
        self._held[stripe] = self._held.get(stripe, 0) + 1
        try:
            yield waited
        finally:
            self._held[stripe] -= 1
            if not self._held[stripe]:
                del self._held[stripe]
                fcntl.flock(self._fds[stripe], fcntl.LOCK_UN)

    async def _lock(self, stripe: int) -> tuple[bool, bool]:
        """Take the stripe's flock: (got it, waited for it). Not got: the wait was too long, or a fill of
        this process took it meanwhile (then this one shares it)."""
        fd = self._fd(stripe)
        if _try_lock(fd):
            return True, False
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.wait_s
        delay = POLL_FIRST_S
        while loop.time() < give_up and not self._held.get(stripe):
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX_S)
            if not self._held.get(stripe) and _try_lock(fd):
                return True, True
        return False, True

    def _fd(self, stripe: int) -> int:
        fd = self._fds.get(stripe)
        if fd is None:
            fd = self._fds[stripe] = os.open(self.directory / f"{stripe:04x}", os.O_RDWR | os.O_CREAT, 0o600)
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


async def stored_elsewhere(
    store: Store, key: str, headers: HeaderView, before: Entry | None
) -> tuple[Entry, Fill] | None:
    """The object another worker stored under `key` while this one waited (not `before`, the entry this
    fill was to revalidate), as a complete Fill to answer from; None when there is none to use."""
    try:
        record = await store.record(key)
        if isinstance(record, VaryMarker):
            vkey = variant_key(key, record.names, headers)
            record = await store.record(vkey) if vkey in record.variants else None
        if not isinstance(record, Entry) or record.stored.invalidated:
            return None
        if before is not None and record.body_name == before.body_name:
            return None
        return await store.blocking(_open_stored, store, record)
    except StorageError:
        return None  # recorded by the store: this fill asks the origin as if nothing was there


def _open_stored(store: Store, entry: Entry) -> tuple[Entry, Fill] | None:
    if entry.body_name is None:
        return None
    if entry.stored.size <= INLINE_MAX:  # in its record (cache/disk.py): a complete fill in memory
        body = store.disk.small_body(entry)
        if body is None:
            return None
        fill = Fill(store.disk.tmp / entry.body_name, -1, memory_limit=max(1, len(body)))
        fill.memory = bytearray(body)
        fill.received = len(body)
        fill.complete = fill.done = fill.adopted = True
        return entry, fill
    f = store.disk.open_body(entry)
    if f is None:
        return None
    with f:
        fd = os.dup(f.fileno())
    fill = Fill(Path(f.name), fd, memory_limit=0)
    fill.received = fill.flushed = entry.stored.size
    fill.complete = fill.done = fill.adopted = True  # read from the stored file, never removed here
    return entry, fill
