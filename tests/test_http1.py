"""The HTTP/1.1 adapter, sans-IO: bytes in, events out, and back.

Responses are read back with h11 (a client nobody here wrote) wherever the
framing matters; raw bytes are checked where the exact wire form matters.
"""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass, field

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawserve.core.config import Limits
from rawserve.core.events import (
    BodyReceived,
    ConnectionTerminated,
    EndOfRequest,
    IncomingEvent,
    InformationalResponse,
    RequestReceived,
    ResetReason,
    ResetStream,
    ResponseBody,
    ResponseEnd,
    ResponseStart,
    StreamReset,
    UpgradeRequested,
)
from rawserve.core.priority import Priority
from rawserve.protocols.http1 import H1Connection, reason_phrase

DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"

GET = b"GET /items/7?q=abc HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n"
POST = b"POST /infer HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = (
    b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
)


def make(**limits: int) -> H1Connection:
    conn = H1Connection(Limits(**limits))
    conn.set_date_header(DATE)
    return conn


def merged(events: list[IncomingEvent]) -> list[IncomingEvent]:
    """Adjacent body chunks of one stream as one: how a split falls must not matter."""
    out: list[IncomingEvent] = []
    for ev in events:
        prev = out[-1] if out else None
        if (
            isinstance(ev, BodyReceived)
            and isinstance(prev, BodyReceived)
            and prev.stream_id == ev.stream_id
        ):
            out[-1] = BodyReceived(ev.stream_id, prev.data + ev.data)
        else:
            out.append(ev)
    return out


def feed(conn: H1Connection, data: bytes, step: int = 0) -> list[IncomingEvent]:
    if not step:
        return merged(conn.receive_data(data))
    events: list[IncomingEvent] = []
    for i in range(0, len(data), step):
        events += conn.receive_data(data[i : i + step])
    return merged(events)


def respond(
    conn: H1Connection,
    sid: int,
    status: int = 200,
    body: bytes = b"ok",
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    length: bool = True,
) -> None:
    hdrs = list(headers or [])
    if length:
        hdrs.append((b"content-length", str(len(body)).encode()))
    conn.send(ResponseStart(sid, status, hdrs))
    conn.send(ResponseBody(sid, body, end_stream=True))


@dataclass
class Reply:
    status: int
    reason: bytes
    headers: dict[bytes, bytes]
    body: bytes
    informational: list[int] = field(default_factory=list)


def read_replies(raw: bytes, methods: list[str], *, eof: bool = False) -> list[Reply]:
    """Parse ``raw`` as the responses to ``methods`` with h11 in the client role."""
    client = h11.Connection(h11.CLIENT)
    client.receive_data(raw)
    if eof:
        client.receive_data(b"")
    replies: list[Reply] = []
    for method in methods:
        client.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        client.send(h11.EndOfMessage())
        reply: Reply | None = None
        infos: list[int] = []
        while True:
            ev = client.next_event()
            if isinstance(ev, h11.InformationalResponse):
                infos.append(ev.status_code)
            elif isinstance(ev, h11.Response):
                reply = Reply(ev.status_code, ev.reason, dict(ev.headers), b"", infos)
            elif isinstance(ev, h11.Data):
                assert reply is not None
                reply.body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"incomplete response: {ev!r}")
        assert reply is not None
        replies.append(reply)
        if client.our_state is h11.MUST_CLOSE or client.their_state is h11.MUST_CLOSE:
            break
        client.start_next_cycle()
    return replies


def error_of(conn: H1Connection) -> tuple[int, dict[str, str]]:
    raw = conn.data_to_send()
    (reply,) = read_replies(raw, ["GET"], eof=True)
    assert reply.headers[b"connection"] == b"close"
    assert reply.headers[b"content-type"] == b"application/json"
    return reply.status, json.loads(reply.body)


# -- parsing -------------------------------------------------------------------


