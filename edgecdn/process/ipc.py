"""Master ↔ worker messages: one JSON object per line over a socketpair the worker inherits.

Rules of this file: the master asks (`{"id", "op", ...}`) and each worker answers with the same id once the
operation is in effect in that worker; a worker also says `{"ready": pid}` once it accepts connections. The
channel carries only what the master's admin API already verified; the worker trusts its master.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

Message = dict[str, Any]
LINE_LIMIT = 1 << 24  # a purge body is capped by admin.max_body (at most 1 GiB by config, 1 MiB default)


class Channel:
    """One end of a master-worker socketpair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Message]] = {}

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
        return cls(reader, writer)

    def send(self, message: Message) -> None:
        if not self.writer.is_closing():
            self.writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def receive(self) -> Message | None:
        """The next message; None once the other end is gone (or sent garbage)."""
        try:
            line = await self.reader.readline()
            message = json.loads(line) if line else None
        except (ConnectionError, ValueError):
            return None
        return message if isinstance(message, dict) else None

    async def ask(self, op: str, **fields: Any) -> Message:
        """Send `op` and wait for its answer (the caller bounds the wait)."""
        ident = next(self._ids)
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = answer
        try:
            self.send({"id": ident, "op": op, **fields})
            return await answer
        finally:
            self._waiting.pop(ident, None)

    def answered(self, message: Message) -> bool:
        """Route an answer to its `ask`; False for any other message."""
        answer = self._waiting.get(message.get("id", 0)) if "op" not in message else None
        if answer is None:
            return False
        if not answer.done():
            answer.set_result(message)
        return True

    async def serve(self, handle: Callable[[Message], Awaitable[Message]]) -> None:
        """Worker side: answer each request in order until the master goes away."""
        while (message := await self.receive()) is not None:
            if "op" in message:
                answer = await handle(message)
                self.send({"id": message.get("id"), **answer})
                with contextlib.suppress(ConnectionError):
                    await self.writer.drain()

    def close(self) -> None:
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(ConnectionError("worker gone"))
        self.writer.close()
