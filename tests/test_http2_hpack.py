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

from rawserve.protocols.http2.hpack_codec import UNINDEXED_NAMES, FastDecoder, FastEncoder

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
    # Byte for byte wherever rawserve does not deliberately differ: not for
    # UNINDEXED_NAMES (see test_encoder_output_decodes_and_tables_stay_in_sync).
    names = [n for n in (*NAMES, b"server", b"date", b"content-type") if n not in UNINDEXED_NAMES]
    rng = random.Random(seed)
    for _ in range(300):
        reference, fast = Encoder(), FastEncoder()
        size = rng.choice([0, 100, 4096])
        reference.header_table_size = fast.header_table_size = size
        for _ in range(6):
            fields = [(rng.choice(names), _value(rng)) for _ in range(rng.randint(1, 10))]
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


def test_server_timing_and_content_length_are_sent_without_indexing() -> None:
    from hpack.table import HeaderTable

    enc, dec = FastEncoder(), Decoder()
    for i in range(100):
        head = [
            (b":status", b"200"),
            (b"content-type", b"application/json"),
            (b"server-timing", b"queue;dur=%d.000, infer;dur=0.%03d" % (i, i)),
            (b"content-length", b"%d" % (50 + i)),
        ]
        for huffman in (False, True):
            block = enc.encode(head, huffman=huffman)
            assert dec.decode(block, raw=True) == head
            # Under content-length's static index (28), not its literal name.
            assert block.endswith(b"\x0f\x0d" + bytes([len(head[3][1])]) + head[3][1])
    names = [name for name, _ in enc.header_table.dynamic_entries]
    # The repeated fields are indexed once; the unique ones never are, so
    # the table (and every search of it) stays small.
    assert names == [b"content-type"]
    assert len(enc.header_table.dynamic_entries) < len(HeaderTable.STATIC_TABLE)


def _predict_head(i: int, second: int) -> list[tuple[bytes, bytes]]:
    return [
        (b":status", b"200"),
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % (40 + i * 7 % 1000)),
        (b"cache-status", b"rawserve; fwd=bypass; detail=disabled"),
        (b"server-timing", b"queue;dur=0.%03d, infer;dur=1.%03d" % (i % 1000, i * 3 % 1000)),
        (b"server", b"rawserve"),
        (b"date", b"Tue, 01 Dec 2026 12:%02d:%02d GMT" % divmod(second, 60)),
    ]


def test_a_repeated_response_head_is_encoded_without_searching_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hpack.table import HeaderTable

    searches = 0
    search = HeaderTable.search

    def counting(self: HeaderTable, name: bytes, value: bytes) -> Any:
        nonlocal searches
        searches += 1
        return search(self, name, value)

    monkeypatch.setattr(HeaderTable, "search", counting)
    enc, dec = FastEncoder(), Decoder()
    searches_per_date: list[int] = []
    for second in range(5):
        searches = 0
        for i in range(200):
            head = _predict_head(second * 200 + i, second)
            assert dec.decode(enc.encode(head), raw=True) == head
        searches_per_date.append(searches)
    # Varying content-length and server-timing are neither searched nor
    # inserted. The first head searches its 5 other fields and inserts 4 of
    # them (:status 200 is in the static table); the second finds them
    # whole and fills the memo; the other 198 search nothing. In each later
    # second the new date (the last field) is one insertion, which empties
    # the memo: that head searches once, the next one 5 times, to refill it.
    assert searches_per_date == [5 + 5, 1 + 5, 1 + 5, 1 + 5, 1 + 5]
    assert len(enc.header_table.dynamic_entries) == 3 + 5  # and one date a second


def test_the_memo_is_emptied_whenever_the_table_changes() -> None:
    enc, dec = FastEncoder(), Decoder()
    field = (b"x-a", b"1")
    sent: list[bytes] = []

    def send(*fields: tuple[bytes, bytes]) -> bytes:
        block = enc.encode(list(fields))
        assert dec.decode(block, raw=True) == list(fields), block
        assert enc.header_table.dynamic_entries == dec.header_table.dynamic_entries
        sent.append(block)
        return block

    send(field)  # a literal, inserted at dynamic index 62
    assert send(field) == b"\xbe"  # indexed: 62
    assert enc._memo[field] == b"\xbe"
    send((b"x-b", b"2"))  # an insertion: x-a moves to 63
    assert send(field) == b"\xbf"  # the memo's 62 would decode to x-b
    send((b"x-b", b"3"))  # x-b under its indexed name: x-a to 64
    assert send(field) == b"\xc0"
    # An eviction by a size change: x-a is gone, so a literal again.
    enc.header_table_size = 40
    dec.max_allowed_table_size = 40
    assert enc._memo == {}
    assert send(field)[:1] == b"\x3f"[:1]  # the size update first (001xxxxx)
    assert send(field) == b"\xbe"
    # An eviction by an insertion: the 40-byte table holds one entry.
    send((b"x-b", b"2"))
    assert send(field)[:1] != b"\xbe"  # not the index x-b now has
    # A table of size 0: nothing indexed, then the table again.
    enc.header_table_size = 0
    dec.max_allowed_table_size = 0
    send(field)
    assert not enc.header_table.dynamic_entries and enc._memo == {}


