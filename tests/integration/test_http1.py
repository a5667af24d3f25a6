"""HTTP/1.1 on the public listener, strict and complete, proven on raw sockets (RFC 9112).

Every malformed request: a 4xx, the connection closed, one access-log line, never a traceback, never
the origin. Keep-alive, pipelining, HTTP/1.0, absolute-form, 100-continue, chunked bodies, deadlines.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import OriginClient, Proc
from tests.integration.edge_client import start_edge

WAIT_S = 10.0  # bound on every read; deadlines under test are 0.5 s


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; the last value wins
    body: bytes


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OriginClient, Proc, Path]]:
    root = tmp_path_factory.mktemp("root")
    origin_proc = Proc("origin", "serve", str(root), "--listen", "127.0.0.1:0", "--test-hooks")
    tmp = tmp_path_factory.mktemp("edge")
    cfg = tmp / "edge.toml"
    cfg.write_text(
        '[server]\nheader_timeout = "500ms"\nkeepalive_timeout = "500ms"\nbody_timeout = "500ms"\n'
    )
    log = tmp / "access.log"
    edge = start_edge(origin_proc.url, tmp / "cache", "-c", str(cfg), "--access-log", str(log))
    try:
        yield OriginClient(origin_proc, root), edge, log
    finally:
        edge.stop()
        origin_proc.stop()
    assert "Traceback" not in edge.stderr_text()


async def connect(edge: Proc) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = edge.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port), limit=1 << 22)


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    """One response (Content-Length or chunked framing); interim 1xx responses are returned too."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), WAIT_S)
    elif headers.get("transfer-encoding") == "chunked":
        while size := int((await asyncio.wait_for(reader.readline(), WAIT_S)).strip(), 16):
            body += await asyncio.wait_for(reader.readexactly(size + 2), WAIT_S)
            body = body[:-2]
        await reader.readline()
    return Reply(status, headers, body)


async def at_eof(reader: asyncio.StreamReader) -> bool:
    """True when the edge closed the connection (within WAIT_S) without sending anything more."""
    try:
        return await asyncio.wait_for(reader.read(1), WAIT_S) == b""
    except ConnectionResetError:
        return True


def log_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


async def wait_log(log: Path, n: int) -> list[str]:
    """The access log once it holds `n` lines (it is flushed in batches, every 0.2 s)."""
    for _ in range(100):
        if len(lines := log_lines(log)) >= n:
            return lines
        await asyncio.sleep(0.05)
    return log_lines(log)


