"""The two-tier store: the memory LRU in front of the disk tier, behind one small API.

Rules of this file: `lookup_memory` is the hot path and does no I/O; everything that touches the disk tier
runs in a thread. A StorageError never fails a request: callers treat it as a miss and go to the origin.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import IO

from edgecdn.cache.disk import DiskTier, SpooledBody
from edgecdn.cache.entry import Entry, VaryMarker
from edgecdn.cache.memory import MemoryObject, MemoryTier
from edgecdn.config import CacheConfig
from edgecdn.policy.key import HeaderView, variant_key
from edgecdn.policy.stored import StoredResponse

KEEP_FILE_FROM = 512 * 1024  # memory objects this large also keep their body file open, for sendfile


@dataclass(slots=True)
class DiskObject:
    """A disk hit: the entry and its body file, opened (the caller closes it)."""

    entry: Entry
    file: IO[bytes]


Found = MemoryObject | DiskObject


class Store:
    def __init__(self, cfg: CacheConfig) -> None:
        self.cfg = cfg
        self.memory = MemoryTier(cfg.memory_size, cfg.memory_object_max)
        self.disk = DiskTier(cfg.dir, cfg.disk_size)
        # Bumped by every removal/invalidation: a disk read that raced one must not promote what it read.
        self.generation = 0

    # -- lookups -----------------------------------------------------------------------------------

    def lookup_memory(self, primary: str, headers: HeaderView) -> MemoryObject | None:
        item = self.memory.get(primary)
        if isinstance(item, VaryMarker):
            item = self.memory.get(variant_key(primary, item.names, headers))
        return item if isinstance(item, MemoryObject) else None

    async def lookup(self, primary: str, headers: HeaderView) -> Found | None:
        """Memory first, then the disk tier (one thread hop); small disk hits are promoted."""
        hit = self.lookup_memory(primary, headers)
        if hit is not None:
            return hit
        generation = self.generation
        marker, found = await asyncio.to_thread(self._lookup_disk, primary, headers)
        if generation != self.generation:
            # A purge ran meanwhile and what we read may be its victim: a miss, and nothing promoted.
            if isinstance(found, DiskObject):
                found.file.close()
            return None
        if marker is not None:
            self.memory.put(primary, marker)
        if isinstance(found, MemoryObject):
            self.memory.put(found.entry.key, found)
        return found

    def _lookup_disk(self, primary: str, headers: HeaderView) -> tuple[VaryMarker | None, Found | None]:
        item = self.disk.get(primary)
        marker = item if isinstance(item, VaryMarker) else None
        if marker is not None:
            item = self.disk.get(variant_key(primary, marker.names, headers))
        if not isinstance(item, Entry):
            return marker, None
        if item.body_name is None:
            return marker, MemoryObject(item, b"")
        f = self.disk.open_body(item)
        if f is None:
            return marker, None
        if item.stored.size <= self.memory.max_object:
            body = f.read()
            if item.stored.size < KEEP_FILE_FROM or not self.cfg.memory_sendfile:
                f.close()
                return marker, MemoryObject(item, body)
            return marker, MemoryObject(item, body, file=f)
        return marker, DiskObject(item, f)

    # -- writes ------------------------------------------------------------------------------------

    def remember(self, entry: Entry, memory_body: bytes | None) -> None:
        """Make a complete entry visible in the memory tier at once (no I/O), before it is persisted."""
        if entry.stored.vary:
            old = self.memory.get(entry.primary)
            variants = old.variants if isinstance(old, VaryMarker) and old.names == entry.stored.vary else ()
            keep = (*(v for v in variants if v != entry.key), entry.key)[-self.cfg.max_variants :]
            self.memory.put(entry.primary, VaryMarker(entry.stored.vary, keep))
        if memory_body is not None:
            self.memory.put(entry.key, MemoryObject(entry, memory_body))
        else:
            self.memory.discard(entry.key)

    async def persist(self, entry: Entry, body: SpooledBody) -> None:
        """Write a complete entry to the disk tier; the body file is moved into it, not copied."""
        evicted = await asyncio.to_thread(self._commit_disk, entry, body)
        for key in evicted:
            self.memory.discard(key)
        item = self.memory.peek(entry.key)
        same = isinstance(item, MemoryObject) and item.entry.body_name == entry.body_name
        if same and self.cfg.memory_sendfile and entry.stored.size >= KEEP_FILE_FROM:
            f = await asyncio.to_thread(self.disk.open_body, entry)
            if isinstance(item, MemoryObject) and self.memory.peek(entry.key) is item and item.file is None:
                item.file = f
            elif f is not None:
                f.close()

    def _commit_disk(self, entry: Entry, body: SpooledBody | None) -> list[str]:
        """Write the entry and its primary's vary marker; returns variant keys evicted by the cap."""
        marker: VaryMarker | None = None
        evicted: list[str] = []
        if entry.stored.vary:
            old = self.disk.get(entry.primary)
            variants: tuple[str, ...] = ()
            if isinstance(old, VaryMarker) and old.names == entry.stored.vary:
                variants = tuple(v for v in old.variants if v != entry.key)
            variants += (entry.key,)
            evicted = list(variants[: -self.cfg.max_variants])
            for key in evicted:
                self.disk.delete(key)
            marker = VaryMarker(entry.stored.vary, variants[-self.cfg.max_variants :])
        self.disk.put(entry, body, marker)
        return evicted

    async def update(self, entry: Entry, stored: StoredResponse) -> Entry:
        """Replace an entry's metadata, keeping its body (after a 304, or a soft purge)."""
        new = replace(entry, stored=stored)
        if stored.invalidated:
            self.generation += 1
        await asyncio.to_thread(self.disk.put, new, None, None)
        if stored.invalidated:
            self.generation += 1
        item = self.memory.get(entry.key)
        if isinstance(item, MemoryObject):
            self.memory.put(entry.key, MemoryObject(new, item.body, file=item.file))
        return new

    async def remove(self, primary: str) -> int:
        """Remove a primary key and all its variants from both tiers; returns how many entries went."""
        self.generation += 1
        removed = await asyncio.to_thread(self._remove_disk, primary)
        self.generation += 1  # lookups that read before the delete see a change either way
        for key in removed:
            self.memory.discard(key)
        item = self.memory.get(primary)
        if isinstance(item, VaryMarker):
            for key in item.variants:
                self.memory.discard(key)
        self.memory.discard(primary)
        return len([k for k in removed if k != primary]) or int(primary in removed)

    def _remove_disk(self, primary: str) -> list[str]:
        old = self.disk.delete(primary)
        keys = [primary] if old is not None else []
        if isinstance(old, VaryMarker):
            for key in old.variants:
                if self.disk.delete(key) is not None:
                    keys.append(key)
        return keys

    def entry_keys(self) -> Iterable[str]:
        return self.disk.keys()

    def close(self) -> None:
        self.disk.close()
