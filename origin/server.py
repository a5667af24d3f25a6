"""The reference origin's aiohttp app: files under ROOT with validators and Cache-Control rules.

Rules of this file: the raw request target is decoded one segment at a time and must resolve
inside ROOT, symlinks included, or the answer is 404 (400 when malformed), never the file.
Range and conditional requests on files are aiohttp's FileResponse, not ours.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

from origin import blob, changes, hooks
from origin.rules import Rules

ROOT = web.AppKey("root", Path)
RULES = web.AppKey("rules", Rules)
INDEX = "index.html"

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def make_app(
    root: Path, rules: Rules | None = None, *, test_hooks: bool = False, changes_log: Path | None = None
) -> web.Application:
    app = web.Application(middlewares=[hooks.middleware] if test_hooks else [])
    app[ROOT] = root.resolve(strict=True)
    app[RULES] = rules or Rules()
    app[changes.CHANGES] = changes_log or changes.default_log(root)
    if test_hooks:
        hooks.install(app)
        blob.install(app)
    app.router.add_get("/_origin/changes", changes.changes_handler)
    app.router.add_route("*", "/{tail:.*}", serve_file)
    return app


async def serve_file(request: web.Request) -> web.StreamResponse:
    """GET/HEAD a file under ROOT; a directory answers with its index.html."""
    segments = target_segments(request.raw_path)
    if segments is None:
        raise web.HTTPNotFound()
    found = await asyncio.to_thread(resolve_file, request.app[ROOT], segments)
    if found is None:
        raise web.HTTPNotFound()
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    path, served = found
    headers = {"Cache-Control": request.app[RULES].cache_control("/" + "/".join(served))}
    shaping = request.get(hooks.HOOKS)
    if shaping is not None:
        return hooks.file_response(request, shaping, path, headers)
    return web.FileResponse(path, headers=headers)


def target_segments(raw_path: str) -> list[str] | None:
    """Decoded path segments of a request target; None for ``..``; 400 when malformed."""
    target = raw_path.split("?", 1)[0]
    if not target.startswith("/") or _BAD_ESCAPE.search(target):
        raise web.HTTPBadRequest(text="malformed request target\n")
    segments = []
    for raw in target.split("/"):
        try:
            segment = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise web.HTTPBadRequest(text="malformed request target\n") from None
        if segment in ("", "."):
            continue
        if segment == "..":
            return None
        if any(c in segment for c in "/\\\0"):
            raise web.HTTPBadRequest(text="malformed request target\n")
        segments.append(segment)
    return segments


def resolve_file(root: Path, segments: list[str]) -> tuple[Path, list[str]] | None:
    """The file inside root these segments name, and the path it is served as; blocking."""
    for served in (segments, [*segments, INDEX]):
        candidate = root.joinpath(*served)
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not real.is_relative_to(root):
            return None
        if real.is_file():
            return real, served
        if not real.is_dir():
            return None
    return None