def test_request_events() -> None:
    conn = make()
    events = feed(conn, GET)
    assert events == [
        RequestReceived(
            1,
            "GET",
            "/items/7?q=abc",
            [(b"host", b"example.com"), (b"user-agent", b"t")],
            "1.1",
            "http",
            "example.com",
            end_stream=True,
        ),
        EndOfRequest(1),
    ]
    assert conn.pending_requests == 1
    assert not conn.awaiting_request


@pytest.mark.parametrize("request_bytes", [GET, POST, CHUNKED])
def test_whole_bytewise_and_with_next_request_glued_on_give_same_events(
    request_bytes: bytes,
) -> None:
    whole = feed(make(), request_bytes)
    assert feed(make(), request_bytes, step=1) == whole
    glued = feed(make(), request_bytes + GET)
    assert glued[: len(whole)] == whole
    assert isinstance(glued[len(whole)], RequestReceived)
    assert glued[len(whole)].stream_id == 2  # type: ignore[union-attr]


def test_chunked_request_body_is_decoded_and_trailers_dropped() -> None:
    events = feed(make(), CHUNKED + GET)
    assert events[1:3] == [BodyReceived(1, b"hello world"), EndOfRequest(1)]
    assert events[0].end_stream is False  # type: ignore[union-attr]
    # the trailer did not leak into the next request's headers
    assert events[3].headers == [(b"host", b"example.com"), (b"user-agent", b"t")]  # type: ignore[union-attr]


def test_header_names_lowercased_values_kept() -> None:
    (req, _) = feed(make(), b"GET / HTTP/1.1\r\nHOST: a\r\nX-Thing: MiXed\r\n\r\n")
    assert req.headers == [(b"host", b"a"), (b"x-thing", b"MiXed")]  # type: ignore[union-attr]


def test_priority_header_is_parsed() -> None:
    (req, _) = feed(make(), b"GET / HTTP/1.1\r\nHost: a\r\nPriority: u=0, i\r\n\r\n")
    assert req.priority == Priority(0, True)  # type: ignore[union-attr]


