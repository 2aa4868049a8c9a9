"""The TCP glue with real sockets: half-closing clients, the request line on
the cleartext port, request bodies that stop (issue 15: half-close, findings
8 and 1)."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from tests.apps.limits_app import app, make_app
from tests.conftest import RunningServer, run_server


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(app) as s:
        yield s


def read_all(s: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything until the server closes (a bounded wait: fails only on a hang)."""
    s.settimeout(timeout)
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def dechunk(body: bytes) -> tuple[list[bytes], bool]:
    """The chunks of a chunked body, and whether the final chunk came."""
    chunks = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return chunks, rest == b"\r\n"
        chunks.append(rest[:size])
        body = rest[size + 2 :]
    return chunks, False


def open_connections(srv: RunningServer, expected: int = 0) -> int:
    """The server's open connections, once they settle at ``expected`` (bounded)."""
    deadline = time.monotonic() + 5
    n = srv.call(lambda: len(srv.server.connections))
    while n != expected and time.monotonic() < deadline:
        time.sleep(0.02)
        n = srv.call(lambda: len(srv.server.connections))
    return int(n)


def handling(srv: RunningServer, stream_id: int) -> None:
    """Wait (bounded) until a request's handler runs on the server."""

    def states() -> list[str]:
        return [
            d.state
            for conn in srv.server.connections
            for sid, d in conn.streams.items()
            if sid == stream_id
        ]

    deadline = time.monotonic() + 10
    while "handling" not in srv.call(states):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_half_closed_client_gets_the_whole_streaming_response(srv: RunningServer) -> None:
    s = socket.create_connection(("127.0.0.1", srv.http_port))
    s.sendall(b"GET /stream/20?size=100 HTTP/1.1\r\nHost: x\r\n\r\n")
    s.shutdown(socket.SHUT_WR)  # what nc -N does once its input ends
    out = read_all(s)
    s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in head
    chunks, final = dechunk(body)
    assert chunks == [bytes([97 + i % 26]) * 100 for i in range(20)]
    assert final
    assert open_connections(srv) == 0


def test_half_closed_client_gets_every_pipelined_response(srv: RunningServer) -> None:
    s = socket.create_connection(("127.0.0.1", srv.http_port))
    s.sendall(b"".join(b"GET /items/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5)))
    s.shutdown(socket.SHUT_WR)
    out = read_all(s)
    s.close()
    parts = out.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert [json.loads(p.partition(b"\r\n\r\n")[2]) for p in parts] == [
        {"item": i} for i in range(5)
    ]
    assert open_connections(srv) == 0


def test_half_closed_client_with_a_partial_body_is_cancelled(srv: RunningServer) -> None:
    cancelled, finished = app.state.cancelled, app.state.finished
    s = socket.create_connection(("127.0.0.1", srv.http_port))
    # A complete request, then one whose body stops short: the first is
    # answered, the second is cancelled with its handler.
    s.sendall(
        b"GET /items/1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"p" * 10
    )
    handling(srv, 2)  # the upload handler is waiting for the rest of its body
    s.shutdown(socket.SHUT_WR)
    out = read_all(s)
    s.close()
    assert out.count(b"HTTP/1.1 ") == 1
    assert json.loads(out.partition(b"\r\n\r\n")[2]) == {"item": 1}
    assert open_connections(srv) == 0
    assert app.state.cancelled == cancelled + 1
    assert app.state.finished == finished


def _tls(port: int) -> socket.socket:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", port)), server_hostname="localhost"
    )


@pytest.mark.parametrize("port_kind", ["cleartext", "tls"])
def test_request_line_over_the_limit_gets_414_on_both_ports(
    srv: RunningServer, port_kind: str
) -> None:
    s = (
        socket.create_connection(("127.0.0.1", srv.http_port))
        if port_kind == "cleartext"
        else _tls(srv.https_port or 0)
    )
    line = b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        s.sendall(line)
    except OSError:
        pass  # the server may answer and close before taking it all
    out = read_all(s)
    s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414 "), out[:200]
    assert b"connection: close" in head
    assert "request target exceeds" in json.loads(body)["detail"]
    assert open_connections(srv) == 0


def test_headers_over_the_limit_get_431_on_the_cleartext_port(srv: RunningServer) -> None:
    s = socket.create_connection(("127.0.0.1", srv.http_port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n")
    out = read_all(s)
    s.close()
    assert out.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


def test_a_long_first_line_that_is_not_a_request_is_closed_unanswered(
    srv: RunningServer,
) -> None:
    s = socket.create_connection(("127.0.0.1", srv.http_port))
    try:
        s.sendall(b"\x16\x03\x01" + b"\x00" * 70_000)
    except OSError:
        pass
    assert read_all(s) == b""
    s.close()


# -- request bodies that stop arriving (issue 15, finding 1) ------------------------

# Short, because several tests wait it out (some three times over); every
# wait below is a fraction or a multiple of it, so the margins scale with it.
BODY_TIMEOUT_S = 0.5
# The handler of /sleep waits three body timeouts before it reads.
SLEEP_PATH = f"/sleep?seconds={3 * BODY_TIMEOUT_S:g}"
bapp = make_app()


@pytest.fixture(scope="module")
def bsrv() -> Iterator[RunningServer]:
    with run_server(
        bapp, tls=False, limit_body_timeout_s=BODY_TIMEOUT_S, limit_connection_body_bytes=512 * 1024
    ) as s:
        yield s


def body_timeouts(srv: RunningServer) -> int:
    return int(srv.call(lambda: srv.server.stats.body_timeouts))


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"p" * 10,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
    ],
    ids=["content-length", "chunked", "no-body-bytes"],
)
def test_http11_body_that_stops_gets_408_and_close(
    bsrv: RunningServer, request_bytes: bytes
) -> None:
    cancelled, timeouts = bapp.state.cancelled, body_timeouts(bsrv)
    s = socket.create_connection(("127.0.0.1", bsrv.http_port))
    s.sendall(request_bytes)
    out = read_all(s)  # the server closes: a hang fails here
    s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), out[:200]
    assert b"connection: close" in head
    assert "stopped arriving" in json.loads(body)["detail"]
    assert open_connections(bsrv) == 0
    assert bapp.state.cancelled == cancelled + 1  # the handler waiting for it is gone
    assert body_timeouts(bsrv) == timeouts + 1


