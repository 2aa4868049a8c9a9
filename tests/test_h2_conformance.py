"""HTTP/2 conformance of rawserve.protocols.http2, rule by rule, without sockets.

Each test feeds one violation (or one required behaviour), built from raw
frames with hyperframe and hpack, into the server adapter and asserts the exact
answer: the GOAWAY or RST_STREAM error code, or the frame that must come back.
Tests are named ``test_<rfc>_<section>_<rule>``.

Covered, RFC 9113 (HTTP/2):
  3.4 connection preface; 4.1 frame format; 4.2 frame size; 4.3 field block
  (de)compression and header block atomicity; 5.1 stream states (idle,
  half-closed (remote), closed); 5.1.1 stream identifiers; 5.1.2 stream
  concurrency; 5.3.1/5.3.2 stream dependencies (RFC 7540 priority signals are
  still validated); 5.4.1 connection error handling; 5.5 extensions; 6.1 DATA;
  6.2 HEADERS; 6.3 PRIORITY; 6.4 RST_STREAM; 6.5, 6.5.2, 6.5.3 SETTINGS;
  6.7 PING; 6.8 GOAWAY; 6.9, 6.9.1, 6.9.2 WINDOW_UPDATE and flow control;
  6.10 CONTINUATION; 7 error codes; 8.1 request exchange; 8.1.1 malformed
  messages (content-length); 8.2.1 field validity; 8.2.2 connection-specific
  fields; 8.2.3 cookie compression; 8.3, 8.3.1 request pseudo-header fields;
  8.4 server push (client PUSH_PROMISE); 8.5 CONNECT; 10.5 denial of service
  (rapid reset, control-frame floods, CONTINUATION floods, header list size,
  HPACK bombs).
Covered, RFC 7541 (HPACK): 2.3.3 index address space; 4.2 maximum table
  size; 5.2 string literals (Huffman padding, EOS); 6.1 indexed field index 0;
  6.2 literal representations; 6.3 dynamic table size update.
Covered, RFC 9218: 7.1 PRIORITY_UPDATE frame validation.

Left out: 3.2 (h2c Upgrade: tests/test_http2.py covers the adapter side, the
HTTP/1.1 side belongs to the HTTP/1.1 adapter), 3.3 TLS and ALPN (I/O layer),
6.6 and 8.4 push sent by the server (not implemented yet), RFC 8441
extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL is off, so :protocol is
only checked as unknown), 9.2 TLS profile (I/O layer), RFC 7541 sections 3
and 4 beyond the cases above (hpack's own test suite), timeouts
(SETTINGS_TIMEOUT, idle connections: the I/O layer owns the clock).
"""

from __future__ import annotations

from typing import Any

import pytest
from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from rawserve.core.config import Limits
from rawserve.core.events import (
    BodyReceived,
    ConnectionTerminated,
    EndOfRequest,
    IncomingEvent,
    PriorityChanged,
    RequestReceived,
    ResetReason,
    ResponseBody,
    ResponseStart,
    StreamReset,
)
from rawserve.protocols.http2 import H2Connection

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

TYPE_DATA = 0x0
TYPE_HEADERS = 0x1
TYPE_PRIORITY = 0x2
TYPE_RST_STREAM = 0x3
TYPE_SETTINGS = 0x4
TYPE_PING = 0x6
TYPE_GOAWAY = 0x7
TYPE_WINDOW_UPDATE = 0x8
TYPE_CONTINUATION = 0x9
TYPE_PRIORITY_UPDATE = 0x10

END_STREAM = 0x1
END_HEADERS = 0x4

Fields = list[tuple[bytes, bytes]]

GET: Fields = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":path", b"/"),
    (b":authority", b"example.com"),
]
POST: Fields = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":path", b"/upload"),
    (b":authority", b"example.com"),
]


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """A frame built byte by byte, for frames hyperframe refuses to build."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes([kind, flags])
        + stream_id.to_bytes(4, "big")
        + payload
    )


def parse_frames(data: bytes) -> list[Frame]:
    frames: list[Frame] = []
    view = memoryview(data)
    while view:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9 : 9 + length])
        frames.append(frame)
        view = view[9 + length :]
    return frames


class Peer:
    """A hand-driven client talking to one server adapter."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        handshake: bool = True,
        settings: dict[int, int] | None = None,
    ) -> None:
        self.server = H2Connection(limits or Limits())
        self.server.initiate()
        self.encoder = Encoder()
        self.events: list[IncomingEvent] = []
        self.server_preface = parse_frames(self.server.data_to_send())
        if handshake:
            self.send_raw(PREFACE + SettingsFrame(0, settings=settings).serialize())
            self.send(SettingsFrame(0, flags=["ACK"]))
            self.read()

    def send_raw(self, data: bytes, now: float = 0.0) -> list[IncomingEvent]:
        events = self.server.receive_data(data, now)
        self.events += events
        return events

    def send(self, *frames: Frame | bytes, now: float = 0.0) -> list[IncomingEvent]:
        data = b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames)
        return self.send_raw(data, now)

    def read(self) -> list[Frame]:
        return parse_frames(self.server.data_to_send())

    def block(self, fields: Fields) -> bytes:
        return bytes(self.encoder.encode(fields))

    def headers(
        self,
        stream_id: int,
        fields: Fields | None = None,
        *,
        end_stream: bool = True,
        end_headers: bool = True,
        **kwargs: Any,
    ) -> HeadersFrame:
        flags = []
        if end_stream:
            flags.append("END_STREAM")
        if end_headers:
            flags.append("END_HEADERS")
        if "depends_on" in kwargs:
            flags.append("PRIORITY")
        if "pad_length" in kwargs:
            flags.append("PADDED")
        data = self.block(GET if fields is None else fields)
        return HeadersFrame(stream_id, data=data, flags=flags, **kwargs)

    def request(
        self, stream_id: int, fields: Fields | None = None, **kw: Any
    ) -> list[IncomingEvent]:
        return self.send(self.headers(stream_id, fields, **kw))

    def respond(self, stream_id: int, body: bytes = b"ok") -> None:
        self.server.send(ResponseStart(stream_id, 200, [(b"content-type", b"text/plain")]))
        self.server.send(ResponseBody(stream_id, body, end_stream=True))


def goaways(frames: list[Frame]) -> list[GoAwayFrame]:
    return [f for f in frames if isinstance(f, GoAwayFrame)]


def rsts(frames: list[Frame]) -> list[RstStreamFrame]:
    return [f for f in frames if isinstance(f, RstStreamFrame)]


def assert_connection_error(peer: Peer, code: int, last_stream_id: int | None = None) -> None:
    frames = peer.read()
    sent = goaways(frames)
    assert len(sent) == 1, frames
    assert sent[0].error_code == code, (sent[0].error_code, code)
    if last_stream_id is not None:
        assert sent[0].last_stream_id == last_stream_id
    assert peer.server.should_close
    terminated = [e for e in peer.events if isinstance(e, ConnectionTerminated)]
    assert terminated and terminated[-1].error_code == code
    # Nothing more is processed once the connection failed.
    assert peer.send(PingFrame(0, opaque_data=b"12345678")) == []
    assert peer.read() == []


def assert_stream_error(peer: Peer, stream_id: int, code: int) -> None:
    frames = peer.read()
    assert not goaways(frames), frames
    assert [(f.stream_id, f.error_code) for f in rsts(frames)] == [(stream_id, code)]
    assert not peer.server.should_close
    assert_alive(peer)


def assert_alive(peer: Peer) -> None:
    """The connection still works: a PING is answered."""
    peer.send(PingFrame(0, opaque_data=b"alive!!!"))
    frames = peer.read()
    assert any(
        isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == b"alive!!!"
        for f in frames
    ), frames


