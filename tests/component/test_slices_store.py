"""The slice record on a real disk tier: slices of one representation listed together, another
representation's slice drops them all in the same transaction, and removal or purge of the object takes
its slices with it (hard) or marks them stale (soft). Each test ends on what the index holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edgecdn.cache import purge, slices
from edgecdn.cache.disk import SpooledBody, new_body_name
from edgecdn.cache.entry import Entry
from edgecdn.cache.store import Store
from edgecdn.policy.slice import Representation
from edgecdn.policy.stored import StoredResponse
from tests.component.test_store import _close_stores, store_in

PRIMARY = "/video/big.mp4"
SIZE = 4096
__all__ = ["_close_stores"]  # the autouse fixture that closes each test's stores

REP = Representation('"v1"', 3 * SIZE, SIZE)
OTHER = Representation('"v2"', 3 * SIZE, SIZE)


async def put_slice(store: Store, index: int, rep: Representation = REP, tag: str = "t1") -> list[str]:
    key = slices.slice_key(PRIMARY, index)
    body = bytes([index]) * SIZE
    stored = StoredResponse(
        status=206,
        headers=(("ETag", rep.etag),),
        size=len(body),
        response_time=0.0,
        initial_age=0.0,
        lifetime=1e9,
        etag=rep.etag,
        tags=(tag,),
    )
    entry = Entry(key, PRIMARY, stored, body_name=new_body_name(key))
    path = store.disk.tmp / (entry.body_name or "")
    path.write_bytes(body)
    return await store.blocking(slices.put, store.disk, entry, SpooledBody(str(path), len(body)), index, rep)


async def read_slice(store: Store, index: int) -> bytes | None:
    found = await store.blocking(slices.open_slice, store.disk, PRIMARY, index)
    if found is None:
        return None
    rep, _, f = found
    assert rep in (REP, OTHER)
    with f:
        return f.read()


async def test_slices_of_one_representation_are_listed_together(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    await asyncio.gather(*(put_slice(store, i) for i in (2, 0, 1)))
    record = await store.blocking(slices.record, store.disk, PRIMARY)
    assert record is not None and record.representation == REP
    assert [i for i, _ in record.bodies] == [0, 1, 2]
    assert [await read_slice(store, i) for i in range(3)] == [bytes([i]) * SIZE for i in range(3)]
    assert not store.faults.counts


async def test_a_slice_of_another_representation_drops_all_the_others(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    for i in range(3):
        await put_slice(store, i)
    dropped = await put_slice(store, 1, OTHER)
    assert sorted(dropped) == [slices.slice_key(PRIMARY, i) for i in range(3)]
    record = await store.blocking(slices.record, store.disk, PRIMARY)
    assert record is not None and record.representation == OTHER and [i for i, _ in record.bodies] == [1]
    assert await read_slice(store, 0) is None and await read_slice(store, 2) is None
    assert sorted(store.entry_keys()) == [slices.slice_key(PRIMARY, 1)]


async def test_a_slice_entry_the_record_does_not_list_is_never_answered(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    await put_slice(store, 0)
    await store.blocking(slices.drop, store.disk, PRIMARY)
    assert await read_slice(store, 0) is None
    assert list(store.entry_keys()) == []


async def test_removing_the_object_removes_its_slices(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    for i in range(3):
        await put_slice(store, i)
    generation = store.generation
    assert await store.remove(PRIMARY) == 3
    assert store.generation > generation
    assert await store.blocking(slices.record, store.disk, PRIMARY) is None
    assert list(store.entry_keys()) == []
    assert not any(p.is_file() for p in (tmp_path / "cache" / "index").rglob("*.val"))


@pytest.mark.parametrize(
    ("selector", "kind"),
    [
        pytest.param({"urls": [PRIMARY]}, "urls", id="purge-by-url"),
        pytest.param({"prefixes": ["/video/"]}, "prefixes", id="purge-by-prefix"),
        pytest.param({"tags": ["t1"]}, "tags", id="purge-by-tag"),
    ],
)
async def test_purge_finds_the_slices_hard_removes_soft_marks_stale(
    tmp_path: Path, selector: dict[str, list[str]], kind: str
) -> None:
    store = store_in(tmp_path)
    for i in range(2):
        await put_slice(store, i)
    args = {"urls": [], "prefixes": [], "tags": [], **selector}
    matched = await purge.find(store, args["urls"], args["prefixes"], args["tags"])
    assert len(getattr(matched, kind)) == 2
    await purge.apply(store, matched, soft=True)
    for i in range(2):
        found = await store.blocking(slices.open_slice, store.disk, PRIMARY, i)
        assert found is not None
        found[2].close()
        assert found[1].stored.invalidated
    await purge.apply(store, matched, soft=False)
    assert await read_slice(store, 0) is None and list(store.entry_keys()) == []
