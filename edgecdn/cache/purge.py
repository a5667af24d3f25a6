"""Purge on the store: find entries by URL key, key prefix or tag, then delete them or mark them stale.

Rules of this file: the walk of the disk index runs in a thread; a prefix or tag purge costs one index read
per stored entry (no tag index is kept: purges are rare, and a second index could drift from the first).
Callers doom in-flight fills first (Coalescer.purge), so nothing matched here is written back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from edgecdn.cache import slices
from edgecdn.cache.disk import DiskTier
from edgecdn.cache.entry import Entry, VaryMarker
from edgecdn.cache.memory import MemoryObject
from edgecdn.cache.store import Store


@dataclass(frozen=True, slots=True)
class Matched:
    """The entries (variants) each kind of selector found; an entry may appear under several kinds."""

    urls: tuple[Entry, ...]
    prefixes: tuple[Entry, ...]
    tags: tuple[Entry, ...]

    def entries(self) -> dict[str, Entry]:
        return {e.key: e for e in (*self.urls, *self.prefixes, *self.tags)}


async def find(store: Store, urls: Iterable[str], prefixes: Iterable[str], tags: Iterable[str]) -> Matched:
    """Entries under these primary keys, under keys starting with a prefix, or carrying a tag."""
    urls, prefixes, tag_set = tuple(urls), tuple(prefixes), frozenset(tags)
    by_url, scanned = await store.blocking(_find_disk, store.disk, urls, bool(prefixes or tag_set))
    memory_keys = store.memory.keys()
    in_memory = [e.entry for k in memory_keys if isinstance(e := store.memory.peek(k), MemoryObject)]
    by_url += [e for e in in_memory if e.primary in urls]
    candidates = scanned + in_memory
    return Matched(
        urls=_unique(by_url),
        prefixes=_unique(e for e in candidates if e.primary.startswith(prefixes)) if prefixes else (),
        tags=_unique(e for e in candidates if tag_set.intersection(e.stored.tags)),
    )


async def apply(store: Store, matched: Matched, *, soft: bool) -> None:
    """Hard: delete every matched primary (all its variants) from both tiers. Soft: mark each stale."""
    entries = matched.entries()
    if soft:
        for entry in entries.values():
            if not entry.stored.invalidated:
                await store.update(entry, replace(entry.stored, invalidated=True))
        return
    for primary in {e.primary for e in entries.values()}:
        await store.remove(primary)


def _find_disk(disk: DiskTier, urls: tuple[str, ...], scan: bool) -> tuple[list[Entry], list[Entry]]:
    by_url: list[Entry] = []
    for url in urls:
        by_url += _entries_of(disk, url) + slices.entries(disk, url)
    scanned: list[Entry] = []
    if scan:
        entry_keys = disk.keys()  # one walk of the index, then one read per entry
        for key in entry_keys:
            item = disk.get(key)
            if isinstance(item, Entry):
                scanned.append(item)
    return by_url, scanned


def _entries_of(disk: DiskTier, primary: str) -> list[Entry]:
    item = disk.get(primary)
    if isinstance(item, Entry):
        return [item]
    if isinstance(item, VaryMarker):
        return [e for key in item.variants if isinstance(e := disk.get(key), Entry)]
    return []


def _unique(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    return tuple({e.key: e for e in entries}.values())
