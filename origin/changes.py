"""The origin's change log: one JSON line per published change, with a sequence number edges catch up from.

Rules of this file: the log lives outside ROOT (it is never served as content); an append is one
`write` of one line under an exclusive lock, then fsync, so concurrent publishers never share a number and a
crash leaves at most a torn last line, which readers skip.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from aiohttp import web

PAGE = 1000  # changes per GET /_origin/changes answer
CHANGES = web.AppKey("changes", Path)


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    path: str  # URL path on the origin, e.g. /css/site.css
    etag: str  # the ETag the origin now serves for it
    time: float


def default_log(root: Path) -> Path:
    """`/srv/www` → `/srv/www.changes.jsonl`: next to ROOT, never inside it."""
    root = root.resolve()
    return root.with_name(root.name + ".changes.jsonl")


def read(log: Path, since: int = 0, limit: int = PAGE) -> list[Change]:
    """Changes with seq > since, oldest first, at most `limit`; a missing log is an empty one."""
    out: list[Change] = []
    try:
        with open(log, encoding="utf-8") as f:
            for line in f:
                change = _parse(line)
                if change is not None and change.seq > since:
                    out.append(change)
                    if len(out) >= limit:
                        break
    except FileNotFoundError:
        return []
    return out


def append(log: Path, entries: list[tuple[str, str]], now: float) -> list[Change]:
    """Append (path, etag) changes; returns them with their new sequence numbers."""
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = _last_seq(log)
        changes = [Change(last + i + 1, path, etag, now) for i, (path, etag) in enumerate(entries)]
        data = "".join(json.dumps(asdict(c), separators=(",", ":")) + "\n" for c in changes)
        os.write(fd, data.encode("utf-8"))
        os.fsync(fd)
        return changes
    finally:
        os.close(fd)  # closing releases the lock


def _last_seq(log: Path) -> int:
    last = 0
    with open(log, encoding="utf-8") as f:
        for line in f:
            change = _parse(line)
            if change is not None:
                last = max(last, change.seq)
    return last


def _parse(line: str) -> Change | None:
    try:
        raw = json.loads(line)
        return Change(int(raw["seq"]), str(raw["path"]), str(raw["etag"]), float(raw["time"]))
    except (ValueError, KeyError, TypeError):
        return None  # a torn last line after a crash


async def changes_handler(request: web.Request) -> web.Response:
    """GET /_origin/changes?since=N → {"changes": [...], "last": seq of the last one returned}."""
    raw = request.query.get("since", "0")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise web.HTTPBadRequest(text="since: expected a non-negative integer\n")
    since = int(raw)
    found = await asyncio.to_thread(read, request.app[CHANGES], since)
    last = found[-1].seq if found else since
    return web.json_response(
        {"changes": [asdict(c) for c in found], "last": last, "more": len(found) >= PAGE},
        headers={"Cache-Control": "no-store"},
    )
