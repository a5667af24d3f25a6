"""Purge on the store: find entries by URL key, key prefix or tag, then delete them or mark them stale.

Rules of this file: disk index reads run in a thread; a prefix is one range of the key index and a tag a
lookup in the tag table (disk.py), so a purge costs in proportion to what it matches, not to the index.
The memory tier (which may hold an object the disk tier already evicted) is asked the same way, through its
own sorted keys and tag sets: no walk of either tier.
Callers doom in-flight fills first (Coalescer.purge), so nothing matched here is written back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from edgecdn.cache import slices
from edgecdn.cache.disk import DiskTier
from edgecdn.cache.entry import Entry, VaryMarker
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
    urls, prefixes, tag_tuple = tuple(urls), tuple(prefixes), tuple(sorted(set(tags)))
    by_url, by_prefix, by_tag = await store.blocking(_find_disk, store.disk, urls, prefixes, tag_tuple)
    memory = store.memory
    by_url += [o.entry for url in urls for o in memory.objects_with_prefix(url) if o.entry.primary == url]
    by_prefix += [
        o.entry for p in prefixes for o in memory.objects_with_prefix(p) if o.entry.primary.startswith(p)
    ]
    by_tag += [o.entry for o in memory.objects_with_tags(frozenset(tag_tuple))]
    return Matched(urls=_unique(by_url), prefixes=_unique(by_prefix), tags=_unique(by_tag))


async def apply(store: Store, matched: Matched, *, soft: bool) -> None:
    """Hard: delete every matched primary (all its variants) from both tiers. Soft: mark each stale."""
    entries = matched.entries()
    if soft:
        for entry in entries.values():
            if not entry.stored.invalidated:
                await store.update(entry, replace(entry.stored, invalidated=True))
        return
    await store.remove_many({e.primary for e in entries.values()})


def _find_disk(
    disk: DiskTier, urls: tuple[str, ...], prefixes: tuple[str, ...], tags: tuple[str, ...]
) -> tuple[list[Entry], list[Entry], list[Entry]]:
    by_url = [e for url in urls for e in (*_entries_of(disk, url), *slices.entries(disk, url))]
    by_prefix = [
        e
        for prefix in prefixes
        for key in disk.keys_with_prefix(prefix)
        if isinstance(e := disk.get(key), Entry) and e.primary.startswith(prefix)
    ]
    tag_set = frozenset(tags)
    by_tag = [
        e
        for key in disk.keys_with_tags(tags)
        if isinstance(e := disk.get(key), Entry) and not tag_set.isdisjoint(e.stored.tags)
    ]
    return by_url, by_prefix, by_tag


def _entries_of(disk: DiskTier, primary: str) -> list[Entry]:
    item = disk.get(primary)
    if isinstance(item, Entry):
        return [item]
    if isinstance(item, VaryMarker):
        return [e for key in item.variants if isinstance(e := disk.get(key), Entry)]
    return []


def _unique(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    return tuple({e.key: e for e in entries}.values())