def requests(peer: Peer) -> list[RequestReceived]:
    return [e for e in peer.events if isinstance(e, RequestReceived)]


# -- RFC 9113 section 3.4: HTTP/2 connection preface ----------------------------------------------


def test_9113_3_4_server_preface_is_settings() -> None:
    peer = Peer(handshake=False)
    assert isinstance(peer.server_preface[0], SettingsFrame)
    assert "ACK" not in peer.server_preface[0].flags


def test_9113_3_4_client_settings_are_acknowledged() -> None:
    peer = Peer(handshake=False)
    peer.send_raw(PREFACE + SettingsFrame(0).serialize())
    frames = peer.read()
    assert any(isinstance(f, SettingsFrame) and "ACK" in f.flags for f in frames)


def test_9113_3_4_invalid_preface_is_protocol_error() -> None:
    peer = Peer(handshake=False)
    peer.send_raw(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_3_4_http1_request_instead_of_preface_is_protocol_error() -> None:
    peer = Peer(handshake=False)
    peer.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_3_4_first_frame_must_be_settings() -> None:
    peer = Peer(handshake=False)
    peer.send_raw(PREFACE + PingFrame(0, opaque_data=b"12345678").serialize())
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_3_4_first_settings_must_not_be_an_ack() -> None:
    peer = Peer(handshake=False)
    peer.send_raw(PREFACE + SettingsFrame(0, flags=["ACK"]).serialize())
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_3_4_preface_split_anywhere_is_accepted() -> None:
    peer = Peer(handshake=False)
    data = PREFACE + SettingsFrame(0).serialize() + peer.headers(1).serialize()
    for i in range(len(data)):
        peer.send_raw(data[i : i + 1])
    assert [type(e) for e in peer.events] == [RequestReceived, EndOfRequest]


# -- RFC 9113 section 4.1: frame format -----------------------------------------------------------


def test_9113_4_1_unknown_frame_type_is_ignored() -> None:
    peer = Peer()
    assert peer.send(raw_frame(0xEE, 0, 0, b"whatever")) == []
    assert_alive(peer)


def test_9113_4_1_undefined_flags_are_ignored() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_PING, 0x16, 0, b"flagflag"))  # 0x16: no ACK bit
    frames = peer.read()
    assert [f.opaque_data for f in frames if isinstance(f, PingFrame)] == [b"flagflag"]


def test_9113_4_1_reserved_stream_id_bit_is_ignored() -> None:
    peer = Peer()
    block = peer.block(GET)
    peer.send(raw_frame(TYPE_HEADERS, END_STREAM | END_HEADERS, 0x80000001, block))
    assert [e.stream_id for e in requests(peer)] == [1]


# -- RFC 9113 section 4.2: frame size -------------------------------------------------------------


def test_9113_4_2_data_of_16384_bytes_is_accepted() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    peer.send(DataFrame(1, b"x" * 16384, flags=["END_STREAM"]))
    body = [e for e in peer.events if isinstance(e, BodyReceived)]
    assert sum(len(e.data) for e in body) == 16384


def test_9113_4_2_oversized_data_is_frame_size_error_from_the_header_alone() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    # Only the 9-byte header: the server must not wait for 16 KiB + 1 of body.
    peer.send_raw(raw_frame(TYPE_DATA, 0, 1, b"x" * 16385)[:9])
    assert_connection_error(peer, FRAME_SIZE_ERROR)


def test_9113_4_2_oversized_headers_is_frame_size_error() -> None:
    peer = Peer()
    block = bytes(peer.encoder.encode([*GET, (b"x-big", b"a" * 17000)], huffman=False))
    peer.send(raw_frame(TYPE_HEADERS, END_STREAM | END_HEADERS, 1, block))
    assert_connection_error(peer, FRAME_SIZE_ERROR)


def test_9113_4_2_larger_frames_allowed_when_advertised() -> None:
    peer = Peer(Limits(max_frame_bytes=65536))
    peer.request(1, POST, end_stream=False)
    peer.send(DataFrame(1, b"x" * 40000, flags=["END_STREAM"]))
    assert sum(len(e.data) for e in peer.events if isinstance(e, BodyReceived)) == 40000


# -- RFC 9113 section 4.3: field section compression and decompression ----------------------------


def test_9113_4_3_invalid_field_block_is_compression_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_HEADERS, END_STREAM | END_HEADERS, 1, b"\xff\xff\xff\xff"))
    assert_connection_error(peer, COMPRESSION_ERROR)


def test_9113_4_3_priority_frame_inside_header_block_is_protocol_error() -> None:
    peer = Peer()
    peer.send(
        peer.headers(1, end_headers=False),
        PriorityFrame(1, depends_on=0, stream_weight=15),
    )
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_4_3_headers_for_another_stream_inside_header_block_is_protocol_error() -> None:
    peer = Peer()
    peer.send(peer.headers(1, end_headers=False), peer.headers(3))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_4_3_data_inside_header_block_is_protocol_error() -> None:
    peer = Peer()
    peer.send(peer.headers(1, POST, end_stream=False, end_headers=False), DataFrame(1, b"x"))
    assert_connection_error(peer, PROTOCOL_ERROR)


# -- RFC 9113 section 5.1: stream states ----------------------------------------------------------


def test_9113_5_1_idle_data_is_protocol_error() -> None:
    peer = Peer()
    peer.send(DataFrame(1, b"x", flags=["END_STREAM"]))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_5_1_idle_rst_stream_is_protocol_error() -> None:
    peer = Peer()
    peer.send(RstStreamFrame(1, error_code=0x8))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_5_1_idle_window_update_is_protocol_error() -> None:
    peer = Peer()
    peer.send(WindowUpdateFrame(1, window_increment=100))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_5_1_idle_continuation_is_protocol_error() -> None:
    peer = Peer()
    peer.send(ContinuationFrame(1, data=peer.block(GET), flags=["END_HEADERS"]))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_5_1_idle_priority_is_allowed() -> None:
    peer = Peer()
    peer.send(PriorityFrame(9, depends_on=0, stream_weight=200))
    peer.request(1)  # lower than the idle stream 9: still fine (h2spec 3.3/5)
    assert [e.stream_id for e in requests(peer)] == [1]
    assert_alive(peer)


def test_9113_5_1_half_closed_remote_data_is_stream_closed() -> None:
    peer = Peer()
    peer.request(1)
    peer.send(DataFrame(1, b"x", flags=["END_STREAM"]))
    assert_stream_error(peer, 1, STREAM_CLOSED)
    assert peer.events[-1] == StreamReset(1, ResetReason.PROTOCOL_ERROR)


def test_9113_5_1_half_closed_remote_headers_is_stream_closed() -> None:
    peer = Peer()
    peer.request(1)
    peer.send(peer.headers(1))
    assert_stream_error(peer, 1, STREAM_CLOSED)


def test_9113_5_1_half_closed_remote_window_update_and_priority_are_allowed() -> None:
    peer = Peer()
    peer.request(1)
    peer.send(WindowUpdateFrame(1, window_increment=100), PriorityFrame(1, stream_weight=10))
    assert not rsts(peer.read())
    assert_alive(peer)


def test_9113_5_1_half_closed_remote_rst_stream_resets() -> None:
    peer = Peer()
    peer.request(1)
    events = peer.send(RstStreamFrame(1, error_code=0x8))
    assert events == [StreamReset(1, ResetReason.CANCELLED)]
    assert not peer.read()  # never answer RST_STREAM with RST_STREAM (5.4.2)
    assert_alive(peer)