def test_http11_slow_body_that_keeps_coming_is_served(bsrv: RunningServer) -> None:
    s = socket.create_connection(("127.0.0.1", bsrv.http_port))
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\n\r\n")
    for _ in range(30):  # three times the body timeout in all, never a gap of one
        time.sleep(BODY_TIMEOUT_S / 10)
        s.sendall(b"q" * 10)
    s.settimeout(10)
    out = s.recv(65536)
    s.close()
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(out.partition(b"\r\n\r\n")[2]) == {"received": 300}


def _h2(port: int) -> tuple[socket.socket, h2.connection.H2Connection]:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    # The server's SETTINGS and its connection window (1 MiB) first.
    _until(s, c, lambda seen: any(isinstance(e, h2.events.WindowUpdated) for e in seen))
    return s, c


def _post_headers(c: h2.connection.H2Connection, sid: int, length: int | None = None) -> None:
    headers = [(":method", "POST"), (":path", "/upload"), (":scheme", "http")]
    headers.append((":authority", "x"))
    if length is not None:
        headers.append(("content-length", str(length)))
    c.send_headers(sid, headers)


def _until(
    s: socket.socket, c: h2.connection.H2Connection, done: Callable[[list[Any]], bool]
) -> list[Any]:
    """h2 events until ``done(all so far)``; fails on a hang (bounded)."""
    seen: list[Any] = []
    deadline = time.monotonic() + 10
    while not done(seen):
        assert time.monotonic() < deadline, seen
        data = s.recv(65536)
        assert data, seen
        seen += c.receive_data(data)
        s.sendall(c.data_to_send())
    return seen


def _resets(seen: list[Any]) -> dict[int, int]:
    return {e.stream_id: e.error_code for e in seen if isinstance(e, h2.events.StreamReset)}


def test_http2_headers_without_data_get_rst_stream(bsrv: RunningServer) -> None:
    cancelled, timeouts = bapp.state.cancelled, body_timeouts(bsrv)
    s, c = _h2(bsrv.http_port)
    _post_headers(c, 1, length=100)  # and no DATA
    _post_headers(c, 3, length=100)
    c.send_data(3, b"d" * 10)  # part of a body, then nothing
    s.sendall(c.data_to_send())
    seen = _until(s, c, lambda seen: len(_resets(seen)) == 2)
    assert _resets(seen) == {1: h2.errors.ErrorCodes.CANCEL, 3: h2.errors.ErrorCodes.CANCEL}
    # The connection still serves a request that completes its body.
    _post_headers(c, 5, length=4)
    c.send_data(5, b"done", end_stream=True)
    s.sendall(c.data_to_send())
    seen = _until(s, c, lambda seen: any(isinstance(e, h2.events.StreamEnded) for e in seen))
    body = b"".join(e.data for e in seen if isinstance(e, h2.events.DataReceived))
    assert json.loads(body) == {"received": 4}
    s.close()
    assert bapp.state.cancelled == cancelled + 2
    assert body_timeouts(bsrv) == timeouts + 2