def test_absolute_form_target_becomes_path_and_authority() -> None:
    (req, _) = feed(make(), b"GET http://other:8080/p?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert req.target == "/p?x=1"  # type: ignore[union-attr]
    assert req.authority == "other:8080"  # type: ignore[union-attr]


def test_scheme_comes_from_the_connection() -> None:
    conn = H1Connection(Limits(), scheme="https")
    (req, _) = feed(conn, GET)
    assert req.scheme == "https"  # type: ignore[union-attr]


# -- responses -------------------------------------------------------------------


def test_response_with_content_length() -> None:
    conn = make()
    feed(conn, GET)
    respond(conn, 1, body=b'{"a":1}', headers=[(b"content-type", b"application/json")])
    raw = conn.data_to_send()
    assert raw == (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n"
        b"date: " + DATE + b"\r\nserver: rawserve\r\n\r\n" + b'{"a":1}'
    )
    assert not conn.should_close
    assert conn.awaiting_request
    assert conn.pending_requests == 0


def test_chunked_response_when_no_content_length() -> None:
    conn = make()
    feed(conn, GET)
    conn.send(ResponseStart(1, 200, [(b"content-type", b"text/plain")]))
    for part in (b"one ", b"", b"two ", b"three"):
        conn.send(ResponseBody(1, part))
    conn.send(ResponseEnd(1))
    raw = conn.data_to_send()
    assert b"transfer-encoding: chunked\r\n" in raw
    assert raw.endswith(b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n")
    (reply,) = read_replies(raw, ["GET"])
    assert reply.body == b"one two three"
    assert not conn.should_close


def test_app_transfer_encoding_is_replaced_by_our_framing() -> None:
    conn = make()
    feed(conn, GET)
    conn.send(ResponseStart(1, 200, [(b"transfer-encoding", b"chunked")]))
    conn.send(ResponseBody(1, b"abc", end_stream=True))
    raw = conn.data_to_send()
    assert raw.count(b"transfer-encoding") == 1
    assert read_replies(raw, ["GET"])[0].body == b"abc"


def test_empty_response_gets_content_length_zero() -> None:
    conn = make()
    feed(conn, GET)
    conn.send(ResponseStart(1, 201, [], end_stream=True))
    raw = conn.data_to_send()
    assert b"content-length: 0\r\n" in raw
    assert b"transfer-encoding" not in raw


def test_pipelined_requests_answered_in_order() -> None:
    conn = make()
    events = feed(conn, GET + POST + CHUNKED)
    starts = [e for e in events if isinstance(e, RequestReceived)]
    assert [r.stream_id for r in starts] == [1, 2, 3]
    assert conn.pending_requests == 3
    with pytest.raises(RuntimeError):
        conn.send(ResponseStart(2, 200, []))
    for sid in (1, 2, 3):
        respond(conn, sid, body=b"r%d" % sid)
        assert conn.pending_requests == 3 - sid
    replies = read_replies(conn.data_to_send(), ["GET", "POST", "POST"])
    assert [r.body for r in replies] == [b"r1", b"r2", b"r3"]
    assert not conn.should_close


def test_stale_events_for_answered_streams_are_ignored() -> None:
    conn = make()
    feed(conn, GET)
    respond(conn, 1)
    conn.data_to_send()
    conn.send(ResponseEnd(1))
    assert conn.data_to_send() == b""
    with pytest.raises(RuntimeError):
        conn.send(ResponseStart(9, 200, []))


def test_head_writes_no_body_and_keeps_content_length() -> None:
    conn = make()
    feed(conn, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    conn.send(ResponseStart(1, 200, [(b"content-length", b"1234")]))
    conn.send(ResponseBody(1, b"x" * 1234, end_stream=True))
    raw = conn.data_to_send()
    assert raw.endswith(b"\r\n\r\n")
    assert b"content-length: 1234\r\n" in raw
    assert b"x" not in raw.split(b"\r\n\r\n")[1]
    (reply,) = read_replies(raw, ["HEAD"])
    assert reply.body == b""
    assert not conn.should_close


def test_head_without_content_length_gets_no_framing_header() -> None:
    conn = make()
    feed(conn, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    conn.send(ResponseStart(1, 200, [], end_stream=True))
    raw = conn.data_to_send()
    assert b"transfer-encoding" not in raw
    assert b"content-length" not in raw


def test_304_and_204_carry_no_body() -> None:
    conn = make()
    feed(conn, GET + GET)
    conn.send(ResponseStart(1, 304, [(b"etag", b'"k"')]))
    conn.send(ResponseBody(1, b"ignored", end_stream=True))
    conn.send(ResponseStart(2, 204, []))
    conn.send(ResponseEnd(2))
    raw = conn.data_to_send()
    assert b"ignored" not in raw and b"transfer-encoding" not in raw
    assert [r.status for r in read_replies(raw, ["GET", "GET"])] == [304, 204]


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (200, b"HTTP/1.1 200 OK\r\n"),
        (404, b"HTTP/1.1 404 Not Found\r\n"),
        (422, b"HTTP/1.1 422 Unprocessable Entity\r\n"),
        (299, b"HTTP/1.1 299 Success\r\n"),
        (599, b"HTTP/1.1 599 Server Error\r\n"),
        (999, b"HTTP/1.1 999 Unknown\r\n"),
    ],
)
def test_status_line_always_has_a_reason_phrase(status: int, line: bytes) -> None:
    conn = make()
    feed(conn, GET)
    respond(conn, 1, status)
    assert conn.data_to_send().startswith(line)
    assert reason_phrase(status)


def test_date_and_server_added_unless_the_app_set_them() -> None:
    conn = make()
    feed(conn, GET)
    respond(conn, 1, headers=[(b"server", b"custom"), (b"date", b"yesterday")])
    raw = conn.data_to_send()
    assert raw.count(b"server:") == 1 and b"server: custom" in raw
    assert raw.count(b"date:") == 1 and b"date: yesterday" in raw

    bare = H1Connection(Limits(), server_header=None)
    feed(bare, GET)
    respond(bare, 1)
    raw = bare.data_to_send()
    assert b"server:" not in raw and b"date:" not in raw  # no date until L3 gives one


def test_header_injection_is_refused_before_anything_is_written() -> None:
    conn = make()
    feed(conn, GET)
    with pytest.raises(ValueError, match="CR or LF"):
        conn.send(ResponseStart(1, 200, [(b"x", b"a\r\nset-cookie: evil=1")]))
    with pytest.raises(ValueError, match="CR or LF"):
        conn.send(ResponseStart(1, 200, [(b"x", b"a\nb")]))
    assert conn.data_to_send() == b""
    respond(conn, 1)  # the stream is still usable
    assert conn.data_to_send().startswith(b"HTTP/1.1 200 OK")


def test_bad_response_content_length_raises() -> None:
    conn = make()
    feed(conn, GET)
    with pytest.raises(ValueError, match="content-length"):
        conn.send(ResponseStart(1, 200, [(b"content-length", b"-3")]))


def test_short_body_for_declared_length_closes_the_connection() -> None:
    conn = make()
    feed(conn, GET)
    conn.send(ResponseStart(1, 200, [(b"content-length", b"10")]))
    conn.send(ResponseBody(1, b"abc"))
    conn.send(ResponseEnd(1))
    assert conn.should_close


def test_buffered_and_acknowledge_are_trivial() -> None:
    conn = make()
    feed(conn, POST)
    assert conn.buffered(1) == 0
    conn.acknowledge(1, 5)


# -- keep-alive and close ----------------------------------------------------------


def test_http11_keeps_alive_by_default() -> None:
    conn = make()
    feed(conn, GET)
    respond(conn, 1)
    raw = conn.data_to_send()
    assert b"connection" not in raw
    assert not conn.should_close
    assert feed(conn, GET)[0].stream_id == 2  # type: ignore[union-attr]


def test_connection_close_from_client() -> None:
    conn = make()
    events = feed(conn, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + GET)
    assert [type(e) for e in events] == [RequestReceived, EndOfRequest]  # later bytes ignored
    respond(conn, 1)
    assert b"connection: close\r\n" in conn.data_to_send()
    assert conn.should_close


def test_connection_close_from_app() -> None:
    conn = make()
    feed(conn, GET + GET)
    respond(conn, 1, headers=[(b"connection", b"close")])
    raw = conn.data_to_send()
    assert raw.count(b"connection: close") == 1
    assert conn.should_close
    conn.send(ResponseStart(2, 200, []))  # abandoned stream: ignored
    assert conn.data_to_send() == b""


def test_http10_closes_by_default_and_bodies_are_close_delimited() -> None:
    conn = make()
    (req, _) = feed(conn, b"GET / HTTP/1.0\r\n\r\n")
    assert req.http_version == "1.0"  # type: ignore[union-attr]
    conn.send(ResponseStart(1, 200, []))
    conn.send(ResponseBody(1, b"streamed"))
    conn.send(ResponseEnd(1))
    raw = conn.data_to_send()
    assert b"transfer-encoding" not in raw
    assert b"connection: close\r\n" in raw
    assert raw.endswith(b"\r\n\r\nstreamed")
    assert conn.should_close
    (reply,) = read_replies(raw, ["GET"], eof=True)
    assert reply.body == b"streamed"


def test_http10_keep_alive_on_request() -> None:
    conn = make()
    feed(conn, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    respond(conn, 1)
    assert b"connection: keep-alive\r\n" in conn.data_to_send()
    assert not conn.should_close


def test_http10_keep_alive_without_length_still_closes() -> None:
    conn = make()
    feed(conn, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    conn.send(ResponseStart(1, 200, []))
    conn.send(ResponseEnd(1))
    assert b"connection: close\r\n" in conn.data_to_send()
    assert conn.should_close


def test_shutdown_when_idle_closes_at_once() -> None:
    conn = make()
    feed(conn, GET)
    respond(conn, 1)
    conn.start_shutdown()
    assert conn.should_close


def test_shutdown_answers_current_request_with_close_and_takes_no_more() -> None:
    conn = make()
    feed(conn, GET)
    conn.start_shutdown()
    assert not conn.should_close
    assert feed(conn, GET) == []
    respond(conn, 1)
    assert b"connection: close\r\n" in conn.data_to_send()
    assert conn.should_close


def test_shutdown_lets_a_request_body_in_progress_finish() -> None:
    conn = make()
    feed(conn, POST[:-3])
    conn.start_shutdown()
    events = feed(conn, POST[-3:] + GET)
    assert events == [BodyReceived(1, b"llo"), EndOfRequest(1)]


def test_server_reset_closes_the_connection() -> None:
    conn = make()
    feed(conn, GET + GET)
    conn.send(ResponseStart(1, 200, []))
    conn.send(ResponseBody(1, b"partial"))
    conn.send(ResetStream(1))
    assert conn.should_close
    conn.send(ResponseStart(2, 200, []))  # dropped with the connection
    assert b"partial" in conn.data_to_send()


def test_reset_of_a_later_stream_closes_after_earlier_ones() -> None:
    conn = make()
    feed(conn, GET + GET)
    conn.send(ResetStream(2))
    assert not conn.should_close
    respond(conn, 1)
    assert b"connection: close" in conn.data_to_send()
    assert conn.should_close


# -- 100-continue and unread bodies -----------------------------------------------

EXPECT = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"


def test_100_continue() -> None:
    conn = make()
    (req,) = feed(conn, EXPECT)
    assert req.expect_continue  # type: ignore[union-attr]
    conn.send(InformationalResponse(1, 100))
    conn.send(InformationalResponse(1, 100))  # only once
    assert conn.data_to_send() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert feed(conn, b"hello") == [BodyReceived(1, b"hello"), EndOfRequest(1)]
    respond(conn, 1)
    raw = conn.data_to_send()
    assert b"connection" not in raw
    assert not conn.should_close


def test_expect_on_http10_or_without_body_is_not_honoured() -> None:
    (req, *_) = feed(make(), b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n")
    assert not req.expect_continue  # type: ignore[union-attr]
    conn = make()
    (req, *_) = feed(conn, b"POST / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n")
    assert not req.expect_continue  # type: ignore[union-attr]
    conn.send(InformationalResponse(1, 100))
    assert conn.data_to_send() == b""


def test_response_without_reading_an_expected_body_closes() -> None:
    conn = make()
    feed(conn, EXPECT)
    respond(conn, 1, 413, b"too big")
    raw = conn.data_to_send()
    assert b"connection: close\r\n" in raw
    assert conn.should_close


def test_small_unread_body_is_discarded_and_the_connection_reused() -> None:
    conn = make()
    feed(conn, POST[:-5])
    respond(conn, 1, 404)
    assert b"connection" not in conn.data_to_send()
    assert not conn.should_close
    events = feed(conn, b"hello" + GET)
    assert [type(e) for e in events] == [RequestReceived, EndOfRequest]
    assert events[0].stream_id == 2  # type: ignore[union-attr]


def test_large_or_chunked_unread_body_closes() -> None:
    conn = make(read_buffer_bytes=100)
    feed(conn, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
    respond(conn, 1, 413)
    assert b"connection: close\r\n" in conn.data_to_send()
    assert conn.should_close

    conn = make()
    feed(conn, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    respond(conn, 1, 413)
    assert conn.should_close


def test_informational_103_goes_out_before_the_response() -> None:
    conn = make()
    feed(conn, GET)
    conn.send(InformationalResponse(1, 103, [(b"link", b"</r/1>; rel=preload")]))
    respond(conn, 1)
    raw = conn.data_to_send()
    assert raw.startswith(b"HTTP/1.1 103 Early Hints\r\nlink: </r/1>; rel=preload\r\n\r\n")
    (reply,) = read_replies(raw, ["GET"])
    assert reply.informational == [103] and reply.status == 200


# -- errors the adapter answers itself ---------------------------------------------


POST_HEAD = b"POST / HTTP/1.1\r\nHost: a\r\n"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (
            POST_HEAD + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            POST_HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        (POST_HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/0.9\r\n\r\n", 505),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ],
)
def test_bad_requests_get_an_answer_and_a_close(raw: bytes, status: int) -> None:
    conn = make()
    events = conn.receive_data(raw)
    assert not any(isinstance(e, RequestReceived) for e in events)
    assert isinstance(events[-1], ConnectionTerminated)
    assert conn.should_close
    got, body = error_of(conn)
    assert got == status
    assert body["detail"]
    assert conn.receive_data(GET) == []


def test_bad_chunk_size_resets_the_stream_and_answers_400() -> None:
    conn = make()
    events = feed(
        conn, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"
    )
    assert [type(e) for e in events] == [RequestReceived, StreamReset, ConnectionTerminated]
    assert error_of(conn)[0] == 400


def test_bad_chunk_after_response_started_just_closes() -> None:
    conn = make()
    feed(conn, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    conn.send(ResponseStart(1, 200, []))
    conn.send(ResponseBody(1, b"early"))
    events = feed(conn, b"nothex\r\n")
    assert [type(e) for e in events] == [StreamReset, ConnectionTerminated]
    assert conn.should_close
    assert b"400" not in conn.data_to_send()


def test_error_waits_for_the_response_in_progress() -> None:
    conn = make()
    events = feed(conn, GET + b"GARBAGE\r\n\r\n")
    assert [type(e) for e in events] == [RequestReceived, EndOfRequest, ConnectionTerminated]
    assert conn.data_to_send() == b""
    assert not conn.should_close
    conn.send(ResponseStart(1, 200, []))
    conn.send(ResponseBody(1, b"first"))
    raw = conn.data_to_send()
    assert b"400" not in raw
    conn.send(ResponseEnd(1))
    raw += conn.data_to_send()
    assert conn.should_close
    first, error = read_replies(raw, ["GET", "GET"], eof=True)
    assert first.status == 200 and first.body == b"first"
    assert b"connection" not in raw.split(b"0\r\n\r\n")[0]  # the 400 is the one that closes
    assert error.status == 400


def test_bad_body_of_a_pipelined_request_waits_for_the_earlier_response() -> None:
    conn = make()
    events = feed(
        conn, GET + b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    )
    assert [type(e) for e in events] == [
        RequestReceived,
        EndOfRequest,
        RequestReceived,
        StreamReset,
        ConnectionTerminated,
    ]
    assert events[3] == StreamReset(2, ResetReason.PROTOCOL_ERROR)
    assert events[4].last_stream_id == 1  # type: ignore[union-attr]
    assert conn.pending_requests == 1
    respond(conn, 1)
    first, error = read_replies(conn.data_to_send(), ["GET", "POST"], eof=True)
    assert (first.status, error.status) == (200, 400)
    assert conn.should_close


def test_100_continue_asked_for_a_later_stream_waits_its_turn() -> None:
    conn = make()
    feed(conn, GET + EXPECT)
    conn.send(InformationalResponse(2, 100))
    assert conn.data_to_send() == b""
    respond(conn, 1)
    assert conn.data_to_send().endswith(b"ok" + b"HTTP/1.1 100 Continue\r\n\r\n")


def test_eof_while_discarding_an_answered_body() -> None:
    conn = make()
    feed(conn, POST[:-3])
    respond(conn, 1)
    assert [type(e) for e in conn.receive_data(b"")] == [ConnectionTerminated]
    assert conn.should_close


HUGE_HEAD = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(
    b"X-Filler-%d: %s\r\n" % (i, b"v" * 50) for i in range(100)
)


@pytest.mark.parametrize("step", [0, 1, 7, 1000])
def test_431_on_a_header_block_over_the_limit(step: int) -> None:
    conn = make(max_header_bytes=2000)
    # no blank line: the limit is enforced while the head is still arriving
    events = feed(conn, HUGE_HEAD, step=step)
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert error_of(conn)[0] == 431


@pytest.mark.parametrize("step", [1, 100, 5000])
def test_431_on_one_endless_header_line(step: int) -> None:
    conn = make(max_header_bytes=4096)
    events = feed(conn, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ", step=step)
    sent = 0
    while not events:
        events = conn.receive_data(b"v" * step)
        sent += step
        assert sent < 4096 + 2 * step + 10_000
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert sent <= 4096 + step
    assert error_of(conn)[0] == 431


@pytest.mark.parametrize("step", [1, 64, 6000])
def test_414_on_a_huge_target(step: int) -> None:
    conn = make(max_header_bytes=1000)
    events = feed(conn, b"GET /" + b"a" * 5000, step=step)
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert error_of(conn)[0] == 414


def test_head_just_under_the_limit_is_accepted() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 100 + b"\r\n\r\n"
    conn = make(max_header_bytes=len(head))
    assert isinstance(feed(conn, head, step=1)[0], RequestReceived)
    conn = make(max_header_bytes=len(head) - 20)
    assert isinstance(feed(conn, head)[0], ConnectionTerminated)


def test_oversized_trailers_are_refused() -> None:
    conn = make(max_header_bytes=300)
    data = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + b"".join(
        b"T%d: %s\r\n" % (i, b"x" * 40) for i in range(20)
    )
    events = feed(conn, data)
    assert [type(e) for e in events] == [RequestReceived, StreamReset, ConnectionTerminated]
    assert error_of(conn)[0] == 431


# -- end of input ----------------------------------------------------------------


def test_eof_mid_body_resets_the_stream() -> None:
    conn = make()
    feed(conn, POST[:-2])
    events = conn.receive_data(b"")
    assert events == [
        StreamReset(1, ResetReason.CONNECTION_CLOSED),
        ConnectionTerminated(0, None, "peer closed the connection"),
    ]
    assert conn.should_close


def test_eof_mid_head_terminates_without_a_stream() -> None:
    conn = make()
    events = feed(conn, GET[:20])
    assert events == []
    assert [type(e) for e in conn.receive_data(b"")] == [ConnectionTerminated]
    assert conn.should_close


def test_eof_after_a_complete_request_still_lets_it_be_answered() -> None:
    conn = make()
    feed(conn, GET)
    events = conn.receive_data(b"")
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert not conn.should_close
    respond(conn, 1)
    assert b"connection: close" in conn.data_to_send()
    assert conn.should_close


def test_eof_when_idle() -> None:
    conn = make()
    feed(conn, GET)
    respond(conn, 1)
    assert [type(e) for e in conn.receive_data(b"")] == [ConnectionTerminated]
    assert conn.should_close
    assert conn.receive_data(b"") == []


# -- h2c upgrade ------------------------------------------------------------------

SETTINGS = b"\x00\x03\x00\x00\x00\x64\x00\x04\x00\x00\xff\xff"
SETTINGS_B64 = base64.urlsafe_b64encode(SETTINGS).rstrip(b"=")
UPGRADE = (
    b"GET /u HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: " + SETTINGS_B64 + b"\r\n\r\n"
)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.mark.parametrize("step", [0, 1])
def test_h2c_upgrade(step: int) -> None:
    conn = make()
    events = feed(conn, UPGRADE + PREFACE, step=step)
    if step:  # bytes after the head arrive later: they are not ours any more
        assert conn.receive_data(b"more") == []
    (ev,) = events
    assert isinstance(ev, UpgradeRequested)
    assert ev.settings == SETTINGS
    assert ev.data == (b"" if step else PREFACE)
    assert ev.request.stream_id == 1
    assert ev.request.target == "/u"
    assert ev.request.end_stream
    assert conn.accept_upgrade() == (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    )


def test_accept_upgrade_without_request_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        make().accept_upgrade()


def test_h2c_upgrade_with_a_body_is_served_as_http11() -> None:
    req = UPGRADE.replace(b"GET /u", b"POST /u").replace(
        b"\r\n\r\n", b"\r\nContent-Length: 5\r\n\r\nhello"
    )
    for step in (0, 1, 3):
        conn = make()
        events = feed(conn, req + GET, step=step)
        assert [type(e) for e in events] == [
            RequestReceived,
            BodyReceived,
            EndOfRequest,
            RequestReceived,
            EndOfRequest,
        ]
        assert events[1] == BodyReceived(1, b"hello")
        assert events[3].stream_id == 2  # type: ignore[union-attr]


def test_chunked_body_on_an_ignored_upgrade() -> None:
    req = (
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    events = feed(make(), req + GET)
    assert events[1:3] == [BodyReceived(1, b"abc"), EndOfRequest(1)]
    assert events[3].stream_id == 2  # type: ignore[union-attr]


def test_websocket_upgrade_is_served_as_plain_http11() -> None:
    conn = make()
    req = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    events = feed(conn, req + GET)
    assert [type(e) for e in events] == [RequestReceived, EndOfRequest] * 2
    respond(conn, 1, 404)
    respond(conn, 2)
    assert [r.status for r in read_replies(conn.data_to_send(), ["GET", "GET"])] == [404, 200]


def test_h2c_upgrade_behind_a_pipelined_request_is_ignored() -> None:
    events = feed(make(), GET + UPGRADE)
    assert [type(e) for e in events] == [RequestReceived, EndOfRequest] * 2


@pytest.mark.parametrize(
    "bad",
    [
        UPGRADE.replace(b"HTTP2-Settings: " + SETTINGS_B64 + b"\r\n", b""),
        UPGRADE.replace(SETTINGS_B64, b"!!notbase64!!"),
        UPGRADE.replace(SETTINGS_B64, SETTINGS_B64[:-3]),
        UPGRADE.replace(b"Connection: Upgrade, HTTP2-Settings", b"Connection: keep-alive"),
    ],
)
def test_h2c_upgrade_needs_valid_settings_and_connection_upgrade(bad: bytes) -> None:
    events = feed(make(), bad)
    assert [type(e) for e in events] == [RequestReceived, EndOfRequest]


# -- property: splitting never changes the events -----------------------------------

_request = st.one_of(
    st.builds(
        lambda path: b"GET /%s HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n" % path.encode(),
        st.text("abcxyz0123/", max_size=12),
    ),
    st.builds(
        lambda body: (
            b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        ),
        st.binary(max_size=40),
    ),
    st.builds(
        lambda chunks: (
            b"PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
            + b"0\r\n\r\n"
        ),
        st.lists(st.binary(min_size=1, max_size=20), max_size=4),
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    requests=st.lists(_request, min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_split_of_a_pipelined_stream_gives_the_same_events(
    requests: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(requests)
    expected = feed(make(), stream)
    assert sum(isinstance(e, EndOfRequest) for e in expected) == len(requests)
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    conn = make()
    events: list[IncomingEvent] = []
    for a, b in itertools.pairwise(bounds):
        events += conn.receive_data(stream[a:b])
    assert merged(events) == expected
