"""Content-hash versioned names (`name.<xxh3-64 hex>.ext`) and `edgecdn version SRC --out DIST`.

Rules of this file: a versioned name promises that its bytes hash to the name, so a file reaches
its final name only whole and only after its copy was hashed again. Reruns are idempotent (no new
files, no rewritten manifests, no touched mtimes). Files are streamed, never read whole.
"""

import argparse
import fnmatch
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import xxhash

from edgecdn.errors import ConfigError, UsageError

CHUNK_BYTES = 1 << 20
DEFAULT_REGEX = r"^(?P<stem>.+)\.(?P<hash>[0-9a-f]{16})(?P<ext>\.[^./]+)?$"
MANIFEST_JSON = "manifest.json"
MANIFEST_TXT = "manifest.txt"
MANIFEST_TXT_HEADER = "# edgecdn prefetch manifest"
PROGRESS_MIN_FILES = 100

_HEX16_RE = re.compile(r"[0-9a-f]{16}")


class VersionPattern:
    """Which last path segments count as versioned; the named group `hash` must capture xxh3 hex."""

    def __init__(self, regex: str = DEFAULT_REGEX) -> None:
        try:
            self._re = re.compile(regex)
        except re.error as e:
            raise ConfigError(f"version pattern {regex!r}: {e}") from None
        if "hash" not in self._re.groupindex:
            raise ConfigError(f"version pattern {regex!r}: needs a named group (?P<hash>...)")
        self.regex = regex

    def parse(self, path: str) -> str | None:
        """The hash in the last segment of a URL path (no query), or None if it is not versioned.

        A capture that is not 16 lowercase hex digits is None too: the edge verifies xxh3-64.
        """
        match = self._re.search(path.rpartition("/")[2])
        digest = match["hash"] if match else None
        return digest if digest is not None and _HEX16_RE.fullmatch(digest) else None


DEFAULT_PATTERN = VersionPattern()


def configured_pattern(setting: str) -> VersionPattern | None:
    """`cache.versioned_pattern` as a pattern: "" is the built-in one, "off" is None (no verification)."""
    return None if setting == "off" else VersionPattern(setting or DEFAULT_REGEX)


def parse_versioned(path: str, pattern: VersionPattern = DEFAULT_PATTERN) -> str | None:
    """The hash of a versioned path like `/css/site.0123456789abcdef.css`, else None."""
    return pattern.parse(path)


def versioned_name(rel_path: str, digest: str) -> str:
    """`css/site.css` -> `css/site.<hex>.css`; `LICENSE` -> `LICENSE.<hex>`.

    The hash goes before the last extension only; a leading dot is not an extension
    (`.htaccess` -> `.htaccess.<hex>`), so every result parses back with the default pattern.
    """
    if not _HEX16_RE.fullmatch(digest):
        raise ValueError(f"digest {digest!r}: expected 16 lowercase hex digits")
    parent, slash, name = rel_path.rpartition("/")
    if not name:
        raise ValueError(f"{rel_path!r}: no file name")
    dot = name.rfind(".")
    has_ext = 0 < dot < len(name) - 1
    versioned = f"{name[:dot]}.{digest}{name[dot:]}" if has_ext else f"{name}.{digest}"
    return f"{parent}{slash}{versioned}"


def _digest_and_size(path: Path) -> tuple[str, int]:
    hasher = xxhash.xxh3_64()
    buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)
    size = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            hasher.update(view[:n])
            size += n
    return hasher.hexdigest(), size


def hash_file(path: Path) -> str:
    """xxh3-64 of a file as 16 lowercase hex digits, read in 1 MiB chunks."""
    return _digest_and_size(path)[0]


@dataclass(frozen=True, slots=True)
class VersionedFile:
    logical: str  # path under SRC, "/"-separated
    path: str  # versioned path under DIST
    size: int
    hash: str
    copied: bool  # False: an identical file already had this name


