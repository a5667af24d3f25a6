"""The disk tier: a diskcache index of entry records plus body files, bounded in bytes, shared by processes.

Rules of this file: every function here blocks (SQLite, files) and is called in a thread. A body becomes
visible only when its record is written in the same transaction, so a crash never exposes a partial body.
Every OSError, SQLite error or diskcache timeout leaves this file as a StorageError naming its cause.
Entry records are keyed by their key's bytes (b"m" + key), so diskcache's own key index answers a prefix
as a range; their tags ride in diskcache's tag column, and SQLite triggers (INDEX_SCHEMA) keep a tag
table and an entry count in step inside every write, eviction and delete: no second index can drift.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import diskcache

from edgecdn import clock
from edgecdn.cache.entry import Entry, VaryMarker, from_record, to_record
from edgecdn.cache.faults import Faults
from edgecdn.errors import StorageError
from edgecdn.policy.key import key_digest

log = logging.getLogger("edgecdn.storage")

_MODE_BINARY = 2  # diskcache's mode for values kept as files
SIZE_MISMATCH = "size-mismatch"
_FAILURES = (OSError, sqlite3.Error, diskcache.Timeout)
# Bodies up to this size live in their index record (a BLOB in the same row write), not in a file of their
# own: a small fill then costs no file creation, no rename and no directory, and its disk hit no open().
INLINE_MAX = 4096
# Each thread that touches the index holds its own SQLite connection, each with its own page cache: bounded
# here (4 MiB each), and no mmap of the index, so the edge's memory does not grow with the index's size.
SQLITE_CACHE_PAGES = 1024


def storage_error(what: str, e: BaseException) -> StorageError:
    """The one translation of an OS, SQLite or diskcache failure, with its cause for metrics."""
    if isinstance(e, StorageError):
        return e
    if isinstance(e, OSError) and e.errno is not None:
        cause = errno.errorcode.get(e.errno, "io")
    elif isinstance(e, sqlite3.Error):
        cause = "index"
    elif isinstance(e, diskcache.Timeout):
        cause = "timeout"
    else:
        cause = "io"
    return StorageError(f"{what}: {e}", cause)


@dataclass(frozen=True, slots=True)
class SpooledBody:
    """A finished body for the index directory: a temporary file, moved (not copied) there on commit; or,
    for a small body never written (`data`), its bytes, written to that temporary path by the index writer."""

    path: str
    size: int
    data: bytes | None = None

    def write(self) -> None:
        """Write `data` (if any) to `path`: then the body is a temporary file like any other."""
        if self.data is not None:
            os.close(new_file(self.path, self.data))


def new_file(path: str | os.PathLike[str], data: bytes = b"") -> int:
    """A body file that did not exist, holding `data`, opened for reading and writing; nothing is left
    behind when it cannot be written."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        pwrite_all(fd, data, 0)
    except OSError:
        os.close(fd)
        os.unlink(path)
        raise
    return fd


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _corrupt(e: sqlite3.DatabaseError) -> bool:
    """SQLite says the file is not a database, or a damaged one (never for locked/busy/read-only)."""
    name = getattr(e, "sqlite_errorname", "")
    return name == "SQLITE_NOTADB" or name.startswith("SQLITE_CORRUPT")


