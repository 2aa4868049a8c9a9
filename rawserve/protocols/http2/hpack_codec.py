"""HPACK (RFC 7541) with fast paths for the representations repeated requests
and responses consist of; everything else is hpack's own code, and
tests/test_http2_hpack.py checks the two agree. Two limits hpack lacks: the
encoder's Huffman coding is linear in the value's length (hpack's grows with
its square), and its dynamic table stays within ``ENCODER_TABLE_BYTES``
whatever SETTINGS_HEADER_TABLE_SIZE the peer announces. Fields that vary per
response stay out of that table, so it settles after a connection's first
responses and a repeated response head is encoded from a memo."""

from __future__ import annotations

from typing import Any

import hpack
from hpack.exceptions import HPACKDecodingError, OversizedHeaderListError
from hpack.hpack import (
    DEFAULT_MAX_HEADER_LIST_SIZE,
    INDEX_INCREMENTAL,
    INDEX_NEVER,
    INDEX_NONE,
    encode_integer,
)
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman
from hpack.struct import HeaderTuple, NeverIndexedHeaderTuple
from hpack.table import HeaderTable

# RFC 7541 5.1: a prefix integer whose prefix bits are all ones continues in
# 7-bit groups. The fast path reads at most this many of them (values up to
# 2**28, far beyond any index or string a header block can hold); a longer
# one, a truncated one and every other error are left to hpack's own code,
# which decides (and refuses) exactly as before.
_INTEGER_TAIL_BYTES = 4

# Huffman-coded values in literals without indexing (RFC 7541 6.2.2) are
# decoded once per decoder and then looked up: nghttp2 (h2load, curl) sends
# :path and content-length that way on every request, so a
# repeated request would otherwise pay hpack's pure-Python Huffman decoder
# (a table step per nibble) for the same bytes each time. The memo is keyed by
# the coded bytes and bounded in entries and in each key's length (a value
# decodes to at most 8/5 of its coded length, the shortest code being 5
# bits): at most 32 keys of 64 bytes and values of 102 bytes, 8.5 KB with the
# objects, whatever a peer sends; full, it is emptied. It is per decoder, that
# is per connection, so one client's values never answer (or time) another's;
# never-indexed values (RFC 7541 6.2.3, which marks them sensitive) and values
# the peer indexes (sent once, then as an index) stay out of it.
HUFFMAN_MEMO_ENTRIES = 32
HUFFMAN_MEMO_KEY_BYTES = 64


# Each static table entry as the field an index to it decodes to. Tuples are
# immutable, so every block can share them; and ``tuple.__new__`` below builds
# the others without HeaderTuple's Python-level ``__new__`` (0.3 us a field).
_STATIC_FIELDS = tuple(HeaderTuple(*entry) for entry in HeaderTable.STATIC_TABLE)


def _integer_tail(data: bytes, i: int, value: int) -> tuple[int, int]:
    """The rest of a prefix integer (RFC 7541 5.1) whose prefix was all ones,
    ``value``, from ``data[i]`` on: (the integer, the index after it), or
    (-1, i) when it is truncated or longer than the fast path reads."""
    shift = 0
    for j in range(i, min(len(data), i + _INTEGER_TAIL_BYTES)):
        b = data[j]
        value += (b & 0x7F) << shift
        if b < 0x80:
            return value, j + 1
        shift += 7
    return -1, i


