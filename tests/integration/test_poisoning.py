"""Cache poisoning: what one client's request fields cause never becomes what another client gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import EdgeFactory, OriginClient
from tests.integration.edge_client import get, session

UNKEYED = [
    "X-Forwarded-Host",
    "X-Forwarded-Scheme",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Host",
    "X-HTTP-Host-Override",
    "Forwarded",
    "Cookie",
    "User-Agent",
]


async def test_unkeyed_request_fields_do_not_reach_the_origin_on_a_fill(
    origin: OriginClient, edge: EdgeFactory
) -> None:
    """The origin reflects each field into X-Echo-*; a plain client afterwards gets no reflection."""
    url = edge(origin.url, "--no-access-log").url
    path = "/_test/blob/100?t=unkeyed"
    poison = {name: "evil.example" for name in UNKEYED}
    async with session() as s:
        first = await get(s, url + path, **poison, **{"X-Test-Echo": ", ".join(UNKEYED)})
        plain = await get(s, url + path)
    assert first.status == plain.status == 200
    assert plain.x_cache == "HIT"
    assert [h for h, v in plain.headers.items() if "evil" in v] == []
    seen = origin.requests(path)[0]["headers"]
    assert not {name.lower() for name in UNKEYED} & {
        name.lower() for name in seen if seen[name] == "evil.example"
    }
    assert seen["X-Forwarded-For"] == "127.0.0.1" and seen["Forwarded"] == "for=127.0.0.1"
    assert origin.hits(path) == 1


@pytest.mark.parametrize("override", ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"])
async def test_a_method_override_cannot_make_everybody_get_405(
    origin: OriginClient, edge: EdgeFactory, override: str
) -> None:
    url = edge(origin.url, "--no-access-log").url
    path = f"/_test/blob/100?t=override-{override}"
    hooks = {"X-Test-Status-If": f"{override} 405", "X-Set-Cache-Control": "max-age=600"}
    async with session() as s:
        attack = await get(s, url + path, **hooks, **{override: "DELETE"})
        plain = await get(s, url + path)
    assert attack.status == 200
    assert plain.status == 200 and plain.x_cache == "HIT"
    assert origin.hits(path) == 1


@pytest.mark.parametrize("status", ["400", "405", "413", "414", "431", "501"])
async def test_an_answer_about_the_request_is_never_stored(
    origin: OriginClient, edge: EdgeFactory, status: str
) -> None:
    """Oversized or odd request fields (HHO, HMC) make an origin answer 4xx: that answer is the sender's."""
    url = edge(origin.url, "--no-access-log").url
    path = f"/_test/blob/100?t=shaped-{status}"
    async with session() as s:
        bad = await get(
            s, url + path, **{"X-Test-Status": status, "X-Set-Cache-Control": "public, max-age=600"}
        )
        plain = await get(s, url + path)
    assert bad.status == int(status)
    assert plain.status == 200
    assert origin.hits(path) == 2


async def test_authorization_and_a_traverse_token_still_reach_the_origin_on_fills(
    origin: OriginClient, edge: EdgeFactory, tmp_path: Path
) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        '[[access.paths]]\nprefix = "/_test/blob/"\nmode = "token_traverse"\ntoken_header = "X-Token"\n'
    )
    url = edge(origin.url, "-c", str(cfg), "--no-access-log").url
    path = "/_test/blob/100?t=auth"
    public = {"X-Set-Cache-Control": "public, max-age=0", "X-Token": "alice"}
    async with session() as s:
        first = await get(s, url + path, **public)
        # A stored `public` answer may serve a request with Authorization; stale, it is revalidated with it.
        second = await get(s, url + path, **public, Authorization="Bearer secret")
    assert (first.status, second.status) == (200, 200)
    fill, revalidation = origin.requests(path)
    assert fill["headers"]["X-Token"] == "alice"
    assert revalidation["headers"]["Authorization"] == "Bearer secret"
    assert "If-None-Match" in revalidation["headers"] or "If-Modified-Since" in revalidation["headers"]
