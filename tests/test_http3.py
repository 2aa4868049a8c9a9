"""The HTTP/3 adapter without sockets: aioquic's client QuicConnection and
H3Connection exchange datagrams in memory with rawserve's H3Connection
(tests/h3pair.py), and the tests assert on the events each side sees."""

from __future__ import annotations

from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import ErrorCode, FrameType, encode_frame
from aioquic.h3.events import DataReceived, HeadersReceived, PushPromiseReceived
from aioquic.quic.events import ConnectionTerminated, StopSendingReceived, StreamDataReceived
from aioquic.quic.events import StreamReset as QuicStreamReset
from aioquic.quic.packet import QuicErrorCode

from rawserve.core.config import Limits
from rawserve.core.events import (
    BodyReceived,
    EndOfRequest,
    PriorityChanged,
    RequestReceived,
    ResetReason,
    ResponseBody,
    ResponseStart,
    StreamReset,
)
from rawserve.core.priority import Priority
from rawserve.protocols.http3 import reason_from_code
from rawserve.protocols.http3.h3 import PRIORITY_UPDATE_REQUEST, ControlReader
from tests.h3pair import Pair


def encode_prefix_int(value: int, prefix_bits: int) -> bytes:
    """QPACK's prefixed integer (RFC 7541 section 5.1), first byte's flag bits zero."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out = bytearray([limit])
    value -= limit
    while value >= 128:
        out.append(value % 128 | 0x80)
        value //= 128
    out.append(value)
    return bytes(out)


GET = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"localhost"),
    (b":path", b"/"),
]


def post(length: int) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"localhost"),
        (b":path", b"/upload"),
        (b"content-length", b"%d" % length),
    ]


def open_request(pair: Pair, headers: list[tuple[bytes, bytes]], *, end: bool = True) -> int:
    sid = pair.client.get_next_available_stream_id()
    pair.h3.send_headers(sid, headers, end_stream=end)
    pair.exchange()
    return sid


def resets_seen(pair: Pair) -> dict[int, int]:
    return {e.stream_id: e.error_code for e in pair.quic_events if type(e) is QuicStreamReset}


def stops_seen(pair: Pair) -> dict[int, int]:
    return {e.stream_id: e.error_code for e in pair.quic_events if type(e) is StopSendingReceived}


def client_close_code(pair: Pair) -> int | None:
    """The error code the server closed the connection with, once the
    client's draining period is over (timers only)."""
    for _ in range(10):
        pair.now += 1.0
        pair.client.handle_timer(pair.now)
        pair.exchange()
        for event in pair.quic_events:
            if isinstance(event, ConnectionTerminated):
                return event.error_code
    return None


def priority_update(pair: Pair, sid: int, value: bytes) -> None:
    control = pair.h3._local_control_stream_id
    assert control is not None
    payload = encode_uint_var(sid) + value
    pair.client.send_stream_data(control, encode_frame(PRIORITY_UPDATE_REQUEST, payload))
    pair.exchange()


def test_a_get_becomes_a_request_and_its_response_reaches_the_client() -> None:
    pair = Pair()
    sid = open_request(pair, [*GET, (b"user-agent", b"t")])
    events = pair.take()
    assert [type(e) for e in events] == [RequestReceived, EndOfRequest]
    req = events[0]
    assert isinstance(req, RequestReceived)
    assert (req.method, req.target, req.http_version, req.authority) == (
        "GET",
        "/",
        "3",
        "localhost",
    )
    assert req.headers == [(b"user-agent", b"t")]
    assert pair.server is not None
    pair.server.send(ResponseStart(sid, 200, [(b"content-type", b"text/plain")]))
    pair.server.send(ResponseBody(sid, b"hello", end_stream=True))
    pair.exchange()
    heads = [e for e in pair.client_events if isinstance(e, HeadersReceived)]
    body = b"".join(e.data for e in pair.client_events if isinstance(e, DataReceived))
    assert dict(heads[0].headers)[b":status"] == b"200"
    assert dict(heads[0].headers)[b"server"] == b"rawserve"
    assert body == b"hello"
    assert pair.server.open_streams == 0


