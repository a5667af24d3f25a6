"""Read-while-write: one body being written to a temporary file while any number of clients read it.

Rules of this file: the fill belongs to the cache, not to a client; readers never block the writer, and the
writer never waits for readers. Small bodies are also kept in memory, so their readers need no thread hop,
and their file is made only when one is needed (a flush): a small body that arrives whole is written by the
index writer with its record (`spool`). Readers are done once the body is complete, not once it is stored.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from edgecdn.cache.disk import SpooledBody, new_file
from edgecdn.cache.disk import pwrite_all as _pwrite_all  # a name of this module: tests replace it

FLUSH_BYTES = 256 * 1024  # write to the file at least this often


class Fill:
    """The body of one response on its way into the cache."""

    def __init__(self, path: Path, fd: int, *, memory_limit: int) -> None:
        self.path = path
        self._fd = fd  # -1: no file yet (made by the first flush)
        self._memory_limit = memory_limit
        self.memory: bytearray | None = bytearray() if memory_limit > 0 else None
        self._whole: bytes | None = None  # `memory` as bytes, once asked for (whole())
        self._pending: list[bytes] = []  # received, not yet handed to the file
        self._pending_bytes = 0
        self._writing = b""  # handed to the file, write not finished yet
        self.received = 0
        self.flushed = 0
        self.done = False
        self.error: BaseException | None = None
        self.complete = False  # every byte arrived and the length checked out (commit may still run)
        self.adopted = False  # the file was moved into the disk tier; do not unlink it
        self._readers = 0
        self._changed = asyncio.Event()

    @classmethod
    async def create(cls, tmp_dir: Path, name: str, *, memory_limit: int) -> Fill:
        """A fill below `tmp_dir`. A body that may stay in memory gets its file at its first flush; a
        large one at once, so a disk that cannot take a file fails the fill before any byte is shown."""
        path = tmp_dir / name
        fd = -1 if memory_limit > 0 else await asyncio.to_thread(new_file, path)
        return cls(path, fd, memory_limit=memory_limit)

    # -- writer side -------------------------------------------------------------------------------

    async def append(self, chunk: bytes) -> None:
        """Take one chunk from the origin; flushes to the file when enough is pending."""
        self.received += len(chunk)
        if self.memory is not None:
            if self.received <= self._memory_limit:
                self.memory += chunk
            else:
                self.memory = None
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        self._wake()
        if self._pending_bytes >= FLUSH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        """Write what is pending, so readers reading from the file can see it."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._writing = data
        if self._fd < 0:
            self._fd = await asyncio.to_thread(new_file, self.path, data)
        else:
            await asyncio.to_thread(_pwrite_all, self._fd, data, self.flushed)
        self.flushed += len(data)
        self._writing = b""
        self._wake()

    def finish(self) -> None:
        """Every byte arrived and checked out: readers may finish (storing it may still be under way)."""
        self.complete = True
        self._wake()

    def whole(self) -> bytes | None:
        """The body as bytes when all of it is in memory: copied once, for the memory tier and the index."""
        if self.memory is None or len(self.memory) != self.received:
            return None
        if self._whole is None or len(self._whole) != self.received:
            self._whole = bytes(self.memory)
        return self._whole

    async def spool(self) -> SpooledBody:
        """The body as the disk tier adopts it: its file, flushed; or, never written, its bytes."""
        whole = self.whole()
        if self._fd < 0 and whole is not None:
            return SpooledBody(str(self.path), self.received, data=whole)
        await self.flush()
        if self._fd < 0:  # nothing was ever written: an empty body
            return SpooledBody(str(self.path), 0, data=b"")
        return SpooledBody(str(self.path), self.received)

    def end(self) -> None:
        """The fill is over (stored, or deliberately not kept): the file goes once no reader holds it."""
        self.done = True
        self._wake()
        self._maybe_close()

    def fail(self, error: BaseException) -> None:
        """The body broke off: readers raise `error`, and the file is removed (never served later)."""
        if self.done:
            return
        self.error = error
        self.done = True
        self._wake()
        self._maybe_close()

    # -- reader side -------------------------------------------------------------------------------

    def acquire(self) -> None:
        self._readers += 1

    def release(self) -> None:
        self._readers -= 1
        self._maybe_close()

    def fileno(self) -> int:
        """The body file; a reader holding the fill may sendfile() the bytes below `flushed` from it."""
        return self._fd

    async def read(self, offset: int, limit: int) -> bytes:
        """Up to `limit` bytes at `offset`, waiting for them to arrive; b"" at the end of the body."""
        while True:
            if self.error is not None:
                raise self.error
            changed = self._changed
            if self.memory is not None and offset < len(self.memory):
                return bytes(self.memory[offset : offset + limit])
            if offset < self.flushed:
                n = min(limit, self.flushed - offset)
                return await asyncio.to_thread(os.pread, self._fd, n, offset)
            # Received but not yet in the file: readers never wait for a flush to see a byte.
            base = self.flushed
            for buf in (self._writing, *self._pending):
                if offset < base + len(buf):
                    return bytes(buf[offset - base : offset - base + limit])
                base += len(buf)
            if self.done or self.complete:
                return b""
            await changed.wait()

    # -- internals ---------------------------------------------------------------------------------

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _maybe_close(self) -> None:
        if self.done and self._readers == 0 and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            if not self.adopted:
                self.path.unlink(missing_ok=True)
