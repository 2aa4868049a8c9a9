"""The result cache through the built-in app, over real sockets: repeated
inferences answered from the cache, results as resources (/results/{key} with
ETag and 304), Cache-Status on every answer, single-flight of identical
requests in flight, and replicas sharing results through a real Redis."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from rawserve.core.config import InferenceSettings
from rawserve.inference import v2
from rawserve.inference.app import create_app
from rawserve.inference.app.application import InferenceApp
from tests.conftest import RunningServer, run_server
from tests.services import Service, redis_service
from tests.test_builtin_app import ROWS, h2_predict, metric, wait_for, wait_ready
from tests.test_model import SlowModel
from tests.test_server_http2 import RawH2


@pytest.fixture(scope="module")
def cached() -> Iterator[tuple[RunningServer, InferenceApp]]:
    app = create_app(InferenceSettings(cache_ttl_s=120))
    with run_server(app) as s:
        wait_ready(s)
        yield s, app


def predict(url: str, row: list[int], client: httpx.Client | None = None) -> httpx.Response:
    post = client.post if client is not None else httpx.post
    return post(f"{url}/predict", json={"inputs": row}, timeout=30)


def items_run(app: InferenceApp) -> int:
    return int(app.engine.stats("digits")["items_run"])


def test_a_repeated_inference_is_answered_from_the_cache(
    cached: tuple[RunningServer, InferenceApp],
) -> None:
    srv, app = cached
    row = [(v + 1) % 17 for v in ROWS[3]]  # an input no other test sends
    first = predict(srv.http_url, row)
    assert first.status_code == 200, first.text
    assert first.headers["cache-status"] == "rawserve; fwd=miss"
    assert first.headers["server-timing"].startswith("queue;dur=")
    ran = items_run(app)
    second = predict(srv.http_url, row)
    assert second.status_code == 200
    assert second.headers["cache-status"].startswith("rawserve; hit; ttl=")
    assert second.json() == first.json()
    assert items_run(app) == ran  # the model did not run again
    body = first.json()
    assert body["result"] == first.headers["content-location"]
    assert body["result"].startswith("/results/") and len(body["result"]) == 9 + 64


def test_results_are_resources_with_etags(cached: tuple[RunningServer, InferenceApp]) -> None:
    srv, _ = cached
    answer = predict(srv.http_url, ROWS[4])
    path = answer.json()["result"]
    got = httpx.get(srv.http_url + path)
    assert got.status_code == 200
    assert got.json() == answer.json()
    assert got.headers["content-type"] == "application/json"
    key = path.rsplit("/", 1)[1]
    assert got.headers["etag"] == f'"{key}"'
    max_age = int(got.headers["cache-control"].removeprefix("max-age="))
    assert 0 < max_age <= 120
    again = httpx.get(srv.http_url + path, headers={"if-none-match": got.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == got.headers["etag"]
    weak = httpx.get(srv.http_url + path, headers={"if-none-match": f'W/"{key}", "other"'})
    assert weak.status_code == 304
    other = httpx.get(srv.http_url + path, headers={"if-none-match": '"nope"'})
    assert other.status_code == 200


def test_the_same_result_over_http2(cached: tuple[RunningServer, InferenceApp]) -> None:
    srv, _ = cached
    with httpx.Client(http2=True, verify=False) as client:
        answer = predict(srv.https_url, ROWS[5], client)
        assert answer.http_version == "HTTP/2"
        again = predict(srv.https_url, ROWS[5], client)
        assert again.headers["cache-status"].startswith("rawserve; hit")
        got = client.get(srv.https_url + answer.json()["result"])
        assert got.status_code == 200 and got.json() == answer.json()


@pytest.mark.parametrize(
    "path",
    ["/results/" + "0" * 64, "/results/" + "A" * 64, "/results/..%2Fetc", "/results/abc"],
)
def test_an_unknown_or_malformed_key_is_404_with_a_reason(
    cached: tuple[RunningServer, InferenceApp], path: str
) -> None:
    srv, _ = cached
    lookups = metric(srv, "rawserve_cache_lookups_total", outcome="miss")
    r = httpx.get(srv.http_url + path)
    assert r.status_code == 404
    assert r.json()["detail"]  # says why (or the router's Not Found for a path with a slash)
    well_formed = path == "/results/" + "0" * 64
    # Only a well-formed key is ever looked up in the backend.
    after = metric(srv, "rawserve_cache_lookups_total", outcome="miss")
    assert after == lookups + (1 if well_formed else 0)


def test_v2_answers_are_cached_without_their_request_ids(
    cached: tuple[RunningServer, InferenceApp],
) -> None:
    srv, app = cached
    row = [(v + 3) % 17 for v in ROWS[6]]

    def infer(request_id: str) -> httpx.Response:
        body = {
            "id": request_id,
            "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}],
        }
        return httpx.post(f"{srv.http_url}/v2/models/digits/infer", json=body, timeout=30)

    a = infer("first")
    ran = items_run(app)
    b = infer("second")
    assert a.status_code == b.status_code == 200, a.text
    assert b.headers["cache-status"].startswith("rawserve; hit")
    assert items_run(app) == ran
    assert a.json()["id"] == "first" and b.json()["id"] == "second"
    assert {**a.json(), "id": None} == {**b.json(), "id": None}
    assert a.headers["content-location"] == b.headers["content-location"]
    # The resource itself carries no request's id.
    stored = httpx.get(srv.http_url + a.headers["content-location"]).json()
    assert "id" not in stored


def test_a_binary_v2_answer_keeps_its_framing_when_the_id_is_written_in(
    cached: tuple[RunningServer, InferenceApp],
) -> None:
    srv, _ = cached
    row = np.asarray([(v + 5) % 17 for v in ROWS[7]], dtype=np.float32).reshape(1, 64)
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": [1, 64],
                "datatype": "FP32",
                "parameters": {"binary_data_size": row.nbytes},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    answers = []
    for request_id in ("a", "a-much-longer-request-id"):
        head = json.dumps({**header, "id": request_id}).encode()
        r = httpx.post(
            f"{srv.http_url}/v2/models/digits/infer",
            content=head + row.tobytes(),
            headers={
                "content-type": "application/octet-stream",
                v2.HEADER_LENGTH_HEADER: str(len(head)),
            },
            timeout=30,
        )
        assert r.status_code == 200, r.text
        n = int(r.headers[v2.HEADER_LENGTH_HEADER])
        meta = json.loads(r.content[:n])
        assert meta["id"] == request_id
        probs = next(o for o in meta["outputs"] if o["name"] == "probabilities")
        size = probs["parameters"]["binary_data_size"]
        assert size == 40
        answers.append(r)
    assert answers[1].headers["cache-status"].startswith("rawserve; hit")
    # Same binary payload after the (differently long) JSON header.
    tails = [r.content[int(r.headers[v2.HEADER_LENGTH_HEADER]) :] for r in answers]
    assert tails[0] == tails[1] and len(tails[0]) > 0


def test_identical_requests_in_flight_run_the_model_once() -> None:
    app = create_app(
        InferenceSettings(max_batch_size=1, max_batch_delay_ms=0.0),
        models={"digits": SlowModel(0.3)},
    )
    with run_server(app, tls=False) as srv:
        wait_ready(srv)
        ran = items_run(app)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: predict(srv.http_url, ROWS[0]), range(8)))
        assert {r.status_code for r in answers} == {200}
        assert len({r.content for r in answers}) == 1
        statuses = sorted(r.headers["cache-status"] for r in answers)
        # One ran the model; the rest shared it or found it in the cache.
        assert statuses.count("rawserve; fwd=miss") == 1
        assert items_run(app) == ran + 1
        assert (
            metric(srv, "rawserve_cache_collapsed_total")
            + sum(s.startswith("rawserve; hit") for s in statuses)
            == 7
        )


def test_without_the_cache_every_request_runs_and_says_so() -> None:
    app = create_app(InferenceSettings(cache_enabled=False))
    with run_server(app, tls=False) as srv:
        wait_ready(srv)
        ran = items_run(app)
        a = predict(srv.http_url, ROWS[0])
        b = predict(srv.http_url, ROWS[0])
        assert (
            a.headers["cache-status"]
            == b.headers["cache-status"]
            == ("rawserve; fwd=bypass; detail=disabled")
        )
        assert "result" not in a.json() and "content-location" not in a.headers
        assert items_run(app) == ran + 2
        r = httpx.get(f"{srv.http_url}/results/{'0' * 64}")
        assert r.status_code == 404 and "--no-cache" in r.json()["detail"]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Service]:
    service = redis_service(tmp_path)
    service.start()
    yield service
    service.kill()


def test_replicas_share_results_through_redis(redis: Service) -> None:
    settings = InferenceSettings(cache_url=f"redis://127.0.0.1:{redis.port}/0")
    apps = [create_app(settings), create_app(settings)]
    with run_server(apps[0], tls=False) as one, run_server(apps[1], tls=False) as two:
        wait_ready(one)
        wait_ready(two)
        before = [items_run(a) for a in apps]
        first = predict(one.http_url, ROWS[2])
        second = predict(two.http_url, ROWS[2])
        assert first.headers["cache-status"] == "rawserve; fwd=miss"
        assert second.headers["cache-status"].startswith("rawserve; hit")
        assert second.json() == first.json()
        ran = [items_run(a) - b for a, b in zip(apps, before, strict=True)]
        assert ran == [1, 0]  # the same input on two replicas ran the model once
        # The second replica serves the first one's result as a resource too.
        got = httpx.get(two.http_url + first.json()["result"])
        assert got.status_code == 200 and got.json() == first.json()


def test_a_result_whose_client_left_while_it_ran_is_still_cached() -> None:
    app = create_app(
        InferenceSettings(max_batch_size=1, max_batch_delay_ms=0.0),
        models={"digits": SlowModel(0.3)},
    )
    with run_server(app, tls=False) as srv:
        wait_ready(srv)
        c = RawH2(srv.http_port)
        sid = h2_predict(c, ROWS[8])
        wait_for(lambda: app.engine.stats("digits")["busy"] == 1)
        c.conn.reset_stream(sid, error_code=8)  # gone while its batch runs
        c.flush()
        wait_for(lambda: app.engine.stats("digits")["items_run"] >= 1)
        ran = items_run(app)
        wait_for(lambda: metric(srv, "rawserve_cache_stores_total", outcome="stored") >= 1)
        # The result was kept: the same input now is a hit, and runs nothing.
        again = predict(srv.http_url, ROWS[8])
        assert again.headers["cache-status"].startswith("rawserve; hit")
        assert items_run(app) == ran
        c.close()
