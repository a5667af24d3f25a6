"""`edgecdn-origin publish FILE… --root ROOT --edge URL…`: place files, log the change, tell the edges.

Rules of this file: a file reaches its place under ROOT whole (temporary file in the same directory, fsync,
rename), the change log is appended only after every rename, and edges are told last; an edge that misses
the message catches up from the log (GET /_origin/changes), so a failed edge is reported, never fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import hashlib
import json
import math
import mimetypes
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

from edgecdn.control import admin_client
from edgecdn.control.purge import PURGE_PATH
from edgecdn.control.signing import AdminKey, sign
from edgecdn.errors import UsageError
from origin import changes
from origin.rules import ConfigError, Rules, load_rules

MANIFEST_MAX = 64 * 2**20  # a manifest.json larger than this is published as a file, not read


@dataclass(frozen=True, slots=True)
class Placed:
    url_path: str  # e.g. /css/site.css
    file: Path  # where it now lives under ROOT
    etag: str  # what the origin serves for it (aiohttp's FileResponse ETag)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "files",
        nargs="+",
        metavar="PATH[=/URL/PATH]",
        help="file (served as /<its name>), directory (its files under their nested paths), or the "
        "manifest.json of `edgecdn version` (the files it lists)",
    )
    p.add_argument("--root", required=True, type=Path, metavar="ROOT", help="the origin's served directory")
    p.add_argument("--edge", action="append", default=[], metavar="URL", help="edge admin URL (repeatable)")
    p.add_argument("--push", action="store_true", help="push the new bytes to the edges (default: purge)")
    p.add_argument("--key", metavar="KID:SECRET", help=f"admin key (default: ${admin_client.KEY_ENV})")
    p.add_argument("--changes", type=Path, metavar="FILE", help="change log (default: ROOT.changes.jsonl)")
    p.add_argument("--config", type=Path, metavar="FILE", help="origin rules, for pushed Cache-Control")


def file_etag(path: Path) -> str:
    """The ETag aiohttp's FileResponse (the origin) sends for this file."""
    st = path.stat()
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


def plan(specs: list[str], root: Path) -> list[tuple[Path, str, Path]]:
    """(source, URL path, destination) per file; anything leaving ROOT is a UsageError.

    A FILE is served as /<its name> (or FILE=/URL/PATH); a DIRECTORY as its files under their paths
    inside it (`dist/js/a.js` -> /js/a.js, DIR=/prefix puts them under /prefix); the manifest.json of
    `edgecdn version` as the files it lists, at their paths relative to it.
    """
    out = []
    root = root.resolve()
    for spec in specs:
        source_text, sep, url_path = spec.partition("=")
        source = Path(source_text)
        if source.is_dir():
            prefix = url_path.rstrip("/") if sep else ""
            pairs = [(src, prefix + url) for src, url in _directory(source)]
        elif sep:
            pairs = [(source, url_path)] if source.is_file() else []
        else:
            pairs = _listed(source) if source.is_file() else []
        if not pairs and not source.is_dir():
            raise UsageError(f"{source_text!r}: not a file or directory")
        out += [(src, url, _dest(root, url)) for src, url in pairs]
    if not out:
        raise UsageError("nothing to publish: the directories given hold no files")
    return out


def _dest(root: Path, url_path: str) -> Path:
    parts = url_path.split("/")
    if not url_path.startswith("/") or any(p in (".", "..") or "\\" in p for p in parts):
        raise UsageError(f"{url_path!r}: expected an absolute URL path without . or .. segments")
    dest = root.joinpath(*[p for p in parts if p])
    if not dest.resolve().is_relative_to(root) or dest == root:
        raise UsageError(f"{url_path!r}: resolves outside ROOT")
    return dest


def _directory(top: Path) -> list[tuple[Path, str]]:
    """Regular files under `top` (symlinks not followed, dot files skipped), as /relative/paths."""
    pairs = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not name.startswith(".") and path.is_file() and not path.is_symlink():
                pairs.append((path, "/" + path.relative_to(top).as_posix()))
    return pairs


