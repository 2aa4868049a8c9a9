"""TestClient: requests go through a real rawserve Server on 127.0.0.1; the
lifespan runs only inside ``with``; server-side exceptions reach the test."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any

import httpx
import pytest

from rawserve import BackgroundTasks, Depends, RawServe
from rawserve.requests import Request
from rawserve.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from rawserve.testclient import TestClient
from tests.conftest import ROOT


class EchoApp:
    """The smallest object the server accepts as an app (handle/startup/shutdown)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.handler_threads: set[int] = set()

    async def startup(self) -> None:
        self.events.append("startup")

    async def shutdown(self) -> None:
        self.events.append("shutdown")

    async def handle(self, request: Request) -> Response:
        self.handler_threads.add(threading.get_ident())
        path = request.url.path
        if path == "/echo":
            return JSONResponse(
                {
                    "method": request.method,
                    "url": str(request.url),
                    "query": request.query_params.multi_items(),
                    "host": request.headers.get("host"),
                    "ua": request.headers.get("user-agent"),
                    "body": (await request.body()).decode(),
                    "cookies": request.cookies,
                    "version": request.http_version,
                }
            )
        if path == "/form":
            form = await request.form()
            out: dict[str, Any] = {}
            for key, value in form.multi_items():
                out[key] = value if isinstance(value, str) else (await value.read()).decode()
            return JSONResponse(out)
        if path == "/login":
            r = PlainTextResponse("ok")
            r.set_cookie("session", "s1")
            return r
        if path == "/redirect":
            return RedirectResponse("/echo?from=redirect")
        if path == "/stream":
            return StreamingResponse((f"{i}\n" for i in range(5)), media_type="text/plain")
        if path == "/boom":
            raise RuntimeError("handler exploded")
        return JSONResponse({"detail": "Not Found"}, status_code=404)


def test_requests_without_with_skip_the_lifespan() -> None:
    app = EchoApp()
    client = TestClient(app)
    try:
        r = client.get("/echo", params={"a": "1"})
        assert r.status_code == 200
        data = r.json()
        assert data["method"] == "GET"
        assert data["url"] == "http://testserver/echo?a=1"
        assert data["host"] == "testserver"
        assert data["ua"] == "testclient"
        assert data["query"] == [["a", "1"]]
        assert data["version"] == "1.1"
        assert app.events == []
        # The handler ran on the server's own loop thread, not the test's.
        assert threading.get_ident() not in app.handler_threads
    finally:
        client.close()
    assert app.events == []


def test_with_block_runs_startup_and_shutdown() -> None:
    app = EchoApp()
    with TestClient(app) as client:
        assert app.events == ["startup"]
        assert client.post("/echo", content=b"payload").json()["body"] == "payload"
        assert client.port > 0
    assert app.events == ["startup", "shutdown"]


def test_http_methods_and_json_body() -> None:
    app = EchoApp()
    with TestClient(app) as client:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            r = client.request(method, "/echo", json={"k": 1})
            assert r.json()["method"] == method
        assert client.put("/echo", json=[1]).json()["body"] == "[1]"
        assert client.patch("/echo", content="x").json()["body"] == "x"
        assert client.delete("/echo").status_code == 200
        assert client.options("/echo").status_code == 200
        head = client.head("/echo")
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) > 0


def test_forms_cookies_redirects_and_streaming() -> None:
    app = EchoApp()
    with TestClient(app) as client:
        r = client.post("/form", data={"a": "1"}, files={"f": ("f.txt", b"file body")})
        assert r.json() == {"a": "1", "f": "file body"}
        assert client.post("/form", data={"x": "y"}).json() == {"x": "y"}

        assert client.get("/login").text == "ok"
        assert client.cookies.get("session") == "s1"
        assert client.get("/echo").json()["cookies"] == {"session": "s1"}

        r = client.get("/redirect")
        assert r.status_code == 200
        assert r.json()["url"] == "http://testserver/echo?from=redirect"
        assert r.history[0].status_code == 307

        r = client.get("/stream")
        assert r.text == "0\n1\n2\n3\n4\n"
        with client.stream("GET", "/stream") as streamed:
            assert "".join(streamed.iter_text()) == "0\n1\n2\n3\n4\n"

        assert client.get("/missing").status_code == 404


