"""The signed admin API with real processes: authentication, purge (hard, soft, in-flight), push."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import xxhash
import yarl

from edgecdn.control.admin_client import signed_headers
from edgecdn.control.signing import generate_key, parse_key
from tests.integration.conftest import OriginClient, Proc
from tests.integration.edge_client import Got, admin_url, get, metric, session, start_edge

KEY = generate_key("cfgkey")  # from [admin] keys in the config file
ROTATED = generate_key("flagkey")  # from --admin-key: both are accepted at once
MAX_BODY = 64 * 1024
MAX_OBJECT = 200 * 1024


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OriginClient, Proc, str, Path]]:
    root = tmp_path_factory.mktemp("root")
    cache = tmp_path_factory.mktemp("cache")
    config = tmp_path_factory.mktemp("cfg") / "edge.toml"
    config.write_text(
        f'[admin]\nkeys = ["{KEY}"]\nmax_body = {MAX_BODY}\n\n[cache]\nmax_object_size = {MAX_OBJECT}\n'
    )
    origin_proc = Proc("origin", "serve", str(root), "--listen", "127.0.0.1:0", "--test-hooks")
    edge = start_edge(origin_proc.url, cache, "-c", str(config), "--admin-key", ROTATED, "--no-access-log")
    try:
        yield OriginClient(origin_proc, root), edge, admin_url(edge), cache
    finally:
        edge.stop()
        origin_proc.stop()


Stack = tuple[OriginClient, Proc, str, Path]


async def admin_call(
    s: aiohttp.ClientSession,
    admin: str,
    method: str,
    path: str,
    body: bytes | object = b"",
    *,
    key: str = KEY,
    sign_body: bytes | None = None,
    now_shift: float = 0.0,
    headers: dict[str, str] | None = None,
) -> Got:
    """A signed admin request; `sign_body` signs other bytes than are sent (tampering)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    signed = signed_headers(parse_key(key), method, path, raw if sign_body is None else sign_body)
    if now_shift:
        signed = _shifted(parse_key(key), method, path, raw, now_shift)
    url = yarl.URL(admin + path, encoded=True)  # sent exactly as signed: no client-side normalization
    async with s.request(method, url, data=raw, headers={**signed, **(headers or {})}) as r:
        return Got(r.status, r.headers, await r.read())


def _shifted(key: object, method: str, path: str, raw: bytes, shift: float) -> dict[str, str]:
    from edgecdn import clock
    from edgecdn.control.signing import AdminKey, body_digest, sign

    assert isinstance(key, AdminKey)
    return sign(key, method, path, body_digest(raw), clock.now() + shift)


async def purge(s: aiohttp.ClientSession, admin: str, **payload: object) -> dict[str, object]:
    got = await admin_call(s, admin, "POST", "/_edge/purge", payload)
    assert got.status == 200, got.body
    result: dict[str, object] = json.loads(got.body)
    return result


async def cached(s: aiohttp.ClientSession, url: str, **headers: str) -> Got:
    """GET twice: the second answer must be a hit."""
    await get(s, url, **headers)
    got = await get(s, url, **headers)
    assert got.x_cache == "HIT", got.headers
    return got


# -- authentication ------------------------------------------------------------------------------


async def test_unsigned_tampered_replayed_expired_and_unknown_key_get_401_and_change_nothing(
    stack: Stack,
) -> None:
    origin, edge, admin, _ = stack
    path = "/_test/blob/1000?t=auth"
    body = {"urls": [path]}
    raw = json.dumps(body).encode()
    async with session() as s:
        await cached(s, edge.url + path)
        async with s.post(admin + "/_edge/purge", data=raw) as r:
            unsigned = (r.status, await r.json())
        tampered = await admin_call(s, admin, "POST", "/_edge/purge", raw, sign_body=b'{"urls": ["/x"]}')
        expired = await admin_call(s, admin, "POST", "/_edge/purge", raw, now_shift=-400)
        future = await admin_call(s, admin, "POST", "/_edge/purge", raw, now_shift=400)
        unknown = await admin_call(s, admin, "POST", "/_edge/purge", raw, key=generate_key("cfgkey"))
        other_kid = await admin_call(s, admin, "POST", "/_edge/purge", raw, key=generate_key("nobody"))
        # A valid request, captured and sent again: the second copy is a replay.
        valid = signed_headers(parse_key(KEY), "POST", "/_edge/purge", b'{"tags": ["none"]}')
        replies = []
        for _ in range(2):
            async with s.post(admin + "/_edge/purge", data=b'{"tags": ["none"]}', headers=valid) as r:
                replies.append((r.status, await r.json()))
        still = await get(s, edge.url + path)
    assert unsigned == (401, {"error": "unauthorized", "detail": "missing"})
    assert (tampered.status, json.loads(tampered.body)["detail"]) == (401, "bad-signature")
    assert (unknown.status, json.loads(unknown.body)["detail"]) == (401, "bad-signature")
    assert (other_kid.status, json.loads(other_kid.body)["detail"]) == (401, "unknown-key")
    assert (expired.status, json.loads(expired.body)["detail"]) == (401, "expired")
    assert (future.status, json.loads(future.body)["detail"]) == (401, "expired")
    assert replies[0][0] == 200
    assert replies[1] == (401, {"error": "unauthorized", "detail": "replayed"})
    assert still.x_cache == "HIT"
    assert origin.hits(path) == 1