def test_http2_partial_bodies_are_capped_per_connection(bsrv: RunningServer) -> None:
    """Ten streams each holding 100 KB of an unfinished upload: the cap
    (512 KiB) keeps five and resets the rest; the server holds no more."""
    s, c = _h2(bsrv.http_port)
    for i in range(10):
        sid = 1 + 2 * i
        _post_headers(c, sid, length=1_000_000)
        for _ in range(100_000 // 10_000):
            c.send_data(sid, b"u" * 10_000)
    s.sendall(c.data_to_send())
    seen = _until(s, c, lambda seen: len(_resets(seen)) >= 5)
    resets = _resets(seen)
    assert resets == {sid: h2.errors.ErrorCodes.ENHANCE_YOUR_CALM for sid in (11, 13, 15, 17, 19)}

    def held() -> list[int]:
        return [
            conn.adapter.pending_body_bytes
            for conn in bsrv.server.connections
            if getattr(conn, "http2", False)
        ]

    # Five streams' 100 KB (fewer if the body timeout has begun on them).
    (pending,) = bsrv.call(held)
    assert pending <= 512 * 1024 and pending % 100_000 == 0, pending
    # Then the body timeout ends the five that stopped.
    seen = _until(s, c, lambda seen: len(_resets(seen)) >= 5)
    assert set(_resets(seen)) == {1, 3, 5, 7, 9}
    assert bsrv.call(held) == [0]
    s.close()


def test_http11_body_held_back_by_a_slow_handler_is_not_timed_out(bsrv: RunningServer) -> None:
    """The handler sleeps three body timeouts before reading: the server stops
    reading once read_buffer_bytes wait, and that pause is not the client's."""
    size = 1_000_000
    s = socket.create_connection(("127.0.0.1", bsrv.http_port), timeout=10)
    s.sendall(
        b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % (SLEEP_PATH.encode(), size)
    )
    s.sendall(b"b" * size)  # blocks while the server is not reading: that is the point
    out = read_all(s)
    s.close()
    assert out.startswith(b"HTTP/1.1 200 OK"), out[:200]
    assert json.loads(out.partition(b"\r\n\r\n")[2]) == {"received": size}


def test_http2_body_held_back_by_a_slow_handler_is_not_timed_out(bsrv: RunningServer) -> None:
    """The stream's window is used up while the handler sleeps: the client
    cannot send, so no RST_STREAM; once the handler reads, the body flows."""
    size = 400_000  # more than the stream window (256 KiB)
    s, c = _h2(bsrv.http_port)
    head = [(":method", "POST"), (":path", SLEEP_PATH), (":scheme", "http")]
    c.send_headers(1, [*head, (":authority", "x"), ("content-length", str(size))])
    sent = 0
    seen: list[Any] = []
    deadline = time.monotonic() + 20
    while not any(isinstance(e, h2.events.StreamEnded) for e in seen):
        assert time.monotonic() < deadline, seen
        n = min(c.local_flow_control_window(1), c.max_outbound_frame_size, size - sent)
        if n > 0:
            c.send_data(1, b"w" * n, end_stream=sent + n == size)
            sent += n
        s.sendall(c.data_to_send())
        if n > 0 and sent < size:
            continue
        data = s.recv(65536)
        assert data
        seen += c.receive_data(data)
        s.sendall(c.data_to_send())
    s.close()
    assert not _resets(seen)
    body = b"".join(e.data for e in seen if isinstance(e, h2.events.DataReceived))
    assert json.loads(body) == {"received": size}


def test_http11_expect_100_continue_waits_for_the_handler_not_the_timeout(
    bsrv: RunningServer,
) -> None:
    """The client holds its body until 100 Continue, which goes out when the
    handler reads (after three body timeouts): that wait is the server's."""
    s = socket.create_connection(("127.0.0.1", bsrv.http_port), timeout=10)
    s.sendall(
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n" % SLEEP_PATH.encode()
    )
    assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
    time.sleep(BODY_TIMEOUT_S / 2)  # a client takes a moment to start sending
    s.sendall(b"hello")
    out = read_all(s)
    s.close()
    assert out.startswith(b"HTTP/1.1 200 OK"), out[:200]
    assert json.loads(out.partition(b"\r\n\r\n")[2]) == {"received": 5}


def test_http2_expect_100_continue_waits_for_the_handler_not_the_timeout(
    bsrv: RunningServer,
) -> None:
    s, c = _h2(bsrv.http_port)
    head = [(":method", "POST"), (":path", SLEEP_PATH), (":scheme", "http")]
    c.send_headers(1, [*head, (":authority", "x"), ("expect", "100-continue")])
    s.sendall(c.data_to_send())
    seen = _until(
        s, c, lambda seen: any(isinstance(e, h2.events.InformationalResponseReceived) for e in seen)
    )
    assert not _resets(seen)
    time.sleep(BODY_TIMEOUT_S / 2)
    c.send_data(1, b"hello", end_stream=True)
    s.sendall(c.data_to_send())
    seen = _until(s, c, lambda seen: any(isinstance(e, h2.events.StreamEnded) for e in seen))
    s.close()
    assert not _resets(seen)
    body = b"".join(e.data for e in seen if isinstance(e, h2.events.DataReceived))
    assert json.loads(body) == {"received": 5}


def _frames(s: socket.socket) -> list[Any]:
    """Every frame until the server closes (h2 stops reading at GOAWAY)."""
    from hyperframe.frame import Frame

    data = read_all(s)
    frames = []
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


def test_half_closed_http2_client_gets_its_complete_requests_answered(
    srv: RunningServer,
) -> None:
    from hpack import Decoder
    from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, RstStreamFrame

    cancelled = app.state.cancelled
    s, c = _h2(srv.http_port)
    get = [(":method", "GET"), (":scheme", "http"), (":authority", "x")]
    c.send_headers(1, [*get, (":path", "/stream/20?size=100")], end_stream=True)
    c.send_headers(3, [*get, (":path", "/items/3")], end_stream=True)
    _post_headers(c, 5, length=100)  # a body that will never come
    s.sendall(c.data_to_send())
    handling(srv, 5)
    s.shutdown(socket.SHUT_WR)
    frames = _frames(s)
    s.close()
    body = {
        sid: b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == sid)
        for sid in (1, 3)
    }
    ended = {f.stream_id for f in frames if "END_STREAM" in f.flags}
    assert body[1] == b"".join(bytes([97 + i % 26]) * 100 for i in range(20))
    assert json.loads(body[3]) == {"item": 3}
    assert ended == {1, 3}
    resets = {f.stream_id: f.error_code for f in frames if isinstance(f, RstStreamFrame)}
    assert resets == {5: h2.errors.ErrorCodes.CANCEL}
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert [(g.last_stream_id, g.error_code) for g in goaways] == [(5, 0)]
    dec = Decoder()
    statuses = [dict(dec.decode(f.data))[":status"] for f in frames if isinstance(f, HeadersFrame)]
    assert statuses == ["200", "200"]
    assert open_connections(srv) == 0
    assert app.state.cancelled == cancelled + 1


