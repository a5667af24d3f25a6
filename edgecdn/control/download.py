"""`edgecdn download URL`: a client that obeys `/_edge/jitter`, resumes with Range and verifies hashes.

Rules of this file: the body goes to `FILE.part` and reaches FILE only whole (and, for a versioned URL,
only when it hashes to its name); a broken connection resumes from the bytes already written with
`Range` + `If-Range`, a 200 to that restarts from zero; bounded retries, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlencode, urlsplit

import aiohttp
import xxhash

from edgecdn import clock
from edgecdn.control.versioning import parse_versioned
from edgecdn.errors import EdgeError, UsageError

CHUNK = 1 << 16
MAX_WAIT_S = 24 * 3600.0
BACKOFF_S = (0.2, 5.0)


class DownloadFailed(EdgeError):
    """The download did not complete (HTTP error, retries exhausted, hash mismatch): exit 1."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", metavar="URL", help="http(s) URL of the object on an edge")
    p.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="where to write (default: the URL's name)"
    )
    p.add_argument("--client-id", metavar="ID", help="stable id for /_edge/jitter (default: a random one)")
    p.add_argument("--no-jitter", action="store_true", help="start at once, do not ask /_edge/jitter")
    p.add_argument("--retries", type=int, default=5, metavar="N", help="resumes after a break (default 5)")
    p.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="request header (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{args.url!r}: expected an http(s) URL")
    name = unquote(parts.path.rpartition("/")[2])
    out: Path = args.output or Path(name)
    if not out.name or out.name in (".", ".."):
        raise UsageError(f"{args.url!r}: no file name in the URL; give -o FILE")
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: {out.parent} is not a directory")
    if args.retries < 0:
        raise UsageError("--retries: must be >= 0")
    headers = {}
    for h in args.header:
        hname, sep, value = h.partition(":")
        if not sep or not hname.strip() or any(c in h for c in "\r\n"):
            raise UsageError(f"--header {h!r}: expected NAME:VALUE")
        headers[hname.strip()] = value.strip()
    size = asyncio.run(download(args.url, out, headers, args))
    print(f"{out}: {size} bytes" + (" (xxh3-64 verified)" if parse_versioned(parts.path) else ""))
    return 0


async def download(url: str, out: Path, headers: dict[str, str], args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False, auto_decompress=False) as s:
        if not args.no_jitter:
            wait = await ask_jitter(s, url, args.client_id)
            if wait is None:
                console.print("no jitter answer from the edge: starting now")
            elif wait > 0:
                console.print(f"waiting {wait:.1f} s before downloading (/_edge/jitter)")
                await asyncio.sleep(wait)
        return await fetch_resuming(s, url, out, headers, args.retries, console)


async def ask_jitter(s: aiohttp.ClientSession, url: str, client: str | None) -> float | None:
    """Seconds to wait, from the edge's /_edge/jitter; None when it does not answer one."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    query = {"url": target, **({"client": client} if client else {})}
    try:
        async with s.get(f"{parts.scheme}://{parts.netloc}/_edge/jitter?{urlencode(query)}") as r:
            body: Any = await r.json(content_type=None) if r.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    if not isinstance(body, dict) or not isinstance(body.get("not_before"), int):
        return None
    return min(MAX_WAIT_S, max(0.0, int(body["not_before"]) / 1000 - clock.now()))


async def fetch_resuming(
    s: aiohttp.ClientSession, url: str, out: Path, headers: dict[str, str], retries: int, console: Any
) -> int:
    """GET `url` into `out`, resuming after breaks; the part file is removed on any failure."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    part = out.with_name(out.name + ".part")
    columns = (TextColumn(out.name), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    f = await asyncio.to_thread(open, part, "wb")
    try:
        with f, Progress(*columns, console=console, disable=not console.is_terminal) as bar:
            body = Body(f, bar, bar.add_task("download", total=None))
            for attempt in range(retries + 1):
                try:
                    await body.get(s, url, headers)
                    break
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as e:
                    if attempt == retries:
                        raise DownloadFailed(f"{url}: broken after {attempt} resumes: {e}") from None
                    console.print(f"connection broke at {body.have} bytes ({type(e).__name__}); resuming")
                    await asyncio.sleep(min(BACKOFF_S[1], BACKOFF_S[0] * 2**attempt))
        expect = parse_versioned(urlsplit(url).path)
        if expect is not None and body.hasher.hexdigest() != expect:
            raise DownloadFailed(
                f"{url}: the body hashes to {body.hasher.hexdigest()}, not {expect}; not kept"
            )
        os.replace(part, out)
        return body.have
    except BaseException:
        part.unlink(missing_ok=True)
        raise


class Body:
    """The bytes received so far (in the part file and the running hash) and how to ask for the rest."""

    def __init__(self, f: IO[bytes], bar: Any, task: Any) -> None:
        self.f, self.bar, self.task = f, bar, task
        self.hasher = xxhash.xxh3_64()
        self.have = 0
        self.validator: str | None = None  # ETag (or Last-Modified) of what we have, for If-Range

    async def get(self, s: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
        ask = dict(headers)
        if self.have and self.validator:
            ask.update({"Range": f"bytes={self.have}-", "If-Range": self.validator})
        async with s.get(url, headers=ask, allow_redirects=False) as r:
            if r.status not in (200, 206) or (r.status == 206 and "Range" not in ask):
                raise DownloadFailed(f"{url}: HTTP {r.status}")
            if r.status == 206 and not r.headers.get("Content-Range", "").startswith(f"bytes {self.have}-"):
                raise DownloadFailed(
                    f"{url}: resumed at {self.have}, got Content-Range {r.headers.get('Content-Range')!r}"
                )
            if r.status == 200 and self.have:  # changed since, or no Range support: from the start
                self.have, self.hasher = 0, xxhash.xxh3_64()
                self.f.seek(0)
                self.f.truncate()
            self.validator = r.headers.get("ETag") or r.headers.get("Last-Modified")
            total = None if r.content_length is None else self.have + r.content_length
            self.bar.update(self.task, total=total, completed=self.have)
            async for chunk in r.content.iter_chunked(CHUNK):
                await asyncio.to_thread(self.f.write, chunk)
                self.hasher.update(chunk)
                self.have += len(chunk)
                self.bar.update(self.task, completed=self.have)
            if total is not None and self.have != total:
                raise aiohttp.ClientPayloadError(f"short body: {self.have} of {total} bytes")
