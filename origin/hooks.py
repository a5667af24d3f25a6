"""Test hooks of the reference origin (``serve --test-hooks``): counters, a request log, gates,
and request headers that reshape the response.

Rules of this file: nothing here is installed without the flag; control endpoints are neither
counted nor reshaped; a hook never changes what a request without hook headers gets.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDictProxy

CHUNK = 64 * 1024
LOG_SIZE = 1000
CONTROL_PREFIXES = ("/_test/hits", "/_test/requests", "/_test/reset", "/_test/gates")
_MAX_DELAY_MS = 600_000
_MAX_BYTES = 2**50

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Hooks:
    """What one request's ``X-Test-*``, ``X-Set-*`` and ``X-Remove-*`` headers ask for."""

    status: int | None = None
    redirect: str | None = None
    delay_ms: int = 0
    chunk_delay_ms: int = 0
    gate: str | None = None
    gate_after: tuple[str, int] | None = None
    truncate: int | None = None
    set_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    echo: tuple[tuple[str, str], ...] = ()  # X-Test-Echo: request fields copied into X-Echo-NAME
    status_if: tuple[str, int] | None = None  # X-Test-Status-If: "NAME STATUS", when NAME was sent

    @property
    def shapes_body(self) -> bool:
        return bool(self.chunk_delay_ms or self.gate_after or self.truncate is not None)

    @property
    def etag(self) -> str | None:
        return next((v for k, v in self.set_headers if k.lower() == "etag"), None)


def parse_hooks(headers: CIMultiDictProxy[str]) -> Hooks:
    """Read the hook headers of a request; a malformed value is a 400 naming the header."""
    sets: list[tuple[str, str]] = []
    removes: list[str] = []
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("x-set-") and len(name) > 6:
            sets.append((name[6:], value))
        elif lower.startswith("x-remove-") and len(name) > 9:
            removes.append(name[9:])
    gate_after = None
    if (raw := headers.get("X-Test-Gate-After")) is not None:
        name, sep, size = raw.rpartition(":")
        if not sep or not name:
            raise _bad("X-Test-Gate-After", raw)
        gate_after = (name, _int("X-Test-Gate-After", size, _MAX_BYTES))
    status = headers.get("X-Test-Status")
    truncate = headers.get("X-Test-Truncate")
    if status is not None and _int("X-Test-Status", status, 599) < 200:
        raise _bad("X-Test-Status", status)
    status_if = None
    if (raw := headers.get("X-Test-Status-If")) is not None:
        field, _, code = raw.strip().rpartition(" ")
        if not field or _int("X-Test-Status-If", code, 599) < 200:
            raise _bad("X-Test-Status-If", raw)
        status_if = (field.strip(), int(code))
    echo = tuple(
        (name, headers[name])
        for name in (n.strip() for v in headers.getall("X-Test-Echo", []) for n in v.split(","))
        if name and name in headers
    )
    return Hooks(
        status=None if status is None else int(status),
        redirect=headers.get("X-Test-Redirect"),
        delay_ms=_int("X-Test-Delay-Ms", headers.get("X-Test-Delay-Ms", "0"), _MAX_DELAY_MS),
        chunk_delay_ms=_int(
            "X-Test-Chunk-Delay-Ms", headers.get("X-Test-Chunk-Delay-Ms", "0"), _MAX_DELAY_MS
        ),
        gate=headers.get("X-Test-Gate") or None,
        gate_after=gate_after,
        truncate=None if truncate is None else _int("X-Test-Truncate", truncate, _MAX_BYTES),
        set_headers=tuple(sets),
        remove_headers=tuple(removes),
        echo=echo,
        status_if=status_if,
    )


def _int(name: str, raw: str, high: int) -> int:
    digits = raw.strip()
    if not (digits.isascii() and digits.isdigit()) or int(digits) > high:
        raise _bad(name, raw)
    return int(digits)


def _bad(name: str, raw: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=f"bad {name}: {raw!r}\n")


class Gate:
    """Holds responses until released; once released it lets every later holder through."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.waiting = 0


class HookState:
    """Hit counts per request target, the last requests seen, and the gates."""

    def __init__(self) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=LOG_SIZE)
        self.gates: dict[str, Gate] = {}

    async def hold(self, name: str) -> None:
        gate = self.gates.setdefault(name, Gate())
        if gate.opened.is_set():
            return
        gate.waiting += 1
        try:
            await gate.opened.wait()
        finally:
            gate.waiting -= 1

    def release(self, name: str) -> int:
        gate = self.gates.setdefault(name, Gate())
        gate.opened.set()
        return gate.waiting

    def reset(self) -> None:
        for gate in self.gates.values():
            gate.opened.set()
        self.gates.clear()
        self.hits.clear()
        self.log.clear()


STATE = web.AppKey("hook_state", HookState)
HOOKS = web.RequestKey("hooks", Hooks)
BODY_LEN = web.RequestKey("body_len", int)


def install(app: web.Application) -> None:
    """Add the middleware state, the control endpoints and the response header rewrite."""
    app[STATE] = HookState()
    app.router.add_get("/_test/hits", _hits)
    app.router.add_get("/_test/requests", _requests)
    app.router.add_post("/_test/reset", _reset)
    app.router.add_get("/_test/gates/{name}", _gate_status)
    app.router.add_post("/_test/gates/{name}/release", _gate_release)
    app.on_response_prepare.append(_rewrite_headers)
    app.on_shutdown.append(_release_all)


def header_dict(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """Headers as JSON: lower-case names, repeated fields joined with ', '."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _is_control(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in CONTROL_PREFIXES)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and log the request, read its body, then apply the hooks that act before headers."""
    if _is_control(request.path):
        return await handler(request)
    state = request.app[STATE]
    state.hits[request.raw_path] += 1
    entry: dict[str, Any] = {
        "method": request.method,
        "target": request.raw_path,
        "headers": header_dict(request.headers),
        "body_len": 0,
    }
    state.log.append(entry)
    body_len = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        body_len += len(chunk)
    entry["body_len"] = request[BODY_LEN] = body_len
    hooks = request[HOOKS] = parse_hooks(request.headers)
    if hooks.gate is not None:
        await state.hold(hooks.gate)
    if hooks.delay_ms:
        await asyncio.sleep(hooks.delay_ms / 1000)
    if hooks.status_if is not None and hooks.status_if[0] in request.headers:
        return web.Response(status=hooks.status_if[1], text=f"status {hooks.status_if[1]}")
    if hooks.status is not None:
        empty = hooks.status in (204, 304)
        return web.Response(status=hooks.status, text=None if empty else f"status {hooks.status}")
    if hooks.redirect is not None:
        return web.Response(status=302, headers={"Location": hooks.redirect})
    return await handler(request)


