"""rawserve.core.priority: the RFC 9218 ``priority`` field. A client's
invalid value is ignored (RFC 9218 section 4), whatever it is: a thousand-digit
urgency, digits outside ASCII. Over a real server on HTTP/1.1 and HTTP/2
(header and PRIORITY_UPDATE) the request is answered and the connection
stays up."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import h2.events
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawserve import RawServe, Request
from rawserve.core.priority import DEFAULT_PRIORITY, Priority, parse_priority_field
from tests.apps.echo_app import app
from tests.conftest import RunningServer, run_server
from tests.test_server_http2 import RawH2

HUGE = b"9" * 5000  # past Python's 4300-digit int() limit


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"u=1", Priority(1)),
        (b"u=0, i", Priority(0, True)),
        (b"u=007", Priority(7)),
        (b"u=" + HUGE, DEFAULT_PRIORITY),
        (b"u=1" + b"0" * 15, DEFAULT_PRIORITY),
        ("u=²".encode(), DEFAULT_PRIORITY),
        ("u=٣", DEFAULT_PRIORITY),
        (b"u=8", DEFAULT_PRIORITY),
        (b"u=-1", DEFAULT_PRIORITY),
        (b"u=", DEFAULT_PRIORITY),
        (b"i=?1, u=" + HUGE, Priority(3, True)),
    ],
)
def test_invalid_urgency_is_ignored(value: bytes | str, expected: Priority) -> None:
    assert parse_priority_field(value) == expected


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_any_field_value_parses_to_a_priority(value: bytes | str) -> None:
    assert isinstance(parse_priority_field(value), Priority)


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(app, tls=False) as s:
        yield s


def test_http1_priority_with_thousands_of_digits_is_ignored(srv: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=10) as sock:
        request = b"GET / HTTP/1.1\r\nhost: x\r\npriority: u=" + HUGE + b"\r\n\r\n"
        sock.sendall(request * 2)  # the second on the same connection: it stays up
        data = b""
        while data.count(b"HTTP/1.1 200") < 2:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
    assert b'{"hello":"world"}' in data


def _answered(c: RawH2, sid: int) -> int:
    status = 0
    for _ in range(50):
        events = c.events()
        assert events != [None], "the server closed the connection"
        for ev in events:
            assert not isinstance(ev, h2.events.ConnectionTerminated), ev
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                status = int(dict(ev.headers)[b":status"])
            if isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                return status
    raise AssertionError(f"no answer on stream {sid}")


def test_http2_priority_header_with_thousands_of_digits_is_ignored(srv: RunningServer) -> None:
    c = RawH2(srv.http_port)
    try:
        sid = c.conn.get_next_available_stream_id()
        headers = [
            (":method", "GET"),
            (":path", "/"),
            (":scheme", "http"),
            (":authority", "localhost"),
            ("priority", "u=" + HUGE.decode()),
        ]
        c.conn.send_headers(sid, headers, end_stream=True)
        c.flush()
        assert _answered(c, sid) == 200
        assert _answered(c, c.request("/")) == 200
    finally:
        c.close()


def _priority_update(stream_id: int, value: bytes) -> bytes:
    # RFC 9218 section 7.1: type 0x10 on stream 0.
    payload = struct.pack(">I", stream_id) + value
    return struct.pack(">I", len(payload))[1:] + bytes([0x10, 0]) + struct.pack(">I", 0) + payload


def test_http2_priority_update_with_thousands_of_digits_is_ignored(srv: RunningServer) -> None:
    c = RawH2(srv.http_port)
    try:
        # For a stream not yet opened (kept until its request comes)...
        early = c.conn.get_next_available_stream_id()
        c.sock.sendall(_priority_update(early, b"u=" + HUGE))
        assert _answered(c, c.request("/")) == 200
        # ...and for an open one, mid-request.
        sid = c.request("/echo", method="POST", body=b"abc", end=False)
        c.sock.sendall(_priority_update(sid, b"u=" + HUGE))
        c.conn.end_stream(sid)
        c.flush()
        assert _answered(c, sid) == 200
        assert _answered(c, c.request("/")) == 200
    finally:
        c.close()


# -- which handlers start first (serving/connection.py StartOrder) ------------------


def test_an_urgent_request_read_with_bulk_ones_starts_its_handler_first() -> None:
    """Six requests in one write, the urgent one last: once urgent traffic has
    been seen, its handler runs before the five bulk ones read in the same
    loop turn (before the fix, in arrival order: last)."""
    ordered = RawServe()
    started: list[str] = []

    @ordered.get("/order")
    async def order(request: Request) -> dict[str, str]:
        started.append(request.headers["x-n"])
        return {"n": request.headers["x-n"]}

    def send(c: RawH2, name: str, urgency: int) -> int:
        sid = c.conn.get_next_available_stream_id()
        head = [(":method", "GET"), (":path", "/order"), (":scheme", "http")]
        head += [(":authority", "localhost"), ("x-n", name), ("priority", f"u={urgency}")]
        c.conn.send_headers(sid, head, end_stream=True)
        return sid

    def wait_for(c: RawH2, sids: set[int]) -> None:
        ended: set[int] = set()
        for _ in range(50):
            for ev in c.events():
                assert ev is not None, "connection closed"
                if isinstance(ev, h2.events.StreamEnded):
                    ended.add(ev.stream_id)
            if sids <= ended:
                return
        raise AssertionError(f"streams {sids - ended} not answered")

    with run_server(ordered, tls=False) as s:
        c = RawH2(s.http_port)
        wait_for(c, {send(c, "first", 0)})
        sids = {send(c, f"bulk{i}", 7) for i in range(5)}
        sids.add(send(c, "urgent", 0))
        c.flush()  # one write: one read, one loop turn on the server
        wait_for(c, sids)
        c.close()
    assert started[0] == "first"
    assert started[1] == "urgent", started
    assert sorted(started[2:]) == [f"bulk{i}" for i in range(5)]
