"""The two races a strong purge must win, each forced with a gate instead of timing.

1. A fill whose store write is already under way when the purge arrives: the purge waits for the write,
   so its own delete runs after it (otherwise the old object would land on disk after "200").
2. A disk lookup that read the old entry just before the purge deleted it: it must neither answer with it
   nor promote it into the memory tier (otherwise memory would serve it after "200").
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from multidict import CIMultiDict

from edgecdn.cache import purge as store_purge
from edgecdn.cache.disk import SpooledBody
from edgecdn.cache.entry import Entry
from edgecdn.cache.store import Store
from edgecdn.config import CacheConfig, Config
from edgecdn.fetch.coalesce import Coalescer, Flight
from edgecdn.metrics import Metrics
from edgecdn.policy.stored import StoredResponse

STORED = StoredResponse(
    status=200,
    headers=(("ETag", '"v1"'),),
    size=5,
    response_time=0.0,
    initial_age=0.0,
    lifetime=1e9,
    etag='"v1"',
    tags=("t1",),
)


def coalescer() -> Coalescer:
    none: Any = None
    return Coalescer(none, none, none, Config(), Metrics())


async def test_purge_dooms_matching_flights_and_waits_for_their_store_write() -> None:
    c = coalescer()
    a, b = Flight("/a", "/a"), Flight("/b", "/b")
    for f in (a, b):
        c._active.add(f)
        c._flights[f.key] = f
    a.writing = asyncio.get_running_loop().create_future()  # a persist is running in a thread
    purge = asyncio.create_task(c.purge(lambda primary, _tags: primary == "/a"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not purge.done()  # still waiting for the write under way
    assert a.doomed and not b.doomed
    assert "/a" not in c._flights and "/b" in c._flights  # new requests start a fresh fill at once
    a.writing.set_result(None)
    assert await purge == 1
    assert await c.purge(lambda primary, _tags: primary == "/a") == 0  # doomed once


async def test_tag_purge_dooms_flights_whose_head_is_not_in_yet() -> None:
    c = coalescer()
    pending, tagged, other = Flight("/p", "/p"), Flight("/t", "/t"), Flight("/o", "/o")
    tagged.tags, other.tags = ("t1",), ("t2",)
    c._active.update({pending, tagged, other})
    assert await c.purge(lambda _p, tags: tags is None or "t1" in tags) == 2
    assert (pending.doomed, tagged.doomed, other.doomed) == (True, True, False)


async def stored(tmp_path: Path, key: str = "/obj") -> Store:
    store = Store(CacheConfig(dir=str(tmp_path / "cache")))
    body = tmp_path / "cache" / "tmp" / "body1"
    body.write_bytes(b"hello")
    entry = Entry(key, key, STORED, body_name="body1")
    await store.persist(entry, SpooledBody(str(body), 5))
    store.memory.discard(key)
    return store


async def test_a_lookup_that_raced_a_purge_neither_answers_nor_promotes_the_old_entry(tmp_path: Path) -> None:
    store = await stored(tmp_path)
    read_done, release = threading.Event(), threading.Event()
    real = store._lookup_disk

    def gated(primary: str, headers: Any) -> Any:
        found = real(primary, headers)  # read the old entry...
        read_done.set()
        release.wait(10)  # ...and hold it while the purge runs
        return found

    store._lookup_disk = gated  # type: ignore[method-assign]
    lookup = asyncio.create_task(store.lookup("/obj", CIMultiDict()))
    await asyncio.to_thread(read_done.wait, 10)
    await store.remove("/obj")
    release.set()
    assert await lookup is None
    assert store.memory.get("/obj") is None
    store._lookup_disk = real  # type: ignore[method-assign]
    assert await store.lookup("/obj", CIMultiDict()) is None
    store.close()


async def test_store_side_purge_finds_by_url_prefix_and_tag_and_soft_marks_stale(tmp_path: Path) -> None:
    store = await stored(tmp_path, "/img/a.png?x=1")
    by_url = await store_purge.find(store, ["/img/a.png?x=1"], [], [])
    by_prefix = await store_purge.find(store, [], ["/img/"], [])
    by_tag = await store_purge.find(store, [], [], ["t1"])
    none = await store_purge.find(store, ["/img/a.png"], ["/css/"], ["t2"])
    assert [e.key for e in (*by_url.urls, *by_prefix.prefixes, *by_tag.tags)] == ["/img/a.png?x=1"] * 3
    assert none.entries() == {}
    await store_purge.apply(store, by_tag, soft=True)
    soft = store.disk.get("/img/a.png?x=1")
    assert isinstance(soft, Entry) and soft.stored == replace(STORED, invalidated=True)
    await store_purge.apply(store, by_tag, soft=False)
    assert store.disk.get("/img/a.png?x=1") is None
    store.close()