def test_9113_5_1_closed_after_rst_data_is_stream_closed() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    peer.send(RstStreamFrame(1, error_code=0x8))
    peer.send(DataFrame(1, b"x"))
    assert_stream_error(peer, 1, STREAM_CLOSED)


def test_9113_5_1_closed_after_rst_headers_is_stream_closed() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    peer.send(RstStreamFrame(1, error_code=0x8))
    peer.send(peer.headers(1))
    assert_stream_error(peer, 1, STREAM_CLOSED)


def test_9113_5_1_closed_after_rst_continuation_is_protocol_error() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    peer.send(RstStreamFrame(1, error_code=0x8))
    peer.send(ContinuationFrame(1, data=peer.block(GET), flags=["END_HEADERS"]))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_5_1_closed_data_is_stream_closed() -> None:
    # 6.1: DATA on a stream not open or half-closed (local): stream error.
    peer = Peer()
    peer.request(1)
    peer.respond(1)
    peer.read()
    peer.send(DataFrame(1, b"x"))
    assert_stream_error(peer, 1, STREAM_CLOSED)


def test_9113_5_1_closed_headers_is_stream_closed_connection_error() -> None:
    peer = Peer()
    peer.request(1)
    peer.respond(1)
    peer.read()
    peer.send(peer.headers(1))
    assert_connection_error(peer, STREAM_CLOSED)


def test_9113_5_1_closed_continuation_is_protocol_error() -> None:
    peer = Peer()
    peer.request(1)
    peer.respond(1)
    peer.read()
    peer.send(ContinuationFrame(1, data=peer.block(GET), flags=["END_HEADERS"]))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_5_1_closed_priority_is_allowed() -> None:
    peer = Peer()
    peer.request(1)
    peer.respond(1)
    peer.read()
    peer.send(PriorityFrame(1, stream_weight=10))
    assert not rsts(peer.read())
    assert_alive(peer)


def test_9113_5_1_streams_below_an_opened_one_are_closed() -> None:
    peer = Peer()
    peer.request(5)
    peer.send(DataFrame(3, b"x"))  # 3 was skipped: implicitly closed (5.1.1)
    assert_stream_error(peer, 3, STREAM_CLOSED)


# -- RFC 9113 section 5.1.1: stream identifiers ---------------------------------------------------


def test_9113_5_1_1_even_stream_id_is_protocol_error() -> None:
    peer = Peer()
    peer.request(2)
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_5_1_1_decreasing_stream_id_is_protocol_error() -> None:
    peer = Peer()
    peer.request(5)
    peer.request(3)
    assert_connection_error(peer, PROTOCOL_ERROR, last_stream_id=5)


# -- RFC 9113 section 5.1.2: stream concurrency ---------------------------------------------------


def test_9113_5_1_2_settings_advertise_the_limit() -> None:
    peer = Peer(Limits(max_concurrent_streams=7), handshake=False)
    settings = peer.server_preface[0]
    assert isinstance(settings, SettingsFrame)
    assert settings.settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 7


def test_9113_5_1_2_stream_over_the_limit_is_refused_not_fatal() -> None:
    peer = Peer(Limits(max_concurrent_streams=2))
    peer.request(1)
    peer.request(3)
    peer.request(5, [*GET, (b"x-dyn", b"indexed")])  # HPACK state must stay in sync
    assert_stream_error(peer, 5, REFUSED_STREAM)
    assert [e.stream_id for e in requests(peer)] == [1, 3]
    peer.respond(1)
    peer.read()
    peer.request(7, [*GET, (b"x-dyn", b"indexed")])
    assert requests(peer)[-1].stream_id == 7
    assert (b"x-dyn", b"indexed") in requests(peer)[-1].headers


def test_9113_5_1_2_half_closed_streams_count_toward_the_limit() -> None:
    peer = Peer(Limits(max_concurrent_streams=1))
    peer.request(1)  # half-closed (remote) until the response ends
    peer.request(3)
    assert_stream_error(peer, 3, REFUSED_STREAM)


def test_9113_5_1_2_data_on_a_refused_stream_is_stream_closed() -> None:
    peer = Peer(Limits(max_concurrent_streams=1))
    peer.request(1)
    peer.request(3, POST, end_stream=False)
    peer.read()
    peer.send(DataFrame(3, b"x" * 100))
    assert_stream_error(peer, 3, STREAM_CLOSED)


# -- RFC 9113 section 5.3.1: stream dependencies --------------------------------------------------


def test_9113_5_3_1_headers_depending_on_itself_is_stream_error() -> None:
    peer = Peer()
    peer.request(1, depends_on=1, stream_weight=255)
    assert_stream_error(peer, 1, PROTOCOL_ERROR)
    assert requests(peer) == []


def test_9113_5_3_1_priority_depending_on_itself_on_open_stream_is_stream_error() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    events = peer.send(PriorityFrame(1, depends_on=1, stream_weight=255))
    assert events == [StreamReset(1, ResetReason.PROTOCOL_ERROR)]
    assert_stream_error(peer, 1, PROTOCOL_ERROR)


def test_9113_5_3_1_priority_depending_on_itself_on_idle_stream_is_protocol_error() -> None:
    # A stream error cannot be sent on an idle stream (RST_STREAM is not
    # allowed there, 6.4), so it becomes a connection error.
    peer = Peer()
    peer.send(PriorityFrame(1, depends_on=1, stream_weight=255))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_5_3_2_headers_priority_maps_to_urgency() -> None:
    peer = Peer()
    peer.request(1, depends_on=0, stream_weight=255)  # weight 256
    peer.request(3, depends_on=0, stream_weight=0)  # weight 1
    peer.request(5, depends_on=0, stream_weight=15)  # the default: no signal
    assert [r.priority.urgency for r in requests(peer)] == [0, 7, 3]


def test_9113_5_3_2_priority_frame_on_open_stream_changes_priority() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    events = peer.send(PriorityFrame(1, depends_on=0, stream_weight=255))
    assert [(type(e), e.stream_id) for e in events] == [(PriorityChanged, 1)]
    assert isinstance(events[0], PriorityChanged) and events[0].priority.urgency == 0


# -- RFC 9113 section 5.4.1: connection error handling --------------------------------------------


def test_9113_5_4_1_goaway_carries_last_processed_stream() -> None:
    peer = Peer()
    peer.request(1)
    peer.request(3)
    peer.read()
    peer.send(raw_frame(TYPE_PING, 0, 0, b"short"))
    assert_connection_error(peer, FRAME_SIZE_ERROR, last_stream_id=3)


# -- RFC 9113 section 5.5: extending HTTP/2 -------------------------------------------------------


def test_9113_5_5_unknown_extension_frame_is_ignored() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    assert peer.send(raw_frame(0x7A, 0xFF, 1, b"ext")) == []
    assert_alive(peer)


def test_9113_5_5_unknown_frame_inside_header_block_is_protocol_error() -> None:
    peer = Peer()
    peer.send(peer.headers(1, end_headers=False), raw_frame(0x7A, 0, 1, b"ext"))
    assert_connection_error(peer, PROTOCOL_ERROR)


# -- RFC 9113 section 6.1: DATA -------------------------------------------------------------------


def test_9113_6_1_data_on_stream_0_is_protocol_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_DATA, 0, 0, b"x"))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_6_1_data_with_padding_as_long_as_payload_is_protocol_error() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    peer.send(raw_frame(TYPE_DATA, 0x8, 1, bytes([6]) + b"x" * 5))  # pad 6 > 5 left
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_6_1_padded_data_delivers_only_the_data() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    peer.send(DataFrame(1, b"hello", pad_length=10, flags=["PADDED", "END_STREAM"]))
    assert [e.data for e in peer.events if isinstance(e, BodyReceived)] == [b"hello"]