@dataclass(frozen=True, slots=True)
class VersionResult:
    files: tuple[VersionedFile, ...]
    skipped: tuple[str, ...]  # symlinks leaving SRC, symlinked directories, non-regular files
    manifests_written: tuple[str, ...]
    kept: tuple[VersionedFile, ...] = ()  # --exclude: copied under their own names, not in the manifests

    @property
    def copied(self) -> int:
        return sum(f.copied for f in self.files)

    @property
    def unchanged(self) -> int:
        return len(self.files) - self.copied

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _check_trees(src: Path, out: Path) -> tuple[Path, Path]:
    """Resolved SRC and DIST; overlap either way is refused, since a rerun would version outputs."""
    if not src.is_dir():
        raise UsageError(f"{src}: no such directory")
    src_r, out_r = src.resolve(), out.resolve()
    if out_r.is_relative_to(src_r):
        raise UsageError(f"--out {out}: must not be {src} or inside it")
    if src_r.is_relative_to(out_r):
        raise UsageError(f"--out {out}: must not contain {src}")
    return src_r, out_r


def _check_base_url(base_url: str) -> str:
    """`https://host[/prefix]`, `/prefix` or empty; returned without a trailing slash."""
    if not base_url:
        return ""
    parts = urlsplit(base_url)
    absolute = parts.scheme in ("http", "https") and bool(parts.netloc)
    path_only = not parts.scheme and not parts.netloc and base_url.startswith("/")
    if (absolute or path_only) and not (parts.query or parts.fragment or " " in base_url):
        return base_url.rstrip("/")
    raise UsageError(f"--base-url {base_url!r}: expected https://host[/prefix] or /prefix")


def _raise(error: OSError) -> None:
    """os.walk's onerror: an unreadable directory fails the run instead of vanishing from it."""
    raise error


