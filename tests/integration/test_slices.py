"""Slicing through a real edge (RFC 9111 §3.3-3.4, nginx's slice module): a Range pulls only the slices
it covers, one origin request per slice however many clients ask, a whole GET is stitched from stored
slices, and slices of a changed or purged object are never served. Each test ends on what the origin saw.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import aiohttp
import pytest

from edgecdn.control.admin_client import signed_headers
from edgecdn.control.signing import generate_key, parse_key
from origin.blob import blob_bytes, blob_etag
from tests.integration.conftest import OriginClient, Proc
from tests.integration.edge_client import Got, fills_stored, get, metric, origin_and_edge, session

MIB = 2**20
KEY = generate_key("slices")
CONFIG = f"""
[admin]
keys = ["{KEY}"]

[cache]
slice_size = "1MiB"

[[cache.rules]]
prefix = "/_test/blob/"
slice = true
"""
Stack = tuple[OriginClient, Proc, str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with origin_and_edge(tmp_path_factory.mktemp("slices"), CONFIG, "--no-access-log") as s:
        yield s


def ranges_seen(origin: OriginClient, path: str) -> list[tuple[str | None, str | None]]:
    """(Range, If-Range) of every request the origin saw for `path`, oldest first."""
    return [(r["headers"].get("Range"), r["headers"].get("If-Range")) for r in origin.requests(path)]


async def stored_get(s: aiohttp.ClientSession, admin: str, url: str, fills: int, **headers: str) -> Got:
    """GET, then wait (bounded) until `fills` more fills are stored: the next request sees them."""
    before = await metric(s, admin, "edgecdn_fills_total", result="stored")
    got = await get(s, url, **headers)
    await fills_stored(s, admin, before + fills)
    return got


async def purge(s: aiohttp.ClientSession, admin: str, **payload: object) -> dict[str, object]:
    raw = json.dumps(payload).encode()
    headers = signed_headers(parse_key(KEY), "POST", "/_edge/purge", raw)
    async with s.post(admin + "/_edge/purge", data=raw, headers=headers) as r:
        assert r.status == 200, await r.text()
        result: dict[str, object] = await r.json()
        return result


async def test_first_byte_of_a_48_mib_object_pulls_one_slice_then_hits(stack: Stack) -> None:
    origin, edge, admin = stack
    size = 48 * MIB
    path = f"/_test/blob/{size}"
    async with session() as s:
        first = await stored_get(s, admin, edge.url + path, 1, Range="bytes=0-0")
        again = await get(s, edge.url + path, Range="bytes=0-0")
    for got in (first, again):
        assert got.status == 206
        assert got.body == blob_bytes(size, "1", 0, 1)
        assert got.headers["Content-Range"] == f"bytes 0-0/{size}"
        assert got.headers["ETag"] == blob_etag(size, "1")
    assert (first.x_cache, again.x_cache) == ("MISS", "HIT")
    assert ranges_seen(origin, path) == [(f"bytes=0-{MIB - 1}", None)]  # one slice, 1 MiB of 48


async def test_two_clients_on_one_middle_slice_make_one_origin_request(stack: Stack) -> None:
    origin, edge, admin = stack
    size = 48 * MIB
    path = f"/_test/blob/{size}?t=middle"
    lo, hi = 20 * MIB + 1000, 20 * MIB + 2999
    async with session() as s:
        before = await metric(s, admin, "edgecdn_coalesced_waiters_total")
        owner = asyncio.create_task(
            get(s, edge.url + path, Range=f"bytes={lo}-{hi}", **{"X-Test-Gate": "mid"})
        )
        await origin.await_gate("mid", 1)
        waiter = asyncio.create_task(get(s, edge.url + path, Range=f"bytes={lo + 5}-{hi}"))
        for _ in range(500):  # bounded: the second client is inside the edge, joined to the one fill
            if await metric(s, admin, "edgecdn_coalesced_waiters_total") > before:
                break
            await asyncio.sleep(0.01)
        origin.release("mid")
        got_owner, got_waiter = await asyncio.gather(owner, waiter)
    assert (got_owner.status, got_waiter.status) == (206, 206)
    assert got_owner.body == blob_bytes(size, "1", lo, hi + 1)
    assert got_waiter.body == blob_bytes(size, "1", lo + 5, hi + 1)
    assert ranges_seen(origin, path) == [(f"bytes={20 * MIB}-{21 * MIB - 1}", None)]


async def test_whole_get_streams_missing_slices_then_hits_with_the_exact_bytes(stack: Stack) -> None:
    origin, edge, admin = stack
    size = 3 * MIB + 12345  # the last slice is short
    path = f"/_test/blob/{size}"
    async with session() as s:
        part = await stored_get(s, admin, edge.url + path, 1, Range=f"bytes={MIB + 5}-{MIB + 9}")  # slice 1
        whole = await stored_get(s, admin, edge.url + path, 3)  # 0, 2, 3 from the origin, 1 from the cache
        hit = await get(s, edge.url + path)
        tail = await get(s, edge.url + path, Range="bytes=-10")
    want = blob_bytes(size, "1")
    assert part.body == want[MIB + 5 : MIB + 10]
    assert (whole.status, whole.x_cache, whole.body == want) == (200, "MISS", True)
    assert (hit.status, hit.x_cache, hit.body == want) == (200, "HIT", True)
    assert int(hit.headers["Content-Length"]) == size and "Content-Range" not in hit.headers
    assert (tail.status, tail.x_cache, tail.body) == (206, "HIT", want[-10:])
    assert sorted(r for r, _ in ranges_seen(origin, path)) == sorted(
        f"bytes={i * MIB}-{(i + 1) * MIB - 1}" for i in range(4)
    )


async def test_a_changed_validator_drops_every_stored_slice(stack: Stack) -> None:
    origin, edge, admin = stack
    size = 4 * MIB
    path = f"/_test/blob/{size}?t=changed"
    old, new = blob_etag(size, "1"), '"changed"'
    async with session() as s:
        first = await stored_get(s, admin, edge.url + path, 1, Range="bytes=0-0")
        # The origin now says another ETag: the slice asked with If-Range: old comes back whole (200).
        changed = await stored_get(
            s, admin, edge.url + path, 1, Range=f"bytes={3 * MIB}-{3 * MIB}", **{"X-Set-ETag": new}
        )
        # Slice 0 of the old representation is gone: asked again, never stitched to the new one.
        back = await get(s, edge.url + path, Range="bytes=0-0")
    assert (first.headers["ETag"], changed.headers["ETag"], back.headers["ETag"]) == (old, new, old)
    assert (changed.status, changed.x_cache) == (206, "MISS")
    assert (back.status, back.x_cache) == (206, "MISS")
    assert back.body == first.body == blob_bytes(size, "1", 0, 1)
    slice0, slice3 = f"bytes=0-{MIB - 1}", f"bytes={3 * MIB}-{4 * MIB - 1}"
    assert ranges_seen(origin, path) == [
        (slice0, None),
        (slice3, old),  # If-Range failed: 200, aborted, the record dropped
        (slice3, None),
        (slice0, new),  # the record now says `new`: If-Range failed again
        (slice0, None),
    ]


@pytest.mark.parametrize(
    ("soft", "after", "validator"),
    [(False, "MISS", None), (True, "REVALIDATED", blob_etag(5 * MIB, "1"))],
    ids=["hard-purge-refetches", "soft-purge-revalidates"],
)
async def test_purge_while_slices_are_stored_is_never_answered_from_the_old_slice(
    stack: Stack, soft: bool, after: str, validator: str | None
) -> None:
    origin, edge, admin = stack
    size = 5 * MIB
    path = f"/_test/blob/{size}?t=purge-{soft}"
    asked = {"Range": f"bytes={2 * MIB}-{2 * MIB + 99}"}
    async with session() as s:
        got: list[Got] = []
        got.append(await stored_get(s, admin, edge.url + path, 1, **asked))
        got.append(await get(s, edge.url + path, **asked))
        result = await purge(s, admin, urls=[path], soft=soft)
        if soft:  # revalidated: the 304 updates the stored slice before the answer
            got.append(await get(s, edge.url + path, **asked))
        else:  # fetched again: wait until it is stored, or the next request may join its fill
            got.append(await stored_get(s, admin, edge.url + path, 1, **asked))
        got.append(await get(s, edge.url + path, **asked))
    assert [g.x_cache for g in got] == ["MISS", "HIT", after, "HIT"]
    assert {g.body for g in got} == {blob_bytes(size, "1", 2 * MIB, 2 * MIB + 100)}
    assert result["purged"] == {"urls": 1, "prefixes": 0, "tags": 0, "in_flight": 0}
    # The slice asked again after the purge: whole after a hard one, conditionally after a soft one.
    seen = [r["headers"].get("If-None-Match") for r in origin.requests(path)]
    assert seen == [None, validator]


async def test_an_object_the_origin_will_not_slice_takes_the_ordinary_path(stack: Stack) -> None:
    origin, edge, admin = stack
    size = 2 * MIB
    path = f"/_test/blob/{size}?t=weak"
    weak = {"X-Set-ETag": 'W/"weak"'}  # no strong validator: two ranges cannot be proven one object
    async with session() as s:
        first = await stored_get(s, admin, edge.url + path, 1, Range="bytes=10-19", **weak)
        again = await get(s, edge.url + path, Range="bytes=10-19", **weak)
    for got in (first, again):
        assert (got.status, got.body) == (206, blob_bytes(size, "1", 10, 20))
    assert (first.x_cache, again.x_cache) == ("MISS", "HIT")
    # One refused slice request (aborted), then the ordinary fill; the hit asks nothing more.
    assert ranges_seen(origin, path) == [(f"bytes=0-{MIB - 1}", None), (None, None)]


async def test_head_conditionals_and_several_ranges_on_a_sliced_object(stack: Stack) -> None:
    origin, edge, admin = stack
    size = 3 * MIB
    path = f"/_test/blob/{size}?t=details"
    etag = blob_etag(size, "1")
    async with session() as s:
        await stored_get(s, admin, edge.url + path, 1, Range="bytes=0-0")  # slice 0 stored by now
        async with s.head(edge.url + path) as r:
            head = (
                r.status,
                r.headers["Content-Length"],
                r.headers["ETag"],
                r.headers["X-Cache"],
                await r.read(),
            )
        not_modified = await get(s, edge.url + path, **{"If-None-Match": etag})
        several = await get(s, edge.url + path, Range=f"bytes=0-0,{2 * MIB}-{2 * MIB + 1}")
        stale_if_range = await get(s, edge.url + path, Range="bytes=0-0", **{"If-Range": '"other"'})
    assert head == (200, str(size), etag, "MISS", b"")  # the length is known, slices 1 and 2 are not
    assert (not_modified.status, not_modified.body) == (304, b"")
    # RFC 9110 §14.2: several ranges are sent as the one range that spans them.
    assert several.status == 206
    assert several.headers["Content-Range"] == f"bytes 0-{2 * MIB + 1}/{size}"
    assert several.body == blob_bytes(size, "1", 0, 2 * MIB + 2)
    # RFC 9110 §13.1.5: an If-Range that names another representation gets the whole object.
    assert (stale_if_range.status, stale_if_range.body) == (200, blob_bytes(size, "1"))
    assert sorted(r for r, _ in ranges_seen(origin, path)) == [
        f"bytes={i * MIB}-{(i + 1) * MIB - 1}" for i in range(3)
    ]
