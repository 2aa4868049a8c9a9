"""The built-in inference app end to end: V2 protocol, /predict, health,
metrics, priorities from the protocols, cancellation, admission and deadlines,
over real sockets with httpx and the h2 library as clients."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rawserve.core.config import InferenceSettings
from rawserve.inference.app import create_app
from rawserve.inference.model import Model, bundled_metadata, load_bundled
from tests.conftest import RunningServer, run_server
from tests.test_model import GatedModel, SlowModel
from tests.test_server_http2 import RawH2

SAMPLES = bundled_metadata()["samples"]
ROWS: list[list[int]] = SAMPLES["inputs"]
LABELS: list[int] = [int(x) for x in SAMPLES["labels"]]


def wait_ready(srv: RunningServer, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{srv.http_url}/readyz").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError("server never became ready")


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    # The cache is off here: these tests are about the way through the engine
    # (tests/test_result_cache_http.py covers answers from the cache).
    with run_server(
        create_app(InferenceSettings(max_batch_delay_ms=1.0, cache_enabled=False))
    ) as s:
        wait_ready(s)
        yield s


def metric(srv: RunningServer, name: str, **labels: str) -> float:
    text = httpx.get(f"{srv.http_url}/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# -- health and metadata ---------------------------------------------------------


def test_health_and_server_metadata(srv: RunningServer) -> None:
    assert httpx.get(f"{srv.http_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{srv.http_url}/readyz").json() == {"ready": True, "models": ["digits"]}
    assert httpx.get(f"{srv.http_url}/v2/health/live").status_code == 200
    assert httpx.get(f"{srv.http_url}/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(f"{srv.http_url}/v2").json()
    assert meta["name"] == "rawserve" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_matches_the_model(srv: RunningServer) -> None:
    model = Model(load_bundled())
    for path in ("/v2/models/digits", "/v2/models/digits/versions/1"):
        meta = httpx.get(srv.http_url + path).json()
        assert meta == model.metadata()
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
        assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {
            "label": "INT64",
            "probabilities": "FP32",
        }
    assert httpx.get(f"{srv.http_url}/v2/models/digits/ready").json() == {
        "name": "digits",
        "ready": True,
    }


def test_unknown_model_and_version_are_404_with_v2_error(srv: RunningServer) -> None:
    for path in ("/v2/models/nope", "/v2/models/digits/versions/9", "/v2/models/nope/ready"):
        r = httpx.get(srv.http_url + path)
        assert r.status_code == 404 and "error" in r.json(), path
    r = httpx.post(f"{srv.http_url}/v2/models/nope/infer", json={"inputs": []})
    assert r.status_code == 404 and "nope" in r.json()["error"]


# -- V2 inference ----------------------------------------------------------------


def v2_json_request(rows: list[list[int]], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [len(rows), 64],
                "data": [v for row in rows for v in row],
            }
        ],
        **extra,
    }


@pytest.mark.parametrize("http2", [False, True])
def test_v2_json_round_trip(srv: RunningServer, http2: bool) -> None:
    with httpx.Client(http2=http2, verify=False) as client:
        url = (srv.https_url if http2 else srv.http_url) + "/v2/models/digits/infer"
        r = client.post(url, json=v2_json_request(ROWS[:4], id="req-1"))
        assert r.status_code == 200, r.text
        assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        body = r.json()
        assert body["model_name"] == "digits" and body["model_version"] == "1"
        assert body["id"] == "req-1"
        out = {o["name"]: o for o in body["outputs"]}
        assert out["label"]["datatype"] == "INT64" and out["label"]["shape"] == [4]
        assert out["label"]["data"] == LABELS[:4]
        assert out["probabilities"]["datatype"] == "FP32"
        assert out["probabilities"]["shape"] == [4, 10]
        assert "queue;dur=" in r.headers["server-timing"]
        assert "infer;dur=" in r.headers["server-timing"]


def test_v2_requested_outputs_only(srv: RunningServer) -> None:
    r = httpx.post(
        f"{srv.http_url}/v2/models/digits/infer",
        json=v2_json_request(ROWS[:1], outputs=[{"name": "label"}]),
    )
    assert [o["name"] for o in r.json()["outputs"]] == ["label"]


def test_v2_binary_tensors_round_trip(srv: RunningServer) -> None:
    """Triton's binary tensor extension: FP32 in as raw bytes, INT64 and FP32
    out as raw bytes after a JSON header of Inference-Header-Content-Length."""
    x = np.asarray(ROWS[:3], dtype=np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [3, 64],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    r = httpx.post(
        f"{srv.http_url}/v2/models/digits/infer",
        content=header + x.tobytes(),
        headers={
            "inference-header-content-length": str(len(header)),
            "content-type": "application/octet-stream",
        },
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    meta = json.loads(r.content[:n])
    raw = r.content[n:]
    arrays = {}
    for out in meta["outputs"]:
        size = out["parameters"]["binary_data_size"]
        dtype = {"INT64": "<i8", "FP32": "<f4"}[out["datatype"]]
        arrays[out["name"]] = np.frombuffer(raw[:size], dtype=dtype).reshape(out["shape"])
        raw = raw[size:]
    assert raw == b""
    assert arrays["label"].tolist() == LABELS[:3]
    assert arrays["probabilities"].shape == (3, 10)
    np.testing.assert_allclose(arrays["probabilities"].sum(axis=1), 1.0, rtol=1e-4)


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 63], "data": [0] * 63}]},
            "input",
        ),
        (
            {
                "inputs": [
                    {"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}
                ]
            },
            "pixels",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "datatype": "INT64", "shape": [1, 64], "data": [0] * 64}
                ]
            },
            "input",
        ),
        (
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0] * 10}]},
            "input",
        ),
        ({"inputs": []}, "input"),
        (
            {
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}
                ],
                "outputs": [{"name": "nope"}],
            },
            "nope",
        ),
    ],
)
def test_v2_bad_tensors_get_400_naming_the_input(
    srv: RunningServer, payload: dict[str, Any], needle: str
) -> None:
    r = httpx.post(f"{srv.http_url}/v2/models/digits/infer", json=payload)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]


def test_v2_invalid_json_is_400(srv: RunningServer) -> None:
    r = httpx.post(
        f"{srv.http_url}/v2/models/digits/infer",
        content=b"{nope",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "error" in r.json()


# -- /predict --------------------------------------------------------------------


def test_predict_json_one_row_and_rows(srv: RunningServer) -> None:
    r = httpx.post(f"{srv.http_url}/predict", json={"inputs": ROWS[0]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prediction"] == LABELS[0] and body["model"] == "digits"
    assert 0 < body["confidence"] <= 1
    assert "infer;dur=" in r.headers["server-timing"]
    r = httpx.post(f"{srv.http_url}/predict", json={"inputs": ROWS[:5]})
    assert [p["prediction"] for p in r.json()["predictions"]] == LABELS[:5]


def test_predict_npy_upload(srv: RunningServer) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(ROWS[2], dtype=np.float32))
    r = httpx.post(
        f"{srv.http_url}/predict",
        files={"file": ("digit.npy", buf.getvalue(), "application/octet-stream")},
    )
    assert r.status_code == 200, r.text
    assert r.json()["prediction"] == LABELS[2]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"json": {"inputs": [1, 2, 3]}}, "input"),  # wrong shape: names input and expected
        ({"files": {"file": ("nan.npy", b"NAN", "application/octet-stream")}}, "NaN"),
        ({"json": {"pixels": [0] * 64}}, "inputs"),
        ({"json": {"inputs": "abc"}}, "inputs"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, "JSON"),
        ({"files": {"file": ("x.npy", b"not an npy file", "application/octet-stream")}}, "npy"),
    ],
)
def test_predict_bad_input_gets_422(
    srv: RunningServer, kwargs: dict[str, Any], needle: str
) -> None:
    if kwargs.get("files", {}).get("file", ("",))[0] == "nan.npy":
        buf = io.BytesIO()
        np.save(buf, np.full(64, np.nan, dtype=np.float32))  # JSON cannot carry NaN; .npy can
        kwargs = {"files": {"file": ("nan.npy", buf.getvalue(), "application/octet-stream")}}
    r = httpx.post(f"{srv.http_url}/predict", **kwargs)
    assert r.status_code == 422, r.text
    assert needle in json.dumps(r.json()["detail"])
    assert httpx.get(f"{srv.http_url}/healthz").status_code == 200


def test_predict_wrong_shape_names_the_expected_shape(srv: RunningServer) -> None:
    r = httpx.post(f"{srv.http_url}/predict", json={"inputs": [1, 2, 3]})
    detail = r.json()["detail"]
    assert "'input'" in detail and "[1, 3]" in detail and "[-1, 64]" in detail


def test_metrics_show_requests_queues_and_batches(srv: RunningServer) -> None:
    httpx.post(f"{srv.http_url}/predict", json={"inputs": ROWS[0]})
    text = httpx.get(f"{srv.http_url}/metrics").text
    families = {f.name for f in text_string_to_metric_families(text)}
    for name in (
        "rawserve_requests",
        "rawserve_request_seconds",
        "rawserve_queue_depth",
        "rawserve_queue_wait_seconds",
        "rawserve_batch_size",
        "rawserve_inference_seconds",
        "rawserve_rejections",
        "rawserve_cancellations",
        "rawserve_validation_errors",
    ):
        assert name in families, name
    assert metric(srv, "rawserve_requests_total", route="/predict", status="200") >= 1
    assert metric(srv, "rawserve_batch_size_count", model="digits") >= 1


def test_concurrent_requests_are_batched(srv: RunningServer) -> None:
    before = metric(srv, "rawserve_batch_size_count", model="digits")
    items_before = metric(srv, "rawserve_batch_size_sum", model="digits")

    async def burst() -> list[int]:
        # One HTTP/2 connection, 48 concurrent streams (an async client: the
        # sync one is not safe to share between threads over HTTP/2).
        async with httpx.AsyncClient(http2=True, verify=False) as client:
            await client.get(f"{srv.https_url}/healthz")

            async def one(i: int) -> int:
                r = await client.post(f"{srv.https_url}/predict", json={"inputs": ROWS[i % 10]})
                assert r.http_version == "HTTP/2"
                return int(r.json()["prediction"])

            return list(await asyncio.gather(*(one(i) for i in range(48))))

    results = asyncio.run(burst())
    assert results == [LABELS[i % 10] for i in range(48)]  # each caller got its own row
    batches = metric(srv, "rawserve_batch_size_count", model="digits") - before
    items = metric(srv, "rawserve_batch_size_sum", model="digits") - items_before
    assert items == 48
    assert batches < 48  # some requests shared a model run


# -- scheduling over the protocols -----------------------------------------------------


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        time.sleep(0.005)


def slow_app(latency_s: float, **settings: Any) -> Any:
    model = SlowModel(latency_s)
    cfg = InferenceSettings(
        **{"max_batch_size": 1, "max_batch_delay_ms": 0.0, "cache_enabled": False, **settings}
    )
    return create_app(cfg, models={"digits": model})


def h2_predict(c: RawH2, row: list[int], headers: list[tuple[str, str]] | None = None) -> int:
    sid = c.conn.get_next_available_stream_id()
    body = json.dumps({"inputs": row}).encode()
    c.conn.send_headers(
        sid,
        [
            (":method", "POST"),
            (":path", "/predict"),
            (":scheme", "http"),
            (":authority", "localhost"),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            *(headers or []),
        ],
    )
    c.conn.send_data(sid, body, end_stream=True)
    c.flush()
    return sid


def h2_finish_order(c: RawH2, sids: set[int], timeout: float = 20) -> list[int]:
    import h2.events

    order: list[int] = []
    deadline = time.monotonic() + timeout
    while len(order) < len(sids) and time.monotonic() < deadline:
        for ev in c.events(timeout=0.5):
            if isinstance(ev, h2.events.StreamEnded) and ev.stream_id in sids:
                order.append(ev.stream_id)
    return order


def gated_app(latency_s: float) -> tuple[Any, GatedModel]:
    """slow_app whose model holds its first run until the test opens the gate:
    the queue can be looked at without racing the model."""
    model = GatedModel(latency_s)
    # No urgent lane: these tests look at the queue's order, and the lane
    # would take an urgent request at once (tests/test_engine.py covers it).
    cfg = InferenceSettings(
        max_batch_size=1, max_batch_delay_ms=0.0, cache_enabled=False, urgent_lane=False
    )
    return create_app(cfg, models={"digits": model}), model


def test_urgent_request_overtakes_a_backlog_via_priority_header() -> None:
    app, model = gated_app(0.02)
    with run_server(app, tls=False) as srv:
        wait_ready(srv)
        c = RawH2(srv.http_port)
        backlog = {h2_predict(c, ROWS[0], [("priority", "u=7")]) for _ in range(20)}
        # One holds the model at the gate, 19 queue.
        wait_for(lambda: app.engine.stats("digits")["queued"] == 19)
        urgent = h2_predict(c, ROWS[1], [("priority", "u=0")])
        wait_for(lambda: app.engine.stats("digits")["queued_by_urgency"][0] == 1)
        model.gate.set()
        order = h2_finish_order(c, backlog | {urgent})
        assert len(order) == 21
        # At worst it waits for the batch already running (a non-preemptive
        # bound); that batch's answer may even wait for the urgent one's.
        assert order.index(urgent) <= 1, order
        c.close()


def priority_update_frame(stream_id: int, value: bytes) -> bytes:
    payload = struct.pack(">I", stream_id) + value
    return struct.pack(">I", len(payload))[1:] + bytes([0x10, 0]) + struct.pack(">I", 0) + payload


def test_priority_update_moves_a_queued_request() -> None:
    app, model = gated_app(0.02)
    with run_server(app, tls=False) as srv:
        wait_ready(srv)
        c = RawH2(srv.http_port)
        backlog = [h2_predict(c, ROWS[0], [("priority", "u=7")]) for _ in range(20)]
        wait_for(lambda: app.engine.stats("digits")["queued"] == 19)
        moved = backlog[-1]
        c.sock.sendall(priority_update_frame(moved, b"u=0"))
        wait_for(lambda: app.engine.stats("digits")["queued_by_urgency"][0] == 1)
        model.gate.set()
        order = h2_finish_order(c, set(backlog))
        assert len(order) == 20
        # Sent last at u=7 it would finish last; moved to u=0 it runs as soon as
        # the batch holding the model ends.
        assert order.index(moved) <= 1, order
        c.close()


def test_rst_stream_cancels_queued_inference() -> None:
    app = slow_app(0.3)
    with run_server(app, tls=False) as srv:
        wait_ready(srv)
        c = RawH2(srv.http_port)
        running = h2_predict(c, ROWS[0])
        wait_for(lambda: app.engine.stats("digits")["busy"] == 1)
        queued = h2_predict(c, ROWS[1])
        wait_for(lambda: app.engine.stats("digits")["queued"] == 1)
        c.conn.reset_stream(queued, error_code=8)
        c.flush()
        order = h2_finish_order(c, {running})
        assert order == [running]
        time.sleep(0.4)
        stats = app.engine.stats("digits")
        assert stats["cancellations"] == 1
        assert stats["items_run"] == 1  # the reset request never ran
        assert metric(srv, "rawserve_cancellations_total", model="digits") == 1
        c.close()


def test_closed_http11_connection_cancels_queued_inference() -> None:
    app = slow_app(0.3)
    with run_server(app, tls=False) as srv:
        wait_ready(srv)
        body = json.dumps({"inputs": ROWS[0]}).encode()
        req = (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        first = socket.create_connection(("127.0.0.1", srv.http_port))
        first.sendall(req)
        wait_for(lambda: app.engine.stats("digits")["busy"] == 1)
        second = socket.create_connection(("127.0.0.1", srv.http_port))
        second.sendall(req)
        wait_for(lambda: app.engine.stats("digits")["queued"] == 1)
        # Gone for good (RST): a client that only shuts down its sending side
        # still gets its complete request answered (tests/test_tcp.py).
        second.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        second.close()
        assert first.recv(65536).startswith(b"HTTP/1.1 200 OK")
        first.close()
        time.sleep(0.4)
        stats = app.engine.stats("digits")
        assert stats["cancellations"] == 1 and stats["items_run"] == 1


def test_full_queue_gets_503_with_retry_after_and_expired_deadline_504() -> None:
    app = slow_app(0.2, queue_limit=2)
    with run_server(app, tls=False) as srv:
        wait_ready(srv)
        with httpx.Client(http2=True) as client:
            url = f"{srv.http_url}/predict"
            client.get(f"{srv.http_url}/healthz")  # one connection, opened before the threads
            statuses: list[httpx.Response] = []

            def one() -> None:
                statuses.append(client.post(url, json={"inputs": ROWS[0]}))

            threads = [threading.Thread(target=one) for _ in range(6)]
            for t in threads:
                t.start()
                time.sleep(0.01)
            for t in threads:
                t.join()
        codes = sorted(r.status_code for r in statuses)
        assert codes.count(200) >= 3 and 503 in codes, codes
        refused = next(r for r in statuses if r.status_code == 503)
        assert int(refused.headers["retry-after"]) >= 1
        assert "queue is full" in refused.json()["detail"]

        # Deadline: a 50 ms deadline behind a 200 ms run expires in the queue.
        blocker = threading.Thread(
            target=lambda: httpx.post(url, json={"inputs": ROWS[0]}, timeout=10)
        )
        blocker.start()
        wait_for(lambda: app.engine.stats("digits")["busy"] == 1)
        r = httpx.post(url, json={"inputs": ROWS[0]}, headers={"x-request-timeout-ms": "50"})
        blocker.join()
        assert r.status_code == 504 and "deadline" in r.json()["detail"]
        v2 = httpx.post(
            f"{srv.http_url}/v2/models/digits/infer",
            json=v2_json_request(ROWS[:1], parameters={"timeout": 1}),
        )
        assert v2.status_code in (200, 504)


def test_readyz_is_503_until_warm_up_ends() -> None:
    # Warm-up is held until the test has seen the 503s, then let go: no race
    # with a sleep, and no waiting out one (it runs more than once).
    release = threading.Event()

    class HeldWarmup(Model):
        def warmup(self, *args: Any, **kwargs: Any) -> list[int]:
            release.wait(30)  # bounded: a test that never lets go fails in wait_ready
            return super().warmup(*args, **kwargs)

    app = create_app(
        InferenceSettings(cache_enabled=False), models={"digits": HeldWarmup(load_bundled())}
    )
    with run_server(app, tls=False) as srv:
        try:
            assert httpx.get(f"{srv.http_url}/healthz").status_code == 200
            assert httpx.get(f"{srv.http_url}/readyz").status_code == 503
            assert httpx.get(f"{srv.http_url}/v2/health/ready").status_code == 503
            r = httpx.post(f"{srv.http_url}/predict", json={"inputs": ROWS[0]})
            assert r.status_code == 503
        finally:
            release.set()
        wait_ready(srv)
        assert httpx.post(f"{srv.http_url}/predict", json={"inputs": ROWS[0]}).status_code == 200


def test_shutdown_answers_every_queued_request() -> None:
    """Queued inferences either finish within the graceful timeout or get a
    503; none is dropped without an answer."""
    app = slow_app(0.1)
    with run_server(app, tls=False, graceful_timeout_s=0.5) as srv:
        wait_ready(srv)
        body = json.dumps({"inputs": ROWS[0]}).encode()
        req = (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        socks = [socket.create_connection(("127.0.0.1", srv.http_port)) for _ in range(12)]
        for s in socks:
            s.sendall(req)
        time.sleep(0.15)
        srv.begin_shutdown()
        statuses = []
        for s in socks:
            s.settimeout(10)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            s.close()
            assert data.startswith(b"HTTP/1.1 "), data[:50]
            statuses.append(int(data.split(b" ", 2)[1]))
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses and 200 in statuses, statuses


async def test_loading_a_model_says_what_loads_and_that_it_still_is(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rawserve.inference.app import application

    # A model whose loading ends only once the app has said it is still loading.
    said_still_loading = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "still loading model digits" in record.getMessage():
                said_still_loading.set()

    def slow_model(spec: Any, **kwargs: Any) -> Model:
        assert said_still_loading.wait(30)
        return Model(spec, **kwargs)

    monkeypatch.setattr(application, "Model", slow_model)
    monkeypatch.setattr(application, "LOAD_PROGRESS_EVERY_S", 0.01)
    watch = Watch()
    logging.getLogger("rawserve").addHandler(watch)
    app = create_app(InferenceSettings(cache_enabled=False))
    try:
        with caplog.at_level(logging.INFO, logger="rawserve"):
            await app.startup()
    finally:
        logging.getLogger("rawserve").removeHandler(watch)
        await app.shutdown()
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        re.match(r"loading model digits from .*digits\.onnx \(\d+\.\d MB\)", m) for m in messages
    )
    assert any(
        re.match(r"still loading model digits \(\d+\.\d MB\), \d+ s elapsed", m) for m in messages
    )
    assert any(re.match(r"loaded model digits in \d+\.\d\d s", m) for m in messages)


def test_metrics_show_the_servers_connections_even_when_served_again() -> None:
    app = create_app(InferenceSettings(cache_enabled=False))
    for _ in range(2):  # a second server takes over the same app's counters
        with run_server(app, tls=False) as server:
            wait_ready(server)
            with httpx.Client() as client:
                client.get(f"{server.http_url}/healthz")
                families = {
                    f.name: f
                    for f in text_string_to_metric_families(
                        client.get(f"{server.http_url}/metrics").text
                    )
                }
            open_now = families["rawserve_connections_open"].samples[0].value
            assert open_now >= 1
            assert families["rawserve_connections_accepted"].samples[0].value >= 1
