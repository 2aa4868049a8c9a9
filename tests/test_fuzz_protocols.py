"""Fuzzers for the protocol adapters, sans-IO: what a client can put on the
wire before any app sees it.

- HTTP/1.1: request heads and bodies built from pieces that parsers get
  wrong (methods, targets, versions, header names and values with CR, LF and
  NUL, duplicate and signed Content-Length, Transfer-Encoding variants,
  chunk sizes and extensions), pipelined, split at random points;
- HTTP/2: frame sequences of every type, with random flags, stream ids,
  payloads and HPACK blocks of random header lists, after a valid preface;
- HTTP/3: random frames (and random bytes) on request streams and on the
  client's control stream of a real QUIC connection, in memory.

The property: the adapter never raises, its output is a well-formed answer
(HTTP/1.1 responses h11 can read, 4xx for what was wrong) or the protocol's
error (RST_STREAM or GOAWAY; H3 stream or connection errors), and never an
internal error. Bounded in CI like tests/test_fuzz.py
(``RAWSERVE_FUZZ_EXAMPLES``); ``tools/fuzz.py --minutes N`` runs them longer.
"""

from __future__ import annotations

import itertools
import os

import h11
from aioquic.buffer import encode_uint_var
from hpack import Encoder
from hyperframe.frame import (
    GoAwayFrame,
    SettingsFrame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawserve.core.config import Limits
from rawserve.core.events import (
    ConnectionTerminated,
    IncomingEvent,
    RequestReceived,
    ResponseBody,
    ResponseStart,
)
from rawserve.protocols.http1 import H1Connection
from rawserve.protocols.http2 import H2Connection
from tests.h3pair import Pair
from tests.test_h2_conformance import parse_frames

FUZZ_EXAMPLES = int(os.environ.get("RAWSERVE_FUZZ_EXAMPLES", "150"))
fuzz = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = Limits(max_header_bytes=4096, max_body_bytes=4096)
H2_INTERNAL_ERROR = 0x2
H3_INTERNAL_ERROR = 0x102

# -- HTTP/1.1 ----------------------------------------------------------------------------

_nasty = st.sampled_from(["", " ", "\t", "\r", "\n", "\r\n", "\x00", "\x7f", "é", ":", ";"])
_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=8)
_field_text = st.lists(_token | _nasty, max_size=4).map("".join)
_method = st.sampled_from(["GET", "POST", "PUT", "HEAD", "OPTIONS", "CONNECT", "get", "G T", ""])
_target = st.sampled_from(["/", "/predict", "*", "http://h/x", "/a?b=c#f", "//x", "/%zz", ""]) | (
    st.text(max_size=12).map(lambda t: "/" + t)
)
_version = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.10", "http/1.1", ""])
_length_value = st.sampled_from(
    ["0", "5", "-1", "+5", "5, 5", "5,6", " 5", "0x5", "9" * 30, "", "1e3"]
)
_te_value = st.sampled_from(["chunked", "gzip, chunked", "chunked, gzip", "identity", "Chunked"])
_header = st.one_of(
    st.tuples(_field_text, _field_text),
    st.tuples(st.just("Content-Length"), _length_value),
    st.tuples(st.just("Transfer-Encoding"), _te_value),
    st.tuples(st.just("Host"), _field_text),
    st.tuples(st.sampled_from(["Expect", "Connection", "Upgrade", "priority"]), _field_text),
)
_chunk = st.one_of(
    st.binary(min_size=1, max_size=12).map(lambda c: b"%x\r\n%s\r\n" % (len(c), c)),
    st.sampled_from([b"zz\r\n", b"5;ext=1\r\nhello\r\n", b"-1\r\n", b"f" * 20 + b"\r\n", b"\r\n"]),
    st.just(b"0\r\n\r\n"),
)


@st.composite
def h1_requests(draw: st.DrawFn) -> bytes:
    line = f"{draw(_method)} {draw(_target)} {draw(_version)}"
    headers = draw(st.lists(_header, max_size=6))
    head = "\r\n".join([line, *(f"{k}: {v}" for k, v in headers)]) + "\r\n\r\n"
    body = b"".join(draw(st.lists(_chunk, max_size=4))) + draw(st.binary(max_size=16))
    return head.encode("utf-8", "surrogatepass") + body


