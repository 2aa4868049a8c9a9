"""Streaming inference (POST /predict/stream) and batches (POST /predict/batch)
over real sockets: curl streaming NDJSON in over h2c, SSE framing, results in
order or as they finish, a malformed line in the middle, backpressure that
stops a fast sender at the flow-control window, and batch manifests whose
results are fetched by path."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import h2.events
import httpx
import pytest

from rawserve.core.config import InferenceSettings
from rawserve.inference.app import create_app
from rawserve.inference.app.application import InferenceApp
from rawserve.inference.app.streaming import WINDOW
from tests.conftest import RunningServer, need, run_server
from tests.test_builtin_app import ROWS, wait_ready
from tests.test_model import SlowModel
from tests.test_server_http2 import RawH2


def ndjson(n: int, *, bad_at: int | None = None) -> bytes:
    out = []
    for i in range(n):
        if i == bad_at:
            out.append(b"this is not json")
        out.append(json.dumps({"inputs": [(i + j) % 17 for j in range(64)]}).encode())
    return b"\n".join(out) + b"\n"


@pytest.fixture(scope="module")
def srv() -> Iterator[tuple[RunningServer, InferenceApp]]:
    app = create_app(InferenceSettings())
    with run_server(app, tls=False) as s:
        wait_ready(s)
        yield s, app


def test_curl_streams_ten_thousand_lines_and_gets_ten_thousand_results_in_order(
    srv: tuple[RunningServer, InferenceApp],
) -> None:
    server, _ = srv
    curl = need("curl")
    body = ndjson(10_000)
    done = subprocess.run(
        [
            curl, "-sS", "--http2-prior-knowledge", "-X", "POST", "-T", "-",
            "-H", "content-type: application/x-ndjson",
            f"{server.http_url}/predict/stream",
        ],
        input=body,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    assert [x["index"] for x in lines] == list(range(10_000))
    assert all("prediction" in x and x["result"].startswith("/results/") for x in lines)
    # Equal inputs, equal answers: line i and i+17 carry the same row.
    assert lines[0]["result"] == lines[17]["result"]


def test_a_malformed_line_gets_an_error_line_and_the_stream_goes_on(
    srv: tuple[RunningServer, InferenceApp],
) -> None:
    server, _ = srv
    r = httpx.post(
        f"{server.http_url}/predict/stream",
        content=ndjson(5, bad_at=2) + b'{"inputs": [1, 2]}\n',
        headers={"content-type": "application/x-ndjson"},
        timeout=30,
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert [x["index"] for x in lines] == list(range(7))
    assert "not valid JSON" in lines[2]["error"]
    assert "64" in lines[6]["error"]  # wrong shape, said with the expected size
    assert all("prediction" in x for i, x in enumerate(lines) if i not in (2, 6))


def test_server_sent_events_frame_each_result(srv: tuple[RunningServer, InferenceApp]) -> None:
    server, _ = srv
    r = httpx.post(
        f"{server.http_url}/predict/stream",
        content=ndjson(3, bad_at=1),
        headers={"accept": "text/event-stream"},
        timeout=30,
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [block for block in r.text.split("\n\n") if block]
    assert len(events) == 4
    first = dict(line.split(": ", 1) for line in events[0].splitlines())
    assert first["event"] == "result" and first["id"] == "0"
    assert json.loads(first["data"])["index"] == 0
    bad = dict(line.split(": ", 1) for line in events[1].splitlines())
    assert bad["event"] == "error"


def test_unordered_results_carry_their_index() -> None:
    app = create_app(
        InferenceSettings(max_batch_size=1, cache_enabled=False), models={"digits": SlowModel(0.01)}
    )
    with run_server(app, tls=False) as server:
        wait_ready(server)
        r = httpx.post(
            f"{server.http_url}/predict/stream?ordered=false", content=ndjson(40), timeout=60
        )
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert sorted(x["index"] for x in lines) == list(range(40))


def test_a_fast_sender_is_stopped_by_flow_control_not_buffered() -> None:
    app = create_app(
        InferenceSettings(max_batch_size=1, cache_enabled=False), models={"digits": SlowModel(0.2)}
    )
    with run_server(app, tls=False) as server:
        wait_ready(server)
        c = RawH2(server.http_port)
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(
            sid,
            [(":method", "POST"), (":path", "/predict/stream"), (":scheme", "http"),
             (":authority", "localhost")],
        )  # fmt: skip
        c.flush()
        line = json.dumps({"inputs": ROWS[0]}).encode() + b"\n"
        sent = 0
        stalled = False
        # Bounded: 4 MB of lines is far past any window the server grants.
        deadline = time.monotonic() + 30
        while sent < 4 * 1024 * 1024 and time.monotonic() < deadline:
            window = c.conn.local_flow_control_window(sid)
            if window < len(line):
                # Let the server answer (and maybe open the window) for a moment.
                c.sock.settimeout(0.5)
                try:
                    data = c.sock.recv(65536)
                except TimeoutError:
                    data = b""
                for ev in c.conn.receive_data(data) if data else []:
                    if isinstance(ev, h2.events.DataReceived):
                        c.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                c.flush()
                if c.conn.local_flow_control_window(sid) < len(line):
                    stalled = True
                    break
                continue
            c.conn.send_data(sid, line)
            c.flush()
            sent += len(line)
        assert stalled, f"the server kept taking the body ({sent} bytes)"
        limits = server.server.config.limits
        # What the server let in: its stream window plus the lines in flight.
        assert sent <= limits.initial_window_bytes + limits.connection_window_bytes
        assert app.engine.stats("digits")["queued"] <= WINDOW
        c.close()


# -- batches -------------------------------------------------------------------------


def test_a_batch_answers_with_a_manifest_and_each_result_is_fetched_by_path(
    srv: tuple[RunningServer, InferenceApp],
) -> None:
    server, _ = srv
    items = [[(i * 3 + j) % 17 for j in range(64)] for i in range(8)]
    r = httpx.post(f"{server.http_url}/predict/batch", json={"items": items}, timeout=30)
    assert r.status_code == 202, r.text
    paths = r.json()["results"]
    assert len(paths) == 8 and all(p.startswith("/results/") for p in paths)
    for path, row in zip(paths, items, strict=True):
        got = httpx.get(server.http_url + path, timeout=30)
        assert got.status_code == 200, got.text
        direct = httpx.post(f"{server.http_url}/predict", json={"inputs": row}, timeout=30)
        assert got.json() == direct.json()
        assert direct.headers["cache-status"].startswith("rawserve; hit")


def test_a_result_still_being_computed_is_waited_for_not_404() -> None:
    app = create_app(InferenceSettings(max_batch_size=1), models={"digits": SlowModel(0.3)})
    with run_server(app, tls=False) as server:
        wait_ready(server)
        r = httpx.post(
            f"{server.http_url}/predict/batch", json={"items": [ROWS[0], ROWS[1]]}, timeout=30
        )
        assert r.status_code == 202
        last = r.json()["results"][-1]
        got = httpx.get(server.http_url + last, timeout=30)
        assert got.status_code == 200 and "prediction" in got.json()


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"items": []}, 422, "items"),
        ({"rows": [[1]]}, 422, "items"),
        ({"items": [[1, 2, 3]]}, 422, "items[0]"),
        ({"items": [[0] * 64] * 1025}, 413, "at most 1024"),
    ],
)
def test_a_bad_batch_is_refused_whole(
    srv: tuple[RunningServer, InferenceApp], payload: object, status: int, words: str
) -> None:
    server, _ = srv
    r = httpx.post(f"{server.http_url}/predict/batch", json=payload, timeout=30)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_a_batch_needs_the_cache() -> None:
    app = create_app(InferenceSettings(cache_enabled=False))
    with run_server(app, tls=False) as server:
        wait_ready(server)
        r = httpx.post(f"{server.http_url}/predict/batch", json={"items": [ROWS[0]]})
        assert r.status_code == 409 and "--no-cache" in r.json()["detail"]
