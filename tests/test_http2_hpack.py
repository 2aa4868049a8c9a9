"""The adapter's fast HPACK paths (``FastDecoder``, ``FastEncoder``) against the hpack
library they shortcut: differential tests over random, corrupt, truncated and
oversized header blocks. Output, errors and dynamic-table state must match."""

from __future__ import annotations

import os
import random

import pytest
from hpack import Decoder, Encoder
from hpack.hpack import encode_integer

from rawserve.protocols.http2.hpack_codec import FastDecoder, FastEncoder

NAMES = [
    b":method",
    b":path",
    b"x-a",
    b"accept",
    b"user-agent",
    b"cookie",
    b"x-long",
    b"content-length",
]


def _literal(enc: Encoder, name: bytes, value: bytes, never: bool, huff: bool) -> bytes:
    """A literal without indexing / never indexed (hpack's encoder never emits
    these for ordinary fields, but clients do)."""
    match = enc.header_table.search(name, value)
    flag = 0x10 if never else 0x00
    v = enc.huffman_coder.encode(value) if huff else value
    vl = encode_integer(len(v), 7)
    if huff:
        vl[0] |= 0x80
    if match is not None:
        ni = encode_integer(match[0], 4)
        ni[0] |= flag
        return bytes(ni) + bytes(vl) + v
    n = enc.huffman_coder.encode(name) if huff else name
    nl = encode_integer(len(n), 7)
    if huff:
        nl[0] |= 0x80
    return bytes([flag]) + bytes(nl) + n + bytes(vl) + v


def _decode(d: Decoder, block: bytes) -> tuple[str, object]:
    try:
        return "ok", [
            (a, b, type(a).__name__, type(b).__name__) for a, b in d.decode(block, raw=True)
        ]
    except Exception as exc:  # the error type must match too
        return "err", type(exc).__name__


def _value(rng: random.Random) -> bytes:
    return rng.choice([b"GET", b"/x", b"v" * rng.randint(0, 300), os.urandom(3).hex().encode()])


@pytest.mark.parametrize("seed", range(4))
def test_fast_decoder_matches_hpack(seed: int) -> None:
    rng = random.Random(seed)
    blocks = errors = 0
    for trial in range(500):
        enc, reference, fast = Encoder(), Decoder(), FastDecoder()
        if rng.random() < 0.2:
            limit = rng.choice([50, 200, 1000])
            reference.max_header_list_size = fast.max_header_list_size = limit
        if trial % 3 == 0:
            enc.header_table_size = rng.choice([0, 100, 4096])
        for _ in range(8):
            fields = [(rng.choice(NAMES), _value(rng)) for _ in range(rng.randint(1, 12))]
            huff = rng.random() < 0.5
            block = b"".join(
                _literal(enc, n, v, rng.random() < 0.3, huff)
                if rng.random() < 0.3
                else enc.encode([(n, v)], huffman=huff)
                for n, v in fields
            )
            if rng.random() < 0.1 and block:
                corrupt = bytearray(block)
                corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
                block = bytes(corrupt)
            if rng.random() < 0.05:
                block = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
            if rng.random() < 0.05:
                block = block[: rng.randrange(len(block) + 1)]
            expected, got = _decode(reference, block), _decode(fast, block)
            blocks += 1
            assert got == expected, block
            assert fast.header_table.dynamic_entries == reference.header_table.dynamic_entries
            if expected[0] == "err":
                errors += 1
                break
    assert blocks > 1000 and errors > 50  # both paths were really exercised


@pytest.mark.parametrize("seed", range(3))
def test_fast_encoder_matches_hpack(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        reference, fast = Encoder(), FastEncoder()
        size = rng.choice([0, 100, 4096])
        reference.header_table_size = fast.header_table_size = size
        for _ in range(6):
            fields = [
                (rng.choice([*NAMES, b"server", b"date", b"content-type"]), _value(rng))
                for _ in range(rng.randint(1, 10))
            ]
            huff = rng.random() < 0.5
            assert fast.encode(fields, huffman=huff) == reference.encode(fields, huffman=huff)
            assert fast.header_table.dynamic_entries == reference.header_table.dynamic_entries
