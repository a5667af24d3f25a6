"""The two-tier store: the memory LRU in front of the disk tier, behind one small API.

Rules of this file: `lookup_memory` is the hot path and does no I/O; everything that touches the disk tier
runs in a thread, and lookups and entry writes go there in batches (cache/batch.py): many share one thread
hop, and every entry write goes through `writes`, so writes land in the order they were made. A
StorageError never fails a request: callers treat it as a miss and go to the origin. Every StorageError is
recorded (counted by cause) here, once. The vary marker has one owner: the memory
marker changes only in `remember` (no await inside), the disk marker only inside the index transaction
that writes a variant (disk.py), and a variant the marker does not list is never answered.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import IO, ParamSpec, TypeVar

from edgecdn.cache import slices
from edgecdn.cache.batch import Batched
from edgecdn.cache.disk import INLINE_MAX, DiskTier, SpooledBody, storage_error
from edgecdn.cache.entry import Entry, VaryMarker
from edgecdn.cache.faults import Faults
from edgecdn.cache.fill import Fill
from edgecdn.cache.memory import MemoryObject, MemoryTier
from edgecdn.config import CacheConfig
from edgecdn.errors import StorageError
from edgecdn.metrics import Metrics
from edgecdn.policy.key import HeaderView, variant_key
from edgecdn.policy.stored import StoredResponse

LOOKUP_BATCH = 64  # disk lookups per thread hop ...
LOOKUP_THREADS = 4  # ... and hops at a time (a slow read must not hold up every lookup behind it)
WRITE_BATCH = 256  # entry writes per thread hop, index transaction and cull
# Memory objects this large also keep their body file open, for sendfile (at 64 KiB it spares more than a
# third of a hit's CPU: the copy into the socket). Fewer when the open-files limit would not hold them all.
KEEP_FILE_FROM = 64 * 1024
REMOVE_BATCH = 500  # primaries removed per index transaction by a purge


@dataclass(slots=True)
class DiskObject:
    """A disk hit: the entry and its body file, opened (the caller closes it)."""

    entry: Entry
    file: IO[bytes]


Found = MemoryObject | DiskObject
Looked = tuple[VaryMarker | None, Found | None]  # what a disk lookup found: the vary marker, the object


class _RecordedFill(Fill):
    """A Fill whose failed file writes and reads leave as StorageErrors, recorded by cause."""

    faults: Faults | None = None

    async def flush(self) -> None:
        try:
            await super().flush()
        except OSError as e:
            raise self._fault("writing a body failed", e) from e

    async def read(self, offset: int, limit: int) -> bytes:
        try:
            return await super().read(offset, limit)
        except OSError as e:
            raise self._fault("reading a body being filled failed", e) from e

    def _fault(self, what: str, e: OSError) -> StorageError:
        err = storage_error(what, e)
        if self.faults is not None:
            self.faults.record(err)
        return err


def keep_file_from(memory_size: int) -> int:
    """The body size from which a memory object keeps its file open: KEEP_FILE_FROM, or more when a full
    memory tier of such objects would hold over half of the open-files limit (connections need the rest)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = (1 << 20) if soft == resource.RLIM_INFINITY else max(1, soft // 2)
    return max(KEEP_FILE_FROM, -(-memory_size // budget))


P = ParamSpec("P")
T = TypeVar("T")


class Store:
    def __init__(self, cfg: CacheConfig, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.faults = Faults(metrics)
        self.memory = MemoryTier(cfg.memory_size, cfg.memory_object_max)
        self.disk = DiskTier(cfg.dir, cfg.disk_size, self.faults)
        self.lookups: Batched[tuple[str, HeaderView], Looked] = Batched(
            self._lookup_disk_many, LOOKUP_BATCH, parallel=LOOKUP_THREADS
        )
        self.writes: Batched[tuple[Entry, SpooledBody | None], list[str]] = Batched(
            lambda items: self.disk.put_many(items, cfg.max_variants), WRITE_BATCH
        )
        # Bumped by every removal/invalidation: a disk read that raced one must not promote what it read.
        self.generation = 0
        self.keep_file_from = keep_file_from(cfg.memory_size)
        self.variants_evicted = 0  # variants dropped by the cache.max_variants cap, both tiers

    async def new_fill(self, name: str, *, memory_limit: int) -> Fill:
        """A body on its way in, written below the disk tier's tmp directory; its write errors are
        StorageErrors, recorded here (a disk full mid-fill is counted as ENOSPC, then the fill fails)."""
        try:
            fill = await _RecordedFill.create(self.disk.tmp, name, memory_limit=memory_limit)
        except OSError as e:
            err = storage_error("creating a body file failed", e)
            self.faults.record(err)
            raise err from e
        assert isinstance(fill, _RecordedFill)
        fill.faults = self.faults
        return fill

    async def blocking(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking disk-tier call in a thread; a StorageError is recorded once, then raised."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except StorageError as e:
            self.faults.record(e)
            raise
        except OSError as e:  # a read of an opened body, say: the disk tier's errors all leave as one type
            err = storage_error(getattr(fn, "__name__", "disk tier"), e)
            self.faults.record(err)
            raise err from e

    # -- lookups -----------------------------------------------------------------------------------

    def lookup_memory(self, primary: str, headers: HeaderView) -> MemoryObject | None:
        item = self.memory.get(primary)
        if isinstance(item, VaryMarker):
            key = variant_key(primary, item.names, headers)
            item = self.memory.get(key) if key in item.variants else None
        return item if isinstance(item, MemoryObject) else None

    async def lookup(self, primary: str, headers: HeaderView) -> Found | None:
        """Memory first, then the disk tier (one thread hop); small disk hits are promoted."""
        hit = self.lookup_memory(primary, headers)
        if hit is not None:
            return hit
        generation = self.generation
        try:
            marker, found = await self.lookups((primary, headers))
        except StorageError as e:
            self.faults.record(e)
            raise
        if generation != self.generation:
            # A purge ran meanwhile and what we read may be its victim: a miss, and nothing promoted.
            if isinstance(found, DiskObject):
                found.file.close()
            return None
        if marker is not None:
            self._adopt_marker(primary, marker)
        if isinstance(found, MemoryObject):
            self.memory.put(found.entry.key, found)
        return found

    def _adopt_marker(self, primary: str, disk: VaryMarker) -> None:
        """Bring the disk marker (other processes' variants) into memory without losing the variants
        `remember` listed meanwhile; what the merge drops leaves the memory tier."""
        mem = self.memory.peek(primary)
        if isinstance(mem, VaryMarker):
            if mem.names != disk.names:
                return  # memory already holds a newer Vary, written after this disk read began
            extra = tuple(v for v in mem.variants if v not in disk.variants)
            disk = VaryMarker(disk.names, (*disk.variants, *extra)[-self.cfg.max_variants :])
            for key in mem.variants:
                if key not in disk.variants:
                    self.memory.discard(key)
        self.memory.put(primary, disk)

    def _lookup_disk_many(self, asks: list[tuple[str, HeaderView]]) -> list[Looked | StorageError]:
        found: list[Looked | StorageError] = []
        for primary, headers in asks:
            try:
                found.append(self._lookup_disk(primary, headers))
            except (StorageError, OSError) as e:  # a read of an opened body, say
                found.append(storage_error("disk lookup", e))
        return found

    def _lookup_disk(self, primary: str, headers: HeaderView) -> Looked:
        item = self.disk.get(primary)
        marker = item if isinstance(item, VaryMarker) else None
        if marker is not None:
            key = variant_key(primary, marker.names, headers)
            item = self.disk.get(key) if key in marker.variants else None
        if not isinstance(item, Entry):
            return marker, None
        if item.body_name is None:
            return marker, MemoryObject(item, b"")
        if item.stored.size <= INLINE_MAX:  # in its record: answered from memory, tier or not
            body = self.disk.small_body(item)
            return marker, None if body is None else MemoryObject(item, body)
        f = self.disk.open_body(item)
        if f is None:
            return marker, None
        if item.stored.size <= self.memory.max_object:
            body = f.read()
            if item.stored.size < self.keep_file_from or not self.cfg.memory_sendfile:
                f.close()
                return marker, MemoryObject(item, body)
            return marker, MemoryObject(item, body, file=f)
        return marker, DiskObject(item, f)

    # -- writes ------------------------------------------------------------------------------------

    def remember(self, entry: Entry, memory_body: bytes | None) -> None:
        """Make a complete entry visible in the memory tier at once (no I/O), before it is persisted.

        The memory marker is read and written with no await between: concurrent fills cannot lose each
        other's variants, and the variants it drops (cap, or a changed Vary) leave the memory tier.
        """
        if entry.stored.vary:
            old = self.memory.get(entry.primary)
            same = isinstance(old, VaryMarker) and old.names == entry.stored.vary
            variants = old.variants if isinstance(old, VaryMarker) else ()
            kept = (*(v for v in variants if v != entry.key and same), entry.key)[-self.cfg.max_variants :]
            for key in variants:
                if key not in kept:
                    self.memory.discard(key)
            self.memory.put(entry.primary, VaryMarker(entry.stored.vary, kept))
        if memory_body is not None:
            self.memory.put(entry.key, MemoryObject(entry, memory_body))
        else:
            self.memory.discard(entry.key)

    async def commit(self, entry: Entry, fill: Fill) -> None:
        """Store a finished fill's body: visible in memory at once, then moved into the disk tier.

        On a StorageError nothing of it stays visible (and the fill removes its file when it ends).
        """
        body = fill.whole()
        item = self.memory.peek(entry.key)
        if not (isinstance(item, MemoryObject) and item.entry.body_name == entry.body_name):
            self.remember(entry, body)  # unless the fill already made it visible (before its flush)
        try:
            await self.persist(entry, await fill.spool())
        except StorageError:
            self.memory.discard(entry.key)
            raise
        fill.adopted = True

    async def persist(self, entry: Entry, body: SpooledBody) -> None:
        """Write a complete entry to the disk tier; the body file is moved into it, not copied."""
        evicted = await self._write(entry, body)
        for key in evicted:
            self.memory.discard(key)
        self._count_evicted(len(evicted))
        item = self.memory.peek(entry.key)
        same = isinstance(item, MemoryObject) and item.entry.body_name == entry.body_name
        if same and self.cfg.memory_sendfile and entry.stored.size >= self.keep_file_from:
            f = await self.blocking(self.disk.open_body, entry)
            if isinstance(item, MemoryObject) and self.memory.peek(entry.key) is item and item.file is None:
                item.file = f
            elif f is not None:
                f.close()

    async def _write(self, entry: Entry, body: SpooledBody | None) -> list[str]:
        """One entry through the index writer (batched with others); a StorageError is recorded here."""
        try:
            return await self.writes((entry, body))
        except StorageError as e:
            self.faults.record(e)
            raise

    def _count_evicted(self, n: int) -> None:
        self.variants_evicted += n
        if n and self.metrics is not None:
            self.metrics.variants_evicted.inc(n)

    async def update(self, entry: Entry, stored: StoredResponse) -> Entry:
        """Replace an entry's metadata, keeping its body (after a 304, or a soft purge)."""
        new = replace(entry, stored=stored)
        if stored.invalidated:
            self.generation += 1
        await self._write(new, None)
        if stored.invalidated:
            self.generation += 1
        item = self.memory.get(entry.key)
        if isinstance(item, MemoryObject):
            self.memory.put(entry.key, MemoryObject(new, item.body, file=item.file))
        return new

    async def remove(self, primary: str) -> int:
        """Remove a primary key and all its variants from both tiers; returns how many entries went."""
        self.generation += 1
        removed = await self.blocking(self._remove_disk, primary)
        self.generation += 1  # lookups that read before the delete see a change either way
        for key in removed:
            self.memory.discard(key)
        self._forget_memory(primary)
        return len([k for k in removed if k != primary]) or int(primary in removed)

    async def remove_many(self, primaries: Iterable[str]) -> int:
        """Remove primary keys (all their variants) from both tiers, REMOVE_BATCH per thread hop and index
        transaction (a large purge neither pays one hop per object nor holds the index lock for long)."""
        batch = list(primaries)
        removed = 0
        for start in range(0, len(batch), REMOVE_BATCH):
            chunk = batch[start : start + REMOVE_BATCH]
            self.generation += 1
            keys = await self.blocking(self._remove_disk_many, chunk)
            self.generation += 1
            for key in keys:
                self.memory.discard(key)
            for primary in chunk:
                self._forget_memory(primary)
            removed += len(keys)
        return removed

    def _remove_disk_many(self, primaries: list[str]) -> list[str]:
        with self.disk.transaction():
            return [key for primary in primaries for key in self._remove_disk(primary)]

    def _forget_memory(self, primary: str) -> None:
        item = self.memory.get(primary)
        if isinstance(item, VaryMarker):
            for key in item.variants:
                self.memory.discard(key)
        self.memory.discard(primary)

    def forget_memory(self, primary: str) -> None:
        """Drop a primary key and its variants from this process's memory tier only (the disk tier holds
        a newer object another process stored); a disk read racing this does not promote what it read."""
        self.generation += 1
        item = self.memory.get(primary)
        if isinstance(item, VaryMarker):
            for key in item.variants:
                self.memory.discard(key)
        self.memory.discard(primary)

    def _remove_disk(self, primary: str) -> list[str]:
        old = self.disk.delete(primary)
        keys = [primary] if old is not None else []
        if isinstance(old, VaryMarker):
            for key in old.variants:
                if self.disk.delete(key) is not None:
                    keys.append(key)
        keys += slices.drop(self.disk, primary)  # the object's slices go with it (cache/slices.py)
        return keys

    def entry_keys(self) -> Iterable[str]:
        return self.disk.keys()

    async def record(self, key: str) -> Entry | VaryMarker | None:
        """What the disk tier holds under `key` (the shared truth across processes), read in a thread."""
        return await self.blocking(self.disk.get, key)

    async def disk_bytes(self) -> int:
        return await self.blocking(self.disk.volume)

    def memory_usage(self) -> dict[str, int]:
        """This process's memory tier: items, bytes, limit and evicted (since start); no I/O."""
        memory = self.memory
        return {
            "items": len(memory),
            "bytes": memory.bytes,
            "limit": memory.max_bytes,
            "evicted": memory.evicted,
        }

    async def usage(self) -> dict[str, dict[str, int]]:
        """Per tier: items, bytes, limit and evicted (since start); the disk tier's in one thread hop."""
        disk_items, disk_bytes = await self.blocking(lambda: (self.disk.count(), self.disk.volume()))
        return {
            "memory": self.memory_usage(),
            "disk": {
                "items": disk_items,
                "bytes": disk_bytes,
                "limit": self.disk.max_bytes,
                "evicted": self.disk.evicted,
            },
        }

    async def sweep(self) -> int:
        """Remove bodies a crash left half-written (never indexed, so never served)."""
        return await self.blocking(self.disk.sweep_tmp)

    def close(self) -> None:
        self.disk.close()