def test_bad_pseudo_headers_reset_the_stream_not_the_connection() -> None:
    pair = Pair()
    bad = [
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"x")],  # no :path
        [*GET, (b":protocol", b"x")],  # unknown pseudo-header
        [(b"x", b"1"), *GET],  # pseudo-header after a regular one
        [*GET, (b":path", b"/again")],  # duplicate
        [*GET, (b"connection", b"close")],  # connection-specific
        [*GET[:3], (b":path", b"no-slash")],
    ]
    sids = [open_request(pair, headers) for headers in bad]
    assert pair.take() == []
    resets = resets_seen(pair)
    assert {sid: resets.get(sid) for sid in sids} == {
        sid: ErrorCode.H3_MESSAGE_ERROR for sid in sids
    }
    # The connection is still good for a valid request.
    open_request(pair, GET)
    assert [type(e) for e in pair.take()] == [RequestReceived, EndOfRequest]
    # Nothing is kept for the rejected streams (aioquic's records included).
    assert pair.server is not None and pair.server._h3 is not None
    assert not [sid for sid in pair.server._h3._stream if sid % 4 == 0 and sid in sids]


def test_a_request_without_authority_is_malformed() -> None:
    pair = Pair()
    sid = open_request(pair, [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")])
    assert pair.take() == []
    assert resets_seen(pair)[sid] == ErrorCode.H3_MESSAGE_ERROR
    # With a host field instead, it is fine (RFC 9114 section 4.3.1).
    open_request(
        pair, [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b"host", b"h")]
    )
    assert [type(e) for e in pair.take()] == [RequestReceived, EndOfRequest]


def test_a_body_longer_than_content_length_resets_the_stream() -> None:
    pair = Pair()
    sid = open_request(pair, post(4), end=False)
    pair.h3.send_data(sid, b"12345678", end_stream=True)
    pair.exchange()
    events = pair.take()
    assert [type(e) for e in events] == [RequestReceived, StreamReset]
    assert events[1] == StreamReset(sid, ResetReason.PROTOCOL_ERROR)
    assert resets_seen(pair)[sid] == ErrorCode.H3_MESSAGE_ERROR


def test_a_body_shorter_than_content_length_resets_the_stream() -> None:
    pair = Pair()
    sid = open_request(pair, post(10), end=False)
    pair.h3.send_data(sid, b"123", end_stream=True)
    pair.exchange()
    assert [type(e) for e in pair.take()] == [RequestReceived, BodyReceived, StreamReset]
    assert resets_seen(pair)[sid] == ErrorCode.H3_MESSAGE_ERROR


def test_a_reset_mid_body_cancels_the_request() -> None:
    pair = Pair()
    sid = open_request(pair, post(100), end=False)
    pair.h3.send_data(sid, b"x" * 10, end_stream=False)
    pair.exchange()
    pair.client.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
    pair.exchange()
    events = pair.take()
    assert [type(e) for e in events] == [RequestReceived, BodyReceived, StreamReset]
    assert events[-1] == StreamReset(sid, ResetReason.CANCELLED)
    assert pair.server is not None and pair.server.open_streams == 0


def test_stop_sending_cancels_the_request() -> None:
    pair = Pair()
    sid = open_request(pair, GET)
    pair.take()
    pair.client.stop_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
    pair.exchange()
    assert pair.take() == [StreamReset(sid, ResetReason.CANCELLED)]


def test_priority_update_before_its_request_sets_its_priority() -> None:
    pair = Pair()
    sid = pair.client.get_next_available_stream_id()
    priority_update(pair, sid, b"u=0, i")
    pair.h3.send_headers(sid, GET, end_stream=True)
    pair.exchange()
    req = pair.take()[0]
    assert isinstance(req, RequestReceived)
    assert req.priority == Priority(0, True)


def test_priority_update_after_its_request_reprioritizes_it() -> None:
    pair = Pair()
    sid = open_request(pair, [*GET, (b"priority", b"u=5")])
    req = pair.take()[0]
    assert isinstance(req, RequestReceived) and req.priority == Priority(5, False)
    priority_update(pair, sid, b"u=1")
    assert pair.take() == [PriorityChanged(sid, Priority(1, False))]


def test_request_body_credit_returns_only_as_the_application_consumes() -> None:
    limits = Limits(initial_window_bytes=16 * 1024, connection_window_bytes=64 * 1024)
    pair = Pair(limits)
    size = 200 * 1024
    sid = open_request(pair, post(size), end=False)
    pair.h3.send_data(sid, b"x" * size, end_stream=True)
    pair.exchange()
    received = sum(len(e.data) for e in pair.take() if isinstance(e, BodyReceived))
    # Nothing read: the client is held to the stream window.
    assert 0 < received <= limits.initial_window_bytes
    assert pair.server is not None
    total = received
    for _ in range(100):
        pair.server.acknowledge(sid, received)
        pair.exchange()
        events = pair.take()
        received = sum(len(e.data) for e in events if isinstance(e, BodyReceived))
        assert received <= limits.initial_window_bytes
        total += received
        if any(isinstance(e, EndOfRequest) for e in events):
            break
    assert total == size
    # Answered, the stream gives back every byte it took: nothing is lost
    # from the connection window (framing included), nothing given twice.
    pair.server.send(ResponseStart(sid, 204, end_stream=True))
    pair.exchange()
    quic = pair.server._quic
    assert quic._consumed == quic._local_max_data.used


def test_reading_a_small_finished_body_sends_no_window_update() -> None:
    # The request's FIN is in: a larger MAX_STREAM_DATA would be of no use to
    # the client, and the connection keeps more than half its window, so
    # consuming the body changes neither limit (each change used to cost a
    # packet of its own per request). The credit itself is still counted.
    pair = Pair()
    sid = open_request(pair, post(300), end=False)
    pair.h3.send_data(sid, b"x" * 300, end_stream=True)
    pair.exchange()
    assert any(isinstance(e, EndOfRequest) for e in pair.take())
    assert pair.server is not None
    quic = pair.server._quic
    stream = quic._streams[sid]
    limits = (quic._local_max_data.value, stream.max_stream_data_local)
    consumed = quic._consumed
    pair.server.acknowledge(sid, 300)
    assert (quic._local_max_data.value, stream.max_stream_data_local) == limits
    assert quic._consumed == consumed + 300
    # Once half the connection window is consumed, MAX_DATA moves on.
    quic._credit_connection(quic._connection_window // 2)
    assert quic._local_max_data.value == quic._consumed + quic._connection_window


def test_a_client_that_stops_reading_holds_at_most_a_window_in_quic() -> None:
    pair = Pair()
    sid = open_request(pair, GET)
    pair.take()
    server = pair.server
    assert server is not None
    server.send(ResponseStart(sid, 200))
    chunk = 64 * 1024
    limit = server._limits.write_buffer_bytes
    sent = 0
    # The client's datagrams stop: nothing it receives is acknowledged.
    for _ in range(200):
        while server.buffered(sid) <= limit:
            server.send(ResponseBody(sid, b"x" * chunk))
            sent += chunk
        for _data in server.datagrams_to_send(pair.now):
            pass  # lost
        pair.now += 0.01
        server.handle_timer(pair.now)
    assert server.buffered(sid) <= limit + chunk
    qs = server._quic._streams[sid]
    in_quic = qs.sender._buffer_stop - qs.sender._buffer_start
    # QUIC holds no more than the client's stream window allows (1 MiB here).
    assert in_quic <= pair.client._local_max_stream_data_bidi_local + 1024
    assert sent < 3 * 1024 * 1024


def test_a_request_open_longer_than_the_idle_timeout_keeps_its_connection() -> None:
    pair = Pair(Limits(idle_timeout_s=1.0))
    sid = open_request(pair, GET)
    pair.take()
    server = pair.server
    assert server is not None
    start = pair.now
    # The handler thinks for 10 idle timeouts; only timers move time.
    while pair.now < start + 10.0:
        at = server.get_timer()
        assert at is not None
        pair.now = max(pair.now, at)
        pair.server_events += server.handle_timer(pair.now)
        pair.exchange()
        assert not server.terminated
    server.send(ResponseStart(sid, 200, end_stream=True))
    pair.exchange()
    assert any(isinstance(e, HeadersReceived) for e in pair.client_events)
    # With nothing open, the idle timeout applies again.
    for _ in range(100):
        at = server.get_timer()
        if at is None or server.terminated:
            break
        pair.now = max(pair.now, at)
        server.handle_timer(pair.now)
    assert server.terminated


def received_order(pair: Pair, sids: tuple[int, ...], size: int) -> list[dict[int, int]]:
    """Bytes received per stream after each DATA event, until all are complete."""
    seen = {sid: 0 for sid in sids}
    snapshots: list[dict[int, int]] = []
    consumed = 0
    for _ in range(2000):
        pair.exchange(rounds=1)
        for event in pair.client_events[consumed:]:
            if isinstance(event, DataReceived) and event.data and event.stream_id in seen:
                seen[event.stream_id] += len(event.data)
                snapshots.append(dict(seen))
        consumed = len(pair.client_events)
        if all(v == size for v in seen.values()):
            break
    assert all(v == size for v in seen.values()), seen
    return snapshots


def test_response_bytes_leave_in_urgency_order() -> None:
    pair = Pair()
    size = 300 * 1024
    bulk = open_request(pair, [*GET, (b"priority", b"u=5")])
    urgent = open_request(pair, [*GET, (b"priority", b"u=1")])
    server = pair.server
    assert server is not None
    for sid in (bulk, urgent):  # the bulk response is queued first
        server.send(ResponseStart(sid, 200))
        server.send(ResponseBody(sid, b"x" * size, end_stream=True))
    snapshots = received_order(pair, (bulk, urgent), size)
    first_bulk = next(s for s in snapshots if s[bulk])
    # The bulk response's first byte comes after the urgent one's last.
    assert first_bulk[urgent] == size, first_bulk


def test_incremental_responses_at_one_urgency_are_interleaved() -> None:
    pair = Pair()
    size = 300 * 1024
    a = open_request(pair, [*GET, (b"priority", b"u=3, i")])
    b = open_request(pair, [*GET, (b"priority", b"u=3, i")])
    server = pair.server
    assert server is not None
    for sid in (a, b):
        server.send(ResponseStart(sid, 200))
        server.send(ResponseBody(sid, b"x" * size, end_stream=True))
    snapshots = received_order(pair, (a, b), size)
    first_done = next(s for s in snapshots if size in s.values())
    # When one finishes, the other has had a fair share, not nothing.
    assert min(first_done.values()) >= size // 2, first_done


def test_a_head_over_max_header_bytes_gets_431_unseen_by_the_application() -> None:
    pair = Pair(Limits(max_header_bytes=4096))
    sid = open_request(pair, [*GET, (b"x-big", b"a" * 5000)])
    assert pair.take() == []
    heads = [e for e in pair.client_events if isinstance(e, HeadersReceived)]
    assert heads and heads[0].stream_id == sid
    assert dict(heads[0].headers)[b":status"] == b"431"
    # The server says its limit in SETTINGS (MAX_FIELD_SECTION_SIZE).
    assert pair.h3.received_settings is not None
    assert pair.h3.received_settings[0x6] == 4096


def test_rapid_resets_close_the_connection_with_excessive_load() -> None:
    pair = Pair(Limits(max_resets_per_s=5))
    for _ in range(10):
        sid = open_request(pair, post(10), end=False)
        pair.client.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
        pair.exchange()
    assert client_close_code(pair) == ErrorCode.H3_EXCESSIVE_LOAD


def test_priority_update_for_a_non_request_stream_closes_with_id_error() -> None:
    pair = Pair()
    priority_update(pair, 2, b"u=1")  # a unidirectional stream ID
    assert client_close_code(pair) == ErrorCode.H3_ID_ERROR


def test_credit_never_exceeds_what_was_received() -> None:
    # Requests refused or rejected while their bodies arrive, and a request
    # answered before its body ended: none may give back more connection
    # window than the client used, or the connection-level bound drifts away.
    pair = Pair(Limits(max_header_bytes=4096))
    quic = pair.server._quic if pair.server is not None else None
    assert quic is not None
    for headers in (
        [*post(50_000)[:3], (b":path", b"no-slash"), (b"content-length", b"50000")],
        [*post(50_000), (b"x-big", b"a" * 5000)],
        post(10),
    ):
        sid = pair.client.get_next_available_stream_id()
        pair.h3.send_headers(sid, headers)
        pair.h3.send_data(sid, b"x" * 50_000, end_stream=True)
        pair.exchange()
        assert quic._consumed <= quic._local_max_data.used
    early = open_request(pair, post(100_000), end=False)
    pair.h3.send_data(early, b"x" * 30_000, end_stream=False)
    pair.exchange()
    assert pair.server is not None
    pair.server.send(ResponseStart(early, 413, end_stream=True))
    pair.exchange()
    # The server stopped the rest of the body (STOP_SENDING, H3_NO_ERROR).
    assert stops_seen(pair)[early] == ErrorCode.H3_NO_ERROR
    assert quic._consumed <= quic._local_max_data.used
    # And the connection still takes requests.
    open_request(pair, GET)
    assert any(isinstance(e, RequestReceived) and e.method == "GET" for e in pair.take())


def test_reset_codes_map_to_reasons() -> None:
    assert reason_from_code(ErrorCode.H3_REQUEST_CANCELLED) is ResetReason.CANCELLED
    assert reason_from_code(ErrorCode.H3_REQUEST_REJECTED) is ResetReason.REFUSED
    assert reason_from_code(ErrorCode.H3_EXCESSIVE_LOAD) is ResetReason.EXCESSIVE_LOAD
    assert reason_from_code(ErrorCode.H3_MESSAGE_ERROR) is ResetReason.PROTOCOL_ERROR
    assert reason_from_code(0x21) is ResetReason.CANCELLED  # a reserved code


def test_control_reader_finds_priority_updates_fed_whole_or_byte_by_byte() -> None:
    frames = (
        encode_uint_var(0)  # control stream type
        + encode_frame(0x4, b"")  # SETTINGS
        + encode_frame(0x21, b"grease")
        + encode_frame(PRIORITY_UPDATE_REQUEST, encode_uint_var(4) + b"u=2")
        + encode_frame(0x7, encode_uint_var(0))  # GOAWAY
    )
    whole = ControlReader().feed(2, frames)
    reader = ControlReader()
    by_byte = []
    by_byte += reader.feed(2, frames[:1])
    for i in range(1, len(frames)):
        by_byte += reader.feed(2, frames[i : i + 1])
    expected = [(PRIORITY_UPDATE_REQUEST, encode_uint_var(4) + b"u=2"), (0x7, b"\x00")]
    assert whole == expected
    assert by_byte == expected
    # Another unidirectional stream (QPACK) is not read.
    assert ControlReader().feed(6, encode_uint_var(2) + frames[1:]) == []


# -- server push (RFC 9114 section 4.6) ------------------------------------------


def test_a_push_is_promised_and_answered_on_its_push_stream() -> None:
    pair = Pair()
    sid = open_request(pair, GET)
    pair.take()
    assert pair.server is not None and pair.server.push_allowed(sid)
    pushed = pair.server.push(sid, "/results/abc", [(b"accept", b"application/json")])
    assert pushed is not None and pushed.method == "GET" and pushed.target == "/results/abc"
    assert pushed.http_version == "3" and pushed.end_stream
    pair.server.send(ResponseStart(pushed.stream_id, 200, [(b"content-length", b"2")]))
    pair.server.send(ResponseBody(pushed.stream_id, b"ok", end_stream=True))
    pair.server.send(ResponseStart(sid, 204, [], end_stream=True))
    pair.exchange()
    promise = next(e for e in pair.client_events if isinstance(e, PushPromiseReceived))
    assert promise.stream_id == sid
    assert (b":path", b"/results/abc") in promise.headers
    on_push = [e for e in pair.client_events if getattr(e, "push_id", None) == promise.push_id]
    heads = [e for e in on_push if isinstance(e, HeadersReceived)]
    assert dict(heads[0].headers)[b":status"] == b"200"
    assert b"".join(e.data for e in on_push if isinstance(e, DataReceived)) == b"ok"


def test_cancel_push_stops_it_and_the_path_is_never_promised_again() -> None:
    pair = Pair()
    sid = open_request(pair, GET)
    pair.take()
    assert pair.server is not None
    pushed = pair.server.push(sid, "/style.css", [])
    assert pushed is not None
    pair.exchange()
    promise = next(e for e in pair.client_events if isinstance(e, PushPromiseReceived))
    control = pair.h3._local_control_stream_id
    assert control is not None
    cancel = encode_frame(FrameType.CANCEL_PUSH, encode_uint_var(promise.push_id))
    pair.client.send_stream_data(control, cancel)
    pair.exchange()
    assert StreamReset(pushed.stream_id, ResetReason.CANCELLED) in pair.take()
    assert pair.server.push(sid, "/style.css", []) is None
    assert pair.server.push(sid, "/other.css", []) is not None


def test_no_push_beyond_the_push_ids_the_client_allowed() -> None:
    pair = Pair(Limits(max_concurrent_pushes=1000))
    sid = open_request(pair, GET)
    pair.take()
    assert pair.server is not None
    promised = 0
    while pair.server.push(sid, f"/r/{promised}", []) is not None:
        promised += 1
        assert promised < 100
    # aioquic's client allows push IDs 0..8 (MAX_PUSH_ID 8) unless it says more.
    assert promised == 9
    assert not pair.server.push_allowed(sid)


def test_no_push_once_the_parent_answer_is_complete() -> None:
    pair = Pair()
    sid = open_request(pair, GET)
    pair.take()
    assert pair.server is not None
    pair.server.send(ResponseStart(sid, 204, [], end_stream=True))
    assert pair.server.push(sid, "/late", []) is None


# -- abuse (issue 15, build 6) ---------------------------------------------------


def open_uni(pair: Pair, data: bytes, *, end: bool = False) -> int:
    sid = pair.client.get_next_available_stream_id(is_unidirectional=True)
    pair.client.send_stream_data(sid, data, end_stream=end)
    pair.exchange()
    return sid


def test_opening_more_bidi_streams_than_max_streams_is_stream_limit_error() -> None:
    pair = Pair(Limits(max_concurrent_streams=4))
    for _ in range(4):
        open_request(pair, post(10), end=False)
    # The client ignores the credit it was given: QUIC's own error answers.
    pair.client._remote_max_streams_bidi = 100
    open_request(pair, post(10), end=False)
    assert client_close_code(pair) == QuicErrorCode.STREAM_LIMIT_ERROR
    # Once its draining period is over the server holds nothing of it.
    assert pair.server is not None
    pair.server.handle_timer(pair.now + 10)
    assert pair.server.terminated and pair.server.open_streams == 0


def test_a_second_control_stream_is_stream_creation_error() -> None:
    pair = Pair()
    open_uni(pair, encode_uint_var(0) + encode_frame(FrameType.SETTINGS, b""))
    assert client_close_code(pair) == ErrorCode.H3_STREAM_CREATION_ERROR


def test_a_second_qpack_encoder_stream_is_stream_creation_error() -> None:
    pair = Pair()
    open_uni(pair, encode_uint_var(2))
    assert client_close_code(pair) == ErrorCode.H3_STREAM_CREATION_ERROR


def test_a_push_stream_from_the_client_is_stream_creation_error() -> None:
    pair = Pair()
    open_uni(pair, encode_uint_var(1) + encode_uint_var(0))
    assert client_close_code(pair) == ErrorCode.H3_STREAM_CREATION_ERROR


def test_closing_the_control_stream_is_closed_critical_stream() -> None:
    pair = Pair()
    control = pair.h3._local_control_stream_id
    assert control is not None
    pair.client.send_stream_data(control, b"", end_stream=True)
    pair.exchange()
    assert client_close_code(pair) == ErrorCode.H3_CLOSED_CRITICAL_STREAM


def test_many_uni_streams_of_unknown_types_hold_no_state() -> None:
    pair = Pair()
    server = pair.server
    assert server is not None and server._h3 is not None
    h3, quic = server._h3, server._quic
    before = (len(h3._stream), len(server._control._types), len(quic._streams))
    # 0x21 + 0x1f * N are reserved types (RFC 9114 section 6.2.3); 0x54 is unknown.
    for i in range(600):
        stream_type = 0x21 + 0x1F * i if i % 2 else 0x54
        open_uni(pair, encode_uint_var(stream_type) + b"x" * 100, end=i % 3 == 0)
    # The connection is up, and a request is still answered.
    sid = open_request(pair, GET)
    assert any(isinstance(e, RequestReceived) and e.stream_id == sid for e in pair.take())
    assert not any(isinstance(e, ConnectionTerminated) for e in pair.quic_events)
    after = (len(h3._stream), len(server._control._types), len(quic._streams))
    assert all(a <= b + 2 for a, b in zip(after, before, strict=True)), (before, after)


def test_qpack_encoder_stream_over_the_table_capacity_is_encoder_stream_error() -> None:
    pair = Pair()
    encoder = pair.h3._local_encoder_stream_id
    assert encoder is not None
    # Set Dynamic Table Capacity (001xxxxx) far beyond the 4096 the server allows.
    pair.client.send_stream_data(encoder, b"\x3f" + encode_prefix_int(1 << 20, 5))
    pair.exchange()
    assert client_close_code(pair) == ErrorCode.QPACK_ENCODER_STREAM_ERROR


def test_qpack_insert_referencing_a_bad_entry_is_encoder_stream_error() -> None:
    pair = Pair()
    encoder = pair.h3._local_encoder_stream_id
    assert encoder is not None
    # Insert With Name Reference (1Txxxxxx), dynamic (T=0), to an entry that
    # does not exist, with a 1-byte value.
    pair.client.send_stream_data(encoder, b"\x3f\xe1\x1f" + b"\x85" + b"\x05" + b"x" * 5)
    pair.exchange()
    assert client_close_code(pair) == ErrorCode.QPACK_ENCODER_STREAM_ERROR


def test_qpack_inserts_beyond_the_capacity_evict_and_hold_bounded_memory() -> None:
    pair = Pair()
    encoder = pair.h3._local_encoder_stream_id
    assert encoder is not None
    # Capacity 4096, then 1000 inserts of a 200-byte literal: the table evicts.
    pair.client.send_stream_data(encoder, b"\x3f\xe1\x1f")
    for i in range(1000):
        name = b"x-%04d" % i
        value = b"v" * 200
        pair.client.send_stream_data(
            encoder,
            bytes([0x40 | len(name)])
            + name
            + b"\x7f"
            + encode_prefix_int(len(value), 7)[1:]
            + value,
        )
    pair.exchange()
    sid = open_request(pair, GET)
    assert any(isinstance(e, RequestReceived) and e.stream_id == sid for e in pair.take())
    assert not any(isinstance(e, ConnectionTerminated) for e in pair.quic_events)


def test_a_priority_update_flood_closes_with_excessive_load() -> None:
    pair = Pair(Limits(max_control_frames_per_s=50))
    control = pair.h3._local_control_stream_id
    assert control is not None
    for i in range(200):
        payload = encode_uint_var(4 * i) + b"u=1"
        pair.client.send_stream_data(control, encode_frame(PRIORITY_UPDATE_REQUEST, payload))
    pair.exchange()
    assert client_close_code(pair) == ErrorCode.H3_EXCESSIVE_LOAD


def test_early_priority_updates_are_capped_at_the_stream_limit() -> None:
    pair = Pair(Limits(max_concurrent_streams=8, max_control_frames_per_s=10_000))
    for i in range(100):
        priority_update(pair, 4 * i, b"u=1")
    assert pair.server is not None
    assert len(pair.server._early_priorities) <= 8
    sid = open_request(pair, GET)
    assert any(isinstance(e, RequestReceived) and e.stream_id == sid for e in pair.take())


def send_blocked_headers(pair: Pair) -> int:
    """A HEADERS frame whose field section needs a dynamic table entry the
    client never inserts: QPACK blocks the stream (RFC 9204 section 2.1.2)."""
    sid = pair.client.get_next_available_stream_id()
    # Required Insert Count 1 (encoded 2), Base 0, indexed post-base entry 0.
    block = b"\x02\x00\x10"
    pair.client.send_stream_data(sid, encode_frame(FrameType.HEADERS, block))
    return sid


def test_more_blocked_streams_than_qpack_allows_is_decompression_failed() -> None:
    pair = Pair()
    for _ in range(16):  # the server's SETTINGS_QPACK_BLOCKED_STREAMS
        send_blocked_headers(pair)
    pair.exchange()
    assert pair.take() == []
    assert pair.server is not None and not pair.server.terminated
    send_blocked_headers(pair)
    pair.exchange()
    assert client_close_code(pair) == ErrorCode.QPACK_DECOMPRESSION_FAILED


def test_a_blocked_stream_holds_at_most_its_stream_window() -> None:
    window = 16 * 1024
    pair = Pair(Limits(initial_window_bytes=window))
    sid = send_blocked_headers(pair)
    for _ in range(10):
        pair.client.send_stream_data(sid, encode_frame(FrameType.DATA, b"x" * 4000))
    pair.exchange()
    assert pair.server is not None and pair.server._h3 is not None
    assert 0 < pair.server._h3.buffered_bytes(sid) <= window


def test_a_qpack_decoder_stream_acknowledging_unsent_inserts_is_decoder_stream_error() -> None:
    pair = Pair()
    decoder = pair.h3._local_decoder_stream_id
    assert decoder is not None
    # Insert Count Increment (00xxxxxx) of 50: the server inserted nothing.
    pair.client.send_stream_data(decoder, bytes([50]))
    pair.exchange()
    assert client_close_code(pair) == ErrorCode.QPACK_DECODER_STREAM_ERROR


def test_a_huge_unknown_frame_on_the_control_stream_is_not_buffered() -> None:
    pair = Pair()
    control = pair.h3._local_control_stream_id
    assert control is not None and pair.server is not None
    server = pair.server
    assert server._h3 is not None
    size = 4 * 1024 * 1024
    pair.client.send_stream_data(control, encode_uint_var(0x21) + encode_uint_var(size))
    held = []
    for _ in range(size // 65536):
        pair.client.send_stream_data(control, b"z" * 65536)
        pair.exchange()
        peer_control = server._h3._stream[control]
        held.append(len(peer_control.buffer) + len(server._control._buffer))
    # A PRIORITY_UPDATE after it is still read.
    sid = open_request(pair, GET)
    priority_update(pair, sid, b"u=0")
    assert any(isinstance(e, PriorityChanged) for e in pair.take())
    assert max(held) <= 65536


def test_a_request_whose_head_arrives_after_a_later_ones_is_served() -> None:
    """Under packet loss stream 0's HEADERS can reach the server after stream
    4's: stream 0 is a request still to come, not one already finished."""
    pair = Pair()
    server = pair.server
    assert server is not None
    first = pair.client.get_next_available_stream_id()
    pair.h3.send_headers(first, GET, end_stream=True)
    held = pair.client.datagrams_to_send(pair.now)  # "lost" for now
    second = pair.client.get_next_available_stream_id()
    pair.h3.send_headers(second, GET, end_stream=True)
    pair.exchange()
    assert [e.stream_id for e in pair.take() if isinstance(e, RequestReceived)] == [second]
    for data, _addr in held:  # the retransmission, late
        pair.server_events += server.receive_datagram(data, ("127.0.0.1", 40000), pair.now)
    assert [e.stream_id for e in pair.take() if isinstance(e, RequestReceived)] == [first]
    for sid in (first, second):
        server.send(ResponseStart(sid, 200, [(b"content-length", b"2")]))
        server.send(ResponseBody(sid, b"ok", end_stream=True))
    pair.exchange()
    answered = {e.stream_id for e in pair.client_events if isinstance(e, HeadersReceived)}
    assert answered == {first, second}


def test_goaway_waits_for_a_request_whose_head_is_still_on_its_way() -> None:
    pair = Pair()
    server = pair.server
    assert server is not None
    first = pair.client.get_next_available_stream_id()
    pair.h3.send_headers(first, GET, end_stream=True)
    held = pair.client.datagrams_to_send(pair.now)
    second = pair.client.get_next_available_stream_id()
    pair.h3.send_headers(second, GET, end_stream=True)
    pair.exchange()
    pair.take()
    server.start_shutdown()  # GOAWAY names stream 8: 0 and 4 are to be processed
    server.send(ResponseStart(second, 200, [(b"content-length", b"0")]))
    server.send(ResponseBody(second, b"", end_stream=True))
    for _ in range(5):  # time for the client's (delayed) ACK of that answer
        pair.now += 0.1
        if pair.client.get_timer() is not None:
            pair.client.handle_timer(pair.now)
        pair.exchange()
    for data, _addr in held:
        pair.server_events += server.receive_datagram(data, ("127.0.0.1", 40000), pair.now)
    assert [e.stream_id for e in pair.take() if isinstance(e, RequestReceived)] == [first]
    server.send(ResponseStart(first, 200, [(b"content-length", b"0")]))
    server.send(ResponseBody(first, b"", end_stream=True))
    pair.exchange()
    answered = {e.stream_id for e in pair.client_events if isinstance(e, HeadersReceived)}
    assert answered == {first, second}
    assert client_close_code(pair) == ErrorCode.H3_NO_ERROR


def test_the_connection_closes_only_once_its_goaway_was_acknowledged() -> None:
    """A GOAWAY lost with its packet must be resent before the connection
    closes: a client that never saw it must assume every request it sent may
    have been processed (RFC 9114 section 5.2)."""
    pair = Pair()
    server = pair.server
    assert server is not None
    server.start_shutdown()
    lost = server.datagrams_to_send(pair.now)  # GOAWAY's flight, dropped
    assert lost

    def goaway_seen() -> bool:
        reader = ControlReader()  # the server's control stream, read as ours reads a client's
        frames = [
            frame
            for e in pair.quic_events
            if isinstance(e, StreamDataReceived) and e.stream_id % 4 == 3
            for frame in reader.feed(e.stream_id, e.data)
        ]
        return any(kind == FrameType.GOAWAY for kind, _ in frames)

    code = None
    for _ in range(40):  # the server's loss recovery resends it; then it closes
        pair.now += 0.1
        if server.get_timer() is not None and server.get_timer() <= pair.now:
            server.handle_timer(pair.now)
        if pair.client.get_timer() is not None and pair.client.get_timer() <= pair.now:
            pair.client.handle_timer(pair.now)
        pair.exchange()
        closes = [e for e in pair.quic_events if isinstance(e, ConnectionTerminated)]
        if closes:
            code = closes[0].error_code
            break
    assert goaway_seen()
    assert code == ErrorCode.H3_NO_ERROR