# -- RFC 9113 section 6.2: HEADERS ----------------------------------------------------------------


def test_9113_6_2_headers_on_stream_0_is_protocol_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_HEADERS, END_STREAM | END_HEADERS, 0, peer.block(GET)))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_6_2_headers_with_too_much_padding_is_protocol_error() -> None:
    peer = Peer()
    block = peer.block(GET)
    payload = bytes([len(block) + 1]) + block
    peer.send(raw_frame(TYPE_HEADERS, END_STREAM | END_HEADERS | 0x8, 1, payload))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_6_2_padded_headers_with_priority_are_accepted() -> None:
    peer = Peer()
    peer.request(1, pad_length=20, depends_on=0, stream_weight=100)
    assert [e.stream_id for e in requests(peer)] == [1]


# -- RFC 9113 section 6.3: PRIORITY ---------------------------------------------------------------


def test_9113_6_3_priority_on_stream_0_is_protocol_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_PRIORITY, 0, 0, b"\x00\x00\x00\x01\x10"))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_6_3_priority_of_wrong_length_is_frame_size_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10\x00"))
    assert_connection_error(peer, FRAME_SIZE_ERROR)


# -- RFC 9113 section 6.4: RST_STREAM -------------------------------------------------------------


def test_9113_6_4_rst_stream_on_stream_0_is_protocol_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_RST_STREAM, 0, 0, b"\x00\x00\x00\x08"))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_6_4_rst_stream_of_wrong_length_is_frame_size_error() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    peer.send(raw_frame(TYPE_RST_STREAM, 0, 1, b"\x00\x00\x00\x08\x00"))
    assert_connection_error(peer, FRAME_SIZE_ERROR)


def test_9113_6_4_rst_stream_drops_the_queued_response() -> None:
    peer = Peer(
        settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}
    )  # nothing can be sent: all of it queues
    peer.request(1)
    peer.server.send(ResponseStart(1, 200))
    peer.server.send(ResponseBody(1, b"x" * 1000))
    assert peer.server.buffered(1) == 1000
    assert peer.send(RstStreamFrame(1, error_code=0x8)) == [StreamReset(1, ResetReason.CANCELLED)]
    assert peer.server.buffered(1) == 0
    assert peer.server.open_streams == 0


# -- RFC 9113 section 6.5: SETTINGS ---------------------------------------------------------------


def test_9113_6_5_settings_ack_with_payload_is_frame_size_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_SETTINGS, 0x1, 0, b"\x00\x03\x00\x00\x00\x64"))
    assert_connection_error(peer, FRAME_SIZE_ERROR)


def test_9113_6_5_settings_on_a_stream_is_protocol_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_SETTINGS, 0, 1, b""))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_6_5_settings_length_not_multiple_of_6_is_frame_size_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00"))
    assert_connection_error(peer, FRAME_SIZE_ERROR)


@pytest.mark.parametrize(
    ("setting", "value", "code"),
    [
        pytest.param(0x2, 2, PROTOCOL_ERROR, id="ENABLE_PUSH=2"),
        pytest.param(0x4, 2**31, FLOW_CONTROL_ERROR, id="INITIAL_WINDOW_SIZE=2^31"),
        pytest.param(0x5, 16383, PROTOCOL_ERROR, id="MAX_FRAME_SIZE=16383"),
        pytest.param(0x5, 2**24, PROTOCOL_ERROR, id="MAX_FRAME_SIZE=2^24"),
        pytest.param(0x8, 2, PROTOCOL_ERROR, id="ENABLE_CONNECT_PROTOCOL=2"),
    ],
)
def test_9113_6_5_2_invalid_setting_values(setting: int, value: int, code: int) -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_SETTINGS, 0, 0, setting.to_bytes(2, "big") + value.to_bytes(4, "big")))
    assert_connection_error(peer, code)


def test_9113_6_5_2_unknown_setting_is_ignored_and_acknowledged() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_SETTINGS, 0, 0, b"\x00\xff\x00\x00\x00\x01"))
    frames = peer.read()
    assert [f for f in frames if isinstance(f, SettingsFrame) and "ACK" in f.flags]
    assert not goaways(frames)


def test_9113_6_5_3_last_value_of_a_repeated_setting_wins() -> None:
    peer = Peer()
    payload = b"\x00\x04\x00\x00\x00\x64" + b"\x00\x04\x00\x00\x00\x01"  # 100, then 1
    peer.send(raw_frame(TYPE_SETTINGS, 0, 0, payload))
    peer.request(1)
    peer.respond(1, b"abcdef")
    data = [f for f in peer.read() if isinstance(f, DataFrame)]
    assert [len(f.data) for f in data] == [1]


def test_9113_6_5_3_settings_are_acknowledged_once_each() -> None:
    peer = Peer()
    peer.send(SettingsFrame(0, settings={0x3: 50}), SettingsFrame(0, settings={0x3: 60}))
    acks = [f for f in peer.read() if isinstance(f, SettingsFrame) and "ACK" in f.flags]
    assert len(acks) == 2


def test_9113_6_5_2_server_settings_values() -> None:
    limits = Limits(
        max_concurrent_streams=50,
        initial_window_bytes=100_000,
        max_frame_bytes=32768,
        max_header_bytes=8192,
    )
    peer = Peer(limits, handshake=False)
    settings = peer.server_preface[0]
    assert isinstance(settings, SettingsFrame)
    assert settings.settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 50
    assert settings.settings[SettingsFrame.INITIAL_WINDOW_SIZE] == 100_000
    assert settings.settings[SettingsFrame.MAX_FRAME_SIZE] == 32768
    assert settings.settings[SettingsFrame.MAX_HEADER_LIST_SIZE] == 8192
    assert settings.settings.get(SettingsFrame.ENABLE_CONNECT_PROTOCOL, 0) == 0
    assert settings.settings.get(SettingsFrame.ENABLE_PUSH, 0) == 0  # servers: 0 or absent
    update = peer.server_preface[1]
    assert isinstance(update, WindowUpdateFrame) and update.stream_id == 0
    assert update.window_increment == Limits().connection_window_bytes - 65535


# -- RFC 9113 section 6.7: PING -------------------------------------------------------------------


def test_9113_6_7_ping_is_answered_with_same_payload() -> None:
    peer = Peer()
    peer.send(PingFrame(0, opaque_data=b"\x01\x02\x03\x04\x05\x06\x07\x08"))
    pings = [f for f in peer.read() if isinstance(f, PingFrame)]
    assert [(f.opaque_data, "ACK" in f.flags) for f in pings] == [
        (b"\x01\x02\x03\x04\x05\x06\x07\x08", True)
    ]


def test_9113_6_7_ping_ack_is_not_answered() -> None:
    peer = Peer()
    peer.send(PingFrame(0, opaque_data=b"12345678", flags=["ACK"]))
    assert peer.read() == []


def test_9113_6_7_ping_on_a_stream_is_protocol_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_PING, 0, 1, b"12345678"))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_6_7_ping_of_wrong_length_is_frame_size_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_PING, 0, 0, b"123456"))
    assert_connection_error(peer, FRAME_SIZE_ERROR)


# -- RFC 9113 section 6.8: GOAWAY -----------------------------------------------------------------


def test_9113_6_8_goaway_on_a_stream_is_protocol_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_GOAWAY, 0, 1, b"\x00\x00\x00\x00\x00\x00\x00\x00"))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_6_8_goaway_from_peer_terminates_with_its_code() -> None:
    peer = Peer()
    events = peer.send(GoAwayFrame(0, last_stream_id=0, error_code=PROTOCOL_ERROR))
    assert events == [ConnectionTerminated(PROTOCOL_ERROR, 0, "GOAWAY from peer")]
    assert peer.server.should_close


