"""The disk tier's index in batches (cache/batch.py): many fills share one thread hop and one transaction,
readers never wait for the index, a small body gets no file before it is stored, and a failed batch leaves
nothing behind. The index write is held at a threading gate, so the order is forced, never slept for.

Every test ends on what a reader received, what the index holds, and the files left on disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecdn.cache.disk import INLINE_MAX, DiskTier, SpooledBody, body_file, new_body_name
from edgecdn.cache.entry import Entry
from edgecdn.cache.memory import MemoryObject
from edgecdn.cache.store import Store
from edgecdn.errors import StorageError
from tests.component.test_coalescer import FakeClient, body_of, make, request, settle
from tests.component.test_store import _close_stores, store_in, stored  # noqa: F401 - the fixture closes stores


class HeldWrites:
    """Holds the disk tier's batched writes at a gate (in their thread) and counts the batches."""

    def __init__(self, disk: DiskTier, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()  # a batch is in its thread, at the gate
        self.sizes: list[int] = []
        real = disk.put_many

        def put_many(items: list[tuple[Entry, SpooledBody | None]], max_variants: int) -> list[object]:
            self.entered.set()
            assert self.gate.wait(10), "the test never opened the gate"
            self.sizes.append(len(items))
            return real(items, max_variants)  # type: ignore[return-value]

        monkeypatch.setattr(disk, "put_many", put_many)


@pytest.fixture
def held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Store, HeldWrites]]:
    store = store_in(tmp_path)
    writes = HeldWrites(store.disk, monkeypatch)
    yield store, writes
    writes.gate.set()


def small_entry(key: str, size: int) -> Entry:
    return Entry(key, key, stored(size), body_name=new_body_name(key))


async def commit_small(store: Store, key: str, body: bytes) -> Entry:
    entry = small_entry(key, len(body))
    fill = await store.new_fill(entry.body_name or "", memory_limit=store.cfg.memory_object_max)
    fill.acquire()
    try:
        await fill.append(body)
        fill.finish()
        await store.commit(entry, fill)
    finally:
        fill.end()
        fill.release()
    return entry


async def until_queued(store: Store, n: int) -> None:
    """Let the commits run up to their queued write (each needs a few loop steps, none waits on I/O)."""
    for _ in range(1000):
        if store.writes.pending >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{store.writes.pending} writes queued, not {n}")