async def test_both_configured_keys_are_accepted_for_rotation(stack: Stack) -> None:
    _, _, admin, _ = stack
    async with session() as s:
        for key in (KEY, ROTATED):
            got = await admin_call(s, admin, "POST", "/_edge/purge", {"urls": ["/rot"]}, key=key)
            assert got.status == 200, got.body


async def test_oversized_and_bad_json_bodies_are_refused_before_any_change(stack: Stack) -> None:
    origin, edge, admin, _ = stack
    path = "/_test/blob/1000?t=big"
    big = json.dumps({"urls": [path], "pad": "x" * MAX_BODY}).encode()
    async with session() as s:
        await cached(s, edge.url + path)
        declared = await admin_call(s, admin, "POST", "/_edge/purge", big)

        async def trickle() -> object:
            for i in range(0, len(big), 8192):  # chunked: no Content-Length to refuse early
                yield big[i : i + 8192]

        hdrs = signed_headers(parse_key(KEY), "POST", "/_edge/purge", big)
        async with s.post(admin + "/_edge/purge", data=trickle(), headers=hdrs) as r:
            streamed = (r.status, await r.json())
        bad_json = await admin_call(s, admin, "POST", "/_edge/purge", b"{not json")
        bad_shape = await admin_call(s, admin, "POST", "/_edge/purge", {"urls": "not-a-list"})
        nothing = await admin_call(s, admin, "POST", "/_edge/purge", {})
        still = await get(s, edge.url + path)
    assert declared.status == 413 and json.loads(declared.body)["error"] == "body too large"
    assert streamed[0] == 413
    assert bad_json.status == 400 and json.loads(bad_json.body)["error"] == "bad JSON"
    assert bad_shape.status == 400 and "urls" in json.loads(bad_shape.body)["detail"]
    assert nothing.status == 400
    assert still.x_cache == "HIT" and origin.hits(path) == 1


async def test_without_any_admin_key_mutating_calls_answer_403(origin: OriginClient, tmp_path: Path) -> None:
    edge = start_edge(origin.url, tmp_path / "cache", "--no-access-log")
    try:
        admin = admin_url(edge)
        async with session() as s:
            got = await admin_call(s, admin, "POST", "/_edge/purge", {"urls": ["/x"]})
            async with s.get(admin + "/_edge/health") as r:
                health = r.status
    finally:
        edge.stop()
    assert got.status == 403
    assert json.loads(got.body)["error"] == "no admin key configured"
    assert health == 200


# -- purge ---------------------------------------------------------------------------------------


async def test_hard_purge_by_url_prefix_and_tag_deletes_from_both_tiers(stack: Stack) -> None:
    origin, edge, admin, _ = stack
    by_url = "/_test/blob/2000?t=purge-url"
    by_prefix = ["/_test/blob/2001?t=pfx-a", "/_test/blob/2002?t=pfx-b"]
    by_tag = "/_test/blob/2003?t=tagged"
    kept = "/_test/blob/4004?t=kept"
    tag = {"X-Set-Surrogate-Key": "release-7 css"}
    async with session() as s:
        await cached(s, edge.url + by_url)
        for p in by_prefix:
            await cached(s, edge.url + p)
        await cached(s, edge.url + by_tag, **tag)
        await cached(s, edge.url + kept, **{"X-Set-Cache-Tag": "other"})
        purged = await purge(
            s, admin, urls=[edge.url + by_url], prefixes=["/_test/blob/200"], tags=["release-7"]
        )
        after = {p: await get(s, edge.url + p) for p in [by_url, *by_prefix, by_tag]}
        still = await get(s, edge.url + kept)
        hard = await metric(s, admin, "edgecdn_purge_requests_total", kind="hard")
    counts = purged["purged"]
    assert isinstance(counts, dict)
    assert counts["urls"] == 1 and counts["tags"] == 1
    assert counts["prefixes"] == 4  # 2000..2003 share the prefix
    assert {g.x_cache for g in after.values()} == {"MISS"}
    assert still.x_cache == "HIT"
    assert all(origin.hits(p) == 2 for p in [by_url, *by_prefix, by_tag])
    assert hard >= 1


