"""Purge requests: the `POST /_edge/purge` body, what it matches, and the `edgecdn purge` command.

Rules of this file: a purge body is validated whole before anything is purged (a bad one changes nothing);
URLs are matched by cache key, which is the path and query exactly as requested (policy/key.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from edgecdn.control import admin_client
from edgecdn.errors import UsageError

PURGE_PATH = "/_edge/purge"
MAX_ITEMS = 10_000  # selectors per request, all kinds together
MAX_ITEM_CHARS = 8192


class BadPurge(ValueError):
    """The purge body is not acceptable; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class PurgeRequest:
    urls: tuple[str, ...] = ()  # cache keys (path and query)
    prefixes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    soft: bool = False

    def matches(self, primary: str, tags: tuple[str, ...] | None) -> bool:
        """Does a fill for `primary` fall under this purge? Unknown tags (None) count as a match."""
        if primary in self.urls or (self.prefixes and primary.startswith(self.prefixes)):
            return True
        if not self.tags:
            return False
        return tags is None or not set(self.tags).isdisjoint(tags)

    def to_json(self) -> dict[str, Any]:
        return {
            "urls": list(self.urls),
            "prefixes": list(self.prefixes),
            "tags": list(self.tags),
            "soft": self.soft,
        }


def url_key(url: str) -> str:
    """`http://edge/a/b?x=1` or `/a/b?x=1` → `/a/b?x=1`, the cache key of that URL."""
    parts = urlsplit(url)
    if parts.scheme and parts.scheme not in ("http", "https"):
        raise BadPurge(f"urls: {url[:100]!r} is not an http(s) URL or an absolute path")
    path = parts.path or "/"
    if not path.startswith("/"):
        raise BadPurge(f"urls: {url[:100]!r} is not an http(s) URL or an absolute path")
    return path + (f"?{parts.query}" if parts.query else "")


def parse_purge(data: object) -> PurgeRequest:
    """Validate a decoded JSON purge body; at least one selector is required."""
    if not isinstance(data, dict):
        raise BadPurge("the body must be a JSON object")
    unknown = set(data) - {"urls", "prefixes", "tags", "soft"}
    if unknown:
        raise BadPurge(f"unknown field {sorted(unknown)[0]!r}")
    soft = data.get("soft", False)
    if not isinstance(soft, bool):
        raise BadPurge("soft: expected true or false")
    lists = {name: _strings(data, name) for name in ("urls", "prefixes", "tags")}
    if not any(lists.values()):
        raise BadPurge("nothing to purge: give urls, prefixes or tags")
    if sum(map(len, lists.values())) > MAX_ITEMS:
        raise BadPurge(f"at most {MAX_ITEMS} selectors per request")
    for prefix in lists["prefixes"]:
        if not prefix.startswith("/"):
            raise BadPurge(f"prefixes: {prefix[:100]!r} must start with /")
    return PurgeRequest(
        urls=tuple(url_key(u) for u in lists["urls"]),
        prefixes=lists["prefixes"],
        tags=lists["tags"],
        soft=soft,
    )


def _strings(data: dict[str, Any], name: str) -> tuple[str, ...]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadPurge(f"{name}: expected a list of non-empty strings")
    if any(len(v) > MAX_ITEM_CHARS for v in value):
        raise BadPurge(f"{name}: an item is longer than {MAX_ITEM_CHARS} characters")
    return tuple(value)


# -- `edgecdn purge` -------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("urls", nargs="*", metavar="URL", help="URL or absolute path to purge (cache key)")
    p.add_argument(
        "--edge", action="append", required=True, metavar="URL", help="edge admin URL (repeatable)"
    )
    p.add_argument("--prefix", action="append", default=[], metavar="P", help="purge keys starting with P")
    p.add_argument("--tag", action="append", default=[], metavar="T", help="purge objects tagged T")
    p.add_argument("--soft", action="store_true", help="mark stale (revalidate) instead of deleting")
    p.add_argument("--key", metavar="KID:SECRET", help=f"admin key (default: ${admin_client.KEY_ENV})")


def run(args: argparse.Namespace) -> int:
    """Purge on every edge at once; 0 only when every edge answered 200."""
    try:
        req = parse_purge({"urls": args.urls, "prefixes": args.prefix, "tags": args.tag, "soft": args.soft})
    except BadPurge as e:
        raise UsageError(str(e)) from None
    key = admin_client.key_from(args.key)
    edges = [admin_client.edge_url(e) for e in args.edge]
    results = asyncio.run(admin_client.fan_out(key, edges, "POST", PURGE_PATH, req.to_json()))
    Console(width=None if sys.stdout.isatty() else 160).print(result_table(results, soft=req.soft))
    return 0 if all(r.ok for r in results) else 1


def result_table(results: list[admin_client.EdgeResult], *, soft: bool) -> Table:
    table = Table(title=f"{'soft' if soft else 'hard'} purge")
    table.add_column("edge", no_wrap=True)
    for column in ("status", "urls", "prefixes", "tags", "in flight", "ms"):
        table.add_column(column, justify="right")
    table.add_column("error", overflow="fold")
    for r in results:
        counts = r.body.get("purged", {}) if r.ok and isinstance(r.body, dict) else {}
        table.add_row(
            r.edge,
            str(r.status) if r.status is not None else "-",
            *(str(counts.get(kind, "")) for kind in ("urls", "prefixes", "tags", "in_flight")),
            f"{r.seconds * 1000:.0f}",
            r.error,
        )
    return table
