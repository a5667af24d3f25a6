"""A slice fill in the coalescer against a scripted origin: what it asks (Range, If-Range), what it keeps
(the disk record, never the memory tier), and what it refuses without reading a byte of the body."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecdn.cache import slices
from edgecdn.fetch.coalesce import Failed, FillRequest, Storing, Uncacheable
from edgecdn.policy.slice import Refused, Representation, SliceAsk
from tests.component.test_coalescer import Answer, FakeClient, make, settle

SIZE = 4096
ETAG = '"v1"'
REP = Representation(ETAG, 3 * SIZE, SIZE)


def slice_request(index: int, expect: Representation | None = None) -> FillRequest:
    return FillRequest(
        primary="/v", target="/v", path="/v", headers=(), client_ip=None, slice=SliceAsk(index, SIZE, expect)
    )


def part(index: int, etag: str = ETAG) -> Answer:
    start = index * SIZE
    headers = (
        ("Cache-Control", "max-age=600"),
        ("ETag", etag),
        ("Content-Range", f"bytes {start}-{start + SIZE - 1}/{3 * SIZE}"),
        ("Content-Length", str(SIZE)),
    )
    return Answer(206, headers, (bytes([index]) * SIZE,))


async def test_a_slice_is_asked_by_range_and_if_range_and_kept_in_the_record_only(tmp_path: Path) -> None:
    client = FakeClient(answer=part(1))
    c = make(tmp_path, client, memory_object_max=2 * SIZE)
    flight, _ = c.join(slices.slice_key("/v", 1), slice_request(1, REP))
    head = await flight.head
    flight.leave()
    await settle(c)
    assert isinstance(head, Storing) and flight.part is not None
    assert flight.part.representation == REP
    sent = dict(client.sent[0])
    assert (sent["Range"], sent["If-Range"]) == (f"bytes={SIZE}-{2 * SIZE - 1}", ETAG)
    found = await c.store.blocking(slices.open_slice, c.store.disk, "/v", 1)
    assert found is not None
    with found[2] as f:
        assert (found[0], f.read()) == (REP, bytes([1]) * SIZE)
    assert c.store.memory.get(slices.slice_key("/v", 1)) is None  # the disk record is the one truth
    c.store.close()


@pytest.mark.parametrize(
    ("answer", "expect", "reason"),
    [
        pytest.param(
            Answer(200, (("ETag", '"v2"'),), (b"x" * SIZE,)), REP, Refused.CHANGED, id="if-range-failed"
        ),
        pytest.param(
            Answer(200, (("ETag", ETAG),), (b"x" * SIZE,)), None, Refused.NOT_PARTIAL, id="no-ranges"
        ),
        pytest.param(part(0, etag='W/"v1"'), None, Refused.NO_STRONG_ETAG, id="weak-etag"),
    ],
)
async def test_a_refused_slice_answer_is_aborted_unread_and_nothing_is_stored(
    tmp_path: Path, answer: Answer, expect: Representation | None, reason: Refused
) -> None:
    client = FakeClient(answer=answer)
    c = make(tmp_path, client)
    flight, _ = c.join(slices.slice_key("/v", 0), slice_request(0, expect))
    head = await flight.head
    flight.leave()
    await settle(c)
    assert head == Uncacheable(reason, answer.status)
    assert client.raws[0].closed and not client.raws[0].released  # the connection is dropped, not drained
    assert await c.store.blocking(slices.record, c.store.disk, "/v") is None
    assert list(c.store.entry_keys()) == []
    c.store.close()


async def test_an_origin_error_on_a_slice_fails_the_fill_and_keeps_the_stored_slices(tmp_path: Path) -> None:
    client = FakeClient(answer=part(0))
    c = make(tmp_path, client)
    first, _ = c.join(slices.slice_key("/v", 0), slice_request(0))
    await first.head
    first.leave()
    await settle(c)
    client.answer = Answer(503, (("Retry-After", "1"),), (b"busy",))
    flight, _ = c.join(slices.slice_key("/v", 1), slice_request(1, REP))
    head = await flight.head
    flight.leave()
    await settle(c)
    assert isinstance(head, Failed) and head.error.status == 503  # a failure, not a changed object
    record = await c.store.blocking(slices.record, c.store.disk, "/v")
    assert record is not None and record.body_of(0)  # slice 0 is still there
    c.store.close()