def _source_files(src: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """Regular files under SRC (sorted, "/"-separated) and what was skipped.

    A file symlink is followed only if it stays inside SRC; symlinked directories are never
    followed (their targets inside SRC are walked anyway, and following them could loop).
    """
    files: list[tuple[str, Path]] = []
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(src, onerror=_raise):
        base = Path(dirpath)
        skipped += [(base / d).relative_to(src).as_posix() for d in dirnames if (base / d).is_symlink()]
        for name in filenames:
            path = base / name
            rel = path.relative_to(src).as_posix()
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                raise UsageError(f"{path!r}: file name is not valid UTF-8") from None
            inside = not path.is_symlink() or path.resolve().is_relative_to(src)
            if inside and path.is_file():
                files.append((rel, path))
            else:
                skipped.append(rel)
    return sorted(files), sorted(skipped)


def _place(source: Path, target: Path, digest: str, size: int) -> bool:
    """Copy to a temp name beside `target`, re-hash the copy, rename; False if already there."""
    if target.is_file() and target.stat().st_size == size:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        shutil.copyfile(source, tmp)
        if _digest_and_size(tmp) != (digest, size):
            raise UsageError(f"{source}: changed while being versioned; run again")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _place_entry(source: Path, target: Path, digest: str, size: int) -> bool:
    """An excluded file under its own name: replaced only when its bytes changed (compared by hash)."""
    if target.is_file() and _digest_and_size(target) == (digest, size):
        return False
    target.unlink(missing_ok=True)  # _place would keep a same-size file: this name is not content-addressed
    return _place(source, target, digest, size)


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace `path` with `data` unless it already holds exactly that."""
    if path.is_file() and path.read_bytes() == data:
        return False
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _manifests(files: tuple[VersionedFile, ...], base_url: str) -> tuple[bytes, bytes]:
    entries = {f.logical: {"path": f.path, "size": f.size, "hash": f.hash} for f in files}
    doc = {"version": 1, "files": entries}
    as_json = json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    urls = sorted(f"{base_url}/{quote(f.path)}" for f in files)
    as_txt = "\n".join([MANIFEST_TXT_HEADER, *urls]) + "\n"
    return as_json.encode("utf-8"), as_txt.encode("utf-8")


def excluded(rel: str, globs: tuple[str, ...]) -> bool:
    """Does an --exclude GLOB match? A glob with a / matches the whole path, one without the file name."""
    name = rel.rpartition("/")[2]
    return any(fnmatch.fnmatchcase(rel if "/" in g else name, g) for g in globs)


def version_tree(
    src: Path,
    out: Path,
    base_url: str = "",
    *,
    progress: Callable[[int, int], None] | None = None,
    exclude: tuple[str, ...] = (),
) -> VersionResult:
    """Copy SRC's files into DIST under versioned names and write both manifests.

    Old versioned files in DIST are kept: pages still in clients' hands point at them.
    Files matching an `exclude` glob (entry points such as index.html) keep their names and stay out
    of the manifests: they are published last and purged. `progress(done, total)` follows each file.
    """
    src_r, out_r = _check_trees(src, out)
    prefix = _check_base_url(base_url)
    try:
        out_r.mkdir(parents=True, exist_ok=True)
        sources, skipped = _source_files(src_r)
        placed: list[VersionedFile] = []
        kept: list[VersionedFile] = []
        for done, (rel, path) in enumerate(sources, start=1):
            digest, size = _digest_and_size(path)
            if excluded(rel, exclude):
                if rel in (MANIFEST_JSON, MANIFEST_TXT):
                    raise UsageError(
                        f"--exclude: {rel} would be overwritten by the manifest of the same name"
                    )
                kept.append(
                    VersionedFile(rel, rel, size, digest, _place_entry(path, out_r / rel, digest, size))
                )
            else:
                vpath = versioned_name(rel, digest)
                copied = _place(path, out_r / vpath, digest, size)
                placed.append(VersionedFile(rel, vpath, size, digest, copied))
            if progress is not None:
                progress(done, len(sources))
        files = tuple(placed)
        as_json, as_txt = _manifests(files, prefix)
        written = tuple(
            name
            for name, data in ((MANIFEST_JSON, as_json), (MANIFEST_TXT, as_txt))
            if _write_if_changed(out_r / name, data)
        )
    except OSError as e:
        raise UsageError(f"{e.filename or out}: {e.strerror or e}") from None
    return VersionResult(files, tuple(skipped), written, tuple(kept))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `edgecdn version`."""
    parser.add_argument("src", metavar="SRC", type=Path, help="directory of built assets")
    parser.add_argument("--out", required=True, type=Path, metavar="DIST", help="where versioned files go")
    parser.add_argument(
        "--base-url",
        default="",
        metavar="URL",
        help="prefix for manifest.txt lines, e.g. https://cdn.example.com (default: /path)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="keep matching files (entry points such as index.html) under their own names, out of the "
        "manifests (repeatable; a GLOB without / matches file names anywhere)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no summary")


def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size, unit = float(n) / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"


def run(args: argparse.Namespace) -> int:
    """`edgecdn version`: version the tree, print one summary line; bad input is UsageError."""
    src: Path = args.src
    out: Path = args.out
    exclude = tuple(getattr(args, "exclude", ()))
    if args.quiet:
        version_tree(src, out, args.base_url, exclude=exclude)
        return 0
    # Imported here: the edge imports this module for parse_versioned and needs no rich.
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("versioning", total=None, visible=False)

        def show(done: int, total: int) -> None:
            if total > PROGRESS_MIN_FILES:
                bar.update(task, completed=done, total=total, visible=True)

        result = version_tree(src, out, args.base_url, progress=show, exclude=exclude)
    manifests = ", ".join(str(out / name) for name in result.manifests_written) or "unchanged"
    print(
        f"versioned {len(result.files)} files ({_human_bytes(result.total_bytes)}): "
        f"{result.copied} new, {result.unchanged} unchanged, {len(result.skipped)} skipped, "
        f"{len(result.kept)} kept under their names; "
        f"manifests: {manifests}"
    )
    return 0
