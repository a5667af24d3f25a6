"""The reference origin's app in-process: files, validators, traversal, rules and test hooks."""

from __future__ import annotations

import asyncio
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from origin import hooks
from origin.blob import blob_bytes, blob_etag
from origin.rules import (
    DEFAULT_CACHE_CONTROL,
    IMMUTABLE_CACHE_CONTROL,
    ConfigError,
    Rules,
    load_rules,
    parse_rules,
)
from origin.server import make_app

Client = TestClient[web.Request, web.Application]
REPO = Path(__file__).resolve().parents[2]
HELLO = b"hello world\n" * 100
BIG = bytes(range(256)) * 1200  # 307200 bytes, several 64 KiB chunks
VERSIONED = "app.0123456789abcdef.js"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "hello.txt").write_bytes(HELLO)
    (root / "big.bin").write_bytes(BIG)
    (root / "index.html").write_text("home")
    (root / "sub" / "index.html").write_text("sub home")
    (root / "style.css").write_text("css")
    (root / VERSIONED).write_text("js")
    (tmp_path / "secret.txt").write_text("SECRET")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    (root / "escape-dir").symlink_to(tmp_path, target_is_directory=True)
    (root / "inside").symlink_to(root / "hello.txt")
    return root


@pytest.fixture
async def plain(aiohttp_client: AiohttpClient, site: Path) -> Client:
    return await aiohttp_client(make_app(site))


@pytest.fixture
async def hooked(aiohttp_client: AiohttpClient, site: Path) -> Client:
    return await aiohttp_client(make_app(site, test_hooks=True))


