"""The TCP glue with real sockets: half-closing clients, the request line on
the cleartext port (issue 15: half-close, finding 8)."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from tests.apps.limits_app import app
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
    time.sleep(0.2)  # the upload handler is waiting for the rest of its body
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