MALFORMED = {
    "cl-and-te": (
        b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    "duplicate-cl": (
        b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    ),
    "repeated-cl": (b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    "cl-not-a-number": (b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: 3a\r\n\r\nabc", 400),
    "cl-negative": (b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    "cl-list": (b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
    "te-not-chunked-last": (
        b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        400,
    ),
    "te-unknown": (b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    "bare-lf": (b"GET /m HTTP/1.1\nHost: a\n\n", 400),
    "bare-lf-in-fields": (b"GET /m HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400),
    "obs-fold": (b"GET /m HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400),
    "control-char-in-value": (b"GET /m HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n", 400),
    "nul-in-value": (b"GET /m HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", 400),
    "space-in-name": (b"GET /m HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n", 400),
    "space-before-colon": (b"GET /m HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400),
    "separator-in-name": (b"GET /m HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n", 400),
    "control-char-in-target": (b"GET /m\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "missing-host-1.1": (b"GET /m HTTP/1.1\r\nX-A: b\r\n\r\n", 400),
    "duplicate-host": (b"GET /m HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "host-with-userinfo": (b"GET /m HTTP/1.1\r\nHost: good:80@evil\r\n\r\n", 400),
    "host-with-two-ports": (b"GET /m HTTP/1.1\r\nHost: good:1:2\r\n\r\n", 400),
    "host-with-path": (b"GET /m HTTP/1.1\r\nHost: good/evil\r\n\r\n", 400),
    "asterisk-form-get": (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "connect": (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
    "http-2-version": (b"GET /m HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    "unknown-expectation": (b"GET /m HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", 417),
    "target-too-long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    "field-too-large": (b"GET /m HTTP/1.1\r\nHost: a\r\nX-A: " + b"b" * 9000 + b"\r\n\r\n", 431),
    "head-too-large": (
        b"GET /m HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"b" * 4000) for i in range(20))
        + b"\r\n",
        431,
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_malformed_request_is_4xx_then_closed(
    strict: tuple[OriginClient, Proc, Path], name: str
) -> None:
    origin, edge, log = strict
    data, status = MALFORMED[name]
    before = len(await wait_log(log, 0))
    reader, writer = await connect(edge)
    # A valid request queued behind the bad one must never be answered (no desync).
    writer.write(data + b"GET /_test/blob/5?t=smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
    got = await read_reply(reader)
    assert got.status == status, got
    assert got.headers["content-type"] == "application/json" and "error" in json.loads(got.body)
    assert got.headers["connection"] == "close"
    assert await at_eof(reader)
    writer.close()
    assert await wait_log(log, before + 1) and len(log_lines(log)) == before + 1  # one line, no more
    assert origin.hits("/m") == 0 and origin.hits("/_test/blob/5?t=smuggled") == 0


async def test_pipelined_requests_are_answered_in_order(strict: tuple[OriginClient, Proc, Path]) -> None:
    _, edge, _ = strict
    reader, writer = await connect(edge)
    writer.write(b"".join(b"GET /_test/echo?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(5)))
    targets = [json.loads((await read_reply(reader)).body)["target"] for _ in range(5)]
    writer.close()
    assert targets == [f"/_test/echo?n={i}" for i in range(5)]


async def test_every_request_of_a_connection_has_its_fields_checked(
    strict: tuple[OriginClient, Proc, Path],
) -> None:
    # The checked fields of one request are reused for the next only while they are the same bytes.
    _, edge, _ = strict
    reader, writer = await connect(edge)
    for _ in range(2):
        writer.write(b"GET /_test/echo?n=1 HTTP/1.1\r\nHost: good\r\n\r\n")
        assert (await read_reply(reader)).status == 200
    writer.write(b"GET /_test/echo?n=2 HTTP/1.1\r\nHost: good:80@evil\r\n\r\n")
    assert (await read_reply(reader)).status == 400
    assert await at_eof(reader)
    writer.close()


async def test_a_pipelined_flood_is_bounded(strict: tuple[OriginClient, Proc, Path]) -> None:
    _, edge, _ = strict
    n = 2000
    reader, writer = await connect(edge)
    writer.write(b"".join(b"GET /_test/echo?f=%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(n)))
    got: list[Reply] = []
    while len(got) < n:
        reply = await read_reply(reader)
        got.append(reply)
        if reply.status != 200:
            break
    writer.close()
    # In order; either all answered (reading paused while 32 waited) or cut with a 429 at the bound.
    answered = [json.loads(r.body)["target"] for r in got if r.status == 200]
    assert answered == [f"/_test/echo?f={i}" for i in range(len(answered))]
    assert len(got) == n or (got[-1].status == 429 and len(answered) <= 128)


async def test_absolute_form_target_never_picks_the_origin(strict: tuple[OriginClient, Proc, Path]) -> None:
    origin, edge, _ = strict
    reader, writer = await connect(edge)
    writer.write(b"GET http://evil.example/_test/echo?t=abs HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    got = await read_reply(reader)
    writer.close()
    assert got.status == 200 and json.loads(got.body)["target"] == "/_test/echo?t=abs"
    assert origin.hits("/_test/echo?t=abs") == 1  # the configured origin answered, not evil.example


async def test_http10_closes_unless_keep_alive_is_asked(strict: tuple[OriginClient, Proc, Path]) -> None:
    _, edge, _ = strict
    reader, writer = await connect(edge)
    writer.write(b"GET /_test/blob/10?t=h10 HTTP/1.0\r\n\r\n")
    got = await read_reply(reader)
    assert got.status == 200 and len(got.body) == 10 and got.headers["connection"] == "close"
    assert await at_eof(reader)
    writer.close()
    reader, writer = await connect(edge)
    for _ in range(2):
        writer.write(b"GET /_test/blob/10?t=h10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        got = await read_reply(reader)
        assert got.status == 200 and got.headers["connection"] == "keep-alive"
    writer.close()


async def test_expect_100_continue_on_a_pass_through_body(strict: tuple[OriginClient, Proc, Path]) -> None:
    _, edge, _ = strict
    reader, writer = await connect(edge)
    writer.write(
        b"POST /_test/echo?t=expect HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    )
    interim = await read_reply(reader)
    assert interim.status == 100
    writer.write(b"hello")
    got = await read_reply(reader)
    writer.close()
    assert got.status == 200 and json.loads(got.body)["body_len"] == 5


async def test_chunked_request_body_streams_to_the_origin(strict: tuple[OriginClient, Proc, Path]) -> None:
    _, edge, _ = strict
    reader, writer = await connect(edge)
    writer.write(b"PUT /_test/echo?t=chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    for part in (b"a" * 1000, b"b" * 70_000, b"c"):
        writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    got = await read_reply(reader)
    writer.close()
    assert got.status == 200 and json.loads(got.body)["body_len"] == 71_001


async def test_a_connection_that_never_sends_a_byte_is_closed(
    strict: tuple[OriginClient, Proc, Path],
) -> None:
    _, edge, _ = strict
    reader, writer = await connect(edge)
    assert await at_eof(reader)  # header_timeout counts from the accept
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed(strict: tuple[OriginClient, Proc, Path]) -> None:
    _, edge, _ = strict
    reader, writer = await connect(edge)
    writer.write(b"GET /_test/blob/10?t=idle HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (await read_reply(reader)).status == 200
    assert await at_eof(reader)
    writer.close()


async def test_a_request_body_has_a_deadline(strict: tuple[OriginClient, Proc, Path]) -> None:
    _, edge, _ = strict
    reader, writer = await connect(edge)
    writer.write(b"POST /_test/echo?t=drip HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
    closed = asyncio.create_task(asyncio.wait_for(reader.read(), WAIT_S))  # whatever comes, then EOF
    sent = 0
    while not closed.done() and sent < 200:  # one byte every 50 ms: never idle, yet far too slow
        writer.write(b"x")
        sent += 1
        await asyncio.sleep(0.05)
    answer = await closed
    writer.close()
    assert sent < 200 and b" 200 " not in answer.partition(b"\r\n")[0]


async def test_a_client_closing_mid_response_leaves_the_fill_running(
    strict: tuple[OriginClient, Proc, Path],
) -> None:
    origin, edge, _ = strict
    path = "/_test/blob/3000000?t=walkaway"
    reader, writer = await connect(edge)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: a\r\nX-Test-Gate-After: walkaway:100000\r\n\r\n".encode())
    await origin.await_gate("walkaway", 1)  # the origin sent 100 kB and holds the rest
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    assert head.startswith(b"HTTP/1.1 200 ")
    writer.transport.abort()  # the client goes away mid-body
    origin.release("walkaway")
    reader, writer = await connect(edge)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    again = await read_reply(reader)
    writer.close()
    assert again.status == 200 and len(again.body) == 3_000_000
    assert origin.hits(path) == 1  # the fill went on without its first client, and was shared
