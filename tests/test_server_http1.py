"""HTTP/1.1 end to end: real sockets on 127.0.0.1, real clients (curl, httpx)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.apps.echo_app import app
from tests.conftest import RunningServer, need, run_server


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(
        app,
        limit_max_header_bytes=8192,
        limit_max_body_bytes=1_000_000,
        limit_header_timeout_s=0.5,
        limit_keep_alive_timeout_s=2.0,
        # No test here is about shutdown: at the end the server cancels what
        # is left instead of waiting out the slow handler's sleep.
        graceful_timeout_s=0.1,
    ) as s:
        yield s


def raw(port: int, data: bytes, *, timeout: float = 5.0, until_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not until_close:
                break
        return b"".join(chunks)


def split_status(resp: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def test_curl_http11(srv: RunningServer) -> None:
    curl = need("curl")
    out = subprocess.run(
        [curl, "-sS", "--http1.1", "-i", f"{srv.http_url}/items/7?q=abc"],
        capture_output=True,
        timeout=10,
        check=True,
    ).stdout
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(out.split(b"\r\n\r\n", 1)[1]) == {"item_id": 7, "q": "abc"}


def test_curl_http11_over_tls(srv: RunningServer) -> None:
    curl = need("curl")
    out = subprocess.run(
        [curl, "-sS", "-k", "--http1.1", "-w", "%{http_version}", f"{srv.https_url}/"],
        capture_output=True,
        timeout=10,
        check=True,
    ).stdout
    assert out == b'{"hello":"world"}1.1'


def test_httpx_keep_alive_reuses_one_connection(srv: RunningServer) -> None:
    with httpx.Client(base_url=srv.http_url) as client:
        for i in range(20):
            r = client.post("/echo", content=b"a" * i)
            assert r.status_code == 200
            assert r.content == b"a" * i
        assert r.http_version == "HTTP/1.1"
    # One connection served all 20 (httpx pools it): the peer port is stable.


def test_pipelined_requests_are_answered_in_order(srv: RunningServer) -> None:
    reqs = (
        b"".join(f"GET /items/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(5))
        + b"GET /items/99 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    out = raw(srv.http_port, reqs)
    bodies = [
        json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])
        for part in out.split(b"HTTP/1.1 200 OK\r\n")[1:]
    ]
    assert [b["item_id"] for b in bodies] == [0, 1, 2, 3, 4, 99]


def test_chunked_request_and_streaming_response(srv: RunningServer) -> None:
    req = (
        b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    status, _, body = split_status(raw(srv.http_port, req))
    assert status == 200 and json.loads(body) == {"received": 11}
    out = raw(
        srv.http_port, b"GET /stream/3?size=4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    status, headers, body = split_status(out)
    assert headers["transfer-encoding"] == "chunked"
    assert body == b"4\r\nyyyy\r\n4\r\nyyyy\r\n4\r\nyyyy\r\n0\r\n\r\n"


def test_expect_100_continue(srv: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=5) as s:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
        s.sendall(b"ping")
        status, _, body = split_status(s.recv(4096))
        assert status == 200 and body == b"ping"


def test_head_has_no_body_but_keeps_length(srv: RunningServer) -> None:
    out = raw(srv.http_port, b"HEAD /bytes/100 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, body = split_status(out)
    assert status == 200 and headers["content-length"] == "100" and body == b""


def test_oversized_headers_get_431_json(srv: RunningServer) -> None:
    out = raw(srv.http_port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    status, headers, body = split_status(out)
    assert status == 431
    assert headers["content-type"].startswith("application/json")
    assert "detail" in json.loads(body)


def test_oversized_body_gets_413_json(srv: RunningServer) -> None:
    r = httpx.post(f"{srv.http_url}/echo", content=b"z" * 1_500_000)
    assert r.status_code == 413
    assert "detail" in r.json()


def test_oversized_chunked_body_gets_413(srv: RunningServer) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(30):
            yield b"z" * 65536

    r = httpx.post(f"{srv.http_url}/count", content=chunks())
    assert r.status_code == 413
    assert "detail" in r.json()


def test_malformed_chunk_gets_400(srv: RunningServer) -> None:
    out = raw(
        srv.http_port,
        b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nhello\r\n0\r\n\r\n",
    )
    status, _, body = split_status(out)
    assert status == 400 and "detail" in json.loads(body)


def test_smuggling_cl_and_te_gets_400(srv: RunningServer) -> None:
    out = raw(
        srv.http_port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /fail HTTP/1.1\r\n\r\n",
    )
    status, _, body = split_status(out)
    assert status == 400 and "detail" in json.loads(body)
    assert out.count(b"HTTP/1.1 ") == 1  # the smuggled request was never served


def test_invalid_json_and_wrong_types_get_422(srv: RunningServer) -> None:
    r = httpx.post(
        f"{srv.http_url}/json", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"
    r = httpx.get(f"{srv.http_url}/items/abc")
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["path", "item_id"]


def test_handler_error_is_500_without_traceback(srv: RunningServer) -> None:
    r = httpx.get(f"{srv.http_url}/fail")
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    assert b"boom" not in r.content and b"Traceback" not in r.content


def test_not_found_and_method_not_allowed(srv: RunningServer) -> None:
    assert httpx.get(f"{srv.http_url}/nope").status_code == 404
    r = httpx.delete(f"{srv.http_url}/echo")
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"}


def test_slow_headers_are_cut_off(srv: RunningServer) -> None:
    # A header line every 0.1 s never completes the head: the server must close
    # the connection (its header timeout is 0.5 s). Bounded at 300 lines so a
    # server that never cuts it fails instead of hanging.
    closed = False
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        for _ in range(300):
            try:
                s.sendall(b"X-A: b\r\n")
            except OSError:
                closed = True
                break
            time.sleep(0.1)
            s.settimeout(0.01)
            try:
                if s.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except OSError:
                closed = True
                break
    assert closed, "a request head that never completes kept its connection"
    # ...and the server still serves others.
    assert httpx.get(f"{srv.http_url}/healthz").status_code == 200


def test_server_survives_garbage(srv: RunningServer) -> None:
    for junk in (
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\n\r\n",
    ):
        out = raw(srv.http_port, junk)
        assert out.startswith(b"HTTP/1.1 4") or out.startswith(b"HTTP/1.1 505"), out[:40]
        assert b'"detail"' in out


def test_request_line_without_version_is_closed_without_answer(srv: RunningServer) -> None:
    """HTTP/0.9, a broken HTTP/2 preface or binary junk: a status line would be
    misread by each of them, so the cleartext port closes (RFC 9113 3.4)."""
    for junk in (b"\x00\x01\x02\r\n\r\n", b"GET /\r\n\r\n", b"INVALID CONNECTION PREFACE\r\n\r\n"):
        assert raw(srv.http_port, junk) == b""
    assert httpx.get(f"{srv.http_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{srv.http_url}/healthz").json() == {"status": "ok"}


def test_slow_handler_pauses_reading_of_a_large_body(srv: RunningServer) -> None:
    """HTTP/1.1 has no window: a handler that does not read makes the server
    stop reading the socket once read_buffer_bytes are buffered."""
    s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=5)
    s.setblocking(False)
    # Under the fixture's 1 MB body limit, four times the 256 KiB read buffer.
    # The handler sleeps far longer than this test waits, so the body is
    # still held, unread, when it is measured.
    s.sendall(b"POST /sleep?seconds=5 HTTP/1.1\r\nHost: x\r\nContent-Length: 990000\r\n\r\n")
    chunk = b"b" * 65536
    sent = 0
    deadline = time.monotonic() + 0.8
    while time.monotonic() < deadline and sent < 990000:
        try:
            sent += s.send(chunk[: 990000 - sent])
        except BlockingIOError:
            time.sleep(0.01)

    def buffered() -> int:
        return sum(d.body.buffered for c in srv.server.connections for d in c.streams.values())

    # The server may not have accepted the connection yet (a loaded machine):
    # wait for the request to be held, then give reading a moment to go on if
    # it were going to.
    wait_until = time.monotonic() + 20  # fails only on a hang
    while srv.call(buffered) == 0 and time.monotonic() < wait_until:
        time.sleep(0.05)
    time.sleep(0.3)
    held = int(srv.call(buffered))
    s.close()
    # The default read buffer (256 KiB) plus at most one read of the event loop
    # (256 KiB) before reading pauses; the kernel's socket buffers hold the rest
    # of the 990 kB, and nothing grows with the body size.
    assert 0 < held <= 2 * 256 * 1024, held