def test_9113_6_8_graceful_goaway_from_peer_lets_open_streams_finish() -> None:
    peer = Peer()
    peer.request(1)
    events = peer.send(GoAwayFrame(0, last_stream_id=0, error_code=NO_ERROR))
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert not peer.server.should_close
    peer.respond(1, b"done")
    data = [f for f in peer.read() if isinstance(f, DataFrame)]
    assert data[-1].data == b"done" and "END_STREAM" in data[-1].flags
    assert peer.server.should_close


def test_9113_6_8_server_goaway_names_last_processed_stream() -> None:
    peer = Peer()
    peer.request(1)
    peer.request(3)
    peer.read()
    peer.server.start_shutdown()
    sent = goaways(peer.read())
    assert [(g.last_stream_id, g.error_code) for g in sent] == [(3, NO_ERROR)]
    peer.request(5)  # after GOAWAY: refused, never processed
    assert_stream_error(peer, 5, REFUSED_STREAM)
    assert [e.stream_id for e in requests(peer)] == [1, 3]


# -- RFC 9113 section 6.9: WINDOW_UPDATE ----------------------------------------------------------


def test_9113_6_9_zero_increment_on_connection_is_protocol_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x00"))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_6_9_zero_increment_on_stream_is_stream_error() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    events = peer.send(raw_frame(TYPE_WINDOW_UPDATE, 0, 1, b"\x00\x00\x00\x00"))
    assert events == [StreamReset(1, ResetReason.PROTOCOL_ERROR)]
    assert_stream_error(peer, 1, PROTOCOL_ERROR)


def test_9113_6_9_window_update_of_wrong_length_is_frame_size_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_WINDOW_UPDATE, 0, 0, b"\x00\x00\x01\x00\x00"))
    assert_connection_error(peer, FRAME_SIZE_ERROR)


def test_9113_6_9_1_data_respects_a_window_of_1() -> None:
    peer = Peer(settings={SettingsFrame.INITIAL_WINDOW_SIZE: 1})
    peer.request(1)
    peer.respond(1, b"abc")
    data = [f for f in peer.read() if isinstance(f, DataFrame)]
    assert [f.data for f in data] == [b"a"]
    assert peer.server.buffered(1) == 2


def test_9113_6_9_1_connection_window_overflow_is_flow_control_error() -> None:
    peer = Peer()
    peer.send(
        WindowUpdateFrame(0, window_increment=2**31 - 1),
        WindowUpdateFrame(0, window_increment=2**31 - 1),
    )
    assert_connection_error(peer, FLOW_CONTROL_ERROR)


def test_9113_6_9_1_stream_window_overflow_is_stream_error() -> None:
    peer = Peer()
    peer.request(1)
    peer.send(
        WindowUpdateFrame(1, window_increment=2**31 - 1),
        WindowUpdateFrame(1, window_increment=2**31 - 1),
    )
    assert_stream_error(peer, 1, FLOW_CONTROL_ERROR)


def test_9113_6_9_1_data_beyond_the_advertised_window_is_flow_control_error() -> None:
    peer = Peer(Limits(initial_window_bytes=65535))
    peer.request(1, POST, end_stream=False)
    for _ in range(4):
        peer.send(DataFrame(1, b"x" * 16384))  # 65536 > 65535, never acknowledged
    assert_connection_error(peer, FLOW_CONTROL_ERROR)


def test_9113_6_9_2_initial_window_change_releases_queued_data() -> None:
    peer = Peer(settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    peer.request(1)
    peer.respond(1, b"abc")
    assert not [f for f in peer.read() if isinstance(f, DataFrame)]
    peer.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 1}))
    data = [f for f in peer.read() if isinstance(f, DataFrame)]
    assert [f.data for f in data] == [b"a"]


def test_9113_6_9_2_window_may_go_negative_and_recover() -> None:
    peer = Peer()
    peer.request(1)
    peer.respond(1, b"x" * 1000)
    peer.read()
    peer.request(3)
    peer.server.send(ResponseStart(3, 200))
    peer.server.send(ResponseBody(3, b"y" * 100))
    peer.read()  # stream 3 window: 65535 - 100
    peer.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 50}))
    peer.server.send(ResponseBody(3, b"z" * 10, end_stream=True))
    assert not [f for f in peer.read() if isinstance(f, DataFrame)]  # window is -50
    peer.send(WindowUpdateFrame(3, window_increment=60))
    data = [f for f in peer.read() if isinstance(f, DataFrame)]
    assert [f.data for f in data] == [b"z" * 10] and "END_STREAM" in data[0].flags


def test_9113_6_9_2_initial_window_over_maximum_is_flow_control_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_SETTINGS, 0, 0, b"\x00\x04\x80\x00\x00\x00"))
    assert_connection_error(peer, FLOW_CONTROL_ERROR)


def test_9113_6_9_2_settings_overflowing_an_open_stream_window_is_flow_control_error() -> None:
    peer = Peer()
    peer.request(1)
    peer.send(WindowUpdateFrame(1, window_increment=2**31 - 1 - 65535))
    peer.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65536}))
    assert_connection_error(peer, FLOW_CONTROL_ERROR)


# -- RFC 9113 section 6.10: CONTINUATION ----------------------------------------------------------


def test_9113_6_10_header_block_across_continuations() -> None:
    peer = Peer()
    block = peer.block([*GET, (b"x-long", b"v" * 300)])
    peer.send(
        HeadersFrame(1, data=block[:10], flags=["END_STREAM"]),
        ContinuationFrame(1, data=block[10:20]),
        ContinuationFrame(1, data=block[20:], flags=["END_HEADERS"]),
    )
    assert [(e.stream_id, e.headers) for e in requests(peer)] == [(1, [(b"x-long", b"v" * 300)])]


def test_9113_6_10_continuation_followed_by_other_frame_is_protocol_error() -> None:
    peer = Peer()
    block = peer.block(GET)
    peer.send(
        HeadersFrame(1, data=block[:5], flags=["END_STREAM"]),
        ContinuationFrame(1, data=block[5:8]),
        DataFrame(1, b"x"),
    )
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_6_10_continuation_on_stream_0_is_protocol_error() -> None:
    peer = Peer()
    block = peer.block(GET)
    peer.send(
        HeadersFrame(1, data=block[:5], flags=["END_STREAM"]),
        raw_frame(TYPE_CONTINUATION, END_HEADERS, 0, block[5:]),
    )
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_6_10_continuation_after_end_headers_is_protocol_error() -> None:
    peer = Peer()
    peer.send(
        peer.headers(1, end_stream=False), ContinuationFrame(1, data=b"", flags=["END_HEADERS"])
    )
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_6_10_continuation_after_ended_continuation_is_protocol_error() -> None:
    peer = Peer()
    block = peer.block(GET)
    peer.send(
        HeadersFrame(1, data=block[:5], flags=["END_STREAM"]),
        ContinuationFrame(1, data=block[5:], flags=["END_HEADERS"]),
        ContinuationFrame(1, data=b"", flags=["END_HEADERS"]),
    )
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9113_6_10_continuation_after_data_is_protocol_error() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    peer.send(DataFrame(1, b"x"), ContinuationFrame(1, data=b"", flags=["END_HEADERS"]))
    assert_connection_error(peer, PROTOCOL_ERROR)


# -- RFC 9113 section 7: error codes --------------------------------------------------------------


def test_9113_7_unknown_error_code_in_goaway_is_not_an_error() -> None:
    peer = Peer()
    events = peer.send(GoAwayFrame(0, last_stream_id=0, error_code=0xFF))
    assert [(type(e), getattr(e, "error_code", None)) for e in events] == [
        (ConnectionTerminated, 0xFF)
    ]
    assert not goaways(peer.read())


