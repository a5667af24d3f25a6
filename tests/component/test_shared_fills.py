"""The cross-worker fill lock (fetch/shared_fill.py): two SharedFills on one directory stand for two workers
(flock locks belong to an open file, so two opens of one stripe exclude each other even in one process)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edgecdn.fetch.shared_fill import SharedFills


async def test_a_second_worker_waits_for_the_first_and_is_told_it_waited(tmp_path: Path) -> None:
    a, b = SharedFills(str(tmp_path), wait_s=30), SharedFills(str(tmp_path), wait_s=30)
    order: list[str] = []
    release, inside = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with a.turn("/k") as waited:
            order.append(f"a in, waited={waited}")
            inside.set()
            await release.wait()
            order.append("a out")

    async def second() -> None:
        async with b.turn("/k") as waited:
            order.append(f"b in, waited={waited}")

    holder = asyncio.create_task(first())
    await inside.wait()
    waiter = asyncio.create_task(second())
    for _ in range(20):  # b polls meanwhile and must not get in
        await asyncio.sleep(0.005)
    assert order == ["a in, waited=False"]
    release.set()
    await asyncio.gather(holder, waiter)
    assert order == ["a in, waited=False", "a out", "b in, waited=True"]
    a.close()
    b.close()


async def test_fills_of_one_process_on_one_stripe_do_not_wait_for_each_other(tmp_path: Path) -> None:
    a, b = SharedFills(str(tmp_path), wait_s=30), SharedFills(str(tmp_path), wait_s=0.05)
    async with a.turn("/k") as first, a.turn("/k") as again:
        assert (first, again) == (False, False)
    async with b.turn("/k") as waited:  # released once both of a's turns ended
        assert waited is False
    a.close()
    b.close()


async def test_the_wait_is_bounded_then_the_fill_goes_ahead(tmp_path: Path) -> None:
    a, b = SharedFills(str(tmp_path), wait_s=30), SharedFills(str(tmp_path), wait_s=0.05)
    async with a.turn("/k"):
        async with b.turn("/k") as waited:  # gave up waiting: asks the origin itself
            assert waited is True
            async with b.turn("/k") as again:  # b does not hold it: its next fill waits too
                assert again is True
        async with b.turn("/other") as waited:  # another stripe (almost surely) is free
            assert waited is False
    a.close()
    b.close()
