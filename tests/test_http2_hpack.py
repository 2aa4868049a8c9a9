"""The adapter's fast HPACK paths (``FastDecoder``, ``FastEncoder``) against the hpack
library they shortcut: differential tests over random, corrupt, truncated and
oversized header blocks. Output, errors and dynamic-table state must match."""

from __future__ import annotations

import os
import random
from typing import Any

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


# -- Huffman coding in linear time (issue 15, finding 3) -------------------------


@pytest.mark.parametrize("seed", range(4))
def test_linear_huffman_matches_hpack(seed: int) -> None:
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
    from hpack.huffman_table import decode_huffman

    from rawserve.protocols.http2.hpack_codec import huffman_encode

    ref = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
    rng = random.Random(seed)
    for _ in range(500):
        value = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        assert huffman_encode(value) == ref.encode(value)
        assert decode_huffman(huffman_encode(value)) == value


class _CountingBits(list[str]):
    """The per-byte code table, counting lookups: the encoder's work."""

    lookups = 0

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        _CountingBits.lookups += 1
        return super().__getitem__(i)


def test_huffman_work_is_one_lookup_per_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpack.huffman import HuffmanEncoder

    from rawserve.protocols.http2 import hpack_codec

    def quadratic(*args: object) -> bytes:
        raise AssertionError("hpack's quadratic Huffman encoder was used")

    monkeypatch.setattr(HuffmanEncoder, "encode", quadratic)
    monkeypatch.setattr(hpack_codec, "_HUFFMAN_BITS", _CountingBits(hpack_codec._HUFFMAN_BITS))
    for n in (1_000, 65_000):
        enc = FastEncoder()
        _CountingBits.lookups = 0
        value = b"/next?" + b"q=ab&" * (n // 5)
        block = enc.encode([(b":status", b"302"), (b"location", value)], huffman=True)
        # One table lookup per literal byte (both names are in the static
        # table, so only the values are coded): linear, whatever the length.
        assert _CountingBits.lookups == len(b"302") + len(value)
        assert FastDecoder().decode(block, raw=True)[1] == (b"location", value)


def test_a_65kb_location_over_h2c_is_encoded_linearly(monkeypatch: pytest.MonkeyPatch) -> None:
    import h2.events
    from hpack.huffman import HuffmanEncoder

    from tests.apps.limits_app import app
    from tests.conftest import run_server
    from tests.test_server_http2 import RawH2

    def quadratic(*args: object) -> bytes:
        raise AssertionError("hpack's quadratic Huffman encoder was used")

    query = "a=" + "x" * 65_000
    with run_server(app, tls=False, limit_max_header_bytes=128 * 1024) as srv:
        c = RawH2(srv.http_port)
        sid = c.request("/redirect?" + query)  # the client's own encoder is hpack's
        monkeypatch.setattr(HuffmanEncoder, "encode", quadratic)
        headers: list[tuple[bytes, bytes]] = []
        ended = False
        for _ in range(50):
            for ev in c.events():
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    headers = list(ev.headers)
                if isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    ended = True
            if ended:
                break
        c.close()
    assert ended
    assert (b":status", b"302") in headers
    assert (b"location", ("/next?" + query).encode()) in headers


# -- the encoder's table is capped (issue 15, finding 4) -------------------------


def test_encoder_table_follows_the_peer_only_up_to_the_cap() -> None:
    from rawserve.protocols.http2.hpack_codec import ENCODER_TABLE_BYTES

    enc = FastEncoder()
    enc.header_table_size = 0xFFFFFFFF
    assert enc.header_table_size == ENCODER_TABLE_BYTES
    dec = Decoder()
    dec.max_allowed_table_size = 0xFFFFFFFF
    for i in range(200):
        block = enc.encode([(b"x-unique", b"%08d" % i + b"u" * 200)])
        assert dec.decode(block, raw=True) == [(b"x-unique", b"%08d" % i + b"u" * 200)]
    assert enc.header_table._current_size <= ENCODER_TABLE_BYTES
    assert dec.header_table.maxsize == ENCODER_TABLE_BYTES  # the size update reached it
    enc.header_table_size = 1024  # a peer may still ask for less
    assert enc.header_table_size == 1024


def test_a_client_announcing_4gb_gets_the_capped_table() -> None:
    import h2.events
    import h2.settings

    from rawserve.protocols.http2.hpack_codec import ENCODER_TABLE_BYTES
    from tests.apps.limits_app import app
    from tests.conftest import run_server
    from tests.test_server_http2 import RawH2

    with run_server(app, tls=False) as srv:
        c = RawH2(srv.http_port)
        c.conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0xFFFFFFFF})
        c.flush()
        answered = 0
        for i in range(100):
            sid = c.request(f"/unique/{i}")
            ended = False
            for _ in range(50):
                for ev in c.events():
                    if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                        assert (b"x-unique", b"%08d" % i + b"u" * 200) in ev.headers
                    if isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                        ended = True
                if ended:
                    break
            answered += ended

        def tables() -> list[tuple[int, int]]:
            return [
                (
                    conn.adapter._conn.encoder.header_table_size,
                    conn.adapter._conn.encoder.header_table._current_size,
                )
                for conn in srv.server.connections
                if conn.http2
            ]

        held = srv.call(tables)
        c.close()
    assert answered == 100
    assert held and all(size == ENCODER_TABLE_BYTES for size, _ in held), held
    assert all(used <= ENCODER_TABLE_BYTES for _, used in held), held


# -- fields new in every response stay out of the table ------------------------------


def test_server_timing_is_sent_without_indexing() -> None:
    from hpack.table import HeaderTable

    enc, dec = FastEncoder(), Decoder()
    for i in range(100):
        head = [
            (b":status", b"200"),
            (b"content-type", b"application/json"),
            (b"server-timing", b"queue;dur=%d.000, infer;dur=0.%03d" % (i, i)),
            (b"content-length", b"55"),
        ]
        for huffman in (False, True):
            assert dec.decode(enc.encode(head, huffman=huffman), raw=True) == head
    names = [name for name, _ in enc.header_table.dynamic_entries]
    # The repeated fields are indexed once; the unique ones never are, so
    # the table (and every search of it) stays small.
    assert sorted(names) == [b"content-length", b"content-type"]
    assert len(enc.header_table.dynamic_entries) < len(HeaderTable.STATIC_TABLE)


def test_fast_encode_matches_hpack_for_every_kind_of_field() -> None:
    # The fast path takes plain (bytes, bytes); the rest must keep hpack's
    # meaning: sensitivity from a third item or NeverIndexedHeaderTuple, str
    # converted, a dict's pseudo-headers first.
    from hpack import HeaderTuple, NeverIndexedHeaderTuple

    blocks: list[Any] = [
        [(b":status", b"200"), (b"x-a", b"1")],
        [(b"x-a", b"1", True), (":path", "/s"), HeaderTuple(b"x-b", b"2")],
        [NeverIndexedHeaderTuple(b"cookie", b"secret"), (b"x-b", b"2")],
        {b"x-c": b"3", b":status": b"204"},
        [(b"x-a", b"1"), (b"cookie", b"secret"), (b"x-b", b"2", False)],
    ]
    reference, fast = Encoder(), FastEncoder()
    for block in blocks:
        assert fast.encode(block) == reference.encode(block)
        assert fast.header_table.dynamic_entries == reference.header_table.dynamic_entries
