"""The disk tier: a diskcache index of entry records plus body files, bounded in bytes, shared by processes.

Rules of this file: every function here blocks (SQLite, files) and is called in a thread. A body becomes
visible only when its record is written in the same transaction, so a crash never exposes a partial body.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import diskcache

from edgecdn.cache.entry import Entry, VaryMarker, from_record, to_record
from edgecdn.errors import StorageError
from edgecdn.policy.key import key_digest

_MODE_BINARY = 2  # diskcache's mode for values kept as files


@dataclass(frozen=True, slots=True)
class SpooledBody:
    """A finished temporary body file, moved (not copied) into the index directory on commit."""

    path: str
    size: int


class _BodyDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's Disk, taught to adopt a SpooledBody by rename instead of copying its bytes."""

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if isinstance(value, SpooledBody):
            filename = body_file(key[1])
            full_path = os.path.join(self._directory, filename)
            os.makedirs(os.path.dirname(full_path), exist_ok=True)
            os.rename(value.path, full_path)
            return value.size, _MODE_BINARY, filename, None
        return super().store(value, read, key)


def new_body_name(key: str) -> str:
    """A fresh name for one body of `key`: the key's hash (never its path) plus a per-fill suffix."""
    return key_digest(key)[:24] + secrets.token_hex(4)


def body_file(body_name: str) -> str:
    """Where a body lives below the index directory: named by hash, never by request path."""
    return os.path.join(body_name[:2], body_name[2:4], body_name + ".val")


def _meta(key: str) -> tuple[str, str]:
    return ("m", key)


class DiskTier:
    def __init__(self, directory: str | Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.tmp = self.directory / "tmp"
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            self.index = diskcache.Cache(
                str(self.directory / "index"),
                size_limit=max_bytes,
                eviction_policy="least-recently-stored",
                cull_limit=16,
                disk=_BodyDisk,
                statistics=False,
            )
        except (OSError, diskcache.Timeout) as e:
            raise StorageError(f"cannot open cache directory {self.directory}: {e}") from e

    def sweep_tmp(self) -> int:
        """Remove bodies left half-written by a crash; they were never indexed, so never served."""
        removed = 0
        for path in self.tmp.iterdir():
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    def get(self, key: str) -> Entry | VaryMarker | None:
        try:
            return from_record(self.index.get(_meta(key)))
        except (OSError, diskcache.Timeout) as e:
            raise StorageError(f"index read failed: {e}") from e

    def open_body(self, entry: Entry) -> IO[bytes] | None:
        """The body file opened for reading, or None when eviction took it (then drop the record)."""
        if entry.body_name is None:
            return None
        try:
            return open(os.path.join(self.index.directory, body_file(entry.body_name)), "rb")
        except FileNotFoundError:
            self.delete(entry.key)
            return None

    def put(self, entry: Entry, body: SpooledBody | None, marker: VaryMarker | None) -> str | None:
        """Store an entry (and its body, and its primary's vary marker) atomically.

        Returns the body name of the entry it replaced, whose body row is deleted afterwards.
        """
        old_body: str | None = None
        try:
            with self.index.transact():
                old = from_record(self.index.get(_meta(entry.key)))
                if body is not None:
                    self.index.set(("b", entry.body_name), body)
                self.index.set(_meta(entry.key), to_record(entry))
                if marker is not None:
                    self.index.set(_meta(entry.primary), to_record(marker))
                if isinstance(old, Entry) and old.body_name != entry.body_name:
                    old_body = old.body_name
                    self.index.delete(("b", old_body))
        except (OSError, diskcache.Timeout) as e:
            if body is not None:
                Path(body.path).unlink(missing_ok=True)
            raise StorageError(f"index write failed: {e}") from e
        return old_body

    def delete(self, key: str) -> Entry | VaryMarker | None:
        """Remove one record (and its body); returns what was there."""
        try:
            with self.index.transact():
                old = from_record(self.index.get(_meta(key)))
                self.index.delete(_meta(key))
                if isinstance(old, Entry) and old.body_name is not None:
                    self.index.delete(("b", old.body_name))
            return old
        except (OSError, diskcache.Timeout) as e:
            raise StorageError(f"index delete failed: {e}") from e

    def keys(self) -> list[str]:
        """Every entry key (not vary markers); for purge by prefix or tag. Walks the whole index."""
        return [k[1] for k in self.index.iterkeys() if isinstance(k, tuple) and k[0] == "m"]

    def volume(self) -> int:
        return int(self.index.volume())

    def close(self) -> None:
        self.index.close()

    def clear(self) -> None:
        self.index.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
