"""Prefetch tasks: the `POST /_edge/prefetch` body, each task's per-URL state, and the bounded queue.

Rules of this file: no I/O and no clock reads (time is an argument); a body is validated whole before
anything is queued; the queue never holds more than `queue` URLs and a finished task is forgotten
`keep_results` seconds after it ended, so memory stays bounded whatever callers send.
"""

from __future__ import annotations

import enum
import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from edgecdn.config import PrefetchConfig
from edgecdn.control.purge import BadPurge, url_key

PREFETCH_PATH = "/_edge/prefetch"
MAX_TASKS = 10_000  # tasks remembered at most; the oldest finished ones are forgotten first
MAX_HEADERS = 32
MAX_HEADER_CHARS = 4096
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
# Fields a prefetch may not set: they frame the request or would make the fill something else.
REFUSED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "range", "if-range", "expect", "upgrade"}
)


class BadPrefetch(ValueError):
    """The prefetch body is not acceptable; the message names the field."""


class QueueFull(Exception):
    def __init__(self, queued: int, limit: int, asked: int) -> None:
        super().__init__(f"prefetch queue full: {queued} URLs waiting, limit {limit}, asked for {asked}")
        self.detail = {"queued": queued, "limit": limit, "asked": asked}


class UrlState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    WARMED = "warmed"  # fetched (or revalidated) and stored
    FRESH = "fresh"  # already fresh in the cache: nothing fetched
    FAILED = "failed"


DONE_STATES = frozenset({UrlState.WARMED, UrlState.FRESH, UrlState.FAILED})


@dataclass(frozen=True, slots=True)
class PrefetchItem:
    url: str  # the cache key (path and query)
    headers: tuple[tuple[str, str], ...] = ()  # request fields: select the Vary variant to warm


@dataclass(slots=True)
class UrlResult:
    item: PrefetchItem
    state: UrlState = UrlState.QUEUED
    bytes: int = 0
    seconds: float | None = None  # time to fill
    key: str | None = None  # the cache key (variant) it filled
    status: int | None = None  # the origin's status, when one answered
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.item.url, "state": self.state.value, "bytes": self.bytes}
        if self.item.headers:
            out["headers"] = dict(self.item.headers)
        if self.seconds is not None:
            out["ms"] = round(self.seconds * 1000, 1)
        for name in ("key", "status", "error"):
            if (value := getattr(self, name)) is not None:
                out[name] = value
        return out


@dataclass(slots=True)
class Task:
    id: str
    created: float
    results: list[UrlResult]
    ended: float | None = None
    pending: int = field(init=False)  # URLs not done yet

    def __post_init__(self) -> None:
        self.pending = len(self.results)

    @property
    def state(self) -> str:
        if self.pending == 0:
            return "done"
        if all(r.state is UrlState.QUEUED for r in self.results):
            return "queued"
        return "running"

    def to_json(self) -> dict[str, Any]:
        counts = {s.value: 0 for s in UrlState}
        for r in self.results:
            counts[r.state.value] += 1
        return {
            "task": self.id,
            "state": self.state,
            "counts": counts,
            "bytes": sum(r.bytes for r in self.results),
            "urls": [r.to_json() for r in self.results],
        }


def parse_prefetch(data: object, *, max_urls: int) -> tuple[PrefetchItem, ...]:
    """`{"urls": ["/a", {"url": "/b", "headers": {...}}], "headers": {...}}` → items (task headers first)."""
    if not isinstance(data, dict):
        raise BadPrefetch("the body must be a JSON object")
    unknown = set(data) - {"urls", "headers"}
    if unknown:
        raise BadPrefetch(f"unknown field {sorted(unknown)[0]!r}")
    common = _headers(data.get("headers", {}), "headers")
    urls = data.get("urls")
    if not isinstance(urls, list) or not urls:
        raise BadPrefetch('urls: expected a non-empty list of paths or {"url", "headers"} objects')
    if len(urls) > max_urls:
        raise BadPrefetch(f"urls: at most {max_urls} per request")
    return tuple(_item(u, i, common) for i, u in enumerate(urls))


def _item(value: object, i: int, common: dict[str, str]) -> PrefetchItem:
    where = f"urls[{i}]"
    own: dict[str, str] = {}
    if isinstance(value, dict):
        if set(value) - {"url", "headers"}:
            raise BadPrefetch(f"{where}: only url and headers are allowed")
        own = _headers(value.get("headers", {}), f"{where}.headers")
        value = value.get("url")
    if not isinstance(value, str) or not value or len(value) > MAX_HEADER_CHARS:
        raise BadPrefetch(f"{where}: expected a URL or absolute path")
    try:
        key = url_key(value)
    except BadPurge as e:
        raise BadPrefetch(f"{where}: {str(e).removeprefix('urls: ')}") from None
    if any(c < " " or c == "\x7f" for c in key):
        raise BadPrefetch(f"{where}: control characters in the URL")
    merged = {**common, **own}
    return PrefetchItem(key, tuple(merged.items()))


def _headers(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadPrefetch(f"{where}: expected an object of header names to values")
    if len(value) > MAX_HEADERS:
        raise BadPrefetch(f"{where}: at most {MAX_HEADERS} headers")
    out: dict[str, str] = {}
    for name, v in value.items():
        if not _TOKEN_RE.fullmatch(name) or name.lower() in REFUSED_HEADERS:
            raise BadPrefetch(f"{where}: {name[:64]!r} is not a header a prefetch may send")
        if not isinstance(v, str) or len(v) > MAX_HEADER_CHARS or any(c < " " and c != "\t" for c in v):
            raise BadPrefetch(f"{where}.{name}: expected a printable string")
        out[name.title()] = v
    return out


class Registry:
    """Tasks by id and the URLs waiting for a worker, oldest first."""

    def __init__(self, cfg: PrefetchConfig) -> None:
        self.cfg = cfg
        self.tasks: OrderedDict[str, Task] = OrderedDict()
        self.waiting: deque[tuple[Task, UrlResult]] = deque()

    def submit(self, task_id: str, items: tuple[PrefetchItem, ...], *, now: float) -> Task:
        """Queue a new task's URLs; QueueFull when they do not fit (nothing is queued then)."""
        if len(self.waiting) + len(items) > self.cfg.queue:
            raise QueueFull(len(self.waiting), self.cfg.queue, len(items))
        task = Task(task_id, now, [UrlResult(item) for item in items])
        self.tasks[task_id] = task
        self.waiting.extend((task, r) for r in task.results)
        self.expire(now=now)
        return task

    def next(self) -> tuple[Task, UrlResult] | None:
        """The next URL to warm, now marked running."""
        if not self.waiting:
            return None
        task, result = self.waiting.popleft()
        result.state = UrlState.RUNNING
        return task, result

    def finish(self, task: Task, result: UrlResult, *, now: float) -> None:
        if result.state not in DONE_STATES:
            raise ValueError(f"{result.state}: not a final state")
        task.pending -= 1
        if task.pending == 0:
            task.ended = now

    def get(self, task_id: str, *, now: float) -> Task | None:
        self.expire(now=now)
        return self.tasks.get(task_id)

    def expire(self, *, now: float) -> None:
        """Forget finished tasks older than keep_results, and the oldest finished beyond MAX_TASKS."""
        excess = len(self.tasks) - MAX_TASKS
        for task_id, task in list(self.tasks.items()):
            if task.ended is not None and (excess > 0 or now - task.ended > self.cfg.keep_results):
                del self.tasks[task_id]
                excess -= 1
