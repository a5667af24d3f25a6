"""The disk tier's purge index on a real index: a prefix is a range, a tag a lookup, both kept in step by
SQLite through writes, vary variants, soft updates, deletes and evictions; a purge reads what it matches.

Every test ends on counts: records read, entries the index counts, evictions.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from multidict import CIMultiDict

from edgecdn.cache import purge as store_purge
from edgecdn.cache.disk import DiskTier, SpooledBody, new_body_name
from edgecdn.cache.entry import Entry, VaryMarker
from edgecdn.cache.memory import MemoryObject, MemoryTier
from edgecdn.policy.key import variant_key
from edgecdn.policy.stored import StoredResponse
from tests.component.test_store import _close_stores, store_in  # noqa: F401 - the fixture closes the stores


def entry(key: str, *, tags: tuple[str, ...] = (), vary: tuple[str, ...] = (), primary: str = "") -> Entry:
    stored = StoredResponse(
        status=200, headers=(), size=0, response_time=0.0, initial_age=0.0, lifetime=1e9, tags=tags, vary=vary
    )
    return Entry(key, primary or key, stored)


class CountingReads:
    """Counts the disk tier's record reads (what a purge costs), passing each through."""

    def __init__(self, disk: DiskTier, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        real = disk.get

        def get(key: str) -> Entry | VaryMarker | None:
            self.reads += 1
            return real(key)

        monkeypatch.setattr(disk, "get", get)


async def test_prefix_and_tag_purges_read_only_what_they_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_in(tmp_path)
    for group in range(20):
        for i in range(10):
            key = f"/g{group:02d}/{i}?v=1"
            store.disk.put(entry(key, tags=(f"t{i}", "all")), None, 16)
    store.disk.put(entry("/g05x/other"), None, 16)  # shares the characters, not the prefix /g05/
    reads = CountingReads(store.disk, monkeypatch)
    matched = await store_purge.find(store, (), ("/g05/",), ("t3",))
    assert reads.reads == 10 + 20  # ten under the prefix, twenty carrying t3: nothing else was read
    assert sorted(e.key for e in matched.prefixes) == [f"/g05/{i}?v=1" for i in range(10)]
    assert sorted(e.key for e in matched.tags) == sorted(f"/g{g:02d}/3?v=1" for g in range(20))
    await store_purge.apply(store, matched, soft=False)
    assert store.disk.count() == 201 - 10 - 19
    assert store.disk.keys_with_tags(("t3",)) == []
    assert len(store.disk.keys_with_tags(("all",))) == 200 - 10 - 19


async def test_variants_soft_updates_and_the_memory_tier_are_found(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    names = ("x-v",)
    keys = [variant_key("/p/page", names, CIMultiDict({"X-V": v})) for v in "ab"]
    for key in keys:
        store.disk.put(entry(key, primary="/p/page", vary=names, tags=("old",)), None, 16)
    assert isinstance(store.disk.get("/p/page"), VaryMarker)
    first = store.disk.get(keys[0])
    assert isinstance(first, Entry)
    await store.update(first, replace(first.stored, tags=("new",)))  # a re-tag is an UPDATE of the row
    memory_only = entry("/p/memory", tags=("old",))
    store.memory.put(memory_only.key, MemoryObject(memory_only, b""))  # evicted from disk, still in memory
    by_prefix = await store_purge.find(store, (), ("/p/",), ())
    by_old = await store_purge.find(store, (), (), ("old",))
    by_new = await store_purge.find(store, (), (), ("new",))
    assert sorted(e.key for e in by_prefix.prefixes) == sorted([*keys, "/p/memory"])
    assert sorted(e.key for e in by_old.tags) == sorted([keys[1], "/p/memory"])
    assert [e.key for e in by_new.tags] == [keys[0]]
    await store_purge.apply(store, by_prefix, soft=False)
    assert store.disk.count() == 0 and store.disk.keys_with_prefix("/p/") == []
    assert store.memory.peek("/p/memory") is None


async def test_evictions_keep_the_tag_table_and_the_count_in_step(tmp_path: Path) -> None:
    store = store_in(tmp_path, disk_size=1024 * 1024)
    body = b"x" * 64 * 1024
    for i in range(40):
        key = f"/big/{i}"
        name = new_body_name(key)
        path = store.disk.tmp / name
        path.write_bytes(body)
        e = replace(entry(key, tags=("big",)), body_name=name)
        await store.persist(
            replace(e, stored=replace(e.stored, size=len(body))), SpooledBody(str(path), len(body))
        )
    left = store.disk.keys()
    usage = await store.usage()
    assert 0 < len(left) < 40
    assert usage["disk"]["items"] == len(left) == store.disk.count()
    assert sorted(store.disk.keys_with_tags(("big",))) == sorted(left)  # evicted rows left the tag table
    assert usage["disk"]["evicted"] >= 40 - len(left)  # metadata and body records are counted apart
    assert usage["disk"]["bytes"] <= 1024 * 1024 + 256 * 1024


def test_the_memory_tier_index_follows_puts_replacements_evictions_and_discards() -> None:
    tier = MemoryTier(60 * MemoryTier.ITEM_COST, 1 << 20)  # room for fewer objects than are put
    for i in range(200):
        key = f"/m/{i % 7}/{i % 90}"
        item = MemoryObject(entry(key, tags=(f"t{i % 5}",)), b"x" * (i % 3))
        tier.put(key, item)  # replaces the object under a key already there, evicts the oldest
        if i % 11 == 0:
            tier.discard(f"/m/{(i + 3) % 7}/{(i + 1) % 90}")
    tier.put("/m/1/marker", VaryMarker(("x-v",), ()))
    keys = tier.keys()
    held = {k: o for k in keys if isinstance(o := tier.peek(k), MemoryObject)}
    assert tier.evicted > 0 and 0 < len(held) < 90
    for prefix in ("/m/", "/m/1/", "/m/3/4", "/n/"):
        assert {o.entry.key for o in tier.objects_with_prefix(prefix)} == {
            k for k in held if k.startswith(prefix)
        }
    for tags in ({"t0"}, {"t1", "t4"}, {"none"}):
        assert {o.entry.key for o in tier.objects_with_tags(frozenset(tags))} == {
            k for k, o in held.items() if tags & set(o.entry.stored.tags)
        }
