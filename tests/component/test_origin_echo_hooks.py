"""The test origin's hooks for poisoning tests: X-Test-Echo reflects request fields, X-Test-Status-If."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from origin.server import make_app


async def hooked(aiohttp_client: AiohttpClient, tmp_path: Path) -> TestClient:  # type: ignore[type-arg]
    (tmp_path / "a.txt").write_text("a")
    return await aiohttp_client(make_app(tmp_path, test_hooks=True))


async def test_echo_reflects_only_the_named_fields_that_were_sent(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client = await hooked(aiohttp_client, tmp_path)
    headers = {"X-Test-Echo": "X-Forwarded-Host, X-Absent", "X-Forwarded-Host": "evil.example"}
    async with client.get("/a.txt", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["X-Echo-X-Forwarded-Host"] == "evil.example"
        assert "X-Echo-X-Absent" not in resp.headers
    async with client.get("/a.txt", headers={"X-Forwarded-Host": "evil.example"}) as plain:
        assert not [h for h in plain.headers if h.lower().startswith("x-echo-")]


async def test_status_if_answers_only_when_the_field_was_sent(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client = await hooked(aiohttp_client, tmp_path)
    hook = {"X-Test-Status-If": "X-HTTP-Method-Override 405"}
    async with client.get("/a.txt", headers={**hook, "X-HTTP-Method-Override": "DELETE"}) as resp:
        assert resp.status == 405
    async with client.get("/a.txt", headers=hook) as resp:
        assert resp.status == 200
    async with client.get("/a.txt", headers={"X-Test-Status-If": "nonsense"}) as resp:
        assert resp.status == 400
