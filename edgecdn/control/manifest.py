"""Prefetch manifests: the text form (one URL a line, `#` comments, optional headers) and `manifest.json`.

Rules of this file: the text form is read a line at a time and the JSON form is the small index written by
`edgecdn version` (no bodies), so 10 000 lines cost kilobytes; a bad line is a UsageError naming the file
and line, and nothing is sent before the whole manifest parsed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

from edgecdn.control.prefetch import BadPrefetch, PrefetchItem, parse_prefetch
from edgecdn.errors import UsageError

MAX_LINES = 1_000_000
MAX_LINE_CHARS = 16_384
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_HEADER_RE = re.compile(rf"({_TOKEN}):[ \t]*(.*?)(?=\s+{_TOKEN}:|\s*$)")


def read_manifest(path: Path) -> list[PrefetchItem]:
    """The items of a text or JSON manifest (JSON when its first non-blank character is `{`)."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.read(1)
            while first.isspace():
                first = f.read(1)
            f.seek(0)
            if first == "{":
                return _json_items(path, f.read(64 * 2**20 + 1))
            return list(_text_items(path, f))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror or e}") from None


def parse_line(line: str) -> tuple[str, dict[str, str]] | None:
    """`/app.js  Accept-Encoding: br` → ("/app.js", {"Accept-Encoding": "br"}); None: blank or comment."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    url, *more = text.split(None, 1)
    rest = more[0] if more else ""
    headers: dict[str, str] = {}
    pos = 0
    for m in _HEADER_RE.finditer(rest):
        if rest[pos : m.start()].strip():
            break
        headers[m.group(1)] = m.group(2).strip()
        pos = m.end()
    if rest[pos:].strip():
        raise ValueError(f"expected `URL [Name: value ...]`, could not read {rest[pos:][:60]!r}")
    return url, headers


def _text_items(path: Path, lines: Iterable[str]) -> Iterator[PrefetchItem]:
    for number, line in enumerate(lines, start=1):
        if number > MAX_LINES:
            raise UsageError(f"{path}: more than {MAX_LINES} lines")
        if len(line) > MAX_LINE_CHARS:
            raise UsageError(f"{path}:{number}: line longer than {MAX_LINE_CHARS} characters")
        try:
            parsed = parse_line(line)
            if parsed is None:
                continue
            url, headers = parsed
            yield parse_prefetch({"urls": [{"url": url, "headers": headers}]}, max_urls=1)[0]
        except (ValueError, BadPrefetch) as e:
            why = re.sub(r"^urls\[0\](\.headers)?: ", "", str(e))
            raise UsageError(f"{path}:{number}: {why}") from None


def _json_items(path: Path, text: str) -> list[PrefetchItem]:
    """`edgecdn version`'s manifest.json: {"version": 1, "files": {logical: {"path", "size", "hash"}}}."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise UsageError(f"{path}: invalid JSON manifest: {e}") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict) or doc.get("version") != 1:
        raise UsageError(
            f'{path}: expected the manifest.json of `edgecdn version` ({{"version": 1, "files": …}})'
        )
    items = []
    for logical, entry in files.items():
        vpath = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(vpath, str) or not vpath or vpath.startswith("/"):
            raise UsageError(f"{path}: files[{logical!r}].path: expected a relative path")
        try:
            items.append(parse_prefetch({"urls": ["/" + quote(vpath)]}, max_urls=1)[0])
        except BadPrefetch as e:
            raise UsageError(f"{path}: files[{logical!r}]: {e}") from None
    if not items:
        raise UsageError(f"{path}: no files in the manifest")
    return items
