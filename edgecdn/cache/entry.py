"""A cache entry: the stored response plus where its body lives, and its on-disk record form."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edgecdn.policy.stored import StoredResponse

RECORD_VERSION = 1


@dataclass(frozen=True, slots=True)
class Entry:
    key: str  # variant key (the primary key when the response has no Vary)
    primary: str
    stored: StoredResponse
    body_name: str | None = None  # disk tier body, relative to the index directory


@dataclass(frozen=True, slots=True)
class VaryMarker:
    """Stored under a primary key whose responses vary: which request fields select the variant."""

    names: tuple[str, ...]
    variants: tuple[str, ...] = ()  # variant keys, oldest first, capped by cache.max_variants


def to_record(item: Entry | VaryMarker) -> dict[str, Any]:
    """A plain dict for the disk index, so the format survives code changes (versioned)."""
    if isinstance(item, VaryMarker):
        return {"v": RECORD_VERSION, "vary": list(item.names), "variants": list(item.variants)}
    stored = {name: getattr(item.stored, name) for name in _STORED_FIELDS}  # asdict() copies deeply, slowly
    stored["headers"] = [list(h) for h in item.stored.headers]
    return {
        "v": RECORD_VERSION,
        "key": item.key,
        "primary": item.primary,
        "body": item.body_name,
        "stored": stored,
    }


_STORED_FIELDS = tuple(f.name for f in dataclasses.fields(StoredResponse))


def from_record(record: object) -> Entry | VaryMarker | None:
    """Back from the disk index; None for anything unreadable (treated as a miss)."""
    if not isinstance(record, dict) or record.get("v") != RECORD_VERSION:
        return None
    try:
        if "vary" in record:
            return VaryMarker(tuple(record["vary"]), tuple(record["variants"]))
        fields = dict(record["stored"])
        for name in ("headers", "vary", "tags"):
            fields[name] = tuple(tuple(h) if name == "headers" else h for h in fields[name])
        return Entry(record["key"], record["primary"], StoredResponse(**fields), record["body"])
    except (KeyError, TypeError, ValueError):
        return None