def test_server_exceptions_are_raised_in_the_test() -> None:
    with TestClient(EchoApp()) as client:
        with pytest.raises(RuntimeError, match="handler exploded"):
            client.get("/boom")
        # The server survived and the next request works.
        assert client.get("/echo").status_code == 200


def test_server_exceptions_can_become_500s() -> None:
    with TestClient(EchoApp(), raise_server_exceptions=False) as client:
        r = client.get("/boom")
        assert r.status_code == 500
        assert "handler exploded" not in r.text  # no traceback over the wire


def test_base_url_and_absolute_urls() -> None:
    with TestClient(EchoApp(), base_url="http://api.example") as client:
        assert client.get("/echo").json()["url"] == "http://api.example/echo"
        # Any host goes to the app, like starlette's client.
        assert client.get("http://other.host/echo").json()["host"] == "other.host"


def test_startup_failure_is_raised() -> None:
    class Broken(EchoApp):
        async def startup(self) -> None:
            raise ValueError("no model file")

    with pytest.raises(ValueError, match="no model file"):
        with TestClient(Broken()):
            pass


def test_is_an_httpx_client_lookalike() -> None:
    client = TestClient(EchoApp(), headers={"x-token": "t"})
    try:
        assert client.headers["x-token"] == "t"
        assert isinstance(client.get("/echo"), httpx.Response)
    finally:
        client.close()


@pytest.mark.filterwarnings("ignore:on_event is deprecated:DeprecationWarning")
def test_with_a_rawserve_app_like_fastapis_client() -> None:
    from rawserve.applications import RawServe

    events: list[str] = []
    app = RawServe()

    @app.on_event("startup")
    async def up() -> None:
        events.append("startup")

    @app.on_event("shutdown")
    def down() -> None:
        events.append("shutdown")

    @app.get("/items/{item_id}")
    def item(item_id: int, q: str | None = None) -> dict[str, Any]:
        return {"item_id": item_id, "q": q}

    @app.get("/fail")
    async def fail() -> None:
        raise KeyError("missing thing")

    with TestClient(app) as client:
        assert events == ["startup"]
        assert client.get("/items/3?q=x").json() == {"item_id": 3, "q": "x"}
        r = client.get("/items/abc")
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["path", "item_id"]
        assert client.get("/nope").status_code == 404
        with pytest.raises(KeyError, match="missing thing"):
            client.get("/fail")
    assert events == ["startup", "shutdown"]
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/fail")
        assert r.status_code == 500
        assert "missing thing" not in r.text


def test_background_tasks_have_finished_when_a_call_returns() -> None:
    app = RawServe()
    written: list[int] = []
    closed: list[int] = []

    async def slow_write(n: int) -> None:
        # Yield to the loop several times, so that the response is long gone
        # before the task ends: the client must wait for it anyway.
        for _ in range(20):
            await asyncio.sleep(0)
        written.append(n)

    async def session() -> Any:
        yield "s"
        closed.append(1)

    @app.post("/write/{n}")
    async def write(n: int, tasks: BackgroundTasks, s: str = Depends(session)) -> dict[str, int]:
        tasks.add_task(slow_write, n)
        tasks.add_task(lambda: written.append(-n))  # a sync task, run in a thread
        return {"queued": n}

    client = TestClient(app)
    for n in range(1, 21):
        assert client.post(f"/write/{n}").json() == {"queued": n}
        assert written[-2:] == [n, -n]
        assert len(closed) == n  # the yield-dependency's exit ran too
    with client.stream("POST", "/write/99") as r:
        r.read()
    assert written[-2:] == [99, -99]
    client.close()


def test_a_client_never_closed_leaves_no_open_socket() -> None:
    # FastAPI's own tests run with -W error: a socket left to the garbage
    # collector is a ResourceWarning, and then an error.
    program = (
        "import gc\n"
        "from rawserve import RawServe\n"
        "from rawserve.testclient import TestClient\n"
        "app = RawServe()\n"
        "@app.get('/')\n"
        "def root():\n"
        "    return {'ok': True}\n"
        "def use():\n"
        "    client = TestClient(app)\n"
        "    assert client.get('/').json() == {'ok': True}\n"
        "    assert client.get('/').json() == {'ok': True}\n"
        "use()\n"
        "gc.collect()\n"
        "kept = TestClient(app)\n"  # still referenced at exit: closed at exit
        "assert kept.get('/').status_code == 200\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-X", "dev", "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert "ResourceWarning" not in out.stderr
    assert "Exception ignored" not in out.stderr