def _answer_all(conn: H1Connection, events: list[IncomingEvent]) -> None:
    for ev in events:
        if isinstance(ev, RequestReceived):
            conn.send(ResponseStart(ev.stream_id, 200, [(b"content-length", b"2")]))
            conn.send(ResponseBody(ev.stream_id, b"ok", end_stream=True))


@fuzz
@given(
    requests=st.lists(h1_requests(), min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_http1_any_request_bytes_get_responses_or_a_4xx(
    requests: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(requests)
    conn = H1Connection(LIMITS)
    conn.set_date_header(b"Tue, 01 Dec 2026 00:00:00 GMT")
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    out = b""
    for a, b in itertools.pairwise(bounds):
        _answer_all(conn, conn.receive_data(stream[a:b]))
        out += conn.data_to_send()
        if conn.should_close:
            break
    # Whatever was sent must read as HTTP/1.1 responses, and a refusal says the
    # client was wrong.
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "h")]))
    client.send(h11.EndOfMessage())
    client.receive_data(out)
    statuses: list[int] = []
    while True:
        try:
            event = client.next_event()
        except h11.RemoteProtocolError as exc:  # pragma: no cover - the finding
            raise AssertionError(f"malformed response bytes {out[:300]!r}") from exc
        if event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.ConnectionClosed):
            break
        if isinstance(event, h11.Response | h11.InformationalResponse):
            statuses.append(event.status_code)
        if isinstance(event, h11.EndOfMessage) and client.our_state is h11.DONE:
            if client.their_state is h11.MUST_CLOSE:
                break
            try:
                client.start_next_cycle()
            except h11.LocalProtocolError:
                break
            # Every response is matched to a request the client "sent".
            client.send(h11.Request(method="GET", target="/", headers=[("host", "h")]))
            client.send(h11.EndOfMessage())
        elif isinstance(event, h11.EndOfMessage):
            break
    # 501 (a transfer coding we do not know) and 505 (an HTTP version we do not
    # speak) are the client's fault too, with codes of their own (RFC 9110 15.6).
    assert all(s in (100, 200, 501, 505) or 400 <= s < 500 for s in statuses), statuses


# -- HTTP/2 ------------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_stream_ids = st.sampled_from([0, 1, 3, 5, 2, 7, 0x7FFFFFFF])
_pseudo = st.sampled_from([":method", ":path", ":scheme", ":authority", ":status", ":protocol"])
_h2_header = st.one_of(
    st.tuples(_pseudo, st.sampled_from(["GET", "POST", "/", "https", "h", "", "CONNECT"])),
    st.tuples(
        st.sampled_from(["content-length", "te", "connection", "priority", "Upper", "x"]),
        st.sampled_from(["0", "5", "trailers", "u=0", "u=9, i", "close", "", "\x00"]),
    ),
)


def _raw_frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    # Built by hand: hyperframe's classes refuse the stream ids and lengths
    # a fuzzer wants to send.
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + sid.to_bytes(4, "big") + payload


@st.composite
def h2_frames(draw: st.DrawFn, encoder: Encoder) -> bytes:
    sid = draw(_stream_ids)
    kind = draw(st.integers(0, 10))
    if kind <= 2:  # HEADERS: END_STREAM, END_HEADERS, sometimes PADDED or PRIORITY
        flags = draw(st.sampled_from([0x4, 0x5, 0x0, 0x1, 0xC, 0x24]))
        block = encoder.encode(draw(st.lists(_h2_header, max_size=6)))
        if flags & 0x8:
            block = b"\x02" + block + b"\x00\x00"
        if flags & 0x20:
            block = draw(_stream_ids).to_bytes(4, "big") + b"\x10" + block
        return _raw_frame(0x1, flags, sid, block)
    if kind == 3:  # CONTINUATION
        block = encoder.encode(draw(st.lists(_h2_header, max_size=3)))
        return _raw_frame(0x9, draw(st.sampled_from([0x0, 0x4])), sid, block)
    if kind <= 5:  # DATA
        return _raw_frame(0x0, draw(st.sampled_from([0x0, 0x1])), sid, draw(st.binary(max_size=64)))
    if kind == 6:  # WINDOW_UPDATE
        increment = draw(st.integers(0, 2**31 - 1) | st.sampled_from([0, 2**31 - 1]))
        return _raw_frame(0x8, 0, sid, increment.to_bytes(4, "big"))
    if kind == 7:  # RST_STREAM
        return _raw_frame(0x3, 0, sid, draw(st.integers(0, 20)).to_bytes(4, "big"))
    if kind == 8:  # SETTINGS, or its ACK
        pairs = draw(st.lists(st.tuples(st.integers(1, 9), st.integers(0, 2**32 - 1)), max_size=3))
        payload = b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in pairs)
        return _raw_frame(0x4, draw(st.sampled_from([0x0, 0x1])), sid, payload)
    if kind == 9:  # PING, PRIORITY, GOAWAY, PUSH_PROMISE, PRIORITY_UPDATE
        frame_type = draw(st.sampled_from([0x6, 0x2, 0x7, 0x5, 0x10]))
        return _raw_frame(frame_type, draw(st.integers(0, 255)), sid, draw(st.binary(max_size=12)))
    # Any type, any flags, any payload.
    return _raw_frame(
        draw(st.integers(0, 255)), draw(st.integers(0, 255)), sid, draw(st.binary(max_size=24))
    )


