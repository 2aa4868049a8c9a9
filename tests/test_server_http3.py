"""HTTP/3 end to end: a real rawserve on 127.0.0.1 over UDP, driven by
aioquic's client (tests/h3client.py) and by ngtcp2's gtlsclient. Waits are
on conditions, bounded only to fail on a hang; nothing asserts on time."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import pytest
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import ErrorCode, encode_frame
from aioquic.tls import SessionTicket

from rawserve import FastAPI, Request
from rawserve.core.config import InferenceSettings
from rawserve.inference.app import create_app
from rawserve.protocols.http3.h3 import PRIORITY_UPDATE_REQUEST
from rawserve.responses import PlainTextResponse, StreamingResponse
from rawserve.serving.quic import QUICConnection
from tests.conftest import RunningServer, need, run_server
from tests.h3client import H3Client, client_configuration, h3_connect
from tests.test_builtin_app import ROWS, wait_ready
from tests.test_model import GatedModel, SlowModel

CHUNK = 64 * 1024
# The result cache (when this tree has it) would answer repeated inputs
# without running the model; these tests count runs.
NO_CACHE: dict[str, Any] = (
    {"cache_enabled": False}
    if "cache_enabled" in {f.name for f in fields(InferenceSettings)}
    else {}
)


def slow_app(latency_s: float) -> Any:
    settings = InferenceSettings(max_batch_size=1, max_batch_delay_ms=0.0, **NO_CACHE)
    return create_app(settings, models={"digits": SlowModel(latency_s)})


def make_app() -> FastAPI:
    app = FastAPI()
    app.state.started = 0
    app.state.release = None

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"hello": "h3"}

    @app.post("/echo")
    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(await request.body())

    @app.get("/stream")
    async def stream(n: int = 10, size: int = 10) -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(n):
                yield (b"%d" % (i % 10)) * size

        return StreamingResponse(gen(), media_type="text/plain")

    @app.get("/slow")
    async def slow(size: int = 0) -> PlainTextResponse:
        app.state.started += 1
        await asyncio.sleep(0.2)
        return PlainTextResponse(b"s" * size)

    @app.post("/ignore")
    async def ignore() -> dict[str, bool]:
        # Never reads the body: the client must be held to the window.
        app.state.started += 1
        await asyncio.sleep(3600)
        return {}

    return app


def h3(srv: RunningServer, fn: Callable[[H3Client], Any], **kwargs: Any) -> Any:
    async def main() -> Any:
        async with h3_connect(srv.server.quic_port or 0, **kwargs) as client:
            return await fn(client)

    return asyncio.run(main())


def quic_connections(srv: RunningServer) -> list[QUICConnection]:
    return [c for c in list(srv.server.connections) if isinstance(c, QUICConnection)]


@pytest.fixture(scope="module")
def srv() -> Any:
    with run_server(make_app(), quic_port=None) as s:
        yield s


def test_get(srv: RunningServer) -> None:
    r = h3(srv, lambda c: c.request("GET", "/"))
    assert r.status == 200
    assert json.loads(r.body) == {"hello": "h3"}
    assert r.header(b"server") == b"rawserve"
    assert r.header(b"alt-svc") is None  # already on HTTP/3


def test_post_with_a_body(srv: RunningServer) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, several windows' worth
    r = h3(
        srv,
        lambda c: c.request(
            "POST", "/echo", body=body, headers=[(b"content-length", b"%d" % len(body))]
        ),
    )
    assert r.status == 200 and r.body == body


def test_a_streaming_response(srv: RunningServer) -> None:
    r = h3(srv, lambda c: c.request("GET", "/stream?n=50&size=1000"))
    assert r.status == 200
    assert r.body == b"".join((b"%d" % (i % 10)) * 1000 for i in range(50))


def test_sixteen_concurrent_streams(srv: RunningServer) -> None:
    async def run(c: H3Client) -> list[Any]:
        return await asyncio.gather(
            *[c.request("GET", f"/stream?n=3&size={i + 1}") for i in range(16)]
        )

    responses = h3(srv, run)
    assert [r.status for r in responses] == [200] * 16
    assert [len(r.body) for r in responses] == [3 * (i + 1) for i in range(16)]


def test_alt_svc_on_tls_responses_names_the_udp_port(srv: RunningServer) -> None:
    with httpx.Client(verify=False) as client:
        r = client.get(srv.https_url + "/")
    assert r.headers["alt-svc"] == f'h3=":{srv.server.quic_port}"; ma=86400'
    # Cleartext responses do not advertise it.
    assert "alt-svc" not in httpx.get(srv.http_url + "/").headers


def test_no_alt_svc_with_quic_port_zero() -> None:
    with run_server(make_app(), quic_port=0) as s:
        assert s.server.quic_port is None
        with httpx.Client(verify=False) as client:
            assert "alt-svc" not in client.get(s.https_url + "/").headers


def test_retry_round_trip() -> None:
    with run_server(make_app(), quic_port=None, quic_retry=True) as s:

        async def run(c: H3Client) -> Any:
            r = await c.request("GET", "/")
            return r, c._quic._retry_source_connection_id

        r, retry_scid = h3(s, run)
        assert r.status == 200
        assert retry_scid is not None  # the client went through a Retry

        # A token the server did not issue: closed with INVALID_TOKEN at once,
        # not left to time out.
        async def forged() -> None:
            cfg = client_configuration(token=b"not a token the server issued")
            async with h3_connect(s.server.quic_port or 0, cfg):
                pass

        with pytest.raises(ConnectionError):
            asyncio.run(asyncio.wait_for(forged(), 20))


def test_session_resumption_and_0rtt(srv: RunningServer) -> None:
    tickets: list[SessionTicket] = []

    async def first(c: H3Client) -> Any:
        r = await c.request("GET", "/")
        # The ticket arrives after the handshake; one more round trip brings it.
        for _ in range(100):
            if tickets:
                break
            await c.request("GET", "/")
        return r

    assert h3(srv, first, session_ticket_handler=tickets.append).status == 200
    assert tickets and tickets[0].max_early_data_size

    async def resumed(c: H3Client) -> Any:
        r = await c.request("GET", "/")
        assert c.handshake is not None
        return r, c.handshake.session_resumed

    r, was_resumed = h3(srv, resumed, configuration=client_configuration(session_ticket=tickets[0]))
    assert r.status == 200 and was_resumed

    # 0-RTT: requests sent before the handshake completes ride in early data.
    tickets.clear()
    h3(srv, first, session_ticket_handler=tickets.append)

    async def early(c: H3Client) -> Any:
        get = c.start("GET", "/")
        body = b"x"
        post = c.start("POST", "/echo", body=body, headers=[(b"content-length", b"1")])
        done = await asyncio.wait_for(asyncio.gather(c.done[get], c.done[post]), 30)
        assert c.handshake is not None
        return done, c.handshake.early_data_accepted

    (got, posted), accepted = h3(
        srv,
        early,
        configuration=client_configuration(session_ticket=tickets[0]),
        wait_connected=False,
    )
    assert accepted
    assert got.status == 200
    assert posted.status == 425  # Too Early: a POST may not ride in replayable data


def test_the_seed_app_over_http3() -> None:
    from tests.apps.seed_app import app

    with run_server(app, quic_port=None) as s:
        boundary = b"xyz"
        payload = b"\x01\x02\x03"
        body = (
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + payload + b"\r\n--xyz--\r\n"
        )

        async def run(c: H3Client) -> Any:
            post = await c.request(
                "POST",
                "/predict",
                body=body,
                headers=[
                    (b"content-type", b"multipart/form-data; boundary=" + boundary),
                    (b"content-length", b"%d" % len(body)),
                ],
            )
            stream = await c.request("GET", "/stream")
            return post, stream

        post, stream = h3(s, run)
        assert post.status == 200
        assert json.loads(post.body) == {"filename": "a.bin", "size": 3, "prediction": 6}
        assert stream.body == b"".join(f"chunk {i}\n".encode() for i in range(10))


def test_the_builtin_app_predict_and_v2_over_http3() -> None:
    app = create_app(InferenceSettings(max_batch_delay_ms=1.0, **NO_CACHE))
    with run_server(app, quic_port=None) as s:
        wait_ready(s)
        body = json.dumps({"inputs": ROWS[0]}).encode()
        v2 = json.dumps(
            {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": ROWS[0]}]}
        ).encode()

        async def run(c: H3Client) -> Any:
            json_head = [(b"content-type", b"application/json")]
            p = await c.request(
                "POST",
                "/predict",
                body=body,
                headers=[*json_head, (b"content-length", b"%d" % len(body))],
            )
            meta = await c.request("GET", "/v2/models/digits")
            infer = await c.request(
                "POST",
                "/v2/models/digits/infer",
                body=v2,
                headers=[*json_head, (b"content-length", b"%d" % len(v2))],
            )
            return p, meta, infer

        p, meta, infer = h3(s, run)
        with httpx.Client(http2=True, verify=False) as client:
            h2 = client.post(
                s.https_url + "/predict", content=body, headers={"content-type": "application/json"}
            )
        assert p.status == 200 and json.loads(p.body) == h2.json()
        assert meta.status == 200 and json.loads(meta.body)["name"] == "digits"
        assert infer.status == 200, infer.body
        assert json.loads(infer.body)["outputs"]


def test_a_client_that_stops_reading_holds_the_server_at_the_high_water_mark() -> None:
    app = make_app()
    with run_server(app, quic_port=None) as s:
        limit = s.server.config.limits.write_buffer_bytes

        async def run(c: H3Client) -> Any:
            c.deaf = True  # nothing the server sends is read, or acknowledged
            sid = c.start("GET", f"/stream?n=2000&size={CHUNK}")  # 128 MiB

            def blocked() -> bool:
                conns = quic_connections(s)
                return bool(conns) and sid in conns[0]._write_waiters

            for _ in range(2000):
                if s.call(blocked):
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError("the handler never waited to write")

            def measure() -> tuple[int, int, int]:
                conn = quic_connections(s)[0]
                adapter = conn.adapter
                qs = adapter._quic._streams[sid]
                return (
                    adapter.buffered(sid),
                    qs.sender._buffer_stop - qs.sender._buffer_start,
                    qs.max_stream_data_remote,
                )

            return s.call(measure)

        queued, in_quic, window = h3(s, run)
        assert queued <= limit + CHUNK
        assert in_quic <= window  # QUIC keeps at most what the client's window allows


def test_a_handler_that_does_not_read_stops_the_clients_sending() -> None:
    app = make_app()
    window = 64 * 1024
    with run_server(app, quic_port=None, limit_initial_window_bytes=window) as s:

        async def run(c: H3Client) -> Any:
            size = 4 * 1024 * 1024
            sid = c.start(
                "POST", "/ignore", body=b"x" * size, headers=[(b"content-length", b"%d" % size)]
            )
            qs = c._quic._streams[sid]
            for _ in range(2000):
                # The client has sent all the server's window lets it.
                if app.state.started and qs.sender.highest_offset >= qs.max_stream_data_remote:
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError("the client never filled the window")
            # Another round trip: the server still gives no credit.
            await c.request("GET", "/")
            return qs.max_stream_data_remote, qs.sender.highest_offset

        limit, sent = h3(s, run)
        # The window moved by the request head's framing at most, never by
        # body bytes nobody read.
        assert window <= limit < window + 1024
        assert sent <= limit


def test_stop_sending_cancels_queued_inference() -> None:
    app = slow_app(0.3)
    with run_server(app, quic_port=None) as s:
        wait_ready(s)
        bodies = [json.dumps({"inputs": ROWS[i]}).encode() for i in (0, 1)]
        heads = [
            [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(b))]
            for b in bodies
        ]

        async def run(c: H3Client) -> Any:
            running = c.start("POST", "/predict", body=bodies[0], headers=heads[0])
            await wait_async(lambda: app.engine.stats("digits")["busy"] == 1)
            queued = c.start("POST", "/predict", body=bodies[1], headers=heads[1])
            await wait_async(lambda: app.engine.stats("digits")["queued"] == 1)
            c._quic.stop_stream(queued, ErrorCode.H3_REQUEST_CANCELLED)
            c._quic.reset_stream(queued, ErrorCode.H3_REQUEST_CANCELLED)
            c.transmit()
            first = await asyncio.wait_for(c.done[running], 30)
            await wait_async(lambda: app.engine.stats("digits")["cancellations"] == 1)
            return first

        first = h3(s, run)
        assert first.status == 200
        stats = app.engine.stats("digits")
        assert stats["cancellations"] == 1
        assert stats["items_run"] == 1  # the stopped request never ran


def test_goaway_at_shutdown_lets_the_in_flight_request_finish() -> None:
    app = make_app()
    size = 4 * 1024 * 1024  # more than the client's windows: needs its ACKs and credit
    with run_server(app, quic_port=None) as s:

        async def run(c: H3Client) -> Any:
            sid = c.start("GET", f"/slow?size={size}")
            await wait_async(lambda: app.state.started == 1)
            s.begin_shutdown()
            await wait_async(lambda: any(q._shutting_down for q in quic_connections(s)))
            late = c.start("GET", "/")  # after GOAWAY: not processed
            r = await asyncio.wait_for(c.done[sid], 30)
            rejected = await asyncio.wait_for(c.done[late], 30)
            await asyncio.wait_for(c.terminated.wait(), 30)
            return r, rejected, c.close_code, c.close_reason

        r, rejected, code, reason = h3(s, run)
        assert r.status == 200 and r.body == b"s" * size
        assert rejected.reset == ErrorCode.H3_REQUEST_REJECTED
        assert app.state.started == 1
        # Closed by the graceful path, not by the graceful timeout's abort.
        assert (code, reason) == (ErrorCode.H3_NO_ERROR, "")


def test_datagrams_reach_the_connection_by_a_connection_id_issued_later(
    srv: RunningServer,
) -> None:
    async def run(c: H3Client) -> Any:
        first = await c.request("GET", "/")
        before = c._quic._peer_cid.cid
        c._quic.change_connection_id()  # to one the server issued after the handshake
        after = c._quic._peer_cid.cid
        second = await c.request("GET", "/")
        return first, second, before, after

    first, second, before, after = h3(srv, run)
    assert before != after
    assert first.status == second.status == 200


def test_junk_and_unknown_versions_do_not_disturb_the_listener(srv: RunningServer) -> None:
    import os
    import socket

    port = srv.server.quic_port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        for junk in (b"", b"\x00", os.urandom(1200), b"\x40" + os.urandom(50)):
            sock.sendto(junk, ("127.0.0.1", port))
        # A long-header Initial of an unknown version gets Version Negotiation.
        dcid, scid = os.urandom(8), os.urandom(8)
        initial = (b"\xc0" + b"\x0a\x0a\x0a\x0a" + bytes([8]) + dcid + bytes([8]) + scid).ljust(
            1200, b"\x00"
        )
        sock.sendto(initial, ("127.0.0.1", port))
        answer, _ = sock.recvfrom(2048)
    assert answer[1:5] == b"\x00\x00\x00\x00"  # version 0: negotiation
    assert answer[6 : 6 + 8] == scid  # addressed to the client's ID
    assert h3(srv, lambda c: c.request("GET", "/")).status == 200


def test_the_cli_serves_three_versions_on_the_ports_its_banner_names(tmp_path: Path) -> None:
    import os
    import socket
    import sys

    from tests.conftest import ROOT

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        tls_port = int(probe.getsockname()[1])
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "rawserve", "tests.apps.seed_app:app",
            "--host", "127.0.0.1", "--http-port", "-1", "--port", str(tls_port),
            "--certs-dir", str(ROOT / "certs"),
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        banner = []
        for line in proc.stderr:
            banner.append(line.strip())
            if "(HTTP/3, UDP)" in line:
                break
        assert f"https://127.0.0.1:{tls_port}  (HTTP/3, UDP)" in banner, banner
        with httpx.Client(http2=True, verify=False) as client:
            r = client.get(f"https://127.0.0.1:{tls_port}/stream")
        assert r.http_version == "HTTP/2"
        assert r.headers["alt-svc"] == f'h3=":{tls_port}"; ma=86400'

        async def get() -> Any:
            async with h3_connect(tls_port) as c:
                return await c.request("GET", "/stream")

        r3 = asyncio.run(get())
        assert r3.status == 200 and r3.body.decode() == r.text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_a_long_connection_keeps_no_state_for_finished_streams() -> None:
    app = make_app()
    with run_server(app, quic_port=None) as s:
        body = b"x" * 3000
        head = [(b"content-length", b"3000")]

        async def run(c: H3Client) -> Any:
            for _ in range(6):
                batch = [c.request("POST", "/echo", body=body, headers=head) for _ in range(50)]
                assert {r.status for r in await asyncio.gather(*batch)} == {200}
                c.start("GET", "/", headers=[(b"connection", b"x")])  # rejected
                cut = c.start(
                    "POST", "/echo", body=b"x", headers=[(b"content-length", b"9")], end=False
                )
                c._quic.reset_stream(cut, ErrorCode.H3_REQUEST_CANCELLED)
                c.transmit()
            assert (await c.request("GET", "/")).status == 200

            def state() -> dict[str, int]:
                conn = quic_connections(s)[0]
                adapter = conn.adapter
                assert adapter._h3 is not None
                return {
                    "drivers": len(conn.streams),
                    "streams": len(adapter._streams),
                    "draining": len(adapter._sender.draining),
                    "h3 request streams": len([i for i in adapter._h3._stream if i % 4 == 0]),
                }

            # Settled: every count back to zero (a hang fails the wait).
            await wait_async(lambda: not any(s.call(state).values()))
            return s.call(state), len(quic_connections(s)[0].adapter._quic._credited)

        state, credited = h3(s, run)
        assert state == {"drivers": 0, "streams": 0, "draining": 0, "h3 request streams": 0}
        assert credited <= 2 * s.server.config.limits.max_concurrent_streams


def test_http3_alone_without_a_tls_listener() -> None:
    with run_server(make_app(), tls=False, quic_port=free_udp_port()) as s:
        assert s.server.https_port is None and s.server.quic_port
        assert s.server.urls()[-1].endswith("(HTTP/3, UDP)")
        assert h3(s, lambda c: c.request("GET", "/")).status == 200


def test_priority_update_moves_a_request_queued_for_inference() -> None:
    model = GatedModel(0.02)
    # No urgent lane: the test looks at the queue, which the lane would empty
    # at once (tests/test_engine.py covers the lane).
    settings = InferenceSettings(
        max_batch_size=1, max_batch_delay_ms=0.0, urgent_lane=False, **NO_CACHE
    )
    app = create_app(settings, models={"digits": model})
    with run_server(app, quic_port=None) as s:
        wait_ready(s)
        body = json.dumps({"inputs": ROWS[0]}).encode()
        head = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"priority", b"u=7"),
        ]

        async def run(c: H3Client) -> Any:
            # Distinct bodies: a result cache must not merge them.
            backlog = []
            for i in range(20):
                b = json.dumps({"inputs": ROWS[i % len(ROWS)], "n": i}).encode()
                h = [*head[:1], (b"content-length", b"%d" % len(b)), head[2]]
                backlog.append(c.start("POST", "/predict", body=b, headers=h))
            # One request holds the model at the gate, the other 19 queue.
            await wait_async(lambda: app.engine.stats("digits")["queued"] == 19)
            moved = backlog[-1]
            control = c.h3._local_control_stream_id
            payload = encode_uint_var(moved) + b"u=0"
            c._quic.send_stream_data(control, encode_frame(PRIORITY_UPDATE_REQUEST, payload))
            c.transmit()
            # Nothing runs while the gate is shut: the move is seen, not raced.
            await wait_async(lambda: app.engine.stats("digits")["queued_by_urgency"][0] == 1)
            model.gate.set()
            order: list[int] = []
            pending = {asyncio.ensure_future(c.done[sid]): sid for sid in backlog}
            while pending:
                finished, _ = await asyncio.wait(pending, timeout=30, return_when="FIRST_COMPLETED")
                assert finished, "responses stopped"
                for f in finished:
                    assert f.result().status == 200, f.result().body
                    order.append(pending.pop(f))
            return order, moved

        order, moved = h3(s, run)
        assert len(order) == 20
        # Sent last at u=7 it would finish last; moved to u=0 it runs as soon
        # as the batch holding the model ends (and is answered first or second).
        assert order.index(moved) <= 1, order


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ngtcp2_gtlsclient_gets_a_response(srv: RunningServer, tmp_path: Path) -> None:
    # A client nobody here built on aioquic (Debian's ngtcp2-client, GnuTLS).
    client = need("gtlsclient")
    port = str(srv.server.quic_port)
    result = subprocess.run(
        [
            client,
            "--exit-on-all-streams-close",
            "--quiet",
            f"--download={tmp_path}",
            "127.0.0.1",
            port,
            f"https://127.0.0.1:{port}/stream?n=100&size=1000",
            f"https://127.0.0.1:{port}/",
        ],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    assert json.loads((tmp_path / "index.html").read_bytes()) == {"hello": "h3"}
    streamed = (tmp_path / "stream?n=100&size=1000").read_bytes()
    assert streamed == b"".join((b"%d" % (i % 10)) * 1000 for i in range(100))


async def wait_async(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        await asyncio.sleep(0.005)


def test_batch_results_are_pushed_over_http3_and_equal_the_gets() -> None:
    app = create_app(InferenceSettings())
    items = [[(i * 7 + j) % 17 for j in range(64)] for i in range(5)]
    with run_server(app, quic_port=None) as s:
        wait_ready(s)
        body = json.dumps({"items": items}).encode()

        async def run(c: H3Client) -> Any:
            r = await c.request(
                "POST",
                "/predict/batch",
                body=body,
                headers=[
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                ],
            )
            pushed = await asyncio.wait_for(
                asyncio.gather(*[c.push_done[p] for p in list(c.push_done)]), 30
            )
            return r, dict(zip(list(c.promised.values()), pushed, strict=True))

        r, pushed = h3(s, run)
        assert r.status == 202
        paths = json.loads(r.body)["results"]
        assert sorted(pushed) == sorted(paths)  # one push per result
        for path in paths:
            got = httpx.get(s.http_url + path)
            assert pushed[path].status == 200 and json.loads(pushed[path].body) == got.json()


# -- abuse on one connection, another client served meanwhile (issue 15) --------


def _flood_streams(c: H3Client) -> None:
    # More request streams than the server's MAX_STREAMS allows.
    c._quic._remote_max_streams_bidi = 10_000
    for _ in range(150):
        c.start("POST", "/ignore", body=b"x", end=False)


def _flood_priority_updates(c: H3Client) -> None:
    control = c.h3._local_control_stream_id
    assert control is not None
    frame = encode_frame(PRIORITY_UPDATE_REQUEST, encode_uint_var(400) + b"u=1")
    c._quic.send_stream_data(control, frame * 5000)
    c.transmit()


def _bad_qpack_capacity(c: H3Client) -> None:
    encoder = c.h3._local_encoder_stream_id
    assert encoder is not None
    # Set Dynamic Table Capacity to 2**20, beyond the 4096 the server allows.
    c._quic.send_stream_data(encoder, b"\x3f\xe1\xff\x3f")
    c.transmit()


def _second_control_stream(c: H3Client) -> None:
    sid = c._quic.get_next_available_stream_id(is_unidirectional=True)
    c._quic.send_stream_data(sid, encode_uint_var(0))
    c.transmit()


@pytest.mark.parametrize(
    ("abuse", "code"),
    [
        (_flood_streams, 0x4),  # QUIC STREAM_LIMIT_ERROR
        (_flood_priority_updates, ErrorCode.H3_EXCESSIVE_LOAD),
        (_bad_qpack_capacity, ErrorCode.QPACK_ENCODER_STREAM_ERROR),
        (_second_control_stream, ErrorCode.H3_STREAM_CREATION_ERROR),
    ],
)
def test_abuse_closes_its_connection_with_the_protocol_error_and_others_are_served(
    abuse: Callable[[H3Client], None], code: int
) -> None:
    with run_server(make_app(), quic_port=None) as s:

        async def main() -> tuple[int | None, list[int], int]:
            port = s.server.quic_port or 0
            async with h3_connect(port) as other, h3_connect(port) as abuser:
                abuse(abuser)
                statuses = [(await other.request("GET", "/")).status for _ in range(5)]
                await asyncio.wait_for(abuser.terminated.wait(), 30)
                statuses.append((await other.request("GET", "/")).status)
                for _ in range(2000):  # the abuser's connection is dropped
                    if len(s.call(lambda: quic_connections(s))) == 1:
                        break
                    await asyncio.sleep(0.005)
                return abuser.close_code, statuses, len(s.call(lambda: quic_connections(s)))

        close_code, statuses, open_connections = asyncio.run(main())
        assert close_code == code
        assert statuses == [200] * 6
        assert open_connections == 1  # only the other client's


def test_unknown_uni_streams_hold_nothing_and_others_are_served() -> None:
    with run_server(make_app(), quic_port=None) as s:

        async def main() -> tuple[list[int], tuple[int, int], bool]:
            port = s.server.quic_port or 0
            async with h3_connect(port) as other, h3_connect(port) as abuser:
                statuses = []
                for round_ in range(5):
                    for i in range(100):
                        sid = abuser._quic.get_next_available_stream_id(is_unidirectional=True)
                        kind = 0x21 + 0x1F * (round_ * 100 + i)  # reserved types
                        abuser._quic.send_stream_data(
                            sid, encode_uint_var(kind) + b"x" * 1000, end_stream=i % 2 == 0
                        )
                    abuser.transmit()
                    statuses.append((await other.request("GET", "/")).status)
                # The abuser's connection still works too.
                statuses.append((await abuser.request("GET", "/")).status)

                def held() -> tuple[int, int]:
                    adapters = [c.adapter for c in quic_connections(s)]
                    return (
                        max(len(a._h3._stream) for a in adapters if a._h3 is not None),
                        max(len(a._stopped_uni) for a in adapters),
                    )

                return statuses, s.call(held), abuser.terminated.is_set()

        statuses, (h3_streams, stopped), terminated = asyncio.run(main())
        assert statuses == [200] * 6
        assert not terminated
        # aioquic's stream records: control, QPACK streams and the odd request
        # not yet forgotten; the stopped set stays within QUIC's uni limit (128).
        assert h3_streams <= 16
        assert stopped <= 128


def test_a_client_that_never_reads_many_streams_is_bounded_and_others_are_served() -> None:
    with run_server(make_app(), quic_port=None) as s:
        limits = s.server.config.limits

        async def main() -> tuple[list[int], int, int, int]:
            port = s.server.quic_port or 0
            async with h3_connect(port) as other, h3_connect(port) as deaf:
                deaf.deaf = True
                sids = [deaf.start("GET", f"/stream?n=2000&size={CHUNK}") for _ in range(16)]

                def waiting() -> int:
                    return sum(len(c._write_waiters) for c in quic_connections(s))

                for _ in range(2000):
                    if s.call(waiting) == len(sids):
                        break
                    await asyncio.sleep(0.005)
                else:
                    raise AssertionError("the handlers never waited to write")
                statuses = [(await other.request("GET", "/")).status for _ in range(5)]
                big = await other.request("GET", f"/stream?n=64&size={CHUNK}")
                statuses.append(big.status if len(big.body) == 64 * CHUNK else 0)

                def measure() -> tuple[int, int]:
                    conn = next(c for c in quic_connections(s) if c._write_waiters)
                    adapter = conn.adapter
                    in_quic = 0
                    for sid in sids:
                        qs = adapter._quic._streams[sid]
                        in_quic += qs.sender._buffer_stop - qs.sender._buffer_start
                    return sum(adapter.buffered(sid) for sid in sids), in_quic

                queued, in_quic = s.call(measure)
                return statuses, queued, in_quic, len(sids)

        statuses, queued, in_quic, n = asyncio.run(main())
        assert statuses == [200] * 6
        assert queued <= n * (limits.write_buffer_bytes + CHUNK)
        # QUIC holds no more than the deaf client's connection window (aioquic's
        # default MAX_DATA, 1 MiB, never raised since it reads nothing).
        assert in_quic <= client_configuration().max_data