def test_the_memo_is_bounded() -> None:
    from rawserve.protocols.http2.hpack_codec import MEMO_ENTRIES

    # A table large enough to hold more whole fields than the memo may.
    enc, dec = FastEncoder(max_table_bytes=1 << 20), Decoder()
    enc.header_table_size = dec.max_allowed_table_size = 1 << 20
    fields = [(b"x-%d" % i, b"v") for i in range(MEMO_ENTRIES * 2)]
    dec.decode(enc.encode(fields), raw=True)
    for _ in range(2):
        assert dec.decode(enc.encode(fields), raw=True) == fields
        assert 0 < len(enc._memo) <= MEMO_ENTRIES


def test_table_size_updates_send_the_smallest_then_the_final_size() -> None:
    from hpack.hpack import encode_integer

    def update(size: int) -> bytes:
        b = encode_integer(size, 5)
        b[0] |= 0x20
        return bytes(b)

    enc, dec = FastEncoder(), Decoder()
    dec.decode(enc.encode([(b"x-a", b"1" * 100)]), raw=True)
    # Lowered twice: the peer's limit is now 1000, so 2000 (which hpack
    # also sends) would be over it.
    enc.header_table_size = 2000
    enc.header_table_size = 1000
    dec.max_allowed_table_size = 1000
    block = enc.encode([(b"x-a", b"1" * 100)])
    assert block == update(1000) + b"\xbe"
    assert dec.decode(block, raw=True) == [(b"x-a", b"1" * 100)]
    # Down and up: the smallest, which evicted x-a, must reach the decoder.
    enc.header_table_size = 50
    enc.header_table_size = 100
    enc.header_table_size = 4096
    dec.max_allowed_table_size = 4096
    block = enc.encode([(b"x-a", b"1" * 100)])
    assert block.startswith(update(50) + update(4096))
    assert dec.decode(block, raw=True) == [(b"x-a", b"1" * 100)]
    assert enc.header_table.dynamic_entries == dec.header_table.dynamic_entries
    # The same size announced twice before a block still sends the update.
    enc.header_table_size = 300
    enc.header_table_size = 300
    dec.max_allowed_table_size = 300
    block = enc.encode([(b"x-a", b"1" * 100)])
    assert block.startswith(update(300))
    assert dec.decode(block, raw=True) == [(b"x-a", b"1" * 100)]
    assert dec.header_table.maxsize == enc.header_table.maxsize == 300


@pytest.mark.parametrize("seed", range(4))
def test_encoder_output_decodes_and_tables_stay_in_sync(seed: int) -> None:
    # Sequences of heads as a connection sends them: fields that repeat,
    # values that vary (UNINDEXED_NAMES among them, where rawserve differs
    # from hpack's encoder on purpose), sizes from the peer's SETTINGS
    # (several, repeated, above the cap), sensitive fields in both of hpack's
    # spellings, str fields. hpack's decoder must read back every head, and
    # the decoder's table must equal the encoder's after every block.
    from hpack import HeaderTuple, NeverIndexedHeaderTuple

    rng = random.Random(seed)
    repeated = [
        (b"content-type", b"application/json"),
        (b"cache-status", b"rawserve; hit; ttl=30"),
        (b"server", b"rawserve"),
        (b":status", b"200"),
        (b":status", b"404"),
        (b"x-a", b"1"),
    ]
    secrets = 0
    for _ in range(150):
        enc, dec = FastEncoder(), Decoder()
        dec.max_allowed_table_size = 0xFFFFFFFF
        for block_no in range(40):
            if rng.random() < 0.15:
                for _ in range(rng.randint(1, 3)):
                    enc.header_table_size = rng.choice([0, 60, 100, 256, 1024, 4096, 1 << 20])
            fields: list[Any] = []
            expected: list[tuple[bytes, bytes]] = []
            for _ in range(rng.randint(1, 9)):
                kind = rng.random()
                if kind < 0.5:
                    name, value = rng.choice(repeated)
                elif kind < 0.8:
                    name = rng.choice([b"content-length", b"server-timing", b"date", b"x-b"])
                    value = b"%d" % rng.randint(0, 3000 if rng.random() < 0.5 else 3)
                else:
                    name, value = rng.choice(NAMES), _value(rng)
                if rng.random() < 0.1:
                    secrets += 1
                    value = b"secret-%d" % secrets
                    spelling = rng.choice(["three", "tuple"])
                    if spelling == "three":
                        fields.append((name, value, True))
                    else:
                        fields.append(NeverIndexedHeaderTuple(name, value))
                elif rng.random() < 0.05:
                    fields.append((name.decode(), value.decode()))
                elif rng.random() < 0.05:
                    fields.append(HeaderTuple(name, value))
                else:
                    fields.append((name, value))
                expected.append((name, value))
            block = enc.encode(fields, huffman=rng.random() < 0.8)
            decoded = dec.decode(block, raw=True)
            assert decoded == expected, (block_no, block)
            for field in decoded:
                if field[1].startswith(b"secret-"):
                    assert not field.indexable  # sent as never indexed
            assert enc.header_table.dynamic_entries == dec.header_table.dynamic_entries
            assert enc.header_table.maxsize == dec.header_table.maxsize
            assert enc.header_table._current_size == dec.header_table._current_size
            assert not any(v.startswith(b"secret-") for _, v in enc.header_table.dynamic_entries)
            assert not any(n in UNINDEXED_NAMES for n, _ in enc.header_table.dynamic_entries)
    assert secrets > 500


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
