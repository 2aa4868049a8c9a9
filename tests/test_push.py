"""Server push (HTTP/2) and 103 Early Hints, with real clients: nghttp (which
nobody here wrote) receives a PUSH_PROMISE per batch result and the pushed
bodies equal the GETs; push disabled gets none; HTTP/1.1 gets 103 with the
links before the answer; a refused push is not sent again; limits hold; and
rawserve.client keeps pushed results so a GET needs no round trip."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import h2.events
import h2.settings
import httpx
import pytest

from rawserve import RawServe, Request
from rawserve.client import connect
from rawserve.core.config import InferenceSettings
from rawserve.core.events import ResponseBody, ResponseStart
from rawserve.inference.app import create_app
from rawserve.inference.app.application import InferenceApp
from rawserve.responses import PlainTextResponse
from tests.conftest import RunningServer, need, run_server
from tests.test_builtin_app import wait_ready
from tests.test_http2 import Pair
from tests.test_server_http2 import RawH2

ITEMS = [[(i * 5 + j) % 17 for j in range(64)] for i in range(6)]


@pytest.fixture(scope="module")
def srv() -> Iterator[tuple[RunningServer, InferenceApp]]:
    app = create_app(InferenceSettings())
    with run_server(app) as s:
        wait_ready(s)
        yield s, app


def nghttp(*args: str, body: bytes | None = None, tmp: Path | None = None) -> str:
    argv = [need("nghttp"), *args]
    if body is not None and tmp is not None:
        data = tmp / "body.json"
        data.write_bytes(body)
        argv[1:1] = ["-d", str(data), "-H", "content-type: application/json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def test_nghttp_receives_a_push_per_batch_result_equal_to_the_gets(
    srv: tuple[RunningServer, InferenceApp], tmp_path: Path
) -> None:
    server, _ = srv
    out = nghttp(
        "-v", f"{server.http_url}/predict/batch", body=json.dumps({"items": ITEMS}).encode(),
        tmp=tmp_path,
    )  # fmt: skip
    promised = re.findall(r"recv \(stream_id=\d+\) :path: (/results/[0-9a-f]{64})", out)
    assert out.count("recv PUSH_PROMISE frame") == len(ITEMS)
    manifest = httpx.post(f"{server.http_url}/predict/batch", json={"items": ITEMS}).json()
    assert sorted(promised) == sorted(manifest["results"])
    # The pushed bodies, as nghttp saved them, equal what a GET answers.
    pushed = nghttp(
        "-a",
        f"{server.http_url}/predict/batch",
        body=json.dumps({"items": ITEMS}).encode(),
        tmp=tmp_path,
    )
    bodies = re.findall(r'\{"prediction".*?"result":"(/results/[0-9a-f]{64})"\}', pushed)
    assert sorted(bodies) == sorted(manifest["results"])
    for path in manifest["results"]:
        got = httpx.get(server.http_url + path).json()
        assert f'"result":"{path}"' in pushed and got["result"] == path


def test_without_push_the_batch_is_a_plain_manifest(
    srv: tuple[RunningServer, InferenceApp], tmp_path: Path
) -> None:
    server, _ = srv
    out = nghttp(
        "-v", "--no-push", f"{server.http_url}/predict/batch",
        body=json.dumps({"items": ITEMS}).encode(), tmp=tmp_path,
    )  # fmt: skip
    assert "PUSH_PROMISE" not in out
    assert ":status: 202" in out


def link_app() -> RawServe:
    app = RawServe()

    @app.get("/page")
    async def page(request: Request) -> PlainTextResponse:
        pushed = await request.push("/style.css")
        return PlainTextResponse(
            f"pushed={pushed}",
            headers={
                "link": "</script.js>; rel=preload; as=script, <https://x.test/a>; rel=preload"
            },
        )

    @app.get("/style.css")
    async def style() -> PlainTextResponse:
        # Slow enough that a client refusing the push does so before the
        # answer: the refusal then cancels this handler.
        await asyncio.sleep(0.3)
        return PlainTextResponse("body{}")

    @app.get("/script.js")
    async def script() -> PlainTextResponse:
        return PlainTextResponse("run()")

    @app.get("/elsewhere")
    async def elsewhere(request: Request) -> PlainTextResponse:
        with pytest.raises(ValueError, match="same-origin"):
            await request.push("//x.test/y")
        return PlainTextResponse("ok")

    return app


@pytest.fixture(scope="module")
def links() -> Iterator[RunningServer]:
    with run_server(link_app(), tls=False) as s:
        yield s


def test_http11_gets_103_early_hints_with_the_links_before_the_answer(
    links: RunningServer,
) -> None:
    curl = need("curl")
    out = subprocess.run(
        [curl, "-si", "--http1.1", f"{links.http_url}/page"], capture_output=True, timeout=30
    ).stdout.decode()
    hints, _, final = out.partition("\r\n\r\n")
    assert hints.startswith("HTTP/1.1 103 Early Hints")
    assert "link: </script.js>; rel=preload; as=script" in hints
    assert "link: <https://x.test/a>; rel=preload" in hints
    assert final.startswith("HTTP/1.1 200 OK") and final.endswith("pushed=False")


def test_h2_pushes_same_origin_links_and_hints_the_rest(links: RunningServer) -> None:
    out = nghttp("-v", f"{links.http_url}/page")
    paths = re.findall(r"recv \(stream_id=\d+\) :path: (\S+)", out)
    assert sorted(paths) == ["/script.js", "/style.css"]
    hint = out.split(":status: 103", 1)[1].split(":status: 200", 1)[0]
    assert "x.test" in hint and "script.js" not in hint  # pushed, so not hinted
    assert "pushed=True" in out


def test_push_disabled_by_the_client_gets_hints_only(links: RunningServer) -> None:
    out = nghttp("-v", "--no-push", f"{links.http_url}/page")
    assert "PUSH_PROMISE" not in out
    assert "link: </script.js>; rel=preload; as=script" in out.split(":status: 103", 1)[1]


def test_a_refused_push_is_not_sent_again(links: RunningServer) -> None:
    c = RawH2(links.http_port)
    promised: list[tuple[int, str]] = []

    def get_page() -> None:
        sid = c.request("/page")
        done = False
        while not done:
            for ev in c.conn.receive_data(c.sock.recv(65536)):
                if isinstance(ev, h2.events.PushedStreamReceived):
                    path = dict(ev.headers)[b":path"].decode()
                    promised.append((ev.pushed_stream_id, path))
                    if path == "/style.css":
                        c.conn.reset_stream(ev.pushed_stream_id, error_code=0x8)  # refuse
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
            c.flush()

    get_page()
    get_page()
    paths = [p for _, p in promised]
    assert paths.count("/style.css") == 1  # refused once: never promised again
    assert paths.count("/script.js") == 2
    c.close()


def test_pushes_per_connection_are_bounded() -> None:
    with run_server(link_app(), tls=False, limit_max_pushes_per_connection=3) as server:
        out = nghttp("-v", "-m", "4", f"{server.http_url}/page")
    assert out.count("recv PUSH_PROMISE frame") == 3


async def test_the_client_keeps_pushed_results_and_gets_them_without_a_round_trip(
    srv: tuple[RunningServer, InferenceApp],
) -> None:
    server, _ = srv
    async with connect(server.https_url, verify=False) as c:
        r = await c.request(
            "POST", "/predict/batch", body=json.dumps({"items": ITEMS[:4]}).encode(),
            headers={"content-type": "application/json"},
        )  # fmt: skip
        paths = json.loads(r.body)["results"]
        pushed = await c.wait_pushes()
        assert set(paths) <= set(pushed)
        for path in paths:
            got = await c.get(path)
            assert got.pushed and got.status == 200 and got.json()["result"] == path


async def test_the_clients_push_cache_stays_empty_with_push_off(
    srv: tuple[RunningServer, InferenceApp],
) -> None:
    server, _ = srv
    async with connect(server.http_url, enable_push=False) as c:
        r = await c.request(
            "POST", "/predict/batch", body=json.dumps({"items": ITEMS[:2]}).encode(),
            headers={"content-type": "application/json"},
        )  # fmt: skip
        assert r.status == 202 and await c.wait_pushes() == {}
        got = await c.get(json.loads(r.body)["results"][0])
        assert not got.pushed and got.status == 200


# -- the adapter alone, sans-IO -----------------------------------------------------


def test_the_adapter_promises_a_get_and_answers_it_on_the_promised_stream() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    event = pair.server.push(sid, "/results/abc", [(b"accept", b"application/json")])
    assert event is not None and event.method == "GET" and event.target == "/results/abc"
    assert event.stream_id % 2 == 0 and event.end_stream
    assert (b"accept", b"application/json") in event.headers
    pair.server.send(ResponseStart(event.stream_id, 200, [(b"content-length", b"2")]))
    pair.server.send(ResponseBody(event.stream_id, b"ok", end_stream=True))
    pair.server.send(ResponseStart(sid, 204, [], end_stream=True))
    events = pair.to_client()
    promise = next(e for e in events if isinstance(e, h2.events.PushedStreamReceived))
    assert promise.parent_stream_id == sid and promise.pushed_stream_id == event.stream_id
    assert (b":path", b"/results/abc") in promise.headers
    data = [e for e in events if isinstance(e, h2.events.DataReceived)]
    assert data[0].stream_id == event.stream_id and data[0].data == b"ok"


def test_no_promise_when_the_client_disabled_push_or_the_parent_is_done() -> None:
    pair = Pair()
    pair.client.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
    sid = pair.request()
    pair.to_server()
    assert not pair.server.push_allowed(sid)
    assert pair.server.push(sid, "/x", []) is None
    other = Pair()
    sid = other.request()
    other.to_server()
    other.server.send(ResponseStart(sid, 204, [], end_stream=True))
    assert other.server.push(sid, "/x", []) is None  # the parent's answer is complete
    assert other.server.push(sid + 2, "/x", []) is None  # no such stream


def test_a_push_the_client_resets_is_never_promised_again() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    event = pair.server.push(sid, "/style.css", [])
    assert event is not None
    pair.to_client()
    pair.client.reset_stream(event.stream_id, 0x8)
    reset = pair.to_server()
    assert [type(e).__name__ for e in reset] == ["StreamReset"]
    assert pair.server.push(sid, "/style.css", []) is None
    assert pair.server.push(sid, "/other.css", []) is not None
