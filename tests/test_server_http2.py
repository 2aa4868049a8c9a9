"""HTTP/2 end to end: curl, httpx, nghttp, h2load, and the h2 library as a
raw-frame client, against a real server on 127.0.0.1."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from tests.apps.echo_app import app
from tests.conftest import RunningServer, need, run_server


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(app, limit_max_body_bytes=1_000_000) as s:
        yield s


def test_curl_http2_over_tls(srv: RunningServer) -> None:
    curl = need("curl")
    out = subprocess.run(
        [curl, "-sS", "-k", "--http2", "-w", " %{http_version}", f"{srv.https_url}/items/3?q=x"],
        capture_output=True,
        timeout=10,
        check=True,
    ).stdout
    body, version = out.rsplit(b" ", 1)
    assert version == b"2"
    assert json.loads(body) == {"item_id": 3, "q": "x"}


def test_curl_h2c_prior_knowledge(srv: RunningServer) -> None:
    curl = need("curl")
    out = subprocess.run(
        [
            curl,
            "-sS",
            "--http2-prior-knowledge",
            "-w",
            " %{http_version}",
            "--data-binary",
            "hello h2c",
            f"{srv.http_url}/echo",
        ],
        capture_output=True,
        timeout=10,
        check=True,
    ).stdout
    assert out == b"hello h2c 2"


def test_curl_h2c_upgrade(srv: RunningServer) -> None:
    curl = need("curl")
    out = subprocess.run(
        [curl, "-sS", "--http2", "-i", f"{srv.http_url}/items/5"],
        capture_output=True,
        timeout=10,
        check=True,
    ).stdout
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"HTTP/2 200" in out
    assert out.rstrip().endswith(b'{"item_id":5,"q":null}')


def test_httpx_http2(srv: RunningServer) -> None:
    with httpx.Client(http2=True, verify=False, base_url=srv.https_url) as client:
        for i in range(10):
            r = client.post("/echo", content=b"q" * (i * 1000))
            assert r.http_version == "HTTP/2"
            assert r.content == b"q" * (i * 1000)
        r = client.get("/stream/50?size=4096")
        assert len(r.content) == 50 * 4096


def test_nghttp_multiple_streams(srv: RunningServer) -> None:
    nghttp = need("nghttp")
    out = subprocess.run(
        [
            nghttp,
            "-n",
            "-s",
            f"{srv.http_url}/items/1",
            f"{srv.http_url}/bytes/200000",
            f"{srv.http_url}/stream/20",
        ],
        capture_output=True,
        timeout=20,
        check=True,
        text=True,
    ).stdout
    assert len(re.findall(r"\b200\b", out)) >= 3, out


def test_h2load_thousands_of_multiplexed_requests(srv: RunningServer) -> None:
    h2load = need("h2load")
    out = subprocess.run(
        [h2load, "-n", "5000", "-c", "4", "-m", "50", f"{srv.http_url}/healthz"],
        capture_output=True,
        timeout=120,
        check=True,
        text=True,
    ).stdout
    assert "5000 succeeded, 0 failed, 0 errored" in out, out
    assert re.search(r"status codes: 5000 2xx", out), out


def test_h2load_over_tls(srv: RunningServer) -> None:
    h2load = need("h2load")
    out = subprocess.run(
        [h2load, "-n", "2000", "-c", "2", "-m", "20", f"{srv.https_url}/"],
        capture_output=True,
        timeout=120,
        check=True,
        text=True,
    ).stdout
    assert "2000 succeeded, 0 failed, 0 errored" in out, out


class RawH2:
    """The h2 library as a client over a plain socket, frame by frame."""

    def __init__(self, port: int, *, window: int | None = None, tls: bool = False) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self, path: str, method: str = "GET", body: bytes | None = None, end: bool = True
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            sid,
            [
                (":method", method),
                (":path", path),
                (":scheme", "http"),
                (":authority", "localhost"),
            ],
            end_stream=body is None and end,
        )
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def events(self, timeout: float = 2.0) -> list[h2.events.Event]:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return []
        if not data:
            return [None]  # type: ignore[list-item]
        evs = self.conn.receive_data(data)
        self.flush()
        return evs

    def close(self) -> None:
        self.sock.close()


def test_rst_stream_cancels_the_handler(srv: RunningServer) -> None:
    before = app.state.cancelled
    c = RawH2(srv.http_port)
    sid = c.request("/slow?seconds=5")
    time.sleep(0.3)
    c.conn.reset_stream(sid, error_code=8)
    c.flush()
    deadline = time.monotonic() + 5
    while app.state.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.state.cancelled == before + 1
    # The connection is still good for another request.
    sid2 = c.request("/healthz")
    got = b""
    ended = False
    for _ in range(20):
        for ev in c.events():
            if isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid2:
                got += ev.data
            if isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid2:
                ended = True
        if ended:
            break
    assert json.loads(got) == {"status": "ok"}
    c.close()


def _server_buffered(srv: RunningServer) -> int:
    """Bytes the server holds for its connections: adapter queues + socket buffers."""

    def measure() -> int:
        total = 0
        for conn in srv.server.connections:
            adapter = conn.adapter
            for sid in list(conn.streams):
                total += adapter.buffered(sid)
            if conn.transport is not None:
                total += conn.transport.get_write_buffer_size()
        return total

    return int(srv.call(measure))


def test_client_that_never_reads_does_not_grow_server_memory(srv: RunningServer) -> None:
    c = RawH2(srv.http_port)
    # 10,000 chunks of 16 KiB = 160 MiB if nothing pushed back.
    c.request("/stream/10000?size=16384")
    samples = []
    for _ in range(6):
        time.sleep(0.25)
        samples.append(_server_buffered(srv))
    # Bounded by the write buffer limit (64 KiB) and one chunk, never by the body size.
    assert max(samples) < 512 * 1024, samples
    c.close()


def test_http11_client_that_never_reads_is_bounded(srv: RunningServer) -> None:
    s = socket.create_connection(("127.0.0.1", srv.http_port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /stream/10000?size=16384 HTTP/1.1\r\nHost: x\r\n\r\n")
    samples = []
    for _ in range(6):
        time.sleep(0.25)
        samples.append(_server_buffered(srv))
    assert max(samples) < 512 * 1024, samples
    s.close()


def test_slow_handler_pushes_back_on_the_client(srv: RunningServer) -> None:
    """Request body credit is returned only as the handler reads: a client
    sending to a handler that does not read stalls at the window."""
    c = RawH2(srv.http_port)
    sid = c.request("/slow?seconds=1.5", method="GET", body=None, end=False)
    sent = 0
    chunk = b"d" * 16384
    for _ in range(200):
        window = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size)
        if window < len(chunk):
            break
        c.conn.send_data(sid, chunk)
        c.flush()
        sent += len(chunk)
        c.events(timeout=0.05)
    # The server's initial stream window is 256 KiB: we cannot get far past it.
    assert sent <= 256 * 1024 + 65536, sent
    c.close()


def test_h2c_upgrade_with_invalid_settings_gets_400(srv: RunningServer) -> None:
    # HTTP2-Settings carrying SETTINGS_INITIAL_WINDOW_SIZE = 2^31 (over the maximum).
    s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=5)
    s.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AASAAAAA\r\n\r\n"
    )
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"HTTP2-Settings" in data