@fuzz
@given(data=st.data())
def test_http2_frame_sequences_get_answers_or_protocol_errors(data: st.DataObject) -> None:
    encoder = Encoder()
    frames = data.draw(st.lists(h2_frames(encoder), max_size=12))
    server = H2Connection(LIMITS)
    server.initiate()
    start = PREFACE + bytes(SettingsFrame(0).serialize())
    events = server.receive_data(start + b"".join(frames))
    for ev in events:
        if isinstance(ev, RequestReceived) and not server.should_close:
            server.send(ResponseStart(ev.stream_id, 200, []))
            server.send(ResponseBody(ev.stream_id, b"ok", end_stream=True))
    terminated = [e for e in events if isinstance(e, ConnectionTerminated)]
    assert all(e.error_code != H2_INTERNAL_ERROR for e in terminated), terminated
    sent = parse_frames(server.data_to_send())
    goaways = [f for f in sent if isinstance(f, GoAwayFrame)]
    assert all(g.error_code != H2_INTERNAL_ERROR for g in goaways), goaways
    # A connection error of ours goes out as GOAWAY with its code; the client's
    # own GOAWAY also ends the connection, and needs no GOAWAY back.
    peer_goaway = any(frame[3] == 0x7 for frame in frames)
    if terminated and not peer_goaway:
        assert goaways and goaways[-1].error_code == terminated[0].error_code


# -- HTTP/3 ------------------------------------------------------------------------------


def _h3_frame(kind: int, payload: bytes) -> bytes:
    return encode_uint_var(kind) + encode_uint_var(len(payload)) + payload


_h3_frames = st.one_of(
    # DATA, HEADERS (random bytes as a QPACK block), and frames a request
    # stream must not carry: CANCEL_PUSH, SETTINGS, PUSH_PROMISE, GOAWAY, MAX_PUSH_ID
    st.tuples(
        st.sampled_from([0x0, 0x1, 0x3, 0x4, 0x5, 0x7, 0xD, 0x21, 0xF0700]), st.binary(max_size=20)
    ).map(lambda t: _h3_frame(*t)),
    st.binary(max_size=16),  # not even a frame
)


@fuzz
@given(
    requests=st.lists(st.tuples(st.lists(_h3_frames, max_size=4), st.booleans()), max_size=3),
    control=st.lists(_h3_frames, max_size=3),
)
def test_http3_request_and_control_stream_bytes_get_protocol_errors_at_worst(
    requests: list[tuple[list[bytes], bool]], control: list[bytes]
) -> None:
    pair = Pair(LIMITS)
    assert pair.server is not None
    for frames, end in requests:
        sid = pair.client.get_next_available_stream_id()
        pair.client.send_stream_data(sid, b"".join(frames), end_stream=end)
    if control:
        # A second control stream is itself an error; a fresh uni stream of an
        # unknown type must be ignored: both paths are exercised.
        uni = pair.client.get_next_available_stream_id(is_unidirectional=True)
        pair.client.send_stream_data(uni, encode_uint_var(0x21) + b"".join(control))
    pair.exchange()
    for ev in pair.take():
        if isinstance(ev, RequestReceived) and not pair.server.should_close:
            pair.server.send(ResponseStart(ev.stream_id, 200, []))
            pair.server.send(ResponseBody(ev.stream_id, b"ok", end_stream=True))
    pair.exchange()
    closes = [e for e in pair.quic_events if type(e).__name__ == "ConnectionTerminated"]
    assert all(e.error_code != H3_INTERNAL_ERROR for e in closes), closes