class FastDecoder(hpack.Decoder):
    """hpack's decoder, with the representations requests consist of decoded
    inline: an indexed field (RFC 7541 section 6.1), and a literal value
    under an indexed name (section 6.2), with multi-byte integers (5.1) and
    Huffman-coded values from a memo. A client repeating its requests
    sends little else, and hpack spends about a microsecond on each field
    (memoryview slices, a copy of the rest of the block, a debug log call,
    two tuple copies). Literal names, table size updates, and every error are
    left to hpack's own code."""

    def __init__(self, max_header_list_size: int = DEFAULT_MAX_HEADER_LIST_SIZE) -> None:
        super().__init__(max_header_list_size)
        self._huffman_memo: dict[bytes, bytes] = {}

    def decode(self, data: bytes, raw: bool = False) -> list[HeaderTuple]:
        if not raw:
            return list(super().decode(data, raw))
        data = bytes(data)  # slices below must be bytes, not views
        static = HeaderTable.STATIC_TABLE
        n_static = HeaderTable.STATIC_TABLE_LENGTH
        table = self.header_table
        dynamic = table.dynamic_entries
        limit = self.max_header_list_size
        memo = self._huffman_memo
        static_fields = _STATIC_FIELDS
        new_tuple = tuple.__new__
        headers: list[HeaderTuple] = []
        size = 0
        i = 0
        end = len(data)
        while i < end:
            b = data[i]
            header: HeaderTuple | None = None
            if b & 0x80:
                index = b & 0x7F
                j = i + 1
                if index == 0x7F:
                    index, j = _integer_tail(data, j, index)
                if 0 < index <= n_static:
                    header = static_fields[index - 1]
                elif n_static < index <= n_static + len(dynamic):
                    header = new_tuple(HeaderTuple, dynamic[index - n_static - 1])
                if header is not None:
                    consumed = j - i
                else:  # index 0, out of range, truncated or over-long
                    header, consumed = self._decode_indexed(memoryview(data)[i:])
            elif (b & 0xE0) != 0x20:  # a literal field, not a table size update
                indexing = b & 0x40
                full = 0x3F if indexing else 0x0F
                index = b & full
                j = i + 1
                if index == full:
                    # Two bytes (content-length's 28 in a 4-bit prefix) inline.
                    if j < end and data[j] < 0x80:
                        index += data[j]
                        j += 1
                    else:
                        index, j = _integer_tail(data, j, index)
                name = value = None
                if 0 < index <= n_static:
                    name = static[index - 1][0]
                elif n_static < index <= n_static + len(dynamic):
                    name = dynamic[index - n_static - 1][0]
                if name is not None and j < end:
                    coded = data[j]
                    length = coded & 0x7F
                    j += 1
                    if length == 0x7F:
                        length, j = _integer_tail(data, j, length)
                    if 0 <= length and j + length <= end:
                        value = data[j : j + length]
                        j += length
                        if not coded & 0x80:
                            pass
                        elif b & 0xF0 or length > HUFFMAN_MEMO_KEY_BYTES:
                            # Indexed or never-indexed (or long): not memoized.
                            value = decode_huffman(value)
                        else:
                            decoded = memo.get(value)
                            if decoded is None:
                                # Raises on invalid coding, before storing.
                                decoded = decode_huffman(value)
                                if len(memo) >= HUFFMAN_MEMO_ENTRIES:
                                    memo.clear()
                                memo[value] = decoded
                            value = decoded
                if name is not None and value is not None:
                    if b & 0x10 and not indexing:
                        header = new_tuple(NeverIndexedHeaderTuple, (name, value))
                    else:
                        header = new_tuple(HeaderTuple, (name, value))
                    if indexing:
                        table.add(name, value)
                    consumed = j - i
                elif indexing:  # a literal name, or anything unusual
                    header, consumed = self._decode_literal_index(memoryview(data)[i:])
                else:
                    header, consumed = self._decode_literal_no_index(memoryview(data)[i:])
            else:
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                consumed = self._update_encoding_context(memoryview(data)[i:])
            if header is not None:
                headers.append(header)
                # RFC 7541 4.1, hpack's table_entry_size without the call.
                size += 32 + len(header[0]) + len(header[1])
                if size > limit:
                    msg = f"A header list larger than {limit} has been received"
                    raise OversizedHeaderListError(msg)
            i += consumed
        if table.maxsize > self.max_allowed_table_size:
            self._assert_valid_table_size()  # raises
        # Literal names and values are bytes already (hpack copies them out
        # of the block), so hpack's final copy of every field is skipped.
        return headers


# An indexed field (RFC 7541 section 6.1) with an index below 127 is one byte.
_INDEXED = [bytes((0x80 | i,)) for i in range(127)]
# A string length below 127 (RFC 7541 5.2), without Huffman coding, is one byte.
_LENGTH = [bytes((i,)) for i in range(127)]

# The largest dynamic table the encoder keeps, whatever the peer allows: the
# size every peer starts with (RFC 9113 6.5.2), so only a peer announcing more
# sees a difference. A larger table buys little for responses and costs memory
# per connection (a peer announcing 4 GB let unique headers pile up without end).
ENCODER_TABLE_BYTES = 4096

