"""Blocking disk-tier calls queued by the loop and run by one thread hop per batch.

Rules of this file: queuing does no I/O on the loop; at most `parallel` batches of a queue are in threads
at a time, and each takes everything queued when it starts (up to `max_batch`): under load many calls
share one thread hop (and, for writes, one SQLite transaction and one cull), while a call alone waits for
nobody. With `parallel=1` calls run in the order they were queued (writes need that; lookups may overlap,
so a slow disk read does not hold up the ones behind it). Each caller awaits its own result, or the
StorageError that was its answer; a caller that stops waiting does not stop its call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from edgecdn.errors import StorageError

In = TypeVar("In")
Out = TypeVar("Out")


class Batched(Generic[In, Out]):
    def __init__(
        self, run: Callable[[list[In]], list[Out | StorageError]], max_batch: int, *, parallel: int = 1
    ) -> None:
        self._run_batch = run  # blocking: one result (or StorageError) per item, in order
        self._max_batch = max_batch
        self._parallel = parallel
        self._queue: list[tuple[In, asyncio.Future[Out]]] = []
        self._drainers: set[asyncio.Task[None]] = set()  # taking batches from the queue (at most `parallel`)
        self.batches = 0  # thread hops taken (calls / batches: what batching saved)
        self.calls = 0

    @property
    def pending(self) -> int:
        """Calls queued behind the batches in threads (if any)."""
        return len(self._queue)

    async def __call__(self, item: In) -> Out:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Out] = loop.create_future()
        self._queue.append((item, done))
        if len(self._drainers) < self._parallel:
            self._drainers.add(loop.create_task(self._drain()))
        return await done

    async def _drain(self) -> None:
        batch: list[tuple[In, asyncio.Future[Out]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                results: list[Out | BaseException]
                try:
                    results = list(await asyncio.to_thread(self._run_batch, [item for item, _ in batch]))
                except Exception as e:  # a bug, not a disk fault: each caller gets it, as from its own hop
                    results = [e] * len(batch)
                self.batches += 1
                self.calls += len(batch)
                for (_, done), result in zip(batch, results, strict=True):
                    if done.done():
                        continue  # its caller stopped waiting; what the call did stands
                    if isinstance(result, BaseException):
                        done.set_exception(result)
                    else:
                        done.set_result(result)
                batch = []
        finally:
            # Leaves the set in the same step that found the queue empty: a call queued after that
            # step starts a drainer of its own, never waits for one that is already done.
            self._drainers.discard(asyncio.current_task())
            # Cancelled with the loop: whoever still waits learns the call may not have run.
            for _, done in (*batch, *self._queue):
                if not done.done():
                    done.set_exception(StorageError("disk tier stopped", "shutdown"))
            self._queue = []
