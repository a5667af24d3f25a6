"""The per-process memory tier: an LRU bounded in bytes, answered with no thread hop and no I/O.

Rules of this file: every item enters through `_added` and leaves through `_removed`, which keep the byte
count and the purge index (object keys sorted, keys by tag) in step; a hit (`get`) touches neither.
"""

from __future__ import annotations

import bisect
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import IO

from edgecdn.cache.entry import Entry, VaryMarker


@dataclass(slots=True)
class MemoryObject:
    entry: Entry
    body: bytes
    fields: tuple[tuple[str, str], ...] | None = None  # client-facing headers, built on first use
    block: bytes | None = None  # `fields` serialized for HTTP/1.1, built with them
    # Wall-clock time until which decide() answers Fresh for a request without directives or
    # credentials (a memo the handler keeps; 0: unknown). A purge or revalidation replaces the object.
    fresh_until: float = 0.0
    # The persisted body file, kept open for large bodies so a hit can sendfile() it without a copy
    # (no lookup, no open, no thread: the handle was opened when the object was stored or promoted).
    file: IO[bytes] | None = None


def _close(item: MemoryObject | VaryMarker, *, keep: IO[bytes] | None) -> None:
    """Close an object's kept body file, unless its successor keeps using the same handle."""
    if isinstance(item, MemoryObject) and item.file is not None and item.file is not keep:
        item.file.close()


class MemoryTier:
    """Objects and vary markers by key; `max_bytes` bounds the sum of body sizes plus a per-item cost."""

    # Measured (loadtests/store_scale.py): an object with a 22-byte key and six short headers (~200 bytes of
    # text) costs 2.6-2.9 KB of the edge's anonymous memory besides its body (records, strings, dict slot,
    # purge index, allocator slack). ITEM_COST plus its key and header text is what an item counts, so
    # `max_bytes` bounds the tier's real footprint, not just its bodies.
    ITEM_COST = 2560

    def __init__(self, max_bytes: int, max_object: int) -> None:
        self.max_bytes = max_bytes
        self.max_object = max_object
        self.bytes = 0
        self.evicted = 0  # items dropped to stay within max_bytes
        self._items: OrderedDict[str, MemoryObject | VaryMarker] = OrderedDict()
        self._sorted: list[str] = []  # keys of objects (not markers), for purge by prefix
        self._tagged: dict[str, set[str]] = {}  # tag -> keys of the objects carrying it

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> MemoryObject | VaryMarker | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: str, item: MemoryObject | VaryMarker) -> None:
        keep = item.file if isinstance(item, MemoryObject) else None
        if isinstance(item, MemoryObject) and len(item.body) > self.max_object:
            self.discard(key)
            _close(item, keep=None)
            return
        self.discard(key, keep=keep)
        self._items[key] = item
        self._added(key, item)
        while self.bytes > self.max_bytes and self._items:
            old_key, old = self._items.popitem(last=False)
            self._removed(old_key, old, keep=None)
            self.evicted += 1

    def discard(self, key: str, *, keep: IO[bytes] | None = None) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._removed(key, old, keep=keep)

    def _added(self, key: str, item: MemoryObject | VaryMarker) -> None:
        self.bytes += self._cost(item)
        if isinstance(item, MemoryObject):
            bisect.insort(self._sorted, key)
            for tag in item.entry.stored.tags:
                self._tagged.setdefault(tag, set()).add(key)

    def _removed(self, key: str, item: MemoryObject | VaryMarker, *, keep: IO[bytes] | None) -> None:
        self.bytes -= self._cost(item)
        if isinstance(item, MemoryObject):
            i = bisect.bisect_left(self._sorted, key)
            if i < len(self._sorted) and self._sorted[i] == key:
                del self._sorted[i]
            for tag in item.entry.stored.tags:
                keys = self._tagged.get(tag)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._tagged[tag]
        _close(item, keep=keep)

    def objects_with_prefix(self, prefix: str) -> list[MemoryObject]:
        """Objects whose key starts with `prefix`: one range of the sorted keys."""
        start = bisect.bisect_left(self._sorted, prefix)
        found = []
        for key in itertools.islice(self._sorted, start, None):
            if not key.startswith(prefix):
                break
            item = self._items.get(key)
            if isinstance(item, MemoryObject):
                found.append(item)
        return found

    def objects_with_tags(self, tags: frozenset[str]) -> list[MemoryObject]:
        """Objects carrying any of `tags`."""
        keys = set().union(*(self._tagged.get(tag, ()) for tag in tags))
        return [item for key in keys if isinstance(item := self._items.get(key), MemoryObject)]

    def keys(self) -> list[str]:
        return list(self._items)

    def peek(self, key: str) -> MemoryObject | VaryMarker | None:
        """Like get, without counting as a use (for scans such as purge)."""
        return self._items.get(key)

    def _cost(self, item: MemoryObject | VaryMarker) -> int:
        if isinstance(item, VaryMarker):
            return self.ITEM_COST
        text = len(item.entry.key) + sum(len(n) + len(v) for n, v in item.entry.stored.headers)
        return self.ITEM_COST + text + len(item.body)
