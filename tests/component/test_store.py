"""The two-tier Store on a real disk tier in a temporary directory, with faults injected where the OS would
raise them: the vary marker under concurrent fills, bodies of the wrong size, a corrupt index, a full disk.

Every test ends on counters: Store.variants_evicted and the Faults counts by cause.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from edgecdn.cache import disk as disk_module
from edgecdn.cache import fill as fill_module
from edgecdn.cache import store as store_module
from edgecdn.cache.disk import INLINE_MAX, new_body_name
from edgecdn.cache.entry import Entry, VaryMarker
from edgecdn.cache.memory import MemoryObject
from edgecdn.cache.store import DiskObject, Store
from edgecdn.config import CacheConfig
from edgecdn.errors import StorageError
from edgecdn.metrics import Metrics
from edgecdn.policy.key import variant_key
from edgecdn.policy.stored import StoredResponse

PRIMARY = "/varies"
BIG = INLINE_MAX + 100  # a body in a file of its own (smaller ones live in their index record)
VARY = ("x-variant",)


def stored(size: int, vary: tuple[str, ...] = ()) -> StoredResponse:
    return StoredResponse(
        status=200, headers=(), size=size, response_time=0.0, initial_age=0.0, lifetime=1e9, vary=vary
    )


_OPEN: list[Store] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    """Each test's stores are closed when it ends: no SQLite file changes after the test is over."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def store_in(tmp_path: Path, **cfg: object) -> Store:
    store = Store(CacheConfig(dir=str(tmp_path / "cache"), **cfg), Metrics())  # type: ignore[arg-type]
    _OPEN.append(store)
    return store


def disk_full_after(writes: int) -> Callable[[int, bytes, int], None]:
    """A stand-in for the fill's file write: `writes` writes get through, then ENOSPC."""
    real, done = fill_module._pwrite_all, 0

    def write(fd: int, data: bytes, offset: int) -> None:
        nonlocal done
        done += 1
        if done > writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data, offset)

    return write


def headers(value: str) -> CIMultiDict[str]:
    return CIMultiDict({"X-Variant": value})


async def fill_and_commit(
    store: Store, primary: str, body: bytes, vary: tuple[str, ...] = (), value: str = ""
) -> Entry:
    key = variant_key(primary, vary, headers(value))
    entry = Entry(key, primary, stored(len(body), vary), body_name=new_body_name(key))
    fill = await store.new_fill(entry.body_name or "", memory_limit=store.cfg.memory_object_max)
    fill.acquire()
    try:
        await fill.append(body)
        await fill.flush()
        fill.complete = True
        await store.commit(entry, fill)
    finally:
        fill.end()
        fill.release()
    return entry


async def test_concurrent_fills_of_1500_variants_keep_at_most_the_cap_and_evict_the_oldest(
    tmp_path: Path,
) -> None:
    store = store_in(tmp_path)
    values = [f"v{i}" for i in range(1500)]
    await asyncio.gather(*(fill_and_commit(store, PRIMARY, v.encode(), VARY, v) for v in values))

    found = [await store.lookup(PRIMARY, headers(v)) for v in values]
    reachable = [v for v, f in zip(values, found, strict=True) if f is not None]
    marker = store.disk.get(PRIMARY)
    disk_keys, memory_keys = store.disk.keys(), store.memory.keys()
    on_disk = [k for k in disk_keys if k.startswith(PRIMARY + "\x00")]
    in_memory = [k for k in memory_keys if k.startswith(PRIMARY + "\x00")]
    assert isinstance(marker, VaryMarker) and len(marker.variants) == 16
    assert sorted(on_disk) == sorted(marker.variants)  # nothing the marker dropped stays on disk
    assert len(in_memory) <= 16 and set(in_memory) <= set(marker.variants) | set(on_disk)
    assert 1 <= len(reachable) <= 16
    assert store.variants_evicted == 1500 - 16  # every dropped variant counted, none lost to a race
    # The newest one committed is always kept: whatever the interleaving, it was the last one listed.
    newest = marker.variants[-1]
    assert newest in {variant_key(PRIMARY, VARY, headers(v)) for v in reachable}


