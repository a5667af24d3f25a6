"""HTTP/2 response header blocks: a fast HPACK encoder with the static table and literals only.

Rules of this file: pure, no I/O. The block never inserts into the dynamic table (RFC 7541 §6.2.2 literals
without indexing); the first block of a connection shrinks our dynamic table to 0 (§6.3), so no later
SETTINGS_HEADER_TABLE_SIZE from the peer needs an answer. No Huffman coding: the bytes are the values.
hpack's own encoder searches and updates the dynamic table per field, most of an HTTP/2 hit's time.
"""

from __future__ import annotations

from hpack.hpack import encode_integer
from hpack.table import HeaderTable

TABLE_SIZE_ZERO = b"\x20"  # dynamic table size update to 0 (§6.3)
_STATIC = HeaderTable.STATIC_TABLE
_PAIRS = {pair: i + 1 for i, pair in reversed(list(enumerate(_STATIC)))}  # (name, value) -> first index
_NAMES = {name: i + 1 for i, (name, _) in reversed(list(enumerate(_STATIC)))}
_LITERAL_NAME_CACHE: dict[bytes, bytes] = {}
_FIELD_CACHE: dict[tuple[object, object], bytes] = {}  # short fields seen before (Content-Type, ETag ...)
FIELD_CACHE_MAX = 4096  # entries, each a field of at most CACHED_VALUE_MAX value bytes
CACHED_VALUE_MAX = 128


def _string(data: bytes) -> bytes:
    return bytes(encode_integer(len(data), 7)) + data  # H = 0: not Huffman-coded


def _name_prefix(name: bytes) -> bytes:
    """The start of a literal without indexing for `name`: its static index, or the name itself."""
    prefix = _LITERAL_NAME_CACHE.get(name)
    if prefix is None:
        index = _NAMES.get(name)
        prefix = bytes(encode_integer(index, 4)) if index is not None else b"\x00" + _string(name)
        if len(_LITERAL_NAME_CACHE) < 1024:
            _LITERAL_NAME_CACHE[name] = prefix
    return prefix


class BlockEncoder:
    """What h2 asks of its encoder (`encode`, `header_table_size`), without a dynamic table."""

    def __init__(self) -> None:
        self._first = True
        self.header_table_size = 0  # the peer's SETTINGS_HEADER_TABLE_SIZE: any value is fine, we use 0

    def encode(self, headers: object, huffman: bool = True) -> bytes:
        """`headers`: (name, value) pairs, names lower case, as str (latin-1) or bytes."""
        out = [TABLE_SIZE_ZERO] if self._first else []
        self._first = False
        for field in headers:  # type: ignore[attr-defined]
            encoded = _FIELD_CACHE.get(field)
            if encoded is None:
                encoded = _field(*field)
                if len(field[1]) <= CACHED_VALUE_MAX and len(_FIELD_CACHE) < FIELD_CACHE_MAX:
                    _FIELD_CACHE[field] = encoded
            out.append(encoded)
        return b"".join(out)


def _field(name: str | bytes, value: str | bytes) -> bytes:
    n = name if isinstance(name, bytes) else name.encode("latin-1")
    v = value if isinstance(value, bytes) else value.encode("latin-1")
    index = _PAIRS.get((n, v))
    if index is not None:
        return bytes(encode_integer(index, 7)) if index > 126 else bytes((0x80 | index,))
    return _name_prefix(n) + _string(v)
