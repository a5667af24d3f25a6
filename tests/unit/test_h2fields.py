"""The HTTP/2 header-block encoder: what a standard HPACK decoder reads back, and no dynamic table used."""

from __future__ import annotations

import hpack

from edgecdn.serve.h2fields import BlockEncoder


def test_blocks_decode_to_the_fields_given_with_a_decoder_whose_table_is_tiny() -> None:
    enc = BlockEncoder()
    dec = hpack.Decoder()
    dec.max_allowed_table_size = 0  # what SETTINGS_HEADER_TABLE_SIZE = 0 would allow
    blocks = [
        [(":status", "200"), ("content-type", "text/html"), ("x-cache", "HIT"), ("age", "0")],
        [(":status", "404"), ("cache-status", "edgecdn; fwd=miss"), ("x-long", "é" * 300)],
        [(":status", "206"), ("content-range", "bytes 0-9/100"), ("x-cache", "HIT")],
    ]
    for fields in blocks:
        got = dec.decode(enc.encode(fields), raw=True)
        assert got == [(n.encode("latin-1"), v.encode("latin-1")) for n, v in fields]
    assert len(dec.header_table.dynamic_entries) == 0


def test_only_the_first_block_shrinks_the_table_and_static_pairs_are_one_byte() -> None:
    enc = BlockEncoder()
    assert enc.encode([(":status", "200")]) == b"\x20\x88"
    assert enc.encode([(":status", "200")]) == b"\x88"
    enc.header_table_size = 100  # set by h2 on the peer's SETTINGS; harmless
    assert enc.encode([(b":status", b"304")]) == b"\x8b"