def test_9113_7_unknown_error_code_in_rst_stream_is_not_an_error() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    assert peer.send(RstStreamFrame(1, error_code=0xFF)) == [StreamReset(1, ResetReason.CANCELLED)]
    assert peer.read() == []
    assert_alive(peer)


# -- RFC 9113 section 8.1: HTTP message framing ---------------------------------------------------


def test_9113_8_1_second_headers_without_end_stream_is_stream_error() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    events = peer.send(peer.headers(1, [(b"x-trailer", b"1")], end_stream=False))
    assert events == [StreamReset(1, ResetReason.PROTOCOL_ERROR)]
    assert_stream_error(peer, 1, PROTOCOL_ERROR)
    peer.request(3, [*GET, (b"x-trailer", b"1")])  # an indexed reference now
    assert requests(peer)[-1].headers == [(b"x-trailer", b"1")]


def test_9113_8_1_trailers_end_the_request() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    peer.send(DataFrame(1, b"body"))
    events = peer.send(peer.headers(1, [(b"x-checksum", b"abc")], end_stream=True))
    assert events == [EndOfRequest(1)]


def test_9113_8_1_response_before_request_ends_then_more_data_gets_rst_no_error() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    peer.respond(1)
    frames = peer.read()
    data = [f for f in frames if isinstance(f, DataFrame)]
    assert "END_STREAM" in data[-1].flags
    assert not rsts(frames)  # frames already in flight must not race a reset
    assert peer.server.open_streams == 0
    assert peer.send(DataFrame(1, b"more body")) == []
    assert [(f.stream_id, f.error_code) for f in rsts(peer.read())] == [(1, NO_ERROR)]


def test_9113_8_1_response_before_request_ends_then_request_ends_cleanly() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    peer.respond(1)
    peer.read()
    assert peer.send(DataFrame(1, b"last", flags=["END_STREAM"])) == []
    assert not rsts(peer.read())
    assert_alive(peer)


def test_9113_8_1_answered_stream_still_gets_flow_control_errors() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    peer.respond(1)
    peer.read()
    peer.send(
        WindowUpdateFrame(1, window_increment=2**31 - 1),
        WindowUpdateFrame(1, window_increment=2**31 - 1),
    )
    assert_stream_error(peer, 1, FLOW_CONTROL_ERROR)


def test_9113_8_1_1_content_length_larger_than_data_is_stream_error() -> None:
    peer = Peer()
    peer.request(1, [*POST, (b"content-length", b"10")], end_stream=False)
    peer.send(DataFrame(1, b"12345", flags=["END_STREAM"]))
    assert_stream_error(peer, 1, PROTOCOL_ERROR)
    assert peer.events[-1] == StreamReset(1, ResetReason.PROTOCOL_ERROR)


def test_9113_8_1_1_content_length_smaller_than_data_is_stream_error() -> None:
    peer = Peer()
    peer.request(1, [*POST, (b"content-length", b"4")], end_stream=False)
    peer.send(DataFrame(1, b"123"), DataFrame(1, b"45", flags=["END_STREAM"]))
    assert_stream_error(peer, 1, PROTOCOL_ERROR)
    assert not [e for e in peer.events if isinstance(e, EndOfRequest)]


def test_9113_8_1_1_content_length_mismatch_keeps_connection_window() -> None:
    peer = Peer(Limits(connection_window_bytes=65535, initial_window_bytes=65535))
    for sid in (1, 3, 5, 7, 9):
        peer.request(sid, [*POST, (b"content-length", b"1")], end_stream=False)
        peer.send(DataFrame(sid, b"x" * 16000))
    # Five malformed streams later, 80,000 bytes went through a 65,535-byte
    # window: the discarded bytes were credited back.
    assert not goaways(peer.read())


def test_9113_8_1_1_content_length_on_headers_with_end_stream_is_stream_error() -> None:
    peer = Peer()
    peer.request(1, [*POST, (b"content-length", b"3")], end_stream=True)
    assert_stream_error(peer, 1, PROTOCOL_ERROR)
    assert requests(peer) == []


def test_9113_8_1_1_trailers_ending_short_of_content_length_is_stream_error() -> None:
    peer = Peer()
    peer.request(1, [*POST, (b"content-length", b"10")], end_stream=False)
    peer.send(DataFrame(1, b"12345"))
    peer.send(peer.headers(1, [(b"x-t", b"1")], end_stream=True))
    assert_stream_error(peer, 1, PROTOCOL_ERROR)


def test_9113_8_1_1_matching_content_length_is_accepted() -> None:
    peer = Peer()
    peer.request(1, [*POST, (b"content-length", b"5")], end_stream=False)
    peer.send(DataFrame(1, b"12"), DataFrame(1, b"345", flags=["END_STREAM"]))
    assert isinstance(peer.events[-1], EndOfRequest)


# -- RFC 9113 section 8.2: HTTP fields ------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        pytest.param((b"X-Upper", b"1"), id="uppercase-name"),
        pytest.param((b"x name", b"1"), id="space-in-name"),
        pytest.param((b"x:colon", b"1"), id="colon-in-name"),
        pytest.param((b"", b"1"), id="empty-name"),
        pytest.param((b"x-nul", b"a\x00b"), id="nul-in-value"),
        pytest.param((b"x-crlf", b"a\r\nb: c"), id="crlf-in-value"),
        pytest.param((b"x-lf", b"a\nb"), id="lf-in-value"),
        pytest.param((b"x-space", b" padded"), id="leading-space"),
        pytest.param((b"x-tab", b"padded\t"), id="trailing-tab"),
    ],
)
def test_9113_8_2_1_invalid_field_is_malformed(field: tuple[bytes, bytes]) -> None:
    peer = Peer()
    peer.request(1, [*GET, field])
    assert_stream_error(peer, 1, PROTOCOL_ERROR)
    assert requests(peer) == []


def test_9113_8_2_1_empty_value_and_inner_spaces_are_fine() -> None:
    peer = Peer()
    peer.request(1, [*GET, (b"x-empty", b""), (b"x-inner", b"a b\tc")])
    assert requests(peer)[0].headers == [(b"x-empty", b""), (b"x-inner", b"a b\tc")]