async def _rewrite_headers(request: web.Request, response: web.StreamResponse) -> None:
    hooks = request.get(HOOKS)
    if hooks is None:
        return
    for name in hooks.remove_headers:
        response.headers.popall(name, None)
    for name in {name.lower() for name, _ in hooks.set_headers}:
        response.headers.popall(name, None)
    for name, value in hooks.set_headers:
        response.headers.add(name, value)
    for name, value in hooks.echo:
        response.headers["X-Echo-" + name] = value


def etag_matches(request: web.Request, etag: str) -> bool:
    """RFC 9110 §13.1.2: If-None-Match uses the weak comparison; ``*`` matches any."""
    tags = request.if_none_match
    if tags is None:
        return False
    value = etag.removeprefix("W/").strip('"')
    return any(t.value in ("*", value) for t in tags)


async def send_body(
    request: web.Request, response: web.StreamResponse, chunks: AsyncIterator[bytes], hooks: Hooks
) -> None:
    """Write a prepared response's body with chunk delays, a gate after N bytes, a truncation.

    The gate and the cut act only while some of the body is still unsent.
    """
    state = request.app[STATE]
    gate = hooks.gate_after
    cuts = sorted({n for n in (hooks.truncate, gate[1] if gate else None) if n})
    sent = 0
    async for piece in _split(_paced(chunks, hooks.chunk_delay_ms), cuts):
        if gate is not None and sent >= gate[1]:
            await state.hold(gate[0])
            gate = None
        if hooks.truncate is not None and sent >= hooks.truncate:
            _cut(request)
            return
        await response.write(piece)
        sent += len(piece)


def _cut(request: web.Request) -> None:
    """Close the connection once what was written is flushed: the body ends short."""
    if request.transport is not None:
        request.transport.close()


async def _paced(chunks: AsyncIterator[bytes], delay_ms: int) -> AsyncIterator[bytes]:
    first = True
    async for chunk in chunks:
        if delay_ms and not first:
            await asyncio.sleep(delay_ms / 1000)
        first = False
        yield chunk


async def _split(chunks: AsyncIterator[bytes], cuts: list[int]) -> AsyncIterator[bytes]:
    pos = 0
    async for chunk in chunks:
        start = 0
        for cut in cuts:
            if pos < cut < pos + len(chunk):
                yield chunk[start : cut - pos]
                start = cut - pos
        yield chunk[start:]
        pos += len(chunk)


class ShapedFileResponse(web.FileResponse):
    """A FileResponse whose body goes through send_body instead of sendfile."""

    def __init__(self, path: Any, hooks: Hooks, headers: dict[str, str]) -> None:
        super().__init__(path, chunk_size=CHUNK, headers=headers)
        self._hooks = hooks

    async def _sendfile(self, request: Any, fobj: IO[Any], offset: int, count: int) -> AbstractStreamWriter:
        writer = await web.StreamResponse.prepare(self, request)
        assert writer is not None
        await send_body(request, self, _read_file(fobj, offset, count), self._hooks)
        return writer


async def _read_file(fobj: IO[Any], offset: int, count: int) -> AsyncIterator[bytes]:
    await asyncio.to_thread(fobj.seek, offset)
    while count > 0:
        chunk: bytes = await asyncio.to_thread(fobj.read, min(CHUNK, count))
        if not chunk:
            return
        count -= len(chunk)
        yield chunk


def file_response(
    request: web.Request, hooks: Hooks, path: Any, headers: dict[str, str]
) -> web.StreamResponse:
    """A file answer under hooks: 304 against an X-Set-ETag, or a shaped body when asked."""
    if hooks.etag is not None and etag_matches(request, hooks.etag):
        return web.Response(status=304, headers=headers)
    if hooks.shapes_body:
        return ShapedFileResponse(path, hooks, headers)
    return web.FileResponse(path, headers=headers)


async def _hits(request: web.Request) -> web.Response:
    hits = request.app[STATE].hits
    if (path := request.query.get("path")) is not None:
        return web.json_response({"path": path, "hits": hits[path]})
    return web.json_response({"hits": dict(hits)})


async def _requests(request: web.Request) -> web.Response:
    log = request.app[STATE].log
    path = request.query.get("path")
    return web.json_response([e for e in log if path is None or e["target"] == path])


async def _reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.json_response({"reset": True})


async def _gate_status(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    gate = request.app[STATE].gates.get(name)
    waiting, released = (gate.waiting, gate.opened.is_set()) if gate else (0, False)
    return web.json_response({"gate": name, "waiting": waiting, "released": released})


async def _gate_release(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return web.json_response({"gate": name, "released": request.app[STATE].release(name)})


async def _release_all(app: web.Application) -> None:
    for gate in app[STATE].gates.values():
        gate.opened.set()
