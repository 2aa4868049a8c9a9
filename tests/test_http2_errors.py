"""A bug inside the HTTP/2 adapter is logged with its traceback (rate-limited)
and answered GOAWAY(INTERNAL_ERROR), never a silent close; and the TCP glue
logs an adapter that fails at end of input."""

from __future__ import annotations

import logging
import socket

import h2.events
import httpx
import pytest

from rawserve.core.events import ConnectionTerminated
from rawserve.core.logthrottle import LogThrottle
from rawserve.protocols.http1 import H1Connection
from rawserve.protocols.http2 import connection as h2_adapter
from rawserve.protocols.http2.connection import H2Connection
from tests.apps.echo_app import app
from tests.conftest import run_server
from tests.test_http2 import GET, Pair

INTERNAL_ERROR = 0x2


def test_an_adapter_bug_is_logged_with_traceback_and_answered_with_goaway(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    throttle = LogThrottle(h2_adapter.log, interval_s=10.0)
    monkeypatch.setattr(h2_adapter, "INTERNAL_ERRORS", throttle)

    def broken(self: H2Connection, ev: object, out: object) -> None:
        raise KeyError("a bug in _on_request")

    monkeypatch.setattr(H2Connection, "_on_request", broken)
    with caplog.at_level(logging.ERROR, "rawserve.http2"):
        pairs = [Pair() for _ in range(3)]
        for i, pair in enumerate(pairs):
            pair.request(GET)
            (event,) = pair.to_server(now=50.0 + i)
            assert isinstance(event, ConnectionTerminated)
            assert event.error_code == INTERNAL_ERROR
            goaway = [e for e in pair.to_client() if isinstance(e, h2.events.ConnectionTerminated)]
            assert goaway and goaway[0].error_code == INTERNAL_ERROR
        # The same bug again, 10 s after the first: logged, with the count.
        late = Pair()
        late.request(GET)
        late.to_server(now=60.0)
    records = [r for r in caplog.records if r.name == "rawserve.http2"]
    assert len(records) == 2
    assert records[0].exc_info is not None and records[0].exc_info[0] is KeyError
    assert "a bug in _on_request" in caplog.text and "Traceback" in caplog.text
    assert "2 more like it not logged" in records[1].getMessage()


def test_an_adapter_failing_at_eof_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = H1Connection.receive_data

    def fails_at_eof(self: H1Connection, data: bytes, now: float = 0.0) -> list[object]:
        if not data:
            raise RuntimeError("adapter bug at EOF")
        return real(self, data, now)  # type: ignore[return-value]

    monkeypatch.setattr(H1Connection, "receive_data", fails_at_eof)
    # Idle and keep-alive timeouts far beyond the socket's: the connection must
    # be closed for the failure, not left half-open until a timer.
    long = {"keep_alive_timeout_s": 120.0, "idle_timeout_s": 120.0}
    with (
        caplog.at_level(logging.ERROR, "rawserve.serving"),
        run_server(app, tls=False, **long) as srv,
    ):
        with socket.create_connection(("127.0.0.1", srv.http_port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        # The server is still serving others.
        assert httpx.get(f"{srv.http_url}/", timeout=10).status_code == 200
    assert "at end of input" in caplog.text
    assert "adapter bug at EOF" in caplog.text