@pytest.mark.parametrize(
    "name", [b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"]
)
def test_9113_8_2_2_connection_specific_field_is_malformed(name: bytes) -> None:
    peer = Peer()
    peer.request(1, [*GET, (name, b"close")])
    assert_stream_error(peer, 1, PROTOCOL_ERROR)


def test_9113_8_2_2_te_other_than_trailers_is_malformed() -> None:
    peer = Peer()
    peer.request(1, [*GET, (b"te", b"gzip")])
    assert_stream_error(peer, 1, PROTOCOL_ERROR)


def test_9113_8_2_2_te_trailers_is_accepted() -> None:
    peer = Peer()
    peer.request(1, [*GET, (b"te", b"trailers")])
    assert requests(peer)[0].headers == [(b"te", b"trailers")]


def test_9113_8_2_3_cookie_fields_are_joined() -> None:
    peer = Peer()
    peer.request(1, [*GET, (b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2")])
    assert requests(peer)[0].headers == [(b"accept", b"*/*"), (b"cookie", b"a=1; b=2")]


def test_9113_8_2_invalid_trailer_field_is_malformed() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    peer.send(peer.headers(1, [(b"X-Bad", b"1")], end_stream=True))
    assert_stream_error(peer, 1, PROTOCOL_ERROR)
    assert peer.events[-1] == StreamReset(1, ResetReason.PROTOCOL_ERROR)


# -- RFC 9113 section 8.3: pseudo-header fields ---------------------------------------------------


def _without(name: bytes) -> Fields:
    return [f for f in GET if f[0] != name]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([*GET, (b":foo", b"bar")], id="unknown-pseudo"),
        pytest.param([*GET, (b":status", b"200")], id="response-pseudo"),
        pytest.param([*GET, (b":protocol", b"websocket")], id="protocol-without-extended-connect"),
        pytest.param([*GET[:2], (b"accept", b"*/*"), *GET[2:]], id="pseudo-after-regular"),
        pytest.param(_without(b":method"), id="missing-method"),
        pytest.param(_without(b":scheme"), id="missing-scheme"),
        pytest.param(_without(b":path"), id="missing-path"),
        pytest.param([*GET, (b":method", b"POST")], id="duplicate-method"),
        pytest.param([*GET, (b":scheme", b"http")], id="duplicate-scheme"),
        pytest.param([*GET, (b":path", b"/b")], id="duplicate-path"),
        pytest.param([*GET, (b":authority", b"other")], id="duplicate-authority"),
        pytest.param([*_without(b":path"), (b":path", b"")], id="empty-path"),
        pytest.param([*_without(b":path"), (b":path", b"relative")], id="relative-path"),
        pytest.param([*_without(b":path"), (b":path", b"*")], id="asterisk-not-options"),
        pytest.param([*_without(b":path"), (b":path", b"/a b")], id="space-in-path"),
        pytest.param([*_without(b":method"), (b":method", b"G T")], id="bad-method"),
        pytest.param([*GET, (b"host", b"other.example")], id="host-differs-from-authority"),
        pytest.param(
            [*_without(b":authority"), (b":authority", b"user@example.com")], id="userinfo"
        ),
        pytest.param(
            [(b":method", b"CONNECT"), (b":authority", b"a:443"), (b":path", b"/")],
            id="connect-with-path",
        ),
        pytest.param([(b":method", b"CONNECT")], id="connect-without-authority"),
    ],
)
def test_9113_8_3_malformed_pseudo_headers_are_stream_errors(fields: Fields) -> None:
    peer = Peer()
    peer.request(1, fields)
    assert_stream_error(peer, 1, PROTOCOL_ERROR)
    assert requests(peer) == []


def test_9113_8_3_pseudo_header_in_trailers_is_malformed() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    peer.send(peer.headers(1, [(b":method", b"POST")], end_stream=True))
    assert_stream_error(peer, 1, PROTOCOL_ERROR)


def test_9113_8_3_1_request_fields_reach_the_event() -> None:
    peer = Peer()
    peer.request(1, [*POST[:2], (b":path", b"/a/b?x=1"), *POST[3:], (b"accept", b"*/*")])
    req = requests(peer)[0]
    assert (req.method, req.target, req.scheme, req.authority, req.http_version) == (
        "POST",
        "/a/b?x=1",
        "https",
        "example.com",
        "2",
    )
    assert req.headers == [(b"accept", b"*/*")]
    assert req.end_stream


def test_9113_8_3_1_options_asterisk_is_accepted() -> None:
    peer = Peer()
    peer.request(1, [(b":method", b"OPTIONS"), (b":scheme", b"https"), (b":path", b"*")])
    assert requests(peer)[0].target == "*"


def test_9113_8_3_1_host_stands_in_for_missing_authority() -> None:
    peer = Peer()
    peer.request(1, [*_without(b":authority"), (b"host", b"h.example")])
    assert requests(peer)[0].authority == "h.example"


def test_9113_8_5_connect_is_delivered_with_authority_as_target() -> None:
    peer = Peer()
    peer.request(1, [(b":method", b"CONNECT"), (b":authority", b"a.example:443")], end_stream=False)
    req = requests(peer)[0]
    assert (req.method, req.target, req.authority) == ("CONNECT", "a.example:443", "a.example:443")


# -- RFC 9113 section 8.4: server push ------------------------------------------------------------


def test_9113_8_4_push_promise_from_client_is_protocol_error() -> None:
    peer = Peer()
    peer.request(1, POST, end_stream=False)
    peer.send(
        PushPromiseFrame(1, promised_stream_id=2, data=peer.block(GET), flags=["END_HEADERS"])
    )
    assert_connection_error(peer, PROTOCOL_ERROR)


# -- RFC 9113 section 10.5: denial-of-service considerations --------------------------------------


def test_9113_10_5_rapid_reset_is_enhance_your_calm() -> None:
    peer = Peer(Limits(max_resets_per_s=20))
    for i in range(25):
        sid = 2 * i + 1
        peer.send(peer.headers(sid, end_stream=False), RstStreamFrame(sid, error_code=0x8), now=0.0)
    assert_connection_error(peer, ENHANCE_YOUR_CALM)


def test_9113_10_5_resets_spread_over_time_are_fine() -> None:
    peer = Peer(Limits(max_resets_per_s=20))
    for i in range(100):
        sid = 2 * i + 1
        now = i * 0.1  # 10 per second
        peer.send(peer.headers(sid, end_stream=False), RstStreamFrame(sid, error_code=0x8), now=now)
    assert not goaways(peer.read())


def test_9113_10_5_refused_streams_count_as_resets() -> None:
    peer = Peer(Limits(max_resets_per_s=10, max_concurrent_streams=1))
    peer.request(1)
    for i in range(1, 15):
        peer.request(2 * i + 1)
    assert_connection_error(peer, ENHANCE_YOUR_CALM)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(PingFrame(0, opaque_data=b"12345678"), id="PING"),
        pytest.param(SettingsFrame(0), id="SETTINGS"),
        pytest.param(PriorityFrame(9, depends_on=0, stream_weight=10), id="PRIORITY"),
        pytest.param(WindowUpdateFrame(0, window_increment=1), id="WINDOW_UPDATE"),
        pytest.param(raw_frame(0xEE, 0, 0, b""), id="unknown"),
    ],
)
def test_9113_10_5_control_frame_flood_is_enhance_your_calm(frame: Frame | bytes) -> None:
    peer = Peer(Limits(max_control_frames_per_s=100))
    data = frame if isinstance(frame, bytes) else frame.serialize()
    peer.send_raw(data * 150, now=5.0)
    assert_connection_error(peer, ENHANCE_YOUR_CALM)


def test_9113_10_5_empty_data_flood_is_enhance_your_calm() -> None:
    peer = Peer(Limits(max_control_frames_per_s=100))
    peer.request(1, POST, end_stream=False)
    peer.send_raw(DataFrame(1, b"").serialize() * 150)
    assert_connection_error(peer, ENHANCE_YOUR_CALM)


def test_9113_10_5_control_frames_at_a_steady_rate_are_fine() -> None:
    peer = Peer(Limits(max_control_frames_per_s=100))
    for i in range(500):
        peer.send(PingFrame(0, opaque_data=b"12345678"), now=i * 0.02)  # 50/s
    assert not goaways(peer.read())


def test_9113_10_5_window_updates_following_our_data_are_not_a_flood() -> None:
    peer = Peer(Limits(max_control_frames_per_s=10))
    peer.request(1)
    peer.server.send(ResponseStart(1, 200))
    for _ in range(50):
        peer.server.send(ResponseBody(1, b"x" * 100))
        peer.read()
        peer.send(
            WindowUpdateFrame(0, window_increment=100), WindowUpdateFrame(1, window_increment=100)
        )
    assert not goaways(peer.read())


def test_9113_10_5_continuation_flood_is_stopped() -> None:
    peer = Peer()
    frames: list[Frame] = [HeadersFrame(1, data=b"", flags=["END_STREAM"])]
    frames += [ContinuationFrame(1, data=b"") for _ in range(200)]
    peer.send(*frames)
    assert_connection_error(peer, ENHANCE_YOUR_CALM)


