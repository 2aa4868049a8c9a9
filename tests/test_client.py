"""rawserve.client against a real server: HTTP/2 over TLS and h2c, priorities
that reach the handler, PRIORITY_UPDATE that moves a queued inference, results
fetched by their path, and the connection's errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest

from rawserve import RawServe, Request
from rawserve.client import ClientError, connect
from rawserve.core.config import InferenceSettings
from rawserve.inference.app import create_app
from rawserve.inference.app.application import InferenceApp
from tests.conftest import RunningServer, run_server
from tests.test_builtin_app import ROWS, wait_ready
from tests.test_model import SlowModel


def priority_app() -> RawServe:
    app = RawServe()

    @app.get("/priority")
    async def priority(request: Request) -> dict[str, object]:
        p = request.priority
        return {"urgency": p.urgency, "incremental": p.incremental, "version": request.http_version}

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    return app


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(priority_app()) as s:
        yield s


@pytest.mark.parametrize("scheme", ["https", "http"])
async def test_the_priority_a_client_asks_for_reaches_the_handler(
    srv: RunningServer, scheme: str
) -> None:
    url = srv.https_url if scheme == "https" else srv.http_url
    async with connect(url, verify=False) as c:
        default = (await c.request("GET", "/priority")).json()
        urgent = (await c.request("GET", "/priority", priority=0)).json()
        bulk = (await c.request("GET", "/priority", priority=7)).json()
    assert default == {"urgency": 3, "incremental": False, "version": "2"}
    assert urgent["urgency"] == 0 and bulk["urgency"] == 7


async def test_many_requests_share_one_connection_and_bodies_respect_flow_control(
    srv: RunningServer,
) -> None:
    async with connect(srv.http_url) as c:
        big = b"x" * (3 * 1024 * 1024)  # well past the server's stream window
        answers = await asyncio.gather(
            *(c.request("POST", "/echo", body=big) for _ in range(4)),
            *(c.request("GET", "/priority") for _ in range(16)),
        )
    assert [a.json()["length"] for a in answers[:4]] == [len(big)] * 4
    assert {a.status for a in answers} == {200}
    assert len({a.stream_id for a in answers}) == 20


async def test_a_refused_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        async with connect("ftp://127.0.0.1:1"):
            pass


async def test_a_server_that_goes_away_fails_the_pending_request() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)  # the preface, then hang up
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        async with connect(f"http://127.0.0.1:{port}") as c:
            with pytest.raises(ClientError):
                await asyncio.wait_for(c.request("GET", "/"), 10)


@pytest.fixture(scope="module")
def inference() -> Iterator[tuple[RunningServer, InferenceApp]]:
    app = create_app(InferenceSettings(max_batch_size=1, max_batch_delay_ms=0.0))
    with run_server(app) as s:
        wait_ready(s)
        yield s, app


async def test_predict_and_fetch_the_result_by_its_path(
    inference: tuple[RunningServer, InferenceApp],
) -> None:
    srv, _ = inference
    async with connect(srv.https_url, verify=False) as c:
        answer = await c.predict(ROWS[0], priority=1)
        stored = await c.get(answer["result"])
    assert answer["model"] == "digits" and isinstance(answer["prediction"], int)
    assert stored.status == 200 and stored.json() == answer
    assert stored.header("etag") == '"' + answer["result"].rsplit("/", 1)[1] + '"'


async def test_a_bad_input_raises_with_the_servers_answer(
    inference: tuple[RunningServer, InferenceApp],
) -> None:
    srv, _ = inference
    async with connect(srv.http_url) as c:
        with pytest.raises(ClientError) as info:
            await c.predict([1.0, 2.0])
    assert info.value.response is not None and info.value.response.status == 422


@pytest.mark.parametrize("http3", [False, True], ids=["h2c", "h3"])
async def test_reprioritize_moves_a_queued_request(http3: bool) -> None:
    app = create_app(
        InferenceSettings(max_batch_size=1, max_batch_delay_ms=0.0, cache_enabled=False),
        models={"digits": SlowModel(0.05)},
    )
    with run_server(app, tls=http3, quic_port=None if http3 else 0) as srv:
        wait_ready(srv)
        url = srv.https_url if http3 else srv.http_url
        async with connect(url, verify=False, http3=http3) as c:
            sids = []
            for i in range(20):
                row = [(v + i) % 17 for v in ROWS[0]]
                body = b'{"inputs": [' + ",".join(map(str, row)).encode() + b"]}"
                sids.append(
                    await c.send_request(
                        "POST",
                        "/predict",
                        body=body,
                        headers={"content-type": "application/json"},
                        priority=7,
                    )
                )
            for _ in range(500):  # a bounded wait for the backlog to queue
                if app.engine.stats("digits")["queued"] >= 15:
                    break
                await asyncio.sleep(0.01)
            moved = sids[-1]
            done_before = app.engine.stats("digits")["items_run"]
            await c.reprioritize(moved, 0)
            finished: list[int] = []

            async def wait(sid: int) -> None:
                r = await c.response(sid)
                assert r.status == 200
                finished.append(sid)

            await asyncio.gather(*(wait(s) for s in sids))
        # Sent last at u=7 it would finish last; moved to u=0 it runs as soon
        # as the running batch ends (one more may finish while the frame travels).
        assert finished.index(moved) <= done_before + 2, (finished, done_before)


async def test_stream_sends_rows_and_yields_results_while_sending(
    inference: tuple[RunningServer, InferenceApp],
) -> None:
    srv, _ = inference
    results: list[dict[str, object]] = []
    got_one = asyncio.Event()

    async def rows() -> AsyncIterator[list[int]]:
        # Each row is sent only after the previous row's result came back:
        # without full duplex this would never finish (the bound fails it).
        for i in range(20):
            yield [(v + i) % 17 for v in ROWS[0]]
            await asyncio.wait_for(got_one.wait(), 10)
            got_one.clear()
        yield [1, 2, 3]  # a bad row: an error line, and the stream goes on

    async with connect(srv.http_url) as c:
        async for item in c.stream(rows()):
            results.append(item)
            got_one.set()
    assert [r["index"] for r in results] == list(range(21))
    assert all("prediction" in r for r in results[:20])
    assert "64" in str(results[20]["error"])


async def test_stream_unordered_still_answers_every_row(
    inference: tuple[RunningServer, InferenceApp],
) -> None:
    srv, _ = inference
    async with connect(srv.https_url, verify=False) as c:
        got = [r async for r in c.stream([ROWS[i % 4] for i in range(20)], ordered=False)]
    assert sorted(r["index"] for r in got) == list(range(20))


# -- the same client over HTTP/3 -----------------------------------------------------


@pytest.fixture(scope="module")
def h3srv() -> Iterator[tuple[RunningServer, InferenceApp]]:
    app = create_app(InferenceSettings(max_batch_size=1, max_batch_delay_ms=0.0))
    app.get("/priority")(_priority_handler)
    with run_server(app, quic_port=None) as s:
        wait_ready(s)
        yield s, app


async def _priority_handler(request: Request) -> dict[str, object]:
    p = request.priority
    return {"urgency": p.urgency, "version": request.http_version}


async def test_over_http3_priority_predict_results_and_pushes(
    h3srv: tuple[RunningServer, InferenceApp],
) -> None:
    srv, _ = h3srv
    async with connect(srv.https_url, verify=False, http3=True) as c:
        assert c.http_version == "3"
        seen = (await c.request("GET", "/priority", priority=1)).json()
        assert seen == {"urgency": 1, "version": "3"}
        answer = await c.predict(ROWS[3])
        stored = await c.get(answer["result"])
        assert stored.status == 200 and stored.json() == answer and not stored.pushed
        items = [[(i * 11 + j) % 17 for j in range(64)] for i in range(4)]
        r = await c.request(
            "POST",
            "/predict/batch",
            body=json.dumps({"items": items}).encode(),
            headers={"content-type": "application/json"},
        )
        paths = json.loads(r.body)["results"]
        pushed = await c.wait_pushes()
        assert set(paths) <= set(pushed)
        got = await c.get(paths[0])
        assert got.pushed and got.json()["result"] == paths[0]


async def test_over_http3_stream_is_full_duplex(h3srv: tuple[RunningServer, InferenceApp]) -> None:
    srv, _ = h3srv
    got_one = asyncio.Event()

    async def rows() -> AsyncIterator[list[int]]:
        for i in range(10):
            yield [(v + i) % 17 for v in ROWS[1]]
            await asyncio.wait_for(got_one.wait(), 10)
            got_one.clear()

    results = []
    async with connect(srv.https_url, verify=False, http3=True) as c:
        async for item in c.stream(rows()):
            results.append(item)
            got_one.set()
    assert [r["index"] for r in results] == list(range(10))


async def test_over_http3_push_can_be_declined(h3srv: tuple[RunningServer, InferenceApp]) -> None:
    srv, _ = h3srv
    async with connect(srv.https_url, verify=False, http3=True, enable_push=False) as c:
        r = await c.request(
            "POST",
            "/predict/batch",
            body=json.dumps({"items": [ROWS[2]]}).encode(),
            headers={"content-type": "application/json"},
        )
        assert r.status == 202 and await c.wait_pushes() == {}
