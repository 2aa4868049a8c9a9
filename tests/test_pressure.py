"""Connections under pressure, with real sockets (issue 15, build 2 and
finding 1): the connection limit sheds the connections that make no progress,
worst first; request heads below the minimum rate are cut; a slow client that
keeps making progress is served; resource exhaustion cannot flood the log."""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
import time
from typing import Any

import h2.config
import h2.connection
import pytest

from rawserve.serving.pressure import (
    HEADER_RATE_GRACE_S,
    SHED_H2_IDLE,
    SHED_HEAD,
    SHED_HEADER_RATE,
    SHED_IDLE,
    default_connection_limit,
)
from tests.apps.limits_app import make_app
from tests.conftest import RunningServer, run_server


def stats(srv: RunningServer) -> dict[str, Any]:
    return dict(srv.call(srv.server.stats.snapshot))


def wait_for(srv: RunningServer, cond: Any, timeout: float = 10.0) -> dict[str, Any]:
    """The server's counters once ``cond(counters)`` holds (bounded: fails on a hang)."""
    deadline = time.monotonic() + timeout
    st = stats(srv)
    while not cond(st):
        assert time.monotonic() < deadline, st
        time.sleep(0.05)
        st = stats(srv)
    return st


def get(port: int, path: str = "/items/1", timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def closed_by_server(s: socket.socket, timeout: float = 10.0) -> bool:
    """Whether the server closes ``s`` (what it sent first, a GOAWAY, is skipped)."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def still_open(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        while s.recv(65536):
            pass
        return False
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        s.setblocking(True)


def test_default_connection_limit_leaves_headroom_below_the_fd_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = default_connection_limit()
    assert 0 < limit <= soft - 64
    assert limit >= soft * 0.85


def test_at_the_limit_the_worst_connection_goes_first() -> None:
    """Four slots: a head trickling in, two idle keep-alives, a stream-less
    HTTP/2 connection. Each newcomer sheds one, in that order."""
    with run_server(
        make_app(), tls=False, limit_connections=4, limit_min_header_rate_bytes_per_s=0
    ) as srv:
        port = srv.http_port
        idle1 = socket.create_connection(("127.0.0.1", port), timeout=10)
        idle1.sendall(b"GET /items/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle1.recv(65536).startswith(b"HTTP/1.1 200 OK")
        idle2 = socket.create_connection(("127.0.0.1", port), timeout=10)
        idle2.sendall(b"GET /items/2 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle2.recv(65536).startswith(b"HTTP/1.1 200 OK")
        h2c = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        h2c.sendall(conn.data_to_send())
        assert h2c.recv(65536)  # the server's preface: it is an HTTP/2 connection
        head = socket.create_connection(("127.0.0.1", port), timeout=10)
        head.sendall(b"GET /items/3 HTTP/1.1\r\nHost: x\r\n")  # and no more
        wait_for(srv, lambda st: st["open"] == 4)
        # Past its first second a head has a rate; before, it is shed last.
        time.sleep(HEADER_RATE_GRACE_S + 0.2)

        victims = [head, idle1, idle2, h2c]
        reasons = [SHED_HEAD, SHED_IDLE, SHED_IDLE, SHED_H2_IDLE]
        newcomers = []
        for n, (victim, reason) in enumerate(zip(victims, reasons, strict=True)):
            # A newcomer whose request keeps its slot busy (never shed).
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            # Busy far longer than the shedding below takes (a fraction of
            # a second), and no longer: the test waits for these answers.
            s.sendall(b"GET /slow?seconds=2 HTTP/1.1\r\nHost: x\r\n\r\n")
            newcomers.append(s)
            assert closed_by_server(victim), n
            st = stats(srv)
            assert st["shed"][reason] == reasons[: n + 1].count(reason), (n, st)
            assert all(still_open(other) for other in victims[n + 1 :]), n
        # Every slot busy now: one more is refused, and nobody is cut.
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert closed_by_server(extra)
        for s in newcomers:
            assert json.loads(s.recv(65536).partition(b"\r\n\r\n")[2]) == {"slept": 2.0}
        for s in [*victims, *newcomers, extra]:
            s.close()
        st = wait_for(srv, lambda st: st["open"] == 0)
        assert st["refused"] == 1 and st["limit"] == 4
        assert sum(st["shed"].values()) == 4


def test_when_every_connection_is_busy_the_newcomer_is_refused() -> None:
    with run_server(make_app(), tls=False, limit_connections=2) as srv:
        busy = []
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
            s.sendall(b"GET /slow?seconds=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            busy.append(s)
        wait_for(srv, lambda st: st["open"] == 2)
        time.sleep(0.1)  # both requests are in their handlers
        newcomer = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
        assert closed_by_server(newcomer)
        newcomer.close()
        for s in busy:  # the requests in progress were not cut
            assert json.loads(s.recv(65536).partition(b"\r\n\r\n")[2]) == {"slept": 1.0}
            s.close()
        st = stats(srv)
        assert st["refused"] == 1
        assert sum(st["shed"].values()) == 0


def test_hundreds_of_trickling_heads_are_cut_and_a_slow_client_is_served() -> None:
    """300 connections sending their head a byte every 0.3 s (below the 100
    B/s minimum) are all cut soon after their first second, while one client
    sending its head at ~400 B/s, 40 bytes at a time, is answered."""
    with run_server(make_app(), tls=False, limit_connections=200) as srv:
        port = srv.http_port
        tricklers: list[socket.socket] = []
        stop = threading.Event()

        def trickle() -> None:
            while not stop.is_set():
                for s in list(tricklers):
                    try:
                        s.send(b"X")
                    except OSError:
                        tricklers.remove(s)
                        s.close()
                stop.wait(0.3)

        def crowd(n: int) -> None:
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ")
                tricklers.append(s)

        crowd(150)
        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        try:
            # The slow client arrives amid the crowd; 150 more follow it past
            # the limit, and shedding must pick the tricklers, not it.
            head = b"GET /items/7 HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 500 + b"\r\n\r\n"
            slow = socket.create_connection(("127.0.0.1", port), timeout=10)
            for i in range(0, len(head), 40):
                slow.sendall(head[i : i + 40])
                if i == 0:
                    crowd(150)
                time.sleep(0.1)
            out = slow.recv(65536)
            slow.close()
            assert out.startswith(b"HTTP/1.1 200 OK"), out
            st = wait_for(srv, lambda st: st["open"] == 0 and not tricklers)
        finally:
            stop.set()
            thread.join(5)
            for s in tricklers:
                s.close()
        assert st["shed"][SHED_HEADER_RATE] + st["shed"][SHED_HEAD] + st["refused"] >= 300
        assert st["shed"][SHED_HEADER_RATE] > 0, st


def test_resource_exhaustion_is_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with run_server(make_app(), tls=False) as srv:
        exc = OSError(errno.EMFILE, "Too many open files")

        def flood() -> None:
            for _ in range(1000):
                srv.loop.call_exception_handler(
                    {"message": "socket.accept() out of system resource", "exception": exc}
                )

        with caplog.at_level(logging.WARNING, logger="rawserve.serving"):
            srv.call(flood)
        lines = [r for r in caplog.records if "cannot accept connections" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert stats(srv)["accept_errors"] == 1000
        # Other loop errors still reach the handler they always did.
        assert get(srv.http_port).startswith(b"HTTP/1.1 200 OK")


def test_an_app_with_the_hook_shows_the_connection_counters_in_its_metrics() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from rawserve import Response
    from rawserve.inference.metrics import CONTENT_TYPE_LATEST, Registry

    app = make_app()
    registry = Registry()
    got: list[Any] = []

    def bind(stats: Any) -> None:
        got.append(stats)
        stats.register(registry)

    app.bind_connection_stats = bind  # type: ignore[attr-defined]

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)

    with run_server(app, tls=False, limit_connections=50) as srv:
        assert got and got[0] is srv.server.stats
        head = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
        head.sendall(b"GET / HTTP/1.1\r\n")  # a head that will not finish
        assert closed_by_server(head)  # cut for its rate after the first second
        head.close()
        text = get(srv.http_port, "/metrics").partition(b"\r\n\r\n")[2].decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("rawserve_connections_limit", ())] == 50
    assert samples[("rawserve_connections_open", ())] == 1  # the scrape itself
    assert samples[("rawserve_connections_accepted", ())] == 2
    assert samples[("rawserve_connections_shed", (("reason", SHED_HEADER_RATE),))] == 1
    assert samples[("rawserve_connections_shed", (("reason", SHED_IDLE),))] == 0
    assert samples[("rawserve_connections_refused", ())] == 0


def test_out_of_descriptors_sheds_idle_connections_and_logs_once() -> None:
    """A server in a process allowed 40 descriptors, its connection limit set
    far above that: 80 idle connections exhaust them. accept() fails with
    EMFILE; the server sheds the idle ones, serves a real client, and says so
    in one log line (asyncio alone logs a traceback a second and stays stuck
    until the header timeout)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40)); "
        "from rawserve.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    args = ["tests.apps.limits_app:app", "--http-port", str(port), "--port", "-1"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args, "--limit-connections", "1000"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stderr=subprocess.PIPE,
        text=True,
    )
    hogs: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while True:  # until the server listens
            assert time.monotonic() < deadline and proc.poll() is None
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        hogs = [socket.create_connection(("127.0.0.1", port)) for _ in range(80)]
        served = b""
        while not served.startswith(b"HTTP/1.1 200"):
            assert time.monotonic() < deadline, "never served while descriptors ran out"
            try:
                served = get(port, timeout=3)
            except OSError:
                time.sleep(0.2)
    finally:
        for s in hogs:
            s.close()
        proc.terminate()
        err = proc.communicate(timeout=30)[1]
    assert err.count("cannot accept connections: Too many open files") == 1, err
    assert "out of system resource" not in err and "Traceback" not in err, err