def test_9113_10_5_header_block_over_the_hard_limit_is_enhance_your_calm() -> None:
    peer = Peer(Limits(max_header_bytes=4096))
    chunk = b"\x00" * 8000  # never decoded: refused while still arriving
    peer.send(
        HeadersFrame(1, data=chunk, flags=["END_STREAM"]),
        ContinuationFrame(1, data=chunk),
    )
    assert_connection_error(peer, ENHANCE_YOUR_CALM)


def test_9113_10_5_header_list_over_the_limit_gets_431() -> None:
    peer = Peer(Limits(max_header_bytes=4096))
    peer.request(1, [*GET, (b"x-big", b"v" * 5000)])
    frames = peer.read()
    assert not goaways(frames)
    heads = [f for f in frames if isinstance(f, HeadersFrame)]
    assert len(heads) == 1 and "END_STREAM" in heads[0].flags
    assert (b":status", b"431") in Decoder().decode(heads[0].data, raw=True)
    assert requests(peer) == []
    peer.request(3)  # HPACK state is intact
    assert [e.stream_id for e in requests(peer)] == [3]


def test_9113_10_5_body_of_a_431_request_is_stopped() -> None:
    peer = Peer(Limits(max_header_bytes=4096))
    peer.request(1, [*POST, (b"x-big", b"v" * 5000)], end_stream=False)
    peer.read()
    assert peer.send(DataFrame(1, b"body")) == []
    assert [(f.stream_id, f.error_code) for f in rsts(peer.read())] == [(1, NO_ERROR)]


def test_9113_10_5_hpack_bomb_is_enhance_your_calm() -> None:
    peer = Peer(Limits(max_header_bytes=4096))
    # One 4000-byte entry in the dynamic table, then referenced many times:
    # a small block that decodes to a huge list.
    first = peer.block([*GET, (b"x-bomb", b"b" * 4000)])
    peer.send(HeadersFrame(1, data=first, flags=["END_STREAM", "END_HEADERS"]))
    peer.read()  # a 431, but the entry is in the dynamic table now
    bomb = peer.block(GET) + b"\xbe" * 100  # indexed field 62: the newest entry
    peer.send(HeadersFrame(3, data=bomb, flags=["END_STREAM", "END_HEADERS"]))
    assert_connection_error(peer, ENHANCE_YOUR_CALM)


# -- RFC 9218 section 7.1: PRIORITY_UPDATE --------------------------------------------------------


def test_9218_7_1_priority_update_on_a_stream_is_protocol_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_PRIORITY_UPDATE, 0, 1, b"\x00\x00\x00\x01u=1"))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9218_7_1_priority_update_for_stream_0_is_protocol_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_PRIORITY_UPDATE, 0, 0, b"\x00\x00\x00\x00u=1"))
    assert_connection_error(peer, PROTOCOL_ERROR)


def test_9218_7_1_short_priority_update_is_frame_size_error() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_PRIORITY_UPDATE, 0, 0, b"\x00\x01"))
    assert_connection_error(peer, FRAME_SIZE_ERROR)


def test_9218_7_1_priority_update_before_the_request_applies_to_it() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_PRIORITY_UPDATE, 0, 0, b"\x00\x00\x00\x01u=0, i"))
    peer.request(1, [*GET, (b"priority", b"u=5")])
    assert requests(peer)[0].priority.urgency == 0
    assert requests(peer)[0].priority.incremental


def test_9218_7_1_priority_update_for_closed_stream_is_ignored() -> None:
    peer = Peer()
    peer.request(1)
    peer.respond(1)
    peer.read()
    assert peer.send(raw_frame(TYPE_PRIORITY_UPDATE, 0, 0, b"\x00\x00\x00\x01u=0")) == []
    assert_alive(peer)


# -- RFC 7541 (HPACK) -----------------------------------------------------------------------------


def _hpack_error(block: bytes) -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_HEADERS, END_STREAM | END_HEADERS, 1, block))
    assert_connection_error(peer, COMPRESSION_ERROR)


def _prefix() -> bytes:
    # :method GET, :scheme http, :path / (static indexes 2, 6, 4), :authority literal
    return b"\x82\x86\x84\x41\x0bexample.com"


def test_7541_2_3_3_indexed_field_with_invalid_index_is_compression_error() -> None:
    _hpack_error(_prefix() + b"\xc6")  # index 70: beyond static and empty dynamic table


def test_7541_2_3_3_literal_with_invalid_name_index_is_compression_error() -> None:
    _hpack_error(_prefix() + b"\x7f\x07\x00")  # name index 70


def test_7541_4_2_table_size_update_at_end_of_block_is_compression_error() -> None:
    _hpack_error(_prefix() + b"\x21")


def test_7541_4_2_table_size_update_in_middle_of_block_is_compression_error() -> None:
    _hpack_error(b"\x82\x86" + b"\x21" + b"\x84\x41\x0bexample.com")


def test_7541_5_2_huffman_padding_longer_than_7_bits_is_compression_error() -> None:
    _hpack_error(_prefix() + b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x49\x50\x9f\xff")


def test_7541_5_2_huffman_padded_with_zeros_is_compression_error() -> None:
    _hpack_error(_prefix() + b"\x00\x85\xf2\xb2\x4a\x84\xff\x83\x49\x50\x90")


def test_7541_5_2_huffman_containing_eos_is_compression_error() -> None:
    _hpack_error(_prefix() + b"\x00\x85\xf2\xb2\x4a\x84\xff\x87\x49\x51\xff\xff\xff\xfa\x7f")


def test_7541_6_1_indexed_field_with_index_0_is_compression_error() -> None:
    _hpack_error(_prefix() + b"\x80")


def test_7541_6_3_table_size_update_above_settings_is_compression_error() -> None:
    _hpack_error(b"\x3f\xe2\x1f" + _prefix())  # 4097 > SETTINGS_HEADER_TABLE_SIZE 4096


@pytest.mark.parametrize(
    "representation",
    [
        pytest.param(b"\x40\x06x-test\x01v", id="incremental-new-name"),
        pytest.param(b"\x40\x85\xf2\xb2\x4a\x84\xff\x84\xee\x3a\x2d\x2f", id="incremental-huffman"),
        pytest.param(b"\x00\x06x-test\x01v", id="without-indexing-new-name"),
        pytest.param(b"\x10\x06x-test\x01v", id="never-indexed-new-name"),
        pytest.param(b"\x5a\x01v", id="incremental-indexed-name"),  # 26 content-encoding
        pytest.param(b"\x0f\x0b\x01v", id="without-indexing-indexed-name"),
        pytest.param(b"\x1f\x0b\x01v", id="never-indexed-indexed-name"),
    ],
)
def test_7541_6_2_literal_representations_are_accepted(representation: bytes) -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_HEADERS, END_STREAM | END_HEADERS, 1, _prefix() + representation))
    assert len(requests(peer)) == 1
    assert len(requests(peer)[0].headers) == 1


def test_7541_6_3_table_size_updates_at_start_are_accepted() -> None:
    peer = Peer()
    peer.send(raw_frame(TYPE_HEADERS, END_STREAM | END_HEADERS, 1, b"\x20\x3f\x61" + _prefix()))
    assert [e.stream_id for e in requests(peer)] == [1]


def test_7541_2_3_dynamic_table_is_shared_across_streams() -> None:
    peer = Peer()
    peer.request(1, [*GET, (b"x-shared", b"value")])
    peer.request(3, [*GET, (b"x-shared", b"value")])  # now an indexed reference
    assert [r.headers for r in requests(peer)] == [[(b"x-shared", b"value")]] * 2