def files_under(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


async def test_200_concurrent_fills_are_written_in_two_transactions_and_all_land(
    held: tuple[Store, HeldWrites], tmp_path: Path
) -> None:
    store, writes = held
    first = asyncio.create_task(commit_small(store, "/o/0", b"000" * 10))
    assert await asyncio.to_thread(writes.entered.wait, 10)  # its write is in its thread, held
    more = [asyncio.create_task(commit_small(store, f"/o/{i}", b"%03d" % i * 10)) for i in range(1, 200)]
    await until_queued(store, 199)  # ... and the other 199 wait behind it
    assert files_under(store.disk.tmp) == []  # small bodies: no file at all before the index writer's
    writes.gate.set()
    entries = await asyncio.gather(first, *more)
    assert writes.sizes == [1, 199]
    assert (store.writes.calls, store.writes.batches) == (200, 2)
    reopened = DiskTier(tmp_path / "cache", 1 << 30)  # what another process of the edge would read
    try:
        for i, entry in enumerate(entries):
            found = reopened.get(entry.key)
            assert isinstance(found, Entry) and found.body_name == entry.body_name
            assert reopened.small_body(found) == b"%03d" % i * 10  # in its record (INLINE_MAX)
        assert reopened.count() == 200
    finally:
        reopened.close()
    assert files_under(store.disk.tmp) == []


async def test_a_reader_has_the_whole_body_while_the_index_write_is_still_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = make(tmp_path, FakeClient())
    writes = HeldWrites(c.store.disk, monkeypatch)
    flight = c.join("/o", request())[0]
    try:
        assert await asyncio.wait_for(body_of(flight), 10) == b"abcdef"  # the index write is still held
        assert writes.sizes == [] and c.store.disk.get("/o") is None
        assert c.store.lookup_memory("/o", {}) is not None  # the next request is a hit meanwhile
    finally:
        writes.gate.set()
    await settle(c)
    assert writes.sizes == [1]
    found = c.store.disk.get("/o")
    assert isinstance(found, Entry) and found.stored.size == 6
    c.store.close()


async def test_a_body_that_cannot_be_written_fails_alone(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    good = small_entry("/good", 3)
    bad = small_entry("/bad", 3)
    results = store.disk.put_many(
        [
            (bad, SpooledBody(str(tmp_path / "no-such-dir" / "x"), 3, data=b"bad")),
            (good, SpooledBody(str(store.disk.tmp / "good"), 3, data=b"yes")),
        ],
        16,
        inline=False,  # bodies in files, as for slices and bodies above INLINE_MAX
    )
    assert isinstance(results[0], StorageError) and results[0].cause == "ENOENT"
    assert results[1] == []
    assert store.disk.get("/bad") is None and isinstance(store.disk.get("/good"), Entry)
    assert files_under(store.disk.tmp) == []


async def test_a_failed_transaction_fails_the_batch_and_leaves_no_body_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_in(tmp_path)
    items = [
        (small_entry(f"/o/{i}", 3), SpooledBody(str(store.disk.tmp / f"b{i}"), 3, data=b"abc"))
        for i in range(3)
    ]
    real_set = store.disk.index.set
    sets = 0

    def failing_set(key: object, value: object, **kw: object) -> object:
        nonlocal sets
        sets += 1
        if sets == 5:  # the third entry's body record: two entries are already in the transaction
            raise sqlite3.OperationalError("database or disk is full")
        return real_set(key, value, **kw)

    monkeypatch.setattr(store.disk.index, "set", failing_set)
    results = store.disk.put_many(items, 16, inline=False)  # files, so their removal is seen
    assert [r.cause for r in results if isinstance(r, StorageError)] == ["index"] * 3
    assert [store.disk.get(e.key) for e, _ in items] == [None] * 3  # rolled back together
    assert files_under(store.disk.tmp) == []
    index_dir = Path(store.disk.index.directory)
    for entry, _ in items:
        assert not (index_dir / body_file(entry.body_name or "")).exists()


async def test_a_large_fill_has_its_file_at_once_and_a_small_one_only_when_flushed(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    large = await store.new_fill("large", memory_limit=0)
    small = await store.new_fill("small", memory_limit=1 << 20)
    assert sorted(p.name for p in files_under(store.disk.tmp)) == ["large"]
    await small.append(b"x" * 10)
    await small.flush()
    assert sorted(p.name for p in files_under(store.disk.tmp)) == ["large", "small"]
    for fill in (large, small):
        fill.acquire()
        fill.end()
        fill.release()
    assert files_under(store.disk.tmp) == []


async def test_a_held_disk_lookup_does_not_hold_up_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_in(tmp_path)
    await commit_small(store, "/fast", b"fast")
    store.memory.discard("/fast")  # a disk hit from here on
    gate, entered = threading.Event(), threading.Event()
    real = store._lookup_disk

    def lookup(primary: str, headers: object) -> object:
        if primary == "/slow":
            entered.set()
            assert gate.wait(10), "the test never opened the gate"
        return real(primary, headers)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_lookup_disk", lookup)
    slow = asyncio.create_task(store.lookup("/slow", {}))
    try:
        assert await asyncio.to_thread(entered.wait, 10)
        fast = await asyncio.wait_for(store.lookup("/fast", {}), 10)  # while /slow is held in its thread
        assert fast is not None and fast.entry.key == "/fast" and not slow.done()
    finally:
        gate.set()
    assert await slow is None
    assert (store.lookups.calls, store.lookups.batches) == (2, 2)


async def test_a_write_queued_as_the_writer_finishes_is_still_written(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    await commit_small(store, "/a", b"a")  # woken by its write's result, before the writer task has ended
    # ... which has found its queue empty and is ending: the next write must start another.
    async with asyncio.timeout(10):  # (wait_for would run it in a task of its own, a loop turn later)
        second = await commit_small(store, "/b", b"b")
    assert isinstance(store.disk.get(second.key), Entry) and store.writes.batches == 2


# -- small bodies in their index record ------------------------------------------------------------------


def body_files(store: Store) -> list[Path]:
    return [p for p in Path(store.disk.index.directory).rglob("*.val")]


async def test_a_small_body_lives_in_its_record_and_survives_a_restart(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    small = await commit_small(store, "/small", b"s" * INLINE_MAX)
    larger = await commit_small(store, "/larger", b"l" * (INLINE_MAX + 1))
    assert [p.name for p in body_files(store)] == [f"{larger.body_name}.val"]  # the small one has no file
    assert files_under(store.disk.tmp) == []
    for memory_size in (1 << 20, 0):  # the memory tier on, and off: either way answered from the record
        restarted = store_in(tmp_path, memory_size=memory_size, memory_object_max=memory_size)
        found = await restarted.lookup("/small", {})
        assert isinstance(found, MemoryObject) and found.body == b"s" * INLINE_MAX
        assert found.entry.body_name == small.body_name
    assert await restarted.remove("/small") == 1
    assert restarted.disk.get("/small") is None and restarted.disk.index.get(("b", small.body_name)) is None


async def test_a_small_body_stored_in_a_file_by_an_earlier_version_is_still_read(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    entry = small_entry("/old", 3)
    path = store.disk.tmp / "old-body"
    path.write_bytes(b"old")
    store.disk.put(entry, SpooledBody(str(path), 3), 16)  # a file, as every body was before
    assert len(body_files(store)) == 1
    found = await store_in(tmp_path).lookup("/old", {})
    assert isinstance(found, MemoryObject) and found.body == b"old"


async def test_a_small_slice_keeps_its_file(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    entry = small_entry("/sliced#0", 3)
    store.disk.put(entry, SpooledBody(str(store.disk.tmp / "s0"), 3, data=b"abc"), 1, inline=False)
    assert [p.name for p in body_files(store)] == [f"{entry.body_name}.val"]


async def test_a_small_body_of_the_wrong_size_is_dropped_and_counted(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    entry = await commit_small(store, "/short", b"abc")
    store.disk.index.set(("b", entry.body_name), b"ab")  # damaged: two bytes where its entry says three
    again = store_in(tmp_path)  # its memory tier does not have it: read from the disk tier
    assert await again.lookup("/short", {}) is None
    assert again.disk.get("/short") is None and again.faults.counts == {"size-mismatch": 1}