def test_half_closed_client_whose_answer_cannot_go_out_is_cut(bsrv: RunningServer) -> None:
    """An HTTP/2 client that half-closes with a small window can never send
    the WINDOW_UPDATE its answer needs: after the body timeout it is cut."""
    s = socket.create_connection(("127.0.0.1", bsrv.http_port), timeout=10)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    get = [(":method", "GET"), (":scheme", "http"), (":authority", "x")]
    c.send_headers(1, [*get, (":path", "/stream/20?size=1000")], end_stream=True)
    s.sendall(c.data_to_send())
    s.shutdown(socket.SHUT_WR)
    frames = _frames(s)  # the server closes: a hang fails here
    s.close()
    assert not any("END_STREAM" in f.flags for f in frames)
    assert open_connections(bsrv) == 0


def test_half_closed_slow_reader_is_served_in_full(bsrv: RunningServer) -> None:
    """A half-closed client reading 1.6 MB slowly (longer than the body
    timeout in all, but never stalled) gets all of it."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.connect(("127.0.0.1", bsrv.http_port))
    s.sendall(b"GET /stream/50?size=32768 HTTP/1.1\r\nHost: x\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    s.settimeout(10)
    got = b""
    deadline = time.monotonic() + 60
    while chunk := s.recv(32768):
        got += chunk
        assert time.monotonic() < deadline
        time.sleep(0.01)  # a few seconds for the whole answer
    s.close()
    chunks, final = dechunk(got.partition(b"\r\n\r\n")[2])
    assert len(chunks) == 50 and final