async def test_soft_purge_revalidates_and_keeps_stale_while_revalidate(stack: Stack) -> None:
    origin, edge, admin, _ = stack
    plain = "/_test/blob/3000?t=soft"
    swr = "/_test/blob/3001?t=soft-swr"
    swr_cc = {"X-Set-Cache-Control": "max-age=600, stale-while-revalidate=600"}
    async with session() as s:
        await cached(s, edge.url + plain)
        await cached(s, edge.url + swr, **swr_cc)
        result = await purge(s, admin, urls=[plain, swr], soft=True)
        revalidated = await get(s, edge.url + plain)
        before = await metric(s, admin, "edgecdn_fills_total", result="revalidated")
        updating = await get(s, edge.url + swr, **swr_cc)
        for _ in range(500):  # the background revalidation lands; then it is a plain hit again
            if await metric(s, admin, "edgecdn_fills_total", result="revalidated") > before:
                break
            await asyncio.sleep(0.01)
        again = await get(s, edge.url + swr, **swr_cc)
    assert result["soft"] is True
    assert revalidated.x_cache == "REVALIDATED" and len(revalidated.body) == 3000
    assert updating.x_cache == "UPDATING" and len(updating.body) == 3001
    assert again.x_cache == "HIT"
    assert origin.hits(plain) == 2 and origin.hits(swr) == 2
    assert origin.requests(plain)[-1]["headers"].get("If-None-Match")


