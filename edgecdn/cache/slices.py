"""The slices of one object on the disk tier: a per-object record plus one ordinary entry per slice.

Rules of this file: every function blocks (SQLite, files) and is called in a thread. The record (under the
index key ("s", primary)) is the truth: a slice entry it does not list is never answered, a slice of
another representation is never listed beside the others (they are dropped in the same transaction), and
removing the object removes the record and every slice it lists. Slice bodies never enter the memory tier,
so a purge in one process needs no word to the memory tiers of the others.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import IO, Any

import diskcache

from edgecdn.cache.disk import DiskTier, SpooledBody, storage_error
from edgecdn.cache.entry import Entry
from edgecdn.policy.slice import Representation

RECORD_VERSION = 1
_FAILURES = (OSError, sqlite3.Error, diskcache.Timeout)


@dataclass(frozen=True, slots=True)
class SliceRecord:
    """Which slices of one representation are stored, and the body of each."""

    representation: Representation
    bodies: tuple[tuple[int, str], ...] = ()  # (slice index, body name), by index

    def body_of(self, index: int) -> str | None:
        return next((name for i, name in self.bodies if i == index), None)


def slice_key(primary: str, index: int) -> str:
    """The entry key of one slice: never a variant key (those end in 16 hex digits)."""
    return f"{primary}\x00slice:{index}"


def _record_key(primary: str) -> tuple[str, str]:
    return ("s", primary)


def _to_dict(record: SliceRecord) -> dict[str, Any]:
    rep = record.representation
    return {
        "v": RECORD_VERSION,
        "etag": rep.etag,
        "length": rep.length,
        "slice_size": rep.slice_size,
        "bodies": [list(b) for b in record.bodies],
    }


def _from_dict(data: object) -> SliceRecord | None:
    if not isinstance(data, dict) or data.get("v") != RECORD_VERSION:
        return None
    try:
        rep = Representation(str(data["etag"]), int(data["length"]), int(data["slice_size"]))
        return SliceRecord(rep, tuple((int(i), str(name)) for i, name in data["bodies"]))
    except (KeyError, TypeError, ValueError):
        return None


def record(disk: DiskTier, primary: str) -> SliceRecord | None:
    try:
        return _from_dict(disk.index.get(_record_key(primary)))
    except _FAILURES as e:
        raise storage_error("slice record read failed", e) from e


def open_slice(disk: DiskTier, primary: str, index: int) -> tuple[Representation, Entry, IO[bytes]] | None:
    """A stored slice the current record lists, with its body file opened (the caller closes it)."""
    rec = record(disk, primary)
    name = rec.body_of(index) if rec is not None else None
    if rec is None or name is None:
        return None
    entry = disk.get(slice_key(primary, index))
    if not isinstance(entry, Entry) or entry.body_name != name:
        return None
    f = disk.open_body(entry)
    return None if f is None else (rec.representation, entry, f)


def put(disk: DiskTier, entry: Entry, body: SpooledBody, index: int, rep: Representation) -> list[str]:
    """Store one slice and list it; a record of another representation is dropped first, with its slices.

    Returns the slice keys dropped that way.
    """
    try:
        with disk.index.transact():
            old = record(disk, entry.primary)
            dropped: list[str] = []
            if old is not None and old.representation != rep:
                dropped = drop(disk, entry.primary)
                old = None
            disk.put(entry, body, 1, inline=False)  # a slice is sent from its file
            assert entry.body_name is not None
            bodies = dict(old.bodies if old is not None else ())
            bodies[index] = entry.body_name
            new = SliceRecord(rep, tuple(sorted(bodies.items())))
            disk.index.set(_record_key(entry.primary), _to_dict(new))
            return dropped
    except _FAILURES as e:
        raise storage_error("slice write failed", e) from e


def drop(disk: DiskTier, primary: str) -> list[str]:
    """Remove the record and every slice it lists (with their bodies); returns the slice keys removed."""
    try:
        with disk.index.transact():
            rec = record(disk, primary)
            if rec is None:
                return []
            disk.index.delete(_record_key(primary))
            keys = [slice_key(primary, i) for i, _ in rec.bodies]
            return [key for key in keys if disk.delete(key) is not None]
    except _FAILURES as e:
        raise storage_error("slice drop failed", e) from e


def entries(disk: DiskTier, primary: str) -> list[Entry]:
    """The slice entries the record lists (for purge by URL)."""
    rec = record(disk, primary)
    if rec is None:
        return []
    return [e for i, _ in rec.bodies if isinstance(e := disk.get(slice_key(primary, i)), Entry)]
