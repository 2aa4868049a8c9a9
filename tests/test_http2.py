"""rawserve.protocols.http2 against h2's own client, without sockets.

Requests go in whole, a byte at a time, and glued to the next one; body flow
control, response queueing behind flow control, resets, shutdown, priority
signals and the flood limits are checked on the bytes that come back.
Rule-by-rule RFC 9113 conformance lives in tests/test_h2_conformance.py.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hyperframe.frame import (
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    WindowUpdateFrame,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from rawserve.core.config import Limits
from rawserve.core.errors import ConfigError, ProtocolError
from rawserve.core.events import (
    BodyReceived,
    ConnectionTerminated,
    EndOfRequest,
    IncomingEvent,
    InformationalResponse,
    PriorityChanged,
    PushPromise,
    RequestReceived,
    ResetReason,
    ResetStream,
    ResponseBody,
    ResponseEnd,
    ResponseStart,
    StreamReset,
)
from rawserve.core.priority import Priority
from rawserve.protocols.http2 import H2Connection
from tests.test_h2_conformance import parse_frames

GET = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":path", b"/items?id=7"),
    (b":authority", b"example.com"),
    (b"accept", b"application/json"),
]
POST = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":path", b"/infer"),
    (b":authority", b"example.com"),
]
ENHANCE_YOUR_CALM = 0xB


class Pair:
    """An h2 client and the adapter under test, bytes passed by hand."""

    def __init__(self, limits: Limits | None = None, **kwargs: Any) -> None:
        self.server = H2Connection(limits or Limits(), **kwargs)
        self.server.initiate()
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.client.initiate_connection()
        self.to_server()
        self.to_client()
        self.to_server()  # the client's SETTINGS ACK

    def to_server(self, now: float = 0.0) -> list[IncomingEvent]:
        return self.server.receive_data(self.client.data_to_send(), now)

    def to_client(self) -> list[h2.events.Event]:
        return self.client.receive_data(self.server.data_to_send())

    def request(self, headers: list[tuple[bytes, bytes]] = GET, end: bool = True) -> int:
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, headers, end_stream=end)
        return sid

    def set_client_window(self, size: int) -> None:
        """The client advertises a small stream window, and the server has it."""
        self.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: size})
        self.to_server()
        self.to_client()

    def respond(self, sid: int, body: bytes = b"ok", headers: Any = ()) -> None:
        self.server.send(ResponseStart(sid, 200, list(headers)))
        self.server.send(ResponseBody(sid, body, end_stream=True))


def client_data(events: list[h2.events.Event], sid: int) -> bytes:
    return b"".join(
        e.data for e in events if isinstance(e, h2.events.DataReceived) and e.stream_id == sid
    )


def response_headers(events: list[h2.events.Event], sid: int) -> dict[bytes, bytes]:
    for e in events:
        if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
            return dict(e.headers)
    raise AssertionError(f"no response on stream {sid}: {events}")


# -- requests in --------------------------------------------------------------------


def test_request_whole() -> None:
    pair = Pair()
    sid = pair.request()
    events = pair.to_server()
    assert events == [
        RequestReceived(
            stream_id=sid,
            method="GET",
            target="/items?id=7",
            headers=[(b"accept", b"application/json")],
            http_version="2",
            scheme="https",
            authority="example.com",
            end_stream=True,
        ),
        EndOfRequest(sid),
    ]


def test_a_repeated_request_is_parsed_once_and_handed_out_as_its_own_copy() -> None:
    """From the third identical request on, the client's header block is the
    same bytes and Core hands the adapter the same decoded list, whose
    validated head the adapter remembers. Each request still gets a list of
    its own (a handler changing its copy changes nothing for the next), and
    a malformed head is refused every time it comes."""
    pair = Pair()
    heads = []
    for _ in range(4):
        pair.request([*GET, (b"x-trace", b"same")])
        (event, _end) = pair.to_server()
        assert isinstance(event, RequestReceived)
        heads.append(event.headers)
    expected = [(b"accept", b"application/json"), (b"x-trace", b"same")]
    assert heads[1] == heads[2] == heads[3] == expected
    assert heads[2] is not heads[3]
    heads[2].append((b"x-added", b"by a handler"))
    pair.request([*GET, (b"x-trace", b"same")])
    assert pair.to_server()[0].headers == heads[3]

    raw = H2Connection(Limits())
    raw.initiate()
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    client.initiate_connection()
    raw.receive_data(client.data_to_send(), 0.0)
    bad = [*GET, (b"te", b"gzip")]  # TE other than "trailers" is malformed
    for sid in (1, 3, 5, 7):
        client.send_headers(sid, bad, end_stream=True)
        assert raw.receive_data(client.data_to_send(), 0.0) == []
        reset = [
            e
            for e in client.receive_data(raw.data_to_send())
            if isinstance(e, h2.events.StreamReset)
        ]
        assert [(e.stream_id, e.error_code) for e in reset] == [(sid, 1)]  # PROTOCOL_ERROR


def test_request_byte_at_a_time() -> None:
    server = H2Connection(Limits())
    server.initiate()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(1, POST, end_stream=False)
    client.send_data(1, b"hello", end_stream=True)
    events: list[IncomingEvent] = []
    for byte in client.data_to_send():
        events += server.receive_data(bytes([byte]))
    assert [type(e) for e in events] == [RequestReceived, BodyReceived, EndOfRequest]
    assert b"".join(e.data for e in events if isinstance(e, BodyReceived)) == b"hello"


def test_request_with_next_request_glued() -> None:
    pair = Pair()
    first = pair.request()
    second = pair.request(POST, end=False)
    pair.client.send_data(second, b"body", end_stream=True)
    events = pair.to_server()
    assert [(type(e).__name__, e.stream_id) for e in events] == [  # type: ignore[union-attr]
        ("RequestReceived", first),
        ("EndOfRequest", first),
        ("RequestReceived", second),
        ("BodyReceived", second),
        ("EndOfRequest", second),
    ]


def test_h2c_scheme_comes_from_the_request() -> None:
    pair = Pair(scheme="http")
    pair.request([(b":scheme", b"http") if h[0] == b":scheme" else h for h in GET])
    req = pair.to_server()[0]
    assert isinstance(req, RequestReceived) and req.scheme == "http"


def test_expect_100_continue() -> None:
    pair = Pair()
    sid = pair.request([*POST, (b"expect", b"100-continue")], end=False)
    req = pair.to_server()[0]
    assert isinstance(req, RequestReceived) and req.expect_continue
    pair.server.send(InformationalResponse(sid, 100))
    events = pair.to_client()
    assert any(isinstance(e, h2.events.InformationalResponseReceived) for e in events)


# -- request body flow control --------------------------------------------------------


def test_body_window_credit_waits_for_acknowledge() -> None:
    pair = Pair(Limits(initial_window_bytes=65536))
    sid = pair.request(POST, end=False)
    pair.to_server()
    pair.client.send_data(sid, b"x" * 16384)
    pair.client.send_data(sid, b"x" * 16384)
    events = pair.to_server()
    assert sum(len(e.data) for e in events if isinstance(e, BodyReceived)) == 32768
    assert not [
        f for f in parse_frames(pair.server.data_to_send()) if isinstance(f, WindowUpdateFrame)
    ]
    pair.server.acknowledge(sid, 32768)
    updates = [
        f for f in parse_frames(pair.server.data_to_send()) if isinstance(f, WindowUpdateFrame)
    ]
    assert (sid, 32768) in [(f.stream_id, f.window_increment) for f in updates]


def test_slow_handler_pushes_back_on_the_client() -> None:
    pair = Pair(Limits(initial_window_bytes=20000))
    sid = pair.request(POST, end=False)
    pair.to_server()
    pair.client.send_data(sid, b"x" * 16384)
    pair.client.send_data(sid, b"x" * 3616)
    pair.to_server()
    pair.to_client()
    assert pair.client.local_flow_control_window(sid) == 0  # the client must wait
    pair.server.acknowledge(sid, 20000)
    pair.to_client()
    assert pair.client.local_flow_control_window(sid) == 20000


def test_padding_credit_is_returned_without_acknowledge() -> None:
    pair = Pair(Limits(initial_window_bytes=1000))
    sid = pair.request(POST, end=False)
    pair.to_server()
    pair.client.send_data(sid, b"a", pad_length=255)
    pair.client.send_data(sid, b"b", pad_length=255)
    events = pair.to_server()
    assert [e.data for e in events if isinstance(e, BodyReceived)] == [b"a", b"b"]
    updates = [
        f for f in parse_frames(pair.server.data_to_send()) if isinstance(f, WindowUpdateFrame)
    ]
    # Both paddings (256 bytes each with the length byte) came back; the two
    # data bytes wait for acknowledge().
    assert [(f.stream_id, f.window_increment) for f in updates] == [(sid, 512)]


def test_acknowledge_ignores_unknown_streams_and_excess() -> None:
    pair = Pair(Limits(initial_window_bytes=100))
    pair.server.acknowledge(99, 100)
    sid = pair.request(POST, end=False)
    pair.to_server()
    pair.client.send_data(sid, b"x" * 60)
    pair.to_server()
    pair.server.acknowledge(sid, 10_000)  # only the 60 delivered bytes count
    updates = [
        f for f in parse_frames(pair.server.data_to_send()) if isinstance(f, WindowUpdateFrame)
    ]
    assert [(f.stream_id, f.window_increment) for f in updates] == [(sid, 60)]
    pair.server.acknowledge(sid, 60)  # nothing left to acknowledge
    assert pair.server.data_to_send() == b""


def test_reset_stream_returns_unacknowledged_connection_credit() -> None:
    limits = Limits(initial_window_bytes=65535, connection_window_bytes=65535)
    pair = Pair(limits)
    for _ in range(3):
        sid = pair.request(POST, end=False)
        pair.to_server()
        for _ in range(4):
            pair.client.send_data(sid, b"x" * 10000)
        pair.client.reset_stream(sid)
        pair.to_server()
        pair.to_client()
    # 120,000 bytes through a 65,535-byte connection window: the bytes of
    # each reset stream, never acknowledged by a handler, were credited back.
    assert pair.client.outbound_flow_control_window > 0


# -- responses out -------------------------------------------------------------------------


def test_response_headers_and_body() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    pair.server.set_date_header(b"Thu, 01 Jan 2026 00:00:00 GMT")
    pair.respond(
        sid,
        b"hello",
        [
            (b"Content-Type", b"text/plain"),
            (b"connection", b"keep-alive"),
            (b"keep-alive", b"timeout=5"),
            (b"transfer-encoding", b"chunked"),
            (b"upgrade", b"h2c"),
            (b"proxy-connection", b"x"),
            (b":status", b"500"),
            (b"x-bad", b"a\r\nb"),
        ],
    )
    events = pair.to_client()
    assert response_headers(events, sid) == {
        b":status": b"200",
        b"content-type": b"text/plain",
        b"server": b"rawserve",
        b"date": b"Thu, 01 Jan 2026 00:00:00 GMT",
    }
    assert client_data(events, sid) == b"hello"
    assert any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in events)
    assert pair.server.open_streams == 0


def test_app_server_header_wins_and_can_be_disabled() -> None:
    pair = Pair(server_header=None)
    sid = pair.request()
    pair.to_server()
    pair.respond(sid, b"", [(b"server", b"custom")])
    assert response_headers(pair.to_client(), sid)[b"server"] == b"custom"
    sid = pair.request()
    pair.to_server()
    pair.respond(sid)
    assert b"server" not in response_headers(pair.to_client(), sid)


def test_response_start_with_end_stream() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    pair.server.send(ResponseStart(sid, 204, [], end_stream=True))
    events = pair.to_client()
    assert response_headers(events, sid)[b":status"] == b"204"
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)
    assert pair.server.open_streams == 0


def test_response_end_after_body_sends_empty_end_stream() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    pair.server.send(ResponseStart(sid, 200))
    pair.server.send(ResponseBody(sid, b"part1"))
    pair.server.send(ResponseBody(sid, b"part2"))
    pair.server.send(ResponseEnd(sid))
    frames = [f for f in parse_frames(pair.server.data_to_send()) if isinstance(f, DataFrame)]
    assert [(f.data, "END_STREAM" in f.flags) for f in frames] == [
        (b"part1", False),
        (b"part2", False),
        (b"", True),
    ]


def test_response_larger_than_window_stays_queued_until_window_update() -> None:
    pair = Pair()
    pair.set_client_window(1000)
    sid = pair.request()
    pair.to_server()
    pair.respond(sid, b"y" * 5000)
    assert pair.server.buffered(sid) == 4000
    events = pair.to_client()
    assert client_data(events, sid) == b"y" * 1000
    pair.client.increment_flow_control_window(2500, stream_id=sid)
    pair.to_server()
    assert pair.server.buffered(sid) == 1500
    assert client_data(pair.to_client(), sid) == b"y" * 2500
    pair.client.increment_flow_control_window(1500, stream_id=sid)
    pair.to_server()
    assert pair.server.buffered(sid) == 0
    events = pair.to_client()
    assert client_data(events, sid) == b"y" * 1500
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)


def test_connection_window_blocks_and_frames_respect_max_frame_size() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    pair.respond(sid, b"z" * 100_000)
    frames = [f for f in parse_frames(pair.server.data_to_send()) if isinstance(f, DataFrame)]
    assert all(len(f.data) <= 16384 for f in frames)
    assert sum(len(f.data) for f in frames) == 65535  # the client's connection window
    assert pair.server.buffered(sid) == 100_000 - 65535


def test_flush_after_connection_window_update_goes_by_urgency() -> None:
    pair = Pair()
    low = pair.request([*GET, (b"priority", b"u=6")])
    high = pair.request([*GET, (b"priority", b"u=1")])
    pair.to_server()
    filler = pair.request()
    pair.to_server()
    pair.respond(filler, b"f" * 65535)  # uses up the connection window
    pair.respond(low, b"l" * 1000)
    pair.respond(high, b"h" * 1000)
    pair.server.data_to_send()
    assert pair.server.buffered(low) == pair.server.buffered(high) == 1000
    pair.client.increment_flow_control_window(1500)  # room for one and a half
    pair.to_server()
    frames = [f for f in parse_frames(pair.server.data_to_send()) if isinstance(f, DataFrame)]
    assert [(f.stream_id, len(f.data)) for f in frames] == [(high, 1000), (low, 500)]


def test_incremental_streams_share_the_window_round_robin() -> None:
    pair = Pair()
    a = pair.request([*GET, (b"priority", b"u=3, i")])
    b = pair.request([*GET, (b"priority", b"u=3, i")])
    filler = pair.request()
    pair.to_server()
    pair.respond(filler, b"f" * 65535)
    pair.respond(a, b"a" * 40000)
    pair.respond(b, b"b" * 40000)
    pair.server.data_to_send()
    pair.client.increment_flow_control_window(32768)
    pair.to_server()
    frames = [f for f in parse_frames(pair.server.data_to_send()) if isinstance(f, DataFrame)]
    assert [(f.stream_id, len(f.data)) for f in frames] == [(a, 16384), (b, 16384)]


def test_informational_103_before_response() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    pair.server.send(InformationalResponse(sid, 103, [(b"link", b"</a.css>; rel=preload")]))
    pair.respond(sid)
    events = pair.to_client()
    info = [e for e in events if isinstance(e, h2.events.InformationalResponseReceived)]
    assert dict(info[0].headers)[b":status"] == b"103"
    assert b"server" not in dict(info[0].headers)
    assert response_headers(events, sid)[b":status"] == b"200"


def test_events_for_unknown_streams_are_dropped() -> None:
    pair = Pair()
    pair.server.send(ResponseStart(41, 200))
    pair.server.send(ResponseBody(41, b"x"))
    pair.server.send(ResponseEnd(41))
    pair.server.send(ResetStream(41))
    assert pair.server.data_to_send() == b""
    assert pair.server.buffered(41) == 0


def test_push_promise_is_not_implemented() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    with pytest.raises(NotImplementedError):
        pair.server.send(PushPromise(sid, "/x"))


# -- resets ----------------------------------------------------------------------------------


def test_client_reset_gives_stream_reset_and_drops_queue() -> None:
    pair = Pair()
    pair.set_client_window(10)
    sid = pair.request()
    pair.to_server()
    pair.respond(sid, b"q" * 1000)
    assert pair.server.buffered(sid) == 990
    pair.client.reset_stream(sid, error_code=8)
    assert pair.to_server() == [StreamReset(sid, ResetReason.CANCELLED)]
    assert pair.server.buffered(sid) == 0
    assert pair.server.open_streams == 0
    pair.server.send(ResponseBody(sid, b"late"))  # the handler did not know yet
    assert pair.server.buffered(sid) == 0


def test_server_reset_stream() -> None:
    pair = Pair()
    sid = pair.request(POST, end=False)
    pair.to_server()
    pair.server.send(ResetStream(sid, ResetReason.INTERNAL_ERROR))
    events = pair.to_client()
    resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert [(e.stream_id, e.error_code) for e in resets] == [(sid, 0x2)]
    assert pair.server.open_streams == 0


def test_rapid_reset_is_enhance_your_calm() -> None:
    pair = Pair(Limits(max_resets_per_s=50))
    events: list[IncomingEvent] = []
    for _ in range(60):
        sid = pair.request()
        pair.client.reset_stream(sid)
        events += pair.to_server(now=100.0)
    assert isinstance(events[-1], ConnectionTerminated)
    assert events[-1].error_code == ENHANCE_YOUR_CALM
    terminated = [e for e in pair.to_client() if isinstance(e, h2.events.ConnectionTerminated)]
    assert terminated[0].error_code == ENHANCE_YOUR_CALM
    assert pair.server.should_close


def test_ping_flood_is_enhance_your_calm() -> None:
    pair = Pair(Limits(max_control_frames_per_s=100))
    for i in range(200):
        pair.client.ping(i.to_bytes(8, "big"))
    events = pair.to_server(now=1.0)
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert events[0].error_code == ENHANCE_YOUR_CALM  # type: ignore[union-attr]


# -- shutdown -----------------------------------------------------------------------------------


def test_start_shutdown_sends_goaway_with_last_stream_and_drains() -> None:
    pair = Pair()
    first = pair.request()
    second = pair.request()
    pair.to_server()
    pair.server.start_shutdown()
    frames = parse_frames(pair.server.data_to_send())
    assert [(f.last_stream_id, f.error_code) for f in frames if isinstance(f, GoAwayFrame)] == [
        (second, 0)
    ]
    assert not pair.server.should_close
    # The client had not seen the GOAWAY yet and opens another stream.
    late = pair.request()
    assert pair.to_server() == []
    frames = parse_frames(pair.server.data_to_send())
    assert [(f.stream_id, f.error_code) for f in frames if isinstance(f, RstStreamFrame)] == [
        (late, 0x7)
    ]
    pair.respond(first)
    assert not pair.server.should_close
    pair.respond(second)
    assert pair.server.should_close
    data = [f for f in parse_frames(pair.server.data_to_send()) if isinstance(f, DataFrame)]
    assert {f.stream_id for f in data} == {first, second}


def test_shutdown_with_error_code_closes_at_once() -> None:
    pair = Pair()
    pair.request()
    pair.to_server()
    pair.server.start_shutdown(0x2)
    assert pair.server.should_close
    frames = parse_frames(pair.server.data_to_send())
    assert [f.error_code for f in frames if isinstance(f, GoAwayFrame)] == [0x2]


def test_idle_connection_shutdown_closes() -> None:
    pair = Pair()
    pair.server.start_shutdown()
    assert pair.server.should_close


def test_peer_goaway_is_connection_terminated() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    pair.client.close_connection(error_code=0)
    events = pair.to_server()
    assert events == [ConnectionTerminated(0, 0, "GOAWAY from peer")]
    assert not pair.server.should_close  # stream 1 may still be answered
    pair.respond(sid)
    assert pair.server.should_close


# -- priority ----------------------------------------------------------------------------------


def test_priority_header_is_parsed() -> None:
    pair = Pair()
    pair.request([*GET, (b"priority", b"u=1, i")])
    req = pair.to_server()[0]
    assert isinstance(req, RequestReceived)
    assert req.priority == Priority(1, True)


def test_headers_weight_then_priority_header_overrides() -> None:
    pair = Pair()
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid, GET, end_stream=True, priority_weight=256)
    req = pair.to_server()[0]
    assert isinstance(req, RequestReceived) and req.priority.urgency == 0
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid, [*GET, (b"priority", b"i")], end_stream=True, priority_weight=256)
    req = pair.to_server()[0]
    assert isinstance(req, RequestReceived) and req.priority == Priority(0, True)


def test_no_rfc7540_priorities_setting_ignores_weights() -> None:
    pair = Pair()
    pair.client.update_settings({0x9: 1})
    pair.to_server()
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid, GET, end_stream=True, priority_weight=256)
    req = pair.to_server()[0]
    assert isinstance(req, RequestReceived) and req.priority == Priority()


def test_priority_update_frame_changes_priority() -> None:
    pair = Pair()
    sid = pair.request(POST, end=False)
    pair.to_server()
    payload = sid.to_bytes(4, "big") + b"u=0"
    frame = len(payload).to_bytes(3, "big") + b"\x10\x00" + bytes(4) + payload
    assert pair.server.receive_data(frame) == [PriorityChanged(sid, Priority(0, False))]
    payload = sid.to_bytes(4, "big") + b"u=0"  # unchanged: no event
    frame = len(payload).to_bytes(3, "big") + b"\x10\x00" + bytes(4) + payload
    assert pair.server.receive_data(frame) == []


def test_priority_frame_does_not_override_rfc9218_signal() -> None:
    pair = Pair()
    sid = pair.request([*POST, (b"priority", b"u=2")], end=False)
    pair.to_server()
    pair.client.prioritize(sid, weight=1)
    assert pair.to_server() == []


# -- limits ------------------------------------------------------------------------------------


def test_header_list_over_limit_is_431_and_connection_lives() -> None:
    pair = Pair(Limits(max_header_bytes=1024))
    sid = pair.request([*GET, (b"x-big", b"v" * 2000)])
    assert pair.to_server() == []
    events = pair.to_client()
    assert response_headers(events, sid)[b":status"] == b"431"
    sid = pair.request()
    assert [type(e) for e in pair.to_server()] == [RequestReceived, EndOfRequest]


def test_excess_stream_is_refused() -> None:
    pair = Pair(Limits(max_concurrent_streams=1))
    pair.request()
    pair.to_server()
    # h2's client would not exceed the limit itself: write the frame by hand.
    block = pair.client.encoder.encode(GET)
    frame = HeadersFrame(3, data=block, flags=["END_STREAM", "END_HEADERS"])
    assert pair.server.receive_data(frame.serialize()) == []
    frames = parse_frames(pair.server.data_to_send())
    assert [(f.stream_id, f.error_code) for f in frames if isinstance(f, RstStreamFrame)] == [
        (3, 0x7)
    ]


@pytest.mark.parametrize(
    "limits",
    [
        Limits(max_frame_bytes=1000),
        Limits(max_frame_bytes=2**24),
        Limits(initial_window_bytes=2**31),
        Limits(connection_window_bytes=0),
    ],
)
def test_impossible_limits_are_config_errors(limits: Limits) -> None:
    with pytest.raises(ConfigError):
        H2Connection(limits)


def test_garbage_after_connection_error_is_ignored() -> None:
    pair = Pair()
    events = pair.server.receive_data(b"\x00\x00\x08\x06\x00\x00\x00\x00\x01" + b"x" * 8)
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert pair.server.receive_data(b"more garbage") == []
    pair.server.send(ResponseStart(1, 200))  # no effect, no exception


# -- h2c upgrade (RFC 7540 section 3.2) --------------------------------------------------------


def _upgrade_request() -> RequestReceived:
    return RequestReceived(
        stream_id=0,
        method="GET",
        target="/up",
        headers=[
            (b"host", b"example.com"),
            (b"connection", b"Upgrade, HTTP2-Settings"),
            (b"upgrade", b"h2c"),
            (b"http2-settings", b"AAMAAABkAAQAAP__"),
            (b"accept", b"*/*"),
        ],
        http_version="1.1",
        scheme="http",
        authority="example.com",
        end_stream=True,
    )


def test_initiate_upgrade_makes_the_request_stream_1() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings_header = client.initiate_upgrade_connection()
    assert settings_header is not None
    server = H2Connection(Limits(), scheme="http")
    events = server.initiate_upgrade(base64.urlsafe_b64decode(settings_header), _upgrade_request())
    assert len(events) == 2
    req, end = events
    assert isinstance(req, RequestReceived)
    assert (req.stream_id, req.http_version, req.method, req.target) == (1, "2", "GET", "/up")
    assert req.headers == [(b"host", b"example.com"), (b"accept", b"*/*")]
    assert end == EndOfRequest(1)
    server.send(ResponseStart(1, 200))
    server.send(ResponseBody(1, b"upgraded", end_stream=True))
    client_events = client.receive_data(server.data_to_send())
    assert client_data(client_events, 1) == b"upgraded"
    assert server.open_streams == 0


def test_initiate_upgrade_rejects_bad_settings() -> None:
    server = H2Connection(Limits())
    with pytest.raises(ProtocolError):
        server.initiate_upgrade(b"\x00\x02\x00\x00\x00\x05", _upgrade_request())  # ENABLE_PUSH=5
    with pytest.raises(ProtocolError):
        server.initiate_upgrade(b"\x00\x02\x00", _upgrade_request())
    assert server.data_to_send() == b""


# -- property tests -------------------------------------------------------------------------


def _conversation() -> bytes:
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    client.initiate_connection()
    client.send_headers(1, POST, end_stream=False)
    client.send_data(1, b"a" * 100, pad_length=7)
    client.send_data(1, b"b" * 50, end_stream=True)
    client.send_headers(3, GET, end_stream=True)
    client.ping(b"pingpong")
    return client.data_to_send()


CONVERSATION = _conversation()


def _summary(events: list[IncomingEvent]) -> list[tuple[str, int, bytes]]:
    out: list[tuple[str, int, bytes]] = []
    for e in events:
        data = e.data if isinstance(e, BodyReceived) else b""
        if out and data and out[-1][0] == "BodyReceived" and out[-1][1] == e.stream_id:  # type: ignore[union-attr]
            out[-1] = ("BodyReceived", e.stream_id, out[-1][2] + data)  # type: ignore[union-attr]
        else:
            out.append((type(e).__name__, e.stream_id, data))  # type: ignore[union-attr]
    return out


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=len(CONVERSATION) - 1), max_size=12))
def test_any_split_of_the_input_gives_the_same_events(cuts: list[int]) -> None:
    server = H2Connection(Limits())
    server.initiate()
    events: list[IncomingEvent] = []
    bounds = [0, *sorted(set(cuts)), len(CONVERSATION)]
    for start, end in itertools.pairwise(bounds):
        events += server.receive_data(CONVERSATION[start:end])
    assert _summary(events) == [
        ("RequestReceived", 1, b""),
        ("BodyReceived", 1, b"a" * 100 + b"b" * 50),
        ("EndOfRequest", 1, b""),
        ("RequestReceived", 3, b""),
        ("EndOfRequest", 3, b""),
    ]


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=200), at=st.integers(min_value=0, max_value=len(CONVERSATION)))
def test_garbage_never_escapes_as_an_exception(garbage: bytes, at: int) -> None:
    server = H2Connection(Limits())
    server.initiate()
    events = server.receive_data(CONVERSATION[:at] + garbage)
    events += server.receive_data(CONVERSATION[at:])
    terminated = [e for e in events if isinstance(e, ConnectionTerminated)]
    assert all(e.error_code != 0x2 for e in terminated), terminated  # never INTERNAL_ERROR
    if terminated:
        assert server.should_close
        goaway = [f for f in parse_frames(server.data_to_send()) if isinstance(f, GoAwayFrame)]
        assert goaway and goaway[-1].error_code == terminated[0].error_code