class _BodyDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's Disk, taught to adopt a SpooledBody by rename instead of copying its bytes."""

    def __init__(self, directory: str, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self._made: set[str] = set()  # body directories known to exist (at most 65 536: two hex levels)

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if isinstance(value, SpooledBody):
            filename = body_file(key[1])
            full_path = os.path.join(self._directory, filename)
            parent = os.path.dirname(full_path)
            if parent not in self._made:
                os.makedirs(parent, exist_ok=True)
                self._made.add(parent)
            try:
                os.rename(value.path, full_path)
            except FileNotFoundError:
                if not os.path.exists(value.path):
                    raise
                os.makedirs(parent, exist_ok=True)  # removed meanwhile (clear): made again
                os.rename(value.path, full_path)
            return value.size, _MODE_BINARY, filename, None
        return super().store(value, read, key)


def _discard(body: SpooledBody | None, *more: str) -> None:
    """Remove a body that will not be stored, wherever it got to."""
    for path in (*((body.path,) if body is not None else ()), *more):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _inlined(body: SpooledBody) -> bool:
    """A body that goes into its index record: never written to a file, and small."""
    return body.data is not None and len(body.data) <= INLINE_MAX


def new_body_name(key: str) -> str:
    """A fresh name for one body of `key`: the key's hash (never its path) plus a per-fill suffix."""
    return key_digest(key)[:24] + secrets.token_hex(4)


def body_file(body_name: str) -> str:
    """Where a body lives below the index directory: named by hash, never by request path."""
    return os.path.join(body_name[:2], body_name[2:4], body_name + ".val")


def _meta(key: str) -> bytes:
    """The index key of a record: raw bytes (not pickled), so keys sharing a prefix are neighbours."""
    return b"m" + key.encode("utf-8", "surrogateescape")


def _key_of(meta: bytes) -> str:
    return meta[1:].decode("utf-8", "surrogateescape")


def _successor(prefix: bytes) -> bytes:
    """The least byte string greater than every string starting with `prefix` (which is not all 0xff)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1])


# Kept by SQLite in the same transaction as diskcache's own writes, culls and deletes. An entry record
# carries its tags as a JSON list in diskcache's `tag` column (a vary marker carries NULL). Created in one
# transaction; the entry count is taken (one scan) only when the table is new, never at every start.
INDEX_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS EdgeTag (tag TEXT NOT NULL, entry INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS EdgeTag_tag ON EdgeTag (tag);
CREATE INDEX IF NOT EXISTS EdgeTag_entry ON EdgeTag (entry);
CREATE TABLE IF NOT EXISTS EdgeCount (id INTEGER PRIMARY KEY CHECK (id = 0), entries INTEGER NOT NULL);
INSERT INTO EdgeCount (id, entries)
    SELECT 0, (SELECT count(*) FROM Cache WHERE raw = 1 AND tag IS NOT NULL)
    WHERE NOT EXISTS (SELECT 1 FROM EdgeCount);
CREATE TRIGGER IF NOT EXISTS EdgeTag_insert AFTER INSERT ON Cache WHEN NEW.raw = 1 AND NEW.tag IS NOT NULL
BEGIN
    INSERT INTO EdgeTag (tag, entry) SELECT value, NEW.rowid FROM json_each(NEW.tag);
    UPDATE EdgeCount SET entries = entries + 1 WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS EdgeTag_update AFTER UPDATE OF tag ON Cache WHEN NEW.raw = 1
BEGIN
    DELETE FROM EdgeTag WHERE entry = OLD.rowid;
    INSERT INTO EdgeTag (tag, entry)
        SELECT value, NEW.rowid FROM json_each(NEW.tag) WHERE NEW.tag IS NOT NULL;
    UPDATE EdgeCount SET entries = entries + (NEW.tag IS NOT NULL) - (OLD.tag IS NOT NULL) WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS EdgeTag_delete AFTER DELETE ON Cache WHEN OLD.raw = 1
BEGIN
    DELETE FROM EdgeTag WHERE entry = OLD.rowid;
    UPDATE EdgeCount SET entries = entries - (OLD.tag IS NOT NULL) WHERE id = 0;
END;
COMMIT;
"""


class DiskTier:
    def __init__(self, directory: str | Path, max_bytes: int, faults: Faults | None = None) -> None:
        self.directory = Path(directory)
        self.tmp = self.directory / "tmp"
        self.faults = faults if faults is not None else Faults()
        self.max_bytes = max_bytes
        self.evicted = 0  # records this process culled to stay within max_bytes (metadata, bodies apart)
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            try:
                self.index = self._open_index(max_bytes)
            except sqlite3.DatabaseError as e:
                if not _corrupt(e):
                    raise  # busy, locked, read-only: not a reason to set the index aside
                self._move_aside(e)
                self.index = self._open_index(max_bytes)
            self._create_index()
        except _FAILURES as e:
            raise storage_error(f"cannot open cache directory {self.directory}", e) from e

    def _open_index(self, max_bytes: int) -> diskcache.Cache:
        return diskcache.Cache(
            str(self.directory / "index"),
            size_limit=max_bytes,
            eviction_policy="least-recently-stored",
            cull_limit=0,  # put() culls itself, to count what it evicted
            disk=_BodyDisk,
            statistics=False,
            sqlite_cache_size=SQLITE_CACHE_PAGES,
            sqlite_mmap_size=0,
        )

    def _connect(self) -> sqlite3.Connection:
        """A connection of our own to diskcache's database, for the index queries diskcache has no API for."""
        return sqlite3.connect(os.path.join(self.index.directory, diskcache.core.DBNAME), timeout=60)

    def _create_index(self) -> None:
        with contextlib.closing(self._connect()) as con, con:
            con.executescript(INDEX_SCHEMA)

    def _move_aside(self, e: sqlite3.DatabaseError) -> None:
        """A corrupt index must not stop the edge: keep it for inspection and start with an empty one."""
        index = self.directory / "index"
        aside = index.with_name(f"index.corrupt-{int(clock.now())}-{secrets.token_hex(2)}")
        try:
            index.rename(aside)
        except FileNotFoundError:
            return  # another process of this edge moved it first
        self.faults.record(StorageError(f"corrupt cache index ({e}) moved to {aside}", "corrupt-index"))
        log.error("cache index %s is corrupt (%s): moved to %s, starting empty", index, e, aside)

    def sweep_tmp(self) -> int:
        """Remove bodies left half-written by a crash; they were never indexed, so never served."""
        removed = 0
        try:
            for path in self.tmp.iterdir():
                path.unlink(missing_ok=True)
                removed += 1
        except OSError as e:
            raise storage_error("sweeping unfinished bodies failed", e) from e
        return removed

    def get(self, key: str) -> Entry | VaryMarker | None:
        try:
            return from_record(self.index.get(_meta(key)))
        except _FAILURES as e:
            raise storage_error("index read failed", e) from e

    def open_body(self, entry: Entry) -> IO[bytes] | None:
        """The body file opened for reading; None when it is gone or not the size its entry says.

        An unusable body drops its record, so the next request fills it again. A file that eviction
        removed after we read its record is a plain miss; one of the wrong size is a counted fault.
        """
        if entry.body_name is None:
            return None
        try:
            f = open(os.path.join(self.index.directory, body_file(entry.body_name)), "rb")  # noqa: SIM115
        except FileNotFoundError:
            self.delete(entry.key)
            return None
        except OSError as e:
            raise storage_error("opening a body failed", e) from e
        try:
            size = os.fstat(f.fileno()).st_size
        except OSError as e:
            f.close()
            raise storage_error("stat of a body failed", e) from e
        if size != entry.stored.size:
            f.close()
            self.delete(entry.key)
            why = f"body of {entry.key} is {size} bytes, its entry says {entry.stored.size}: dropped"
            self.faults.record(StorageError(why, SIZE_MISMATCH))
            return None
        return f

    def small_body(self, entry: Entry) -> bytes | None:
        """The body of an entry of at most INLINE_MAX bytes, from its record (or, stored by an older
        version, its file); None when it is gone. As open_body: a gone body drops the entry, one of the
        wrong size is a counted fault."""
        try:
            body = self.index.get(("b", entry.body_name))
        except _FAILURES as e:
            raise storage_error("reading a body failed", e) from e
        if not isinstance(body, bytes):
            self.delete(entry.key)
            return None
        if len(body) != entry.stored.size:
            self.delete(entry.key)
            why = f"body of {entry.key} is {len(body)} bytes, its entry says {entry.stored.size}: dropped"
            self.faults.record(StorageError(why, SIZE_MISMATCH))
            return None
        return body

    def put(
        self, entry: Entry, body: SpooledBody | None, max_variants: int, *, inline: bool = True
    ) -> list[str]:
        """Store an entry (and its body) and update its primary's vary marker, in one transaction.

        The marker is read, changed and written inside the index transaction, so concurrent writers
        (threads or processes) never lose each other's variants. Returns the variant keys the
        `max_variants` cap (or a changed Vary) evicted; their records and bodies are gone with it.
        """
        result = self.put_many([(entry, body)], max_variants, inline=inline)[0]
        if isinstance(result, StorageError):
            raise result
        return result

    def put_many(
        self, items: list[tuple[Entry, SpooledBody | None]], max_variants: int, *, inline: bool = True
    ) -> list[list[str] | StorageError]:
        """`put` for several entries in one index transaction and one cull (Store.writes, cache/batch.py).

        Returns, per item, the variant keys evicted or the StorageError that kept it out. A body that
        cannot be written fails alone; a failed transaction fails the whole batch, and none of its
        bodies stays behind (neither the temporary file nor one already moved into the index). With
        `inline`, a body never written to a file and of at most INLINE_MAX bytes goes into its record.
        """
        results: list[list[str] | StorageError] = [[] for _ in items]
        ready: list[int] = []
        for i, (_, body) in enumerate(items):
            try:
                if body is not None and not (inline and _inlined(body)):
                    body.write()
                ready.append(i)
            except OSError as e:
                results[i] = storage_error("writing a body failed", e)
                _discard(body)
        if not ready:
            return results
        try:
            with self.index.transact():
                for i in ready:
                    results[i] = self._put_one(*items[i], max_variants, inline)
        except (*_FAILURES, StorageError) as e:
            failed = storage_error("index write failed", e)
            for i in ready:
                entry, body = items[i]
                results[i] = failed
                if body is not None and entry.body_name is not None:
                    _discard(body, os.path.join(self.index.directory, body_file(entry.body_name)))
            return results
        try:
            self.evicted += self.index.cull()
        except _FAILURES as e:
            failed = storage_error("evicting to the size limit failed", e)
            for i in ready:
                results[i] = failed
        return results

    def _put_one(self, entry: Entry, body: SpooledBody | None, max_variants: int, inline: bool) -> list[str]:
        """Inside put_many's transaction: one entry, its body and its vary marker."""
        evicted: list[str] = []
        old = from_record(self.index.get(_meta(entry.key)))
        if body is not None:
            # bytes below diskcache's min_file_size are kept in the row; a SpooledBody is moved in
            self.index.set(("b", entry.body_name), body.data if inline and _inlined(body) else body)
        self.index.set(_meta(entry.key), to_record(entry), tag=json.dumps(entry.stored.tags))
        if entry.stored.vary:
            evicted = self._add_variant(entry, max_variants)
        if isinstance(old, Entry) and old.body_name != entry.body_name:
            self.index.delete(("b", old.body_name))
        return evicted

    def _add_variant(self, entry: Entry, max_variants: int) -> list[str]:
        """Inside put's transaction: list `entry` in its primary's marker, newest last, capped."""
        old = from_record(self.index.get(_meta(entry.primary)))
        listed = old.variants if isinstance(old, VaryMarker) else ()
        same = isinstance(old, VaryMarker) and old.names == entry.stored.vary
        variants = (*(v for v in listed if v != entry.key and same), entry.key)
        kept = variants[-max_variants:]
        evicted = [v for v in listed if v not in kept]
        for key in evicted:
            self.delete(key)
        self.index.set(_meta(entry.primary), to_record(VaryMarker(entry.stored.vary, kept)))
        return evicted

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Several writes as one index transaction (the writes inside join it, and commit together)."""
        try:
            with self.index.transact():
                yield
        except _FAILURES as e:
            raise storage_error("index transaction failed", e) from e

    def delete(self, key: str) -> Entry | VaryMarker | None:
        """Remove one record (and its body); returns what was there."""
        try:
            with self.index.transact():
                old = from_record(self.index.get(_meta(key)))
                self.index.delete(_meta(key))
                if isinstance(old, Entry) and old.body_name is not None:
                    self.index.delete(("b", old.body_name))
            return old
        except _FAILURES as e:
            raise storage_error("index delete failed", e) from e

    def keys(self) -> list[str]:
        """Every entry key (not vary markers). Walks the whole index: for tests and tools, not purges."""
        return self._select("SELECT key FROM Cache WHERE raw = 1 AND tag IS NOT NULL", ())

    def keys_with_prefix(self, prefix: str) -> list[str]:
        """Keys (entries and vary markers) starting with `prefix`: one range of the key index."""
        low = _meta(prefix)
        return self._select(
            "SELECT key FROM Cache WHERE key >= ? AND key < ? AND raw = 1", (low, _successor(low))
        )

    def keys_with_tags(self, tags: tuple[str, ...]) -> list[str]:
        """Keys of entries carrying any of `tags`: lookups in the tag table."""
        if not tags:
            return []
        marks = ",".join("?" * len(tags))
        return self._select(
            "SELECT DISTINCT c.key FROM EdgeTag t JOIN Cache c ON c.rowid = t.entry"
            f" WHERE t.tag IN ({marks})",
            tags,
        )

    def count(self) -> int:
        """Entries in the index (not vary markers, not body records), kept by the index triggers."""
        try:
            with contextlib.closing(self._connect()) as con:
                row = con.execute("SELECT entries FROM EdgeCount WHERE id = 0").fetchone()
        except _FAILURES as e:
            raise storage_error("index count failed", e) from e
        return int(row[0]) if row else 0

    def _select(self, query: str, args: tuple[object, ...]) -> list[str]:
        try:
            with contextlib.closing(self._connect()) as con:
                return [_key_of(bytes(k)) for (k,) in con.execute(query, args)]
        except _FAILURES as e:
            raise storage_error("index query failed", e) from e

    def volume(self) -> int:
        try:
            return int(self.index.volume())
        except _FAILURES as e:
            raise storage_error("index size failed", e) from e

    def close(self) -> None:
        self.index.close()

    def clear(self) -> None:
        self.index.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