async def raw_get(client: Client, target: str) -> tuple[int, bytes]:
    """Send the request target byte for byte (aiohttp's client would normalize it)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return int(data.split(b" ", 2)[1]), data


async def get_json(client: Client, path: str, method: str = "GET") -> Any:
    async with client.request(method, path) as resp:
        assert resp.status == 200
        return await resp.json()


async def wait_gate(client: Client, name: str, n: int = 1) -> None:
    for _ in range(1000):
        if (await get_json(client, f"/_test/gates/{name}"))["waiting"] >= n:
            return
        await asyncio.sleep(0.005)
    pytest.fail(f"gate {name!r} never had {n} waiting")


# --- files: validators, ranges, HEAD, index, methods ---


async def test_file_has_validators_and_default_cache_control(plain: Client) -> None:
    async with plain.get("/hello.txt") as resp:
        assert resp.status == 200
        assert await resp.read() == HELLO
        assert resp.headers["Content-Length"] == str(len(HELLO))
        assert resp.headers["Cache-Control"] == DEFAULT_CACHE_CONTROL
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert resp.headers["Last-Modified"]
        assert resp.headers["ETag"].startswith('"')


async def test_if_none_match_and_if_modified_since_give_304(plain: Client) -> None:
    async with plain.get("/hello.txt") as first:
        etag, modified = first.headers["ETag"], first.headers["Last-Modified"]

    async with plain.get("/hello.txt", headers={"If-None-Match": etag}) as by_etag:
        assert by_etag.status == 304
        assert by_etag.headers["ETag"] == etag
        assert by_etag.headers["Cache-Control"] == DEFAULT_CACHE_CONTROL
        assert await by_etag.read() == b""
    async with plain.get("/hello.txt", headers={"If-Modified-Since": modified}) as by_date:
        assert by_date.status == 304
    async with plain.get("/hello.txt", headers={"If-None-Match": '"other"'}) as changed:
        assert changed.status == 200


@pytest.mark.parametrize(
    ("range_", "content_range", "body"),
    [
        ("bytes=0-9", "bytes 0-9/1200", HELLO[:10]),
        ("bytes=1195-", "bytes 1195-1199/1200", HELLO[1195:]),
        ("bytes=-3", "bytes 1197-1199/1200", HELLO[-3:]),
        ("bytes=1190-5000", "bytes 1190-1199/1200", HELLO[1190:]),
    ],
    ids=["first-ten", "open-end", "suffix", "end-past-size"],
)
async def test_file_range_206(plain: Client, range_: str, content_range: str, body: bytes) -> None:
    async with plain.get("/hello.txt", headers={"Range": range_}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == content_range
        assert await resp.read() == body


async def test_file_range_past_end_is_416(plain: Client) -> None:
    async with plain.get("/hello.txt", headers={"Range": "bytes=5000-"}) as resp:
        assert resp.status == 416
        assert resp.headers["Content-Range"] == "bytes */1200"


async def test_head_has_length_and_no_body(plain: Client) -> None:
    async with plain.head("/hello.txt") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(HELLO))
        assert await resp.read() == b""


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/", 200, b"home"),
        ("/sub/", 200, b"sub home"),
        ("/sub", 200, b"sub home"),
        ("/empty-dir/", 404, None),
        ("/missing.txt", 404, None),
        ("/inside", 200, HELLO),
    ],
)
async def test_index_and_missing(plain: Client, path: str, status: int, body: bytes) -> None:
    async with plain.get(path) as resp:
        assert resp.status == status
        if body is not None:
            assert await resp.read() == body


async def test_other_methods_on_files_are_405(plain: Client) -> None:
    async with plain.post("/hello.txt", data=b"x") as resp:
        assert resp.status == 405
        assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}
    async with plain.delete("/missing.txt") as missing:
        assert missing.status == 404


# --- never outside ROOT ---


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/../secret.txt", 404),
        ("/sub/../../secret.txt", 404),
        ("/%2e%2e/secret.txt", 404),
        ("/%2E%2E/secret.txt", 404),
        ("/sub/%2e%2e/%2e%2e/secret.txt", 404),
        ("/..%2fsecret.txt", 400),
        ("/%2e%2e%2fsecret.txt", 400),
        ("/sub/..%5c..%5csecret.txt", 400),
        ("/escape", 404),
        ("/escape-dir/secret.txt", 404),
        ("/hello.txt%00.css", 400),
        ("/%zz", 400),
        ("/%c3%28", 400),
        ("http://evil.example/../secret.txt", 400),
    ],
)
async def test_traversal_is_refused(hooked: Client, target: str, status: int) -> None:
    got, data = await raw_get(hooked, target)
    assert got == status
    assert b"SECRET" not in data


async def test_absolute_paths_stay_under_root(plain: Client, tmp_path: Path) -> None:
    secret = str(tmp_path / "secret.txt")
    for target in ("/" + secret, "/" + quote(secret, safe="")):
        got, data = await raw_get(plain, target)
        assert got in (400, 404)
        assert b"SECRET" not in data


# --- Cache-Control rules ---


@pytest.mark.parametrize(
    ("path", "cache_control"),
    [
        ("/" + VERSIONED, IMMUTABLE_CACHE_CONTROL),
        ("/static/js/app.fedcba9876543210.min.js", DEFAULT_CACHE_CONTROL),
        ("/static/js/vendor.fedcba9876543210.css", IMMUTABLE_CACHE_CONTROL),
        ("/app.0123456789ABCDEF.js", DEFAULT_CACHE_CONTROL),
        ("/app.0123456789abcde.js", DEFAULT_CACHE_CONTROL),
        ("/0123456789abcdef.js", DEFAULT_CACHE_CONTROL),
        ("/LICENSE.0123456789abcdef", IMMUTABLE_CACHE_CONTROL),
        ("/app.0123456789abcdef.js/x", DEFAULT_CACHE_CONTROL),
        ("/style.css", DEFAULT_CACHE_CONTROL),
    ],
)
def test_default_rules(path: str, cache_control: str) -> None:
    assert Rules().cache_control(path) == cache_control


def test_first_matching_rule_wins() -> None:
    rules = parse_rules(
        {
            "default_cache_control": "max-age=5",
            "rules": [
                {"pattern": "/api/special", "cache_control": "max-age=1"},
                {"pattern": "^/api/", "cache_control": "no-store"},
                {"pattern": "*.js", "cache_control": "max-age=2"},
            ],
        }
    )
    assert rules.cache_control("/api/special") == "max-age=1"
    assert rules.cache_control("/api/x.js") == "no-store"
    assert rules.cache_control("/" + VERSIONED) == "max-age=2"
    assert rules.cache_control("/x.css") == "max-age=5"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rule": []}, "rule: unknown key (did you mean 'rules'?)"),
        ({"rules": [{"pattern": "*", "cache_contrl": "x"}]}, "rules[0].cache_contrl: unknown key"),
        ({"rules": [{"cache_control": "x"}]}, "rules[0].pattern: required"),
        ({"rules": [{"pattern": "^(", "cache_control": "x"}]}, "rules[0].pattern: invalid"),
        ({"rules": [{"pattern": "*", "cache_control": 5}]}, "rules[0].cache_control: must be"),
        ({"rules": {"pattern": "*"}}, "rules: must be an array"),
        ({"default_cache_control": "a\nb"}, "default_cache_control: must be a single line"),
    ],
)
def test_config_errors_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        parse_rules(data)


def test_example_config_loads_and_applies_to_demo_site() -> None:
    rules = load_rules(REPO / "deploy" / "origin.example.toml")
    demo = REPO / "deploy" / "demo-site"
    (app_js,) = demo.glob("app.*.js")

    assert rules.cache_control("/index.html") == "no-cache"
    assert rules.cache_control("/style.css").startswith("public, max-age=300")
    assert rules.cache_control("/" + app_js.name) == IMMUTABLE_CACHE_CONTROL
    assert (demo / "blob.bin").stat().st_size >= 200 * 1024


def test_demo_site_app_name_is_its_hash() -> None:
    xxhash = pytest.importorskip("xxhash")
    (app_js,) = (REPO / "deploy" / "demo-site").glob("app.*.js")
    assert app_js.name == f"app.{xxhash.xxh3_64_hexdigest(app_js.read_bytes())}.js"


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("rules = [")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_rules(bad)
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads("rules = [")


async def test_configured_rules_reach_responses(aiohttp_client: AiohttpClient, site: Path) -> None:
    rules = parse_rules({"rules": [{"pattern": "*.css", "cache_control": "max-age=300"}]})
    client = await aiohttp_client(make_app(site, rules))
    for path, expected in [
        ("/style.css", "max-age=300"),
        ("/" + VERSIONED, IMMUTABLE_CACHE_CONTROL),
        ("/hello.txt", DEFAULT_CACHE_CONTROL),
    ]:
        async with client.get(path) as resp:
            assert resp.headers["Cache-Control"] == expected


async def test_directory_index_is_matched_as_index_html(aiohttp_client: AiohttpClient, site: Path) -> None:
    rules = parse_rules({"rules": [{"pattern": "*/index.html", "cache_control": "no-cache"}]})
    client = await aiohttp_client(make_app(site, rules))
    async with client.get("/") as resp:
        assert resp.headers["Cache-Control"] == "no-cache"


# --- hooks: header rewrites, status, redirect ---


async def test_hooks_absent_without_the_flag(plain: Client) -> None:
    for path in ("/_test/hits", "/_test/blob/10", "/_test/echo", "/_test/gates/g"):
        async with plain.get(path) as resp:
            assert resp.status == 404, path
    async with plain.post("/_test/reset") as reset:
        assert reset.status == 404
    headers = {"X-Test-Status": "503", "X-Set-Cache-Control": "no-store", "X-Test-Gate": "g"}
    async with plain.get("/hello.txt", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == DEFAULT_CACHE_CONTROL


async def test_set_and_remove_response_headers(hooked: Client) -> None:
    headers = {
        "X-Set-Cache-Control": "max-age=5",
        "X-Set-Vary": "Accept-Encoding",
        "X-Set-Surrogate-Key": "a b",
        "X-Remove-Last-Modified": "1",
    }
    for path in ("/hello.txt", "/_test/blob/100"):
        async with hooked.get(path, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "max-age=5"
            assert resp.headers["Vary"] == "Accept-Encoding"
            assert resp.headers["Surrogate-Key"] == "a b"
            assert "Last-Modified" not in resp.headers
            assert "ETag" in resp.headers


@pytest.mark.parametrize("path", ["/hello.txt", "/_test/blob/100"])
async def test_set_etag_is_what_if_none_match_compares(hooked: Client, path: str) -> None:
    set_etag = {"X-Set-ETag": '"pinned"'}
    async with hooked.get(path, headers=set_etag) as resp:
        assert resp.headers["ETag"] == '"pinned"'
    async with hooked.get(path, headers={**set_etag, "If-None-Match": '"pinned"'}) as cond:
        assert cond.status == 304
        assert cond.headers["ETag"] == '"pinned"'


async def test_status_hook(hooked: Client) -> None:
    async with hooked.get("/hello.txt", headers={"X-Test-Status": "503"}) as resp:
        assert resp.status == 503
        assert await resp.text() == "status 503"
    async with hooked.get("/missing", headers={"X-Test-Status": "204"}) as empty:
        assert empty.status == 204
    async with hooked.post("/nowhere", headers={"X-Test-Status": "200"}) as post:
        assert post.status == 200


async def test_redirect_hook(hooked: Client) -> None:
    headers = {"X-Test-Redirect": "http://elsewhere.example/x"}
    async with hooked.get("/hello.txt", headers=headers, allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "http://elsewhere.example/x"


@pytest.mark.parametrize(
    "header",
    [
        {"X-Test-Status": "abc"},
        {"X-Test-Status": "99"},
        {"X-Test-Delay-Ms": "-1"},
        {"X-Test-Truncate": "1.5"},
        {"X-Test-Gate-After": "nogate"},
        {"X-Test-Gate-After": "g:x"},
    ],
)
async def test_malformed_hook_header_is_400(hooked: Client, header: dict[str, str]) -> None:
    async with hooked.get("/hello.txt", headers=header) as resp:
        assert resp.status == 400
        assert next(iter(header)) in await resp.text()


# --- hooks: truncation, gates, delays ---


async def read_until_cut(resp: aiohttp.ClientResponse) -> bytes:
    got = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        async for chunk in resp.content.iter_any():
            got += chunk
    return bytes(got)


@pytest.mark.parametrize(
    ("path", "full"), [("/big.bin", BIG), ("/_test/blob/307200", blob_bytes(307200, "1"))]
)
@pytest.mark.parametrize("cut", [0, 1000, 65536, 70000])
async def test_truncate_declares_full_length(hooked: Client, path: str, full: bytes, cut: int) -> None:
    async with hooked.get(path, headers={"X-Test-Truncate": str(cut)}) as resp:
        assert resp.headers["Content-Length"] == str(len(full))
        assert await read_until_cut(resp) == full[:cut]


async def test_gate_holds_before_headers_until_released(hooked: Client) -> None:
    held = asyncio.create_task(hooked.get("/hello.txt", headers={"X-Test-Gate": "g1"}))
    await wait_gate(hooked, "g1")

    assert not held.done()
    assert (await get_json(hooked, "/_test/hits?path=/hello.txt"))["hits"] == 1
    released = await get_json(hooked, "/_test/gates/g1/release", method="POST")
    async with await held as resp:
        assert resp.status == 200
        assert await resp.read() == HELLO
    assert released == {"gate": "g1", "released": 1}

    async with hooked.get("/hello.txt", headers={"X-Test-Gate": "g1"}) as later:
        assert later.status == 200, "a released gate lets later requests through"
    await get_json(hooked, "/_test/reset", method="POST")
    assert await get_json(hooked, "/_test/gates/g1") == {
        "gate": "g1",
        "waiting": 0,
        "released": False,
    }


async def test_gate_counts_every_holder(hooked: Client) -> None:
    held = [
        asyncio.create_task(hooked.get(f"/_test/blob/{n}", headers={"X-Test-Gate": "many"}))
        for n in (10, 20, 30)
    ]
    await wait_gate(hooked, "many", n=3)
    await get_json(hooked, "/_test/gates/many/release", method="POST")
    for n, task in zip((10, 20, 30), held, strict=True):
        async with await task as resp:
            assert await resp.read() == blob_bytes(n, "1")


@pytest.mark.parametrize(
    ("path", "full"), [("/big.bin", BIG), ("/_test/blob/307200", blob_bytes(307200, "1"))]
)
@pytest.mark.parametrize("after", [0, 1000, 65536, 307199])
async def test_gate_after_sends_headers_and_first_bytes(
    hooked: Client, path: str, full: bytes, after: int
) -> None:
    async with hooked.get(path, headers={"X-Test-Gate-After": f"mid:{after}"}) as resp:
        assert resp.status == 200
        first = await resp.content.readexactly(after)
        await wait_gate(hooked, "mid")
        await get_json(hooked, "/_test/gates/mid/release", method="POST")
        assert first + await resp.read() == full


async def test_gate_after_the_whole_body_does_not_hold(hooked: Client) -> None:
    async with hooked.get("/big.bin", headers={"X-Test-Gate-After": f"end:{len(BIG)}"}) as resp:
        assert await resp.read() == BIG
    assert (await get_json(hooked, "/_test/gates/end"))["waiting"] == 0


async def test_delays_still_deliver_the_body(hooked: Client) -> None:
    headers = {"X-Test-Delay-Ms": "1", "X-Test-Chunk-Delay-Ms": "1"}
    for path, full in [("/big.bin", BIG), ("/_test/blob/200000", blob_bytes(200000, "1"))]:
        async with hooked.get(path, headers=headers) as resp:
            assert await resp.read() == full


# --- hooks: synthetic blobs and echo ---


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 200_001])
async def test_blob_body_and_validators(hooked: Client, size: int) -> None:
    async with hooked.get(f"/_test/blob/{size}") as resp:
        assert resp.status == 200
        assert await resp.read() == blob_bytes(size, "1")
        assert resp.headers["Content-Length"] == str(size)
        assert resp.headers["ETag"] == blob_etag(size, "1")
        assert resp.headers["Cache-Control"] == DEFAULT_CACHE_CONTROL
        assert resp.headers["Last-Modified"]


async def test_blob_versions_differ_in_bytes_and_etag(hooked: Client) -> None:
    bodies, etags, dates = [], [], []
    for v in ("1", "2"):
        async with hooked.get(f"/_test/blob/1000?v={v}") as resp:
            bodies.append(await resp.read())
            etags.append(resp.headers["ETag"])
            dates.append(resp.headers["Last-Modified"])
    assert bodies[0] != bodies[1]
    assert etags[0] != etags[1]
    assert dates[0] != dates[1]
    assert blob_bytes(1000, "1") != blob_bytes(2000, "1")[:1000]


@pytest.mark.parametrize(
    ("range_", "start", "end"),
    [
        ("bytes=0-9", 0, 10),
        ("bytes=65530-65545", 65530, 65546),
        ("bytes=199990-", 199990, 200000),
        ("bytes=-10", 199990, 200000),
        ("bytes=100-999999", 100, 200000),
        ("bytes=0-199999", 0, 200000),
    ],
)
async def test_blob_single_range(hooked: Client, range_: str, start: int, end: int) -> None:
    async with hooked.get("/_test/blob/200000?v=3", headers={"Range": range_}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes {start}-{end - 1}/200000"
        assert resp.headers["Content-Length"] == str(end - start)
        assert await resp.read() == blob_bytes(200000, "3")[start:end]


@pytest.mark.parametrize("range_", ["bytes=200000-", "bytes=5-1", "bytes=0-1,5-6", "pages=1"])
async def test_blob_unsatisfiable_range_is_416(hooked: Client, range_: str) -> None:
    async with hooked.get("/_test/blob/200000", headers={"Range": range_}) as resp:
        assert resp.status == 416
        assert resp.headers["Content-Range"] == "bytes */200000"


async def test_blob_conditionals(hooked: Client) -> None:
    etag = blob_etag(5000, "1")
    async with hooked.get("/_test/blob/5000", headers={"If-None-Match": etag}) as inm:
        assert inm.status == 304
        assert inm.headers["ETag"] == etag
        modified = inm.headers["Last-Modified"]
    async with hooked.get("/_test/blob/5000", headers={"If-Modified-Since": modified}) as ims:
        assert ims.status == 304
    matching = {"Range": "bytes=10-19", "If-Range": etag}
    async with hooked.get("/_test/blob/5000", headers=matching) as same:
        assert same.status == 206
    changed = {"Range": "bytes=10-19", "If-Range": blob_etag(5000, "2")}
    async with hooked.get("/_test/blob/5000", headers=changed) as other:
        assert other.status == 200
        assert await other.read() == blob_bytes(5000, "1")


async def test_one_gib_blob_is_never_built_whole(hooked: Client) -> None:
    size = 1 << 30
    async with hooked.head(f"/_test/blob/{size}") as head:
        assert head.headers["Content-Length"] == str(size)
    tail = {"Range": f"bytes={size - 100}-"}
    async with hooked.get(f"/_test/blob/{size}", headers=tail) as resp:
        assert await resp.read() == blob_bytes(size, "1", size - 100, size)


async def test_blob_refuses_other_methods(hooked: Client) -> None:
    async with hooked.post("/_test/blob/10") as resp:
        assert resp.status == 405


async def test_echo_reports_method_headers_and_body_length(hooked: Client) -> None:
    body = b"x" * 200_000
    async with hooked.put("/_test/echo?a=1", data=body, headers={"X-Thing": "yes"}) as resp:
        assert resp.headers["Cache-Control"] == "no-store"
        echoed = await resp.json()
    assert echoed["method"] == "PUT"
    assert echoed["target"] == "/_test/echo?a=1"
    assert echoed["body_len"] == len(body)
    assert echoed["headers"]["x-thing"] == "yes"


# --- hooks: hit counter and request log ---


async def test_hits_count_every_method_per_target(hooked: Client) -> None:
    for method, path in [
        ("GET", "/hello.txt?a=1"),
        ("GET", "/hello.txt?a=1"),
        ("HEAD", "/hello.txt"),
        ("POST", "/hello.txt"),
        ("GET", "/missing"),
    ]:
        async with hooked.request(method, path):
            pass

    assert await get_json(hooked, "/_test/hits?path=" + quote("/hello.txt?a=1", safe="")) == {
        "path": "/hello.txt?a=1",
        "hits": 2,
    }
    assert (await get_json(hooked, "/_test/hits?path=/hello.txt"))["hits"] == 2
    assert (await get_json(hooked, "/_test/hits?path=/never"))["hits"] == 0
    assert (await get_json(hooked, "/_test/hits"))["hits"] == {
        "/hello.txt?a=1": 2,
        "/hello.txt": 2,
        "/missing": 1,
    }
    await get_json(hooked, "/_test/reset", method="POST")
    assert (await get_json(hooked, "/_test/hits"))["hits"] == {}


async def test_request_log_shows_what_the_origin_saw(hooked: Client) -> None:
    sent = {"If-None-Match": '"abc"', "CDN-Loop": "edgecdn", "Range": "bytes=0-1"}
    async with hooked.get("/hello.txt", headers=sent):
        pass
    async with hooked.post("/_test/echo", data=b"12345"):
        pass

    (seen,) = await get_json(hooked, "/_test/requests?path=/hello.txt")
    assert seen["method"] == "GET"
    assert seen["target"] == "/hello.txt"
    assert seen["body_len"] == 0
    assert {k: seen["headers"][k.lower()] for k in sent} == sent
    everything = await get_json(hooked, "/_test/requests")
    assert [(e["method"], e["target"], e["body_len"]) for e in everything] == [
        ("GET", "/hello.txt", 0),
        ("POST", "/_test/echo", 5),
    ]
    assert hooked.app is not None
    assert hooked.app[hooks.STATE].log.maxlen == hooks.LOG_SIZE == 1000