def _listed(source: Path) -> list[tuple[Path, str]]:
    """A versioning manifest.json: the files it lists (paths relative to it); any other file: itself."""
    if source.suffix != ".json" or source.stat().st_size > MANIFEST_MAX:
        return [(source, "/" + source.name)]
    try:
        doc = json.loads(source.read_bytes())
    except ValueError:
        return [(source, "/" + source.name)]
    files = doc.get("files") if isinstance(doc, dict) and doc.get("version") == 1 else None
    if not isinstance(files, dict) or not all(isinstance(f, dict) and "hash" in f for f in files.values()):
        return [(source, "/" + source.name)]  # some other JSON file (a web app manifest, say)
    pairs = []
    for entry in files.values():
        rel = entry.get("path")
        if not isinstance(rel, str) or not rel or rel.startswith("/"):
            raise UsageError(f"{source}: {rel!r}: expected a relative path")
        path = source.parent / rel
        if not path.is_file():
            raise UsageError(f"{source} lists {rel!r}, but {path} is not a file")
        pairs.append((path, "/" + rel))
    return pairs


def place(source: Path, dest: Path) -> None:
    """Copy atomically: a reader sees the old file or the new one, never a part."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


async def notify(
    key: AdminKey, edges: list[str], placed: list[Placed], *, push: bool, rules: Rules
) -> list[admin_client.EdgeResult]:
    """Purge the changed URLs on every edge (one call each), or push each file's new bytes."""
    if not push:
        payload = {"urls": [p.url_path for p in placed]}
        return await admin_client.fan_out(key, edges, "POST", PURGE_PATH, payload)
    timeout = aiohttp.ClientTimeout(total=admin_client.TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
        return list(await asyncio.gather(*(_push_all(session, key, e, placed, rules) for e in edges)))


async def _push_all(
    session: aiohttp.ClientSession, key: AdminKey, edge: str, placed: list[Placed], rules: Rules
) -> admin_client.EdgeResult:
    started = time.monotonic()
    for p in placed:
        digest, size = await asyncio.to_thread(_sha256_file, p.file)
        path = "/_edge/push" + p.url_path
        headers = {
            "Content-Type": mimetypes.guess_type(p.url_path)[0] or "application/octet-stream",
            "Cache-Control": rules.cache_control(p.url_path),
            "ETag": p.etag,
            # Rounded up, as aiohttp's FileResponse does, so a push and a fill of one file agree.
            "Last-Modified": email.utils.formatdate(math.ceil(p.file.stat().st_mtime), usegmt=True),
            "Content-Length": str(size),
            **sign(key, "PUT", path, digest, time.time()),
        }
        try:
            body = await asyncio.to_thread(open, p.file, "rb")  # streamed, never read whole
            try:
                async with session.put(edge + path, data=body, headers=headers) as r:
                    text = await r.text()
            finally:
                body.close()
            if r.status != 200:
                return admin_client.EdgeResult(edge, r.status, text[:200], time.monotonic() - started)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return admin_client.EdgeResult(
                edge, None, f"{type(e).__name__}: {e}"[:120], time.monotonic() - started
            )
    return admin_client.EdgeResult(edge, 200, {"pushed": len(placed)}, time.monotonic() - started)


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def run(args: argparse.Namespace) -> int:
    """Place, log, notify; 0 only when every edge acknowledged."""
    key = admin_client.key_from(args.key) if args.edge else None
    edges = [admin_client.edge_url(e) for e in args.edge]
    if not args.root.is_dir():
        raise UsageError(f"--root {str(args.root)!r}: not a directory")
    try:
        rules = load_rules(args.config) if args.config else Rules()
    except ConfigError as e:
        raise UsageError(f"--config {e}") from None
    placed = []
    for source, url_path, dest in plan(args.files, args.root):
        place(source, dest)
        placed.append(Placed(url_path, dest, file_etag(dest)))
    log = args.changes or changes.default_log(args.root)
    logged = changes.append(log, [(p.url_path, p.etag) for p in placed], time.time())
    print(f"published {len(placed)} file(s), change log {log} now at seq {logged[-1].seq}")
    if key is None:
        return 0
    results = asyncio.run(notify(key, edges, placed, push=args.push, rules=rules))
    table = Table(title="push" if args.push else "purge")
    table.add_column("edge", no_wrap=True)
    table.add_column("status", justify="right")
    table.add_column("ms", justify="right")
    table.add_column("error", overflow="fold")
    for r in results:
        status = str(r.status) if r.status is not None else "-"
        table.add_row(r.edge, status, f"{r.seconds * 1000:.0f}", r.error)
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return 0 if all(r.ok for r in results) else 1
