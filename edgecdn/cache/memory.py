"""The per-process memory tier: an LRU bounded in bytes, answered with no thread hop and no I/O."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import IO

from edgecdn.cache.entry import Entry, VaryMarker


@dataclass(slots=True)
class MemoryObject:
    entry: Entry
    body: bytes
    fields: tuple[tuple[str, str], ...] | None = None  # client-facing headers, built on first use
    # The persisted body file, kept open for large bodies so a hit can sendfile() it without a copy
    # (no lookup, no open, no thread: the handle was opened when the object was stored or promoted).
    file: IO[bytes] | None = None


def _close(item: MemoryObject | VaryMarker, *, keep: IO[bytes] | None) -> None:
    """Close an object's kept body file, unless its successor keeps using the same handle."""
    if isinstance(item, MemoryObject) and item.file is not None and item.file is not keep:
        item.file.close()


class MemoryTier:
    """Objects and vary markers by key; `max_bytes` bounds the sum of body sizes plus a per-item cost."""

    # Measured (loadtests/store_scale.py): an object with six short headers costs ~2.6 KB of the edge's
    # anonymous memory besides its body (records, strings, dict slot, allocator slack); its key and header
    # text are counted on top, so `max_bytes` bounds the tier's real footprint, not just its bodies.
    ITEM_COST = 2048

    def __init__(self, max_bytes: int, max_object: int) -> None:
        self.max_bytes = max_bytes
        self.max_object = max_object
        self.bytes = 0
        self.evicted = 0  # items dropped to stay within max_bytes
        self._items: OrderedDict[str, MemoryObject | VaryMarker] = OrderedDict()

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
        self.bytes += self._cost(item)
        while self.bytes > self.max_bytes and self._items:
            _, old = self._items.popitem(last=False)
            self.bytes -= self._cost(old)
            self.evicted += 1
            _close(old, keep=None)

    def discard(self, key: str, *, keep: IO[bytes] | None = None) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= self._cost(old)
            _close(old, keep=keep)

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