async def test_a_variant_the_marker_does_not_list_is_never_answered(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    kept = await fill_and_commit(store, PRIMARY, b"kept", VARY, "a")
    dropped = await fill_and_commit(store, PRIMARY, b"dropped", VARY, "b")
    # A stray record of variant b (left by an older edge, or another process) without a marker listing.
    store.disk.put(replace(dropped, stored=replace(dropped.stored, vary=())), None, 16)
    store.disk.index.set(disk_module._meta(PRIMARY), disk_module.to_record(VaryMarker(VARY, (kept.key,))))
    store.memory.put(PRIMARY, VaryMarker(VARY, (kept.key,)))
    assert store.lookup_memory(PRIMARY, headers("b")) is None
    assert await store.lookup(PRIMARY, headers("b")) is None
    assert await store.lookup(PRIMARY, headers("a")) is not None


async def test_a_changed_vary_drops_the_old_variants_from_both_tiers(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    old = await fill_and_commit(store, PRIMARY, b"old", VARY, "a")
    await fill_and_commit(store, PRIMARY, b"new", ("x-other",), "a")
    assert store.memory.peek(old.key) is None and store.disk.get(old.key) is None
    assert store.variants_evicted == 1


@pytest.mark.parametrize("delta", [-1, +1], ids=["shorter", "longer"])
async def test_a_body_file_of_the_wrong_size_is_a_miss_dropped_and_counted(
    tmp_path: Path, delta: int
) -> None:
    store = store_in(tmp_path, memory_object_max=10, memory_size=1000)
    entry = await fill_and_commit(store, "/big", b"x" * BIG)
    found = await store.lookup("/big", {})
    assert isinstance(found, DiskObject)
    found.file.close()
    (path,) = (tmp_path / "cache" / "index").rglob("*.val")
    path.write_bytes(b"x" * (BIG + delta))
    assert await store.lookup("/big", {}) is None
    assert store.disk.get(entry.key) is None  # dropped: the next request fills it again
    assert store.faults.counts == {"size-mismatch": 1}


async def test_an_os_error_of_the_disk_tier_is_a_storage_error_counted_by_errno(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_in(tmp_path, memory_object_max=10, memory_size=1000)
    await fill_and_commit(store, "/big", b"x" * BIG)

    def eio(*_: object, **__: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(disk_module, "open", eio, raising=False)
    with pytest.raises(StorageError) as e:
        await store.lookup("/big", {})
    assert e.value.cause == "EIO"
    assert store.faults.counts == {"EIO": 1}


async def test_a_full_disk_mid_fill_is_a_counted_storage_error_that_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_in(tmp_path)
    monkeypatch.setattr(fill_module, "_pwrite_all", disk_full_after(1))
    fill = await store.new_fill("body", memory_limit=0)
    fill.acquire()
    await fill.append(b"a" * fill_module.FLUSH_BYTES)  # the first flush gets through
    with pytest.raises(StorageError) as e:
        await fill.append(b"b" * fill_module.FLUSH_BYTES)
    fill.fail(e.value)
    fill.release()
    assert e.value.cause == "ENOSPC"
    assert store.faults.counts == {"ENOSPC": 1}
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_a_corrupt_index_is_moved_aside_and_the_store_starts_empty(tmp_path: Path) -> None:
    index = tmp_path / "cache" / "index"
    index.mkdir(parents=True)
    (index / "cache.db").write_bytes(b"garbage" * 1000)
    store = store_in(tmp_path)
    assert store.disk.get("/anything") is None
    assert [p.name.startswith("index.corrupt-") for p in (tmp_path / "cache").glob("index.*")] == [True]
    assert store.faults.counts == {"corrupt-index": 1}
    store.close()


async def test_storage_faults_are_logged_once_per_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_in(tmp_path)
    for _ in range(50):
        store.faults.record(StorageError("disk on fire", "EIO"))
    store.faults.record(StorageError("disk full", "ENOSPC"))
    lines = [r.getMessage() for r in caplog.records if r.name == "edgecdn.storage"]
    assert len(lines) == 2 and store.faults.counts == {"EIO": 50, "ENOSPC": 1}


async def test_variants_another_process_stored_are_adopted_into_this_memory_tier(tmp_path: Path) -> None:
    one, other = store_in(tmp_path), store_in(tmp_path)  # two workers sharing one disk tier
    await fill_and_commit(one, PRIMARY, b"a", VARY, "a")
    await fill_and_commit(other, PRIMARY, b"b", VARY, "b")
    assert one.lookup_memory(PRIMARY, headers("b")) is None
    assert await one.lookup(PRIMARY, headers("b")) is not None  # from disk, listed by the disk marker
    hit_b, hit_a = one.lookup_memory(PRIMARY, headers("b")), one.lookup_memory(PRIMARY, headers("a"))
    assert hit_b is not None and hit_b.body == b"b"  # promoted and listed: the next hit is in memory
    assert hit_a is not None and hit_a.body == b"a"  # and its own variant was not lost in the merge


def test_a_locked_index_is_an_error_never_moved_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_in(tmp_path).close()  # a healthy index on disk

    def locked(*_: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(disk_module.DiskTier, "_open_index", locked)
    with pytest.raises(StorageError):
        store_in(tmp_path)
    assert list((tmp_path / "cache").glob("index.corrupt-*")) == []


async def test_a_body_read_failing_mid_lookup_is_a_storage_error_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_in(tmp_path)
    await fill_and_commit(store, "/small", b"s" * BIG)  # small enough for memory, in a file of its own
    store.memory.discard("/small")
    real_open = open

    class FailingRead:
        def __init__(self, *args: Any) -> None:
            self.f = real_open(*args)

        def fileno(self) -> int:
            return self.f.fileno()

        def read(self, *_: object) -> bytes:
            raise OSError(errno.EIO, "Input/output error")

        def close(self) -> None:
            self.f.close()

    monkeypatch.setattr(disk_module, "open", FailingRead, raising=False)
    with pytest.raises(StorageError) as e:
        await store.lookup("/small", {})
    assert e.value.cause == "EIO" and store.faults.counts == {"EIO": 1}


async def test_memory_objects_from_64_kib_keep_their_body_file_open_for_sendfile(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    kept = {}
    for size in (64 * 1024 - 1, 64 * 1024):
        entry = await fill_and_commit(store, f"/o{size}", b"x" * size)
        item = store.memory.peek(entry.key)
        assert isinstance(item, MemoryObject)
        kept[size] = item.file is not None
    restarted = store_in(tmp_path)  # promoted from the disk tier: the same rule
    for size in (64 * 1024 - 1, 64 * 1024):
        found = await restarted.lookup(f"/o{size}", headers(""))
        assert isinstance(found, MemoryObject) and len(found.body) == size
        kept[-size] = found.file is not None
    assert kept == {65535: False, 65536: True, -65535: False, -65536: True}


def test_a_low_open_files_limit_keeps_only_larger_bodies_open(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = {"soft": 1024}
    monkeypatch.setattr(store_module.resource, "getrlimit", lambda _: (limits["soft"], 1 << 20))
    low = store_module.keep_file_from(256 << 20)
    limits["soft"] = 1 << 20
    assert (low, store_module.keep_file_from(256 << 20)) == (512 * 1024, 64 * 1024)  # 256 MiB / 512 files
