"""Graceful shutdown: stop accepting, GOAWAY / Connection: close, let in-flight
requests finish, then close."""

from __future__ import annotations

import json
import socket
import time

from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame

from tests.apps.echo_app import app
from tests.conftest import run_server
from tests.test_server_http2 import RawH2


def test_http2_goaway_lets_the_in_flight_request_finish() -> None:
    with run_server(app, tls=False, graceful_timeout_s=5.0) as srv:
        c = RawH2(srv.http_port)
        sid = c.request("/slow?seconds=0.5")
        time.sleep(0.1)
        srv.begin_shutdown()
        # The h2 library stops parsing at GOAWAY, so read the frames raw.
        c.sock.settimeout(5)
        buf = b""
        frames: list[Frame] = []
        ended = False
        while not ended:
            chunk = c.sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
                if len(buf) < 9 + length:
                    break
                frame.parse_body(memoryview(buf[9 : 9 + length]))
                buf = buf[9 + length :]
                frames.append(frame)
                if frame.stream_id == sid and "END_STREAM" in frame.flags:
                    ended = True
        goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
        assert goaways and goaways[0].error_code == 0
        assert goaways[0].last_stream_id == sid
        assert any(isinstance(f, HeadersFrame) and f.stream_id == sid for f in frames)
        body = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == sid)
        assert ended and json.loads(body) == {"slept": 0.5}
        # New connections are refused once the listeners are closed.
        time.sleep(0.2)
        try:
            socket.create_connection(("127.0.0.1", srv.http_port), timeout=1).close()
            refused = False
        except OSError:
            refused = True
        assert refused
        c.close()


def test_http11_in_flight_request_gets_connection_close() -> None:
    with run_server(app, tls=False, graceful_timeout_s=5.0) as srv:
        s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=5)
        s.sendall(b"GET /slow?seconds=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        srv.begin_shutdown()
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"connection: close" in head.lower()
        assert json.loads(body) == {"slept": 0.5}
        s.close()


def test_idle_keep_alive_connections_close_at_once_on_shutdown() -> None:
    # The grace period is far longer than the socket timeout: the connection
    # can only close in time if shutdown closes idle ones at once.
    with run_server(app, tls=False, graceful_timeout_s=600.0) as srv:
        s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=30)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        srv.begin_shutdown()
        assert s.recv(100) == b""
        s.close()
