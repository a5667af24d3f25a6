"""A bug in the edge while answering: one logged traceback, a plain 500 to the client, the edge serves on."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecdn.serve.handler import Handler
from tests.component.test_memory_hit_path import edge_serving


async def test_an_unexpected_error_is_a_500_and_one_logged_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with edge_serving(tmp_path) as (_, client):
        calls = 0
        handle = Handler.handle

        async def broken_once(self: Handler, *args: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug")
            return await handle(self, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(Handler, "handle", broken_once)
        got = await client.get("/obj")
        assert (got.status, await got.json()) == (500, {"error": "internal"})
        assert got.headers["X-Cache"] == "ERROR"
        again = await client.get("/obj")  # the edge serves on
        assert again.status == 200 and len(await again.read()) == 5000
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "unhandled error answering GET /obj" in tracebacks[0].getMessage()