# Response fields whose value is new in nearly every response (rawserve's own
# Server-Timing carries each request's queue and run times; Content-Length
# follows the body). Indexed, each one would take a dynamic table entry nobody
# refers to again, push out the entries that do repeat (content-type,
# cache-status, ...), lengthen every later search (hpack scans the dynamic
# table linearly for each field: with the table full of them a response head
# cost ~50 comparisons per field), and empty FastEncoder's memo with every
# response. They go out as literals without indexing (RFC 7541 section 6.2.2),
# under the name's static index where it has one. For Content-Length that
# costs bytes only when the value repeats: 4 more per response head (5 bytes
# for "57" instead of a 1-byte index) when every body is the same size, none
# when sizes vary from 40 to 1,100 bytes (the index was never reused then).
#
# Date stays indexed, though it changes once a second: within that second it
# is a 1-byte index instead of a ~31-byte literal. The cost is one insertion
# a second, which empties the memo once (one slow head a second), and past
# dates filling the table over ~60 s, after which content-type and the like
# are evicted and re-sent as literals about once a minute. Measured on a
# /predict head, 1,000 a second: unindexed, Date cost 31 more bytes per head
# (90 instead of 59) to save 0.3 us of its 3.1.
UNINDEXED_NAMES = frozenset({b"server-timing", b"content-length"})


def _unindexed_prefix(name: bytes) -> bytes:
    """The bytes a literal without indexing of ``name`` starts with (RFC 7541
    6.2.2): its static table index in a 4-bit prefix, else the literal name."""
    static = HeaderTable.STATIC_TABLE_MAPPING.get(name)
    if static is not None:
        return bytes(encode_integer(static[0], 4))
    return INDEX_NONE + bytes(encode_integer(len(name), 7)) + name


# Everything but the value's length and the value, made once per name. Not
# Huffman-coded: for a value sent once, coding it cost more (2% of the loop's
# samples on h2c for Server-Timing) than the byte or two it saves.
_UNINDEXED_PREFIX = {name: _unindexed_prefix(name) for name in UNINDEXED_NAMES}

# The most fields FastEncoder's memo holds; when full it is emptied. It only
# holds fields found whole in the tables as they are since it was last
# emptied (at most 61 static and, at 4096 bytes, 128 dynamic entries), so at
# the default size this is never reached; the bound holds whatever the table
# size and whatever values an application is made to echo.
MEMO_ENTRIES = 256

# Each byte's Huffman code (RFC 7541 Appendix B) as a string of bits.
_HUFFMAN_BITS = [
    format(code, f"0{length}b")
    for code, length in zip(REQUEST_CODES[:256], REQUEST_CODES_LENGTH[:256], strict=True)
]


