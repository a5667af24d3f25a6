"""The origin pool's retry loop against a scripted fake client: tries, deadline, idempotency, health."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from edgecdn.config import OriginConfig, OriginServer
from edgecdn.errors import OriginBodyError, OriginConnectError, OriginError, OriginTimeout
from edgecdn.fetch.client import OriginResponse, loop_detected, with_cdn_loop
from edgecdn.fetch.pool import OriginPool
from edgecdn.fetch.resume import _mismatch, strong_etag

A, B, C = "http://a", "http://b", "http://c"


class FakeRaw:
    def __init__(self) -> None:
        self.released = self.closed = False

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


class FakeClient:
    """`script[origin]` is a status to answer, an error to raise, or a float: seconds to hang."""

    def __init__(self, script: dict[str, Any]) -> None:
        self.script = script
        self.sent: list[tuple[str, str, tuple[tuple[str, str], ...]]] = []

    async def send(
        self, origin: str, method: str, target: str, headers: Any, body: Any = None
    ) -> OriginResponse:
        self.sent.append((origin, method, headers))
        outcome = self.script[origin]
        if isinstance(outcome, float):
            await asyncio.sleep(outcome)
            outcome = 200
        if isinstance(outcome, OriginError):
            raise outcome
        return OriginResponse(outcome, (), FakeRaw(), origin)  # type: ignore[arg-type]


def pool(*urls: str, **cfg: Any) -> OriginPool:
    return OriginPool(tuple(OriginServer(u) for u in urls), replace(OriginConfig(), **cfg))


async def send(p: OriginPool, client: FakeClient, method: str = "GET", **kw: Any) -> OriginResponse:
    return await p.send(client, method, "/x", (), key="/x", client_ip="10.0.0.1", **kw)  # type: ignore[arg-type]


async def test_connect_error_moves_to_the_next_origin_and_adds_cdn_loop() -> None:
    client = FakeClient({A: OriginConnectError("refused"), B: 200})
    resp = await send(pool(A, B), client)
    assert (resp.origin, resp.status) == (B, 200)
    assert [o for o, _, _ in client.sent] == [A, B]
    assert ("CDN-Loop", "edgecdn") in client.sent[1][2]


async def test_retry_status_moves_on_but_the_last_try_is_answered() -> None:
    client = FakeClient({A: 503, B: 502})
    resp = await send(pool(A, B), client)
    assert (resp.origin, resp.status) == (B, 502)
    assert [o for o, _, _ in client.sent] == [A, B]


async def test_tries_bound_the_loop() -> None:
    client = FakeClient({A: OriginConnectError("x"), B: OriginConnectError("y"), C: 200})
    with pytest.raises(OriginConnectError):
        await send(pool(A, B, C, tries=2), client)
    assert [o for o, _, _ in client.sent] == [A, B]


async def test_non_idempotent_requests_are_not_retried() -> None:
    client = FakeClient({A: OriginConnectError("x"), B: 200})
    with pytest.raises(OriginConnectError):
        await send(pool(A, B), client, "POST", idempotent=False)
    client = FakeClient({A: 503, B: 200})
    assert (await send(pool(A, B), client, "POST", idempotent=False)).status == 503
    assert [o for o, _, _ in client.sent] == [A]


async def test_the_overall_deadline_stops_the_loop() -> None:
    client = FakeClient({A: 5.0, B: 200})
    with pytest.raises(OriginTimeout, match="deadline"):
        await send(pool(A, B, retry_deadline=0.05), client)
    assert [o for o, _, _ in client.sent] == [A]


async def test_passive_health_takes_a_failing_origin_out_of_first_place() -> None:
    p = pool(A, B, max_fails=2, down_time=60.0)
    client = FakeClient({A: OriginConnectError("x"), B: 200})
    await send(p, client)
    assert p.order("/x", None) == (A, B)  # one failure of two
    await send(p, client)
    assert p.order("/x", None) == (B, A)  # down: last, still tried if all else fails
    assert [s["state"] for s in p.states()] == ["down", "up"]
    assert p.metrics.origin_up.labels(A)._value.get() == 0


async def test_connection_counts_return_to_zero_on_release() -> None:
    p = pool(A, B, policy="least_conn")
    client = FakeClient({A: 200, B: 200})
    first = await send(p, client)
    second = await send(p, client)
    assert {first.origin, second.origin} == {A, B} and p.conns == [1, 1]
    first.release()
    second.abort()
    assert p.conns == [0, 0]


LOOP = [
    ("absent", (), False),
    ("other", (("CDN-Loop", "foo, bar"),), False),
    ("ours", (("CDN-Loop", "foo, edgecdn"),), True),
    ("ours-with-params", (("cdn-loop", "Edgecdn; v=1"),), True),
    ("second-field", (("CDN-Loop", "foo"), ("CDN-Loop", "edgecdn")), True),
]


@pytest.mark.parametrize(("headers", "looped"), [c[1:] for c in LOOP], ids=[c[0] for c in LOOP])
def test_rfc8586_loop_detection(headers: tuple[tuple[str, str], ...], looped: bool) -> None:
    assert loop_detected(headers, "edgecdn") is looped


def test_cdn_loop_appends_to_what_came_in() -> None:
    assert with_cdn_loop((("CDN-Loop", "a"), ("X", "1"), ("cdn-loop", "b")), "me") == (
        ("X", "1"),
        ("CDN-Loop", "a, b, me"),
    )


ETAG = '"v1"'
RESUME = [
    ("same-object", 206, ETAG, "bytes 100-299/300", None),
    ("changed-200", 200, ETAG, None, "answered 200"),
    ("other-etag", 206, '"v2"', "bytes 100-299/300", "ETag"),
    ("wrong-offset", 206, ETAG, "bytes 0-299/300", "does not start at 100"),
    ("other-length", 206, ETAG, "bytes 100-399/400", "total 400"),
]


@pytest.mark.parametrize(
    ("status", "etag", "crange", "why"), [r[1:] for r in RESUME], ids=[r[0] for r in RESUME]
)
def test_a_resume_continues_only_the_same_object(
    status: int, etag: str, crange: str | None, why: str | None
) -> None:
    headers = (("ETag", etag),) + ((("Content-Range", crange),) if crange else ())
    resp = OriginResponse(status, headers, FakeRaw())  # type: ignore[arg-type]
    got = _mismatch(resp, ETAG, "300", 100)
    assert got is None if why is None else why in (got or "")


def test_only_strong_etags_pin_a_body() -> None:
    assert strong_etag((("ETag", '"abc"'),)) == '"abc"'
    assert strong_etag((("ETag", 'W/"abc"'),)) is None
    assert strong_etag(()) is None
    assert OriginBodyError.retryable


def test_the_configured_policy_orders_the_pool() -> None:
    rr = pool(A, B, policy="round_robin")
    assert [rr.order("/x", None)[0] for _ in range(4)] == [A, B, A, B]
    hashed = pool(A, B, C, policy="uri_hash")
    assert len({hashed.order("/same", None) for _ in range(5)}) == 1
    backup = OriginPool((OriginServer(A, backup=True), OriginServer(B)), OriginConfig())
    assert backup.order("/x", None) == (B, A)


async def test_a_cancelled_send_frees_its_connection_slot() -> None:
    p = pool(A, B)
    task = asyncio.create_task(send(p, FakeClient({A: 5.0, B: 200})))
    await asyncio.sleep(0)  # the task runs up to the fake origin's hang
    assert p.conns == [1, 0]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert p.conns == [0, 0]