async def test_purge_while_a_fill_is_halfway_never_stores_the_old_bytes(stack: Stack) -> None:
    origin, edge, admin, _ = stack
    size = 150_000
    path = f"/_test/blob/{size}?t=inflight"
    async with session() as s:
        first = await s.get(
            edge.url + path, headers={"X-Test-Gate-After": f"inflight:{size // 2}", "X-Set-ETag": '"old"'}
        )
        await asyncio.wait_for(first.content.readexactly(size // 2), 10)  # the fill is halfway
        result = await purge(s, admin, urls=[path])
        origin.release("inflight")
        old_body = await first.read()
        first.close()
        after = await get(s, edge.url + path, **{"X-Set-ETag": '"new"'})
        again = await get(s, edge.url + path)
        purged_fills = await metric(s, admin, "edgecdn_fills_total", result="purged")
    counts = result["purged"]
    assert isinstance(counts, dict) and counts["in_flight"] == 1
    assert len(old_body) == size - size // 2  # the client that started it still got its whole answer
    assert after.x_cache == "MISS" and after.headers["ETag"] == '"new"'
    assert again.x_cache == "HIT" and again.headers["ETag"] == '"new"'
    assert origin.hits(path) == 2
    assert purged_fills >= 1


# -- push ----------------------------------------------------------------------------------------


def push_headers(**fields: str) -> dict[str, str]:
    return {"Cache-Control": "max-age=600", "Content-Type": "text/plain", **fields}


async def test_push_stores_the_body_and_an_older_push_does_not_overwrite(stack: Stack) -> None:
    origin, edge, admin, _ = stack
    path = "/pushed/app.txt"
    new_lm, old_lm = "Wed, 01 Jan 2025 00:00:00 GMT", "Tue, 31 Dec 2024 00:00:00 GMT"
    async with session() as s:
        stored = await admin_call(
            s,
            admin,
            "PUT",
            "/_edge/push" + path,
            b"v2 bytes",
            headers=push_headers(**{"Last-Modified": new_lm, "ETag": '"v2"', "Surrogate-Key": "app"}),
        )
        older = await admin_call(
            s, admin, "PUT", "/_edge/push" + path, b"v1", headers=push_headers(**{"Last-Modified": old_lm})
        )
        got = await get(s, edge.url + path)
        tagged = await purge(s, admin, tags=["app"])
        gone = await get(s, edge.url + path)
    assert stored.status == 200 and json.loads(stored.body)["stored"] is True
    assert older.status == 200 and json.loads(older.body) == {"stored": False, "reason": "older", "key": path}
    assert got.x_cache == "HIT" and got.body == b"v2 bytes"
    assert got.headers["ETag"] == '"v2"' and got.headers["Content-Type"] == "text/plain"
    assert tagged["purged"] == {"urls": 0, "prefixes": 0, "tags": 1, "in_flight": 0}
    assert gone.status == 404 and origin.hits(path) == 1  # not on the origin: the push was the only copy


async def test_bad_pushes_get_clear_4xx_and_write_nothing_outside_the_cache(
    stack: Stack, tmp_path: Path
) -> None:
    _, edge, admin, cache = stack
    outside = {p for p in cache.parent.rglob("*")} - {p for p in cache.rglob("*")}
    traversal = [
        "/_edge/push/../../etc/evil",
        "/_edge/push/a/%2e%2e/%2E%2E/evil",
        "/_edge/push/a/..%2fb",
        "/_edge/push/a%5c..%5cb",
        "/_edge/push/",
    ]
    async with session() as s:
        results = [
            (await admin_call(s, admin, "PUT", t, b"x", headers=push_headers())).status for t in traversal
        ]
        too_big = await admin_call(
            s, admin, "PUT", "/_edge/push/big.bin", b"x" * (MAX_OBJECT + 1), headers=push_headers()
        )
        not_storable = await admin_call(
            s, admin, "PUT", "/_edge/push/ns.txt", b"x", headers={"Cache-Control": "no-store"}
        )
        async with s.put(admin + "/_edge/push/unsigned.txt", data=b"x", headers=push_headers()) as r:
            unsigned = r.status
        bad_json = await admin_call(s, admin, "POST", "/_edge/push", b"[nope")
        bad_urls = await admin_call(s, admin, "POST", "/_edge/push", {"urls": [1]})
        missing = [await get(s, edge.url + p) for p in ("/big.bin", "/ns.txt", "/unsigned.txt")]
    assert results == [400] * len(traversal), results
    assert too_big.status == 413
    assert not_storable.status == 422 and json.loads(not_storable.body)["detail"] == "no-store"
    assert unsigned == 401
    assert bad_json.status == 400 and bad_urls.status == 400
    assert all(m.x_cache != "HIT" for m in missing)
    assert list((cache / "tmp").iterdir()) == []  # refused bodies left no temporary file
    now_outside = {p for p in cache.parent.rglob("*")} - {p for p in cache.rglob("*")}
    assert now_outside - outside == set()  # nothing new outside (other tests' SQLite side files may go)
    assert not any("evil" in str(p) for p in cache.parent.rglob("*"))


async def test_push_and_purge_racing_end_with_the_newest_version(stack: Stack) -> None:
    origin, edge, admin, _ = stack
    path = "/race/page.txt"
    (origin.root / "race").mkdir()
    async with session() as s:
        await admin_call(s, admin, "PUT", "/_edge/push" + path, b"old", headers=push_headers())
        for round_ in range(5):
            # The publisher's new version is on the origin, then pushed and purged from two clients.
            newest = f"newest {round_}".encode()
            (origin.root / "race" / "page.txt").write_bytes(newest)
            new = push_headers(**{"Last-Modified": f"Wed, 01 Jan 2025 00:00:0{round_} GMT"})
            push, purged = await asyncio.gather(
                admin_call(s, admin, "PUT", "/_edge/push" + path, newest, headers=new),
                admin_call(s, admin, "POST", "/_edge/purge", {"urls": [path], "tags": [f"r{round_}"]}),
            )
            assert push.status == 200 and purged.status == 200
            got = await get(s, edge.url + path)
            assert got.body == newest, (round_, got.x_cache)
            assert (await get(s, edge.url + path)).body == newest


async def test_post_push_refetches_urls_from_the_origin_now(stack: Stack) -> None:
    origin, edge, admin, _ = stack
    (origin.root / "refetch.txt").write_bytes(b"version one")
    path = "/refetch.txt"
    async with session() as s:
        first = await cached(s, edge.url + path)
        (origin.root / "refetch.txt").write_bytes(b"version two!")
        got = await admin_call(s, admin, "POST", "/_edge/push", {"urls": [path, "/nothing-here"]})
        after = await get(s, edge.url + path)
    results = json.loads(got.body)["results"]
    assert first.body == b"version one"
    assert got.status == 200
    assert results[0] == {"url": path, "state": "stored", "bytes": 12}
    assert results[1]["url"] == "/nothing-here" and results[1]["state"] != "stored"
    assert after.x_cache == "HIT" and after.body == b"version two!"
    assert origin.hits(path) == 2


async def test_pushes_and_refetches_of_versioned_urls_are_verified(stack: Stack) -> None:
    origin, edge, admin, _ = stack
    good = b"export const v = 1;\n"
    good_path = f"/v/app.{xxhash.xxh3_64_hexdigest(good)}.js"
    bad_path = f"/v/lib.{xxhash.xxh3_64_hexdigest(b'the real bytes')}.js"
    corrupt = b"corrupted on the origin"
    (origin.root / "v").mkdir()
    (origin.root / bad_path.lstrip("/")).write_bytes(corrupt)
    async with session() as s:
        pushed = await admin_call(s, admin, "PUT", "/_edge/push" + good_path, good, headers=push_headers())
        wrong = await admin_call(s, admin, "PUT", "/_edge/push" + bad_path, b"not it", headers=push_headers())
        refetched = await admin_call(s, admin, "POST", "/_edge/push", {"urls": [bad_path]})
        hit = await get(s, edge.url + good_path)
        bad = await get(s, edge.url + bad_path)
    assert pushed.status == 200 and json.loads(pushed.body)["stored"] is True
    assert hit.x_cache == "HIT" and hit.body == good
    assert hit.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert wrong.status == 422 and json.loads(wrong.body)["error"] == "hash mismatch"
    result = json.loads(refetched.body)["results"][0]
    assert result["state"] == "failed" and "hashes to" in result["error"]
    assert bad.status == 502  # nothing was stored by the refused push or the failed re-fetch
    assert origin.hits(bad_path) == 2 and origin.hits(good_path) == 0


# -- compressed and malformed admin bodies ---------------------------------------------------------


def gzip_members(n: int) -> bytes:
    return gzip.compress(b"", mtime=0) * n


async def test_compressed_admin_bodies_are_verified_as_received_never_inflated(stack: Stack) -> None:
    origin, edge, admin, _ = stack
    bomb = gzip.compress(b"\0" * (64 * MAX_OBJECT), compresslevel=9, mtime=0)  # inflates 64x past the cap
    assert len(bomb) < MAX_OBJECT
    gz = {**push_headers(), "Content-Encoding": "gzip"}
    body = gzip.compress(b"compressed push body " * 50, mtime=0)
    async with session() as s:
        members = await admin_call(
            s, admin, "POST", "/_edge/purge", gzip_members(2000), sign_body=b"x", headers=gz
        )
        many = await admin_call(s, admin, "PUT", "/_edge/push/gz/many", gzip_members(50_000), headers=gz)
        bombed = await admin_call(
            s, admin, "PUT", "/_edge/push/gz/bomb", bomb, sign_body=b"other", headers=gz
        )
        pushed = await admin_call(s, admin, "PUT", "/_edge/push/gz/ok.txt", body, headers=gz)
        served = await get(s, edge.url + "/gz/ok.txt")
        signed_purge = await admin_call(
            s, admin, "POST", "/_edge/purge", gzip.compress(b'{"urls": ["/x"]}'), headers=gz
        )
    assert members.status == 415  # a JSON endpoint refuses an encoded body before reading it
    assert many.status == 413  # 50 000 members are 1 MB as received: over the cap, never inflated
    assert bombed.status == 401 and json.loads(bombed.body)["detail"] == "bad-signature"  # not a 413
    assert pushed.status == 200, pushed.body
    assert json.loads(pushed.body)["size"] == len(body)
    assert served.x_cache == "HIT" and served.body == body and served.headers["Content-Encoding"] == "gzip"
    assert signed_purge.status == 415 and json.loads(signed_purge.body)["error"] == "unsupported encoding"
    assert origin.hits("/gz/ok.txt") == 0


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe not utf-8", b"[" * 60_000, b"1e999999", b'"\\ud800"', b"{}" + b" " * 10 + b"x", b""],
    ids=["not-utf8", "deep-nesting", "huge-number", "lone-surrogate", "trailing-garbage", "empty"],
)
async def test_a_signed_purge_whose_body_is_not_json_is_a_400(stack: Stack, raw: bytes) -> None:
    _, edge, admin, _ = stack
    async with session() as s:
        got = await admin_call(s, admin, "POST", "/_edge/purge", raw)
        health = await s.get(admin + "/_edge/health")
    assert got.status == 400, got.body
    assert json.loads(got.body)["error"] in ("bad JSON", "bad purge request")
    assert health.status == 200
    assert "Traceback" not in edge.stderr_text()  # a client mistake is one log line, never a traceback