def huffman_encode(value: bytes) -> bytes:
    """RFC 7541 5.2 Huffman coding in time linear in ``len(value)``.

    hpack's encoder shifts one growing integer by every code, which copies it
    each time: quadratic, ~230 ms for a 65 KB value (a redirect echoing a long
    query). Here the codes are joined as text and converted once; ``int(s, 2)``
    is linear, and exempt from the int/str digit limit (power-of-two base)."""
    if not value:
        return b""
    bits = "".join(map(_HUFFMAN_BITS.__getitem__, value))
    pad = -len(bits) % 8  # padded with the EOS prefix, all ones
    return int(bits + "1" * pad, 2).to_bytes((len(bits) + pad) // 8, "big")


class _LinearHuffman:
    """hpack's ``HuffmanEncoder`` interface over ``huffman_encode``."""

    def encode(self, bytes_to_encode: bytes | None) -> bytes:
        return huffman_encode(bytes_to_encode) if bytes_to_encode else b""


class FastEncoder(hpack.Encoder):
    """hpack's encoder without its debug log call per field, with Huffman
    coding in linear time, a dynamic table of at most ``max_table_bytes``,
    ``UNINDEXED_NAMES`` kept out of it, and a memo of the fields it has sent
    as an index.

    A field's encoding depends only on the static table and the dynamic table
    as it is (RFC 7541 section 2.3), and a response head repeats on a
    connection: once its fields are in the table, each is one index byte.
    ``_memo`` maps (name, value) to those bytes and is emptied whenever the
    table changes (an insertion, an eviction, a new size), so a repeated head
    costs a dict lookup per field instead of a search of the table. Only
    fields whose encoding leaves the table as it is are kept in it.

    The peer's SETTINGS_HEADER_TABLE_SIZE is a ceiling, not an order: an
    encoder may use less, and says so with a dynamic table size update at the
    start of its next header block (RFC 7541 4.2, 6.3)."""

    def __init__(self, max_table_bytes: int = ENCODER_TABLE_BYTES) -> None:
        super().__init__()
        self.max_table_bytes = max_table_bytes
        self.huffman_coder = _LinearHuffman()  # type: ignore[assignment]
        # Emptied with clear(), never rebound: encode() holds it in a local.
        self._memo: dict[tuple[bytes, bytes], bytes] = {}

    @property
    def header_table_size(self) -> int:
        return self.header_table.maxsize

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        value = min(value, self.max_table_bytes)
        table = self.header_table
        pending = table.resized
        table.maxsize = value  # evicts what no longer fits
        if table.resized:
            self.table_size_changes.append(value)
            self._memo.clear()
        # hpack's setter sets ``resized`` to whether this one call changed the
        # size, so the same size twice (a peer's SETTINGS repeated before the
        # next block) dropped an update not yet sent, and the peer's decoder
        # was left expecting one: it stays pending until encode() sends it.
        table.resized = table.resized or pending

    def _encode_table_size_change(self) -> bytes:
        # RFC 7541 4.2: the smallest size since the last block, then the
        # final one; at most two updates. hpack sends every size in between,
        # and a size above the peer's current limit is a decoding error
        # there (a peer lowering its limit twice, 4096 to 2000 to 1000).
        changes = self.table_size_changes
        self.table_size_changes = []
        self._memo.clear()
        if not changes:
            return b""
        sizes = [min(changes), changes[-1]] if min(changes) < changes[-1] else [changes[-1]]
        block = b""
        for size in sizes:
            update = encode_integer(size, 5)
            update[0] |= 0x20
            block += bytes(update)
        return block

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        """hpack's ``Encoder.encode`` with a fast path for what h2 hands it for
        a response: plain two-tuples of bytes. Anything else (a dict,
        three-tuples, ``HeaderTuple``s with their sensitivity, str) goes
        through hpack's own conversion, field by field or whole."""
        if isinstance(headers, dict):
            return super().encode(headers, huffman)
        block: list[bytes] = []
        table = self.header_table
        if table.resized:
            block.append(self._encode_table_size_change())
            table.resized = False
        memo = self._memo
        add = self.add
        for header in headers:
            if type(header) is tuple and len(header) == 2:
                name, value = header
                if type(name) is bytes and type(value) is bytes:
                    encoded = memo.get(header)
                    block.append(add(header, False, huffman) if encoded is None else encoded)
                    continue
            # hpack's per-field path: its sensitivity rules and conversions.
            block.append(super().encode([header], huffman))
        return b"".join(block)

    def add(self, to_add: tuple[bytes, bytes], sensitive: bool, huffman: bool = False) -> bytes:
        # hpack's Encoder.add, the same decisions, but for UNINDEXED_NAMES.
        name, value = to_add
        if not sensitive:
            prefix = _UNINDEXED_PREFIX.get(name)
            if prefix is not None:
                n = len(value)
                length = _LENGTH[n] if n < 127 else bytes(encode_integer(n, 7))
                return prefix + length + value
        table = self.header_table
        indexbit = INDEX_NEVER if sensitive else INDEX_INCREMENTAL
        match = table.search(name, value)
        if match is None:
            encoded = self._encode_literal(name, value, indexbit, huffman)
            if not sensitive:
                self._insert(name, value)
            return encoded
        index, table_name, perfect = match
        if perfect is not None:
            encoded = _INDEXED[index] if index < 127 else self._encode_indexed(index)
            if not sensitive:
                memo = self._memo
                if len(memo) >= MEMO_ENTRIES:
                    memo.clear()
                memo[(name, value)] = encoded
            return encoded
        encoded = self._encode_indexed_literal(index, value, indexbit, huffman)
        if not sensitive:
            self._insert(table_name, value)
        return encoded

    def _insert(self, name: bytes, value: bytes) -> None:
        # Every entry after this one moves up an index, and the oldest may be
        # evicted: what the memo says no longer holds.
        self.header_table.add(name, value)
        self._memo.clear()
