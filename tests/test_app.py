"""RawServe.handle end to end without sockets: requests built from
RequestReceived + BodyStream, answers checked in FastAPI's exact shapes."""

# No ``from __future__ import annotations``: handlers defined inside tests
# refer to local names in their annotations, which must evaluate eagerly.

import asyncio
import json
import logging
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import pydantic  # the test extra installs it
except ImportError:  # only in the subprocess test that blocks it to run without it
    pydantic = None  # type: ignore[assignment]
import pytest

from rawserve import (
    APIRouter,
    BackgroundTasks,
    Depends,
    FastAPI,
    HTMLResponse,
    HTTPException,
    JSONResponse,
    PlainTextResponse,
    RawServe,
    Request,
    Response,
    StreamingResponse,
    status,
)
from rawserve.core.errors import ClientDisconnected
from rawserve.core.events import RequestReceived
from rawserve.core.priority import DEFAULT_PRIORITY, Priority
from rawserve.exceptions import FastAPIError, RequestValidationError
from rawserve.serving.body import BodyStream

ROOT = Path(__file__).resolve().parent.parent


# -- harness: what the stream driver does, minus the sockets ------------------------------


@dataclass
class Result:
    status: int
    headers: dict[str, str]
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes
    response: Response

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def make_request(
    method: str,
    target: str,
    *,
    headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
    body: bytes | None = None,
    priority: Priority = DEFAULT_PRIORITY,
    limit: int = 1 << 20,
    end: bool = True,
) -> Request:
    items = headers.items() if isinstance(headers, Mapping) else headers
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in items]
    event = RequestReceived(
        1, method, target, raw, "1.1", authority="testserver", priority=priority
    )
    stream = BodyStream(limit=limit)
    if body:
        stream.feed(body)
    if end:
        stream.end()
    return Request(event, stream, client=("127.0.0.1", 5555), server=("127.0.0.1", 8000))


async def call(
    app: RawServe,
    method: str,
    target: str,
    *,
    headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
    body: bytes | None = None,
    json_body: Any = None,
    priority: Priority = DEFAULT_PRIORITY,
    request: Request | None = None,
) -> Result:
    """Handle one request, collect the body, then run the background work
    (as the driver does after sending)."""
    hdrs = list(headers.items() if isinstance(headers, Mapping) else headers)
    if json_body is not None:
        body = json.dumps(json_body).encode()
        hdrs.append(("content-type", "application/json"))
    if request is None:
        request = make_request(method, target, headers=hdrs, body=body, priority=priority)
    response = await app.handle(request)
    chunks = [c async for c in response.body_chunks()]
    await response.run_background()
    raw = response.raw_headers()
    return Result(
        response.status_code,
        {k.decode(): v.decode() for k, v in raw},
        list(raw),
        b"".join(chunks),
        response,
    )


def multipart(
    fields: Iterable[tuple[str, str | tuple[str, bytes, str]]], boundary: str = "b0undary"
) -> tuple[dict[str, str], bytes]:
    """A multipart/form-data body: ``(name, "text")`` or ``(name, (filename, data, type))``."""
    out = b""
    for name, value in fields:
        out += f"--{boundary}\r\n".encode()
        if isinstance(value, str):
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            out += value.encode() + b"\r\n"
        else:
            filename, data, ctype = value
            out += (
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n"
            ).encode()
            out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return {"content-type": f"multipart/form-data; boundary={boundary}"}, out


# -- the seed app -------------------------------------------------------------------------


async def test_seed_app_predicts_from_an_upload() -> None:
    from tests.apps.seed_app import app

    data = bytes(range(64))
    headers, body = multipart([("file", ("digit.bin", data, "application/octet-stream"))])
    r = await call(app, "POST", "/predict", headers=headers, body=body)
    assert r.status == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"filename": "digit.bin", "size": 64, "prediction": sum(data) % 10}


async def test_seed_app_streams_ten_chunks() -> None:
    from tests.apps.seed_app import app

    r = await call(app, "GET", "/stream")
    assert r.status == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text.splitlines() == [f"chunk {i}" for i in range(10)]


async def test_seed_app_without_file_is_422_like_fastapi() -> None:
    from tests.apps.seed_app import app

    r = await call(app, "POST", "/predict")
    assert r.status == 422
    assert r.json() == {
        "detail": [
            {"type": "missing", "loc": ["body", "file"], "msg": "Field required", "input": None}
        ]
    }


def test_fastapi_import_names_resolve() -> None:
    import rawserve
    import rawserve.responses

    assert rawserve.FastAPI is rawserve.RawServe
    assert rawserve.responses.StreamingResponse is rawserve.StreamingResponse
    assert rawserve.status.HTTP_422_UNPROCESSABLE_ENTITY == 422
    assert rawserve.Config is not None


def test_importing_the_package_loads_no_server_code() -> None:
    code = (
        "import sys, rawserve\n"
        "bad = [m for m in ('rawserve.serving.server', 'rawserve.testclient', 'socket', 'ssl',"
        " 'pydantic') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    # socket/ssl may come in through asyncio; the point is our server and pydantic.
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(filter(None, out.stdout.strip().split(",")))
    assert not loaded & {"rawserve.serving.server", "rawserve.testclient", "pydantic"}


# -- errors in FastAPI's shapes -----------------------------------------------------------


async def test_not_found_and_method_not_allowed() -> None:
    app = RawServe()

    @app.get("/items")
    async def items() -> list[int]:
        return [1]

    @app.post("/items")
    async def create() -> None:
        return None

    r = await call(app, "GET", "/missing")
    assert (r.status, r.json()) == (404, {"detail": "Not Found"})
    r = await call(app, "DELETE", "/items")
    assert (r.status, r.json()) == (405, {"detail": "Method Not Allowed"})
    assert r.headers["allow"] == "GET, HEAD, POST"


async def test_http_exception_detail_and_headers() -> None:
    app = RawServe()

    @app.get("/items/{item_id}")
    async def read(item_id: str) -> dict[str, str]:
        if item_id == "plain":
            raise HTTPException(status_code=status.HTTP_418_IM_A_TEAPOT)
        if item_id == "rich":
            raise HTTPException(400, detail={"why": ["a", "b"]})
        raise HTTPException(
            404, detail="Item not found", headers={"X-Error": "There goes my error"}
        )

    r = await call(app, "GET", "/items/foo")
    assert (r.status, r.json()) == (404, {"detail": "Item not found"})
    assert r.headers["x-error"] == "There goes my error"
    r = await call(app, "GET", "/items/plain")
    assert (r.status, r.json()) == (418, {"detail": "I'm a Teapot"})
    r = await call(app, "GET", "/items/rich")
    assert r.json() == {"detail": {"why": ["a", "b"]}}


async def test_http_exception_without_body_status() -> None:
    app = RawServe()

    @app.get("/")
    async def root() -> None:
        raise HTTPException(304)

    r = await call(app, "GET", "/")
    assert r.status == 304
    assert r.body == b""
    assert "content-length" not in r.headers


async def test_unhandled_exception_is_500_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = RawServe()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    with caplog.at_level(logging.ERROR, logger="rawserve"):
        r = await call(app, "GET", "/boom")
    assert r.status == 500
    # FastAPI's (starlette's) 500: plain text, not JSON.
    assert r.text == "Internal Server Error"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert "secret" not in r.text and "Traceback" not in r.text
    record = next(rec for rec in caplog.records if rec.exc_info)
    assert isinstance(record.exc_info[1], RuntimeError)  # type: ignore[index]


async def test_debug_mode_shows_the_traceback() -> None:
    app = RawServe(debug=True)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("visible in debug")

    r = await call(app, "GET", "/boom")
    assert r.status == 500
    assert "visible in debug" in r.text


async def test_body_too_large_is_413() -> None:
    app = RawServe()

    @app.post("/upload")
    async def upload(request: Request) -> int:
        return len(await request.body())

    request = make_request("POST", "/upload", body=b"x" * 100, limit=10)
    r = await call(app, "POST", "/upload", request=request)
    assert r.status == 413
    assert "10 bytes" in r.json()["detail"]


async def test_client_disconnect_gives_a_response_the_driver_drops() -> None:
    app = RawServe()

    @app.post("/upload")
    async def upload(request: Request) -> int:
        return len(await request.body())

    request = make_request("POST", "/upload", body=b"abc", end=False)
    request.body_stream.abort(ClientDisconnected())
    response = await app.handle(request)
    assert response.status_code == 499


async def test_invalid_json_read_by_the_handler_is_400() -> None:
    app = RawServe()

    @app.post("/raw")
    async def raw(request: Request) -> Any:
        return await request.json()

    r = await call(app, "POST", "/raw", body=b"{nope", headers={"content-type": "application/json"})
    assert r.status == 400
    assert r.json()["detail"].startswith("Invalid JSON")


# -- exception handlers -------------------------------------------------------------------


class UnicornError(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


class BabyUnicornError(UnicornError):
    pass


async def test_custom_exception_handlers_by_class_and_status() -> None:
    app = RawServe()

    @app.exception_handler(UnicornError)
    async def unicorn(request: Request, exc: UnicornError) -> JSONResponse:
        return JSONResponse({"message": f"Oops! {exc.name} did something."}, status_code=418)

    @app.exception_handler(404)
    def not_found(request: Request, exc: HTTPException) -> PlainTextResponse:
        return PlainTextResponse(f"nothing at {request.url.path}", status_code=404)

    @app.get("/unicorns/{name}")
    async def read(name: str) -> None:
        raise BabyUnicornError(name)

    r = await call(app, "GET", "/unicorns/yolo")
    assert (r.status, r.json()) == (418, {"message": "Oops! yolo did something."})
    r = await call(app, "GET", "/elsewhere")
    assert (r.status, r.text) == (404, "nothing at /elsewhere")


async def test_overriding_the_validation_and_http_handlers() -> None:
    app = RawServe()

    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> PlainTextResponse:
        return PlainTextResponse(f"{len(exc.errors())} error(s)", status_code=400)

    @app.exception_handler(HTTPException)
    async def http(request: Request, exc: HTTPException) -> PlainTextResponse:
        return PlainTextResponse(str(exc.detail), status_code=exc.status_code)

    @app.get("/items/{item_id}")
    async def read(item_id: int) -> int:
        if item_id == 3:
            raise HTTPException(418, "Nope! I don't like 3.")
        return item_id

    r = await call(app, "GET", "/items/foo")
    assert (r.status, r.text) == (400, "1 error(s)")
    r = await call(app, "GET", "/items/3")
    assert (r.status, r.text) == (418, "Nope! I don't like 3.")


async def test_a_500_handler_answers_unhandled_exceptions() -> None:
    app = RawServe()

    @app.exception_handler(Exception)
    async def oops(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": type(exc).__name__}, status_code=500)

    @app.get("/boom")
    async def boom() -> None:
        raise KeyError("x")

    r = await call(app, "GET", "/boom")
    assert (r.status, r.json()) == (500, {"error": "KeyError"})


# -- returns and response classes ---------------------------------------------------------


async def test_return_values_become_json_with_the_route_status() -> None:
    app = RawServe()

    @app.post("/items", status_code=status.HTTP_201_CREATED)
    async def create() -> dict[str, int]:
        return {"id": 1}

    @app.get("/none")
    async def nothing() -> None:
        return None

    @app.delete("/items", status_code=204)
    async def remove() -> None:
        return None

    r = await call(app, "POST", "/items")
    assert (r.status, r.json()) == (201, {"id": 1})
    r = await call(app, "GET", "/none")
    assert (r.status, r.body) == (200, b"null")
    r = await call(app, "DELETE", "/items")
    assert (r.status, r.body) == (204, b"")
    assert "content-length" not in r.headers


async def test_response_class_and_returned_responses() -> None:
    app = RawServe()

    @app.get("/page", response_class=HTMLResponse)
    async def page() -> str:
        return "<h1>hi</h1>"

    @app.get("/text", response_class=PlainTextResponse, status_code=202)
    async def text() -> str:
        return "plain"

    @app.get("/direct")
    async def direct() -> Response:
        return Response(b"raw", media_type="application/octet-stream", status_code=203)

    r = await call(app, "GET", "/page")
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.text == "<h1>hi</h1>"
    r = await call(app, "GET", "/text")
    assert (r.status, r.text, r.headers["content-type"]) == (
        202,
        "plain",
        "text/plain; charset=utf-8",
    )
    r = await call(app, "GET", "/direct")
    assert (r.status, r.body) == (203, b"raw")


async def test_numpy_results_encode_as_json() -> None:
    import numpy as np

    app = RawServe()

    @app.get("/probs")
    async def probs() -> dict[str, Any]:
        return {"p": np.array([0.5, 0.25], dtype=np.float32), "label": np.int64(7)}

    r = await call(app, "GET", "/probs")
    assert r.json() == {"p": [0.5, 0.25], "label": 7}


async def test_head_answers_like_get() -> None:
    app = RawServe()

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"a": "b"}

    r = await call(app, "HEAD", "/")
    assert r.status == 200
    assert r.headers["content-length"] == str(len(b'{"a":"b"}'))


async def test_a_sub_response_sets_headers_cookies_and_status() -> None:
    app = RawServe()

    @app.get("/cookie")
    async def cookie(response: Response) -> dict[str, bool]:
        response.set_cookie("session", "abc")
        response.headers["x-extra"] = "1"
        response.status_code = 202
        return {"ok": True}

    r = await call(app, "GET", "/cookie")
    assert r.status == 202
    assert r.json() == {"ok": True}
    assert r.headers["x-extra"] == "1"
    assert r.headers["set-cookie"].startswith("session=abc")
    names = [k for k, _ in r.raw_headers]
    assert names.count(b"content-length") == 1


# -- response_model (pydantic) ------------------------------------------------------------

if pydantic is not None:

    class UserIn(pydantic.BaseModel):
        username: str
        password: str
        email: str
        full_name: str | None = None

    class UserOut(pydantic.BaseModel):
        username: str
        email: str
        full_name: str | None = None

    class Tagged(pydantic.BaseModel):
        name: str
        tags: list[str] = []
        price: float = 1.0


async def test_response_model_filters_fields() -> None:
    app = RawServe()

    @app.post("/user", response_model=UserOut)
    async def create(user: UserIn) -> Any:
        return user

    @app.get("/users")
    async def users() -> list[UserOut]:
        # The return annotation is the response model, as in FastAPI.
        return [UserIn(username="a", password="secret", email="a@x")]  # type: ignore[list-item]

    payload = {"username": "a", "password": "secret", "email": "a@x"}
    r = await call(app, "POST", "/user", json_body=payload)
    assert r.status == 200
    assert r.json() == {"username": "a", "email": "a@x", "full_name": None}
    r = await call(app, "GET", "/users")
    assert r.json() == [{"username": "a", "email": "a@x", "full_name": None}]


async def test_response_model_exclude_unset_and_dicts() -> None:
    app = RawServe()

    @app.get("/item", response_model=Tagged, response_model_exclude_unset=True)
    async def item() -> Any:
        return {"name": "x", "extra": "dropped"}

    r = await call(app, "GET", "/item")
    assert r.json() == {"name": "x"}


async def test_a_return_value_the_response_model_rejects_is_500() -> None:
    app = RawServe()

    @app.get("/bad", response_model=UserOut)
    async def bad() -> Any:
        return {"username": "only"}

    r = await call(app, "GET", "/bad")
    assert (r.status, r.text) == (500, "Internal Server Error")


async def test_a_return_annotation_pydantic_cannot_model_raises_fastapi_error() -> None:
    app = RawServe()

    async def either(raw: bool = False) -> UserOut | Response:
        if raw:
            return Response(b"raw")
        return UserOut(username="u", email="e")

    # FastAPI refuses it when the route is made, and says to add response_model=None.
    with pytest.raises(FastAPIError, match="response_model=None"):
        app.get("/either")(either)
    app.get("/either", response_model=None)(either)
    assert (await call(app, "GET", "/either")).json()["username"] == "u"
    assert (await call(app, "GET", "/either?raw=1")).body == b"raw"


# -- sync handlers, background tasks ------------------------------------------------------


async def test_sync_handlers_run_off_the_loop() -> None:
    app = RawServe()
    loop_thread = threading.get_ident()

    @app.get("/sync")
    def sync_handler() -> dict[str, int]:
        return {"thread": threading.get_ident()}

    @app.get("/async")
    async def async_handler() -> dict[str, int]:
        return {"thread": threading.get_ident()}

    assert (await call(app, "GET", "/sync")).json()["thread"] != loop_thread
    assert (await call(app, "GET", "/async")).json()["thread"] == loop_thread


async def test_background_tasks_run_after_the_response() -> None:
    app = RawServe()
    log: list[str] = []

    def write(message: str) -> None:
        log.append(message)

    async def awrite(message: str) -> None:
        log.append(message)

    def queue(background_tasks: BackgroundTasks, q: str | None = None) -> str | None:
        if q:
            background_tasks.add_task(write, f"found query: {q}")
        return q

    @app.post("/send/{email}")
    async def send(
        email: str, background_tasks: BackgroundTasks, q: str | None = Depends(queue)
    ) -> dict[str, str]:
        background_tasks.add_task(awrite, f"message to {email}")
        log.append("handler")
        return {"message": "sent"}

    request = make_request("POST", "/send/a@b?q=x")
    response = await app.handle(request)
    assert log == ["handler"]
    await response.run_background()
    assert log == ["handler", "found query: x", "message to a@b"]


# -- middleware ---------------------------------------------------------------------------


async def test_middleware_order_and_response_access() -> None:
    app = RawServe()
    order: list[str] = []

    @app.middleware("http")
    async def inner(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        order.append("inner-in")
        response = await call_next(request)
        order.append("inner-out")
        response.headers["x-inner"] = "1"
        return response

    @app.middleware("http")
    async def outer(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        order.append("outer-in")
        if request.headers.get("x-block"):
            return PlainTextResponse("blocked", status_code=403)
        response = await call_next(request)
        order.append("outer-out")
        response.headers["x-outer"] = "1"
        return response

    @app.get("/")
    async def root() -> dict[str, str]:
        order.append("handler")
        return {}

    r = await call(app, "GET", "/")
    assert order == ["outer-in", "inner-in", "handler", "inner-out", "outer-out"]
    assert r.headers["x-inner"] == r.headers["x-outer"] == "1"
    r = await call(app, "GET", "/", headers={"x-block": "1"})
    assert (r.status, r.text) == (403, "blocked")
    # Handled errors (404) pass through the middleware as responses.
    r = await call(app, "GET", "/nowhere")
    assert (r.status, r.headers["x-outer"]) == (404, "1")


async def test_an_unhandled_error_passes_through_middleware_to_500() -> None:
    app = RawServe()
    seen: list[str] = []

    @app.middleware("http")
    async def mw(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            return await call_next(request)
        except ZeroDivisionError:
            seen.append("middleware saw it")
            raise

    @app.get("/")
    async def root() -> float:
        return 1 / 0

    r = await call(app, "GET", "/")
    assert r.status == 500
    assert seen == ["middleware saw it"]


def test_asgi_middleware_classes_are_refused_clearly() -> None:
    app = RawServe()
    with pytest.raises(TypeError, match="ASGI"):
        app.add_middleware(object)


# -- lifespan -----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:on_event is deprecated:DeprecationWarning")
async def test_lifespan_and_event_handlers_order() -> None:
    order: list[str] = []

    @asynccontextmanager
    async def lifespan(app: RawServe) -> AsyncIterator[dict[str, Any]]:
        order.append("lifespan enter")
        yield {"model": "loaded"}
        order.append("lifespan exit")

    app = FastAPI(lifespan=lifespan)

    @app.on_event("startup")
    async def first() -> None:
        order.append("startup 1")

    @app.on_event("startup")
    def second() -> None:
        order.append("startup 2")

    @app.on_event("shutdown")
    def bye() -> None:
        order.append("shutdown")

    router = APIRouter()

    @router.on_event("startup")
    async def router_start() -> None:
        order.append("router startup")

    @router.get("/state")
    async def state(request: Request) -> dict[str, str]:
        return {"model": request.state.model}

    app.include_router(router)
    await app.startup()
    assert order == ["lifespan enter", "startup 1", "startup 2", "router startup"]
    r = await call(app, "GET", "/state")
    assert r.json() == {"model": "loaded"}
    await app.shutdown()
    assert order[-2:] == ["shutdown", "lifespan exit"]


async def test_lifespan_as_a_plain_async_generator_and_constructor_handlers() -> None:
    order: list[str] = []

    async def lifespan(app: RawServe) -> AsyncIterator[None]:
        order.append("up")
        yield
        order.append("down")

    app = RawServe(
        lifespan=lifespan,
        on_startup=[lambda: order.append("on_startup")],
        on_shutdown=[lambda: order.append("on_shutdown")],
    )
    await app.startup()
    await app.shutdown()
    assert order == ["up", "on_startup", "on_shutdown", "down"]


@pytest.mark.filterwarnings("ignore:on_event is deprecated:DeprecationWarning")
async def test_a_failing_startup_leaves_the_lifespan() -> None:
    order: list[str] = []

    @asynccontextmanager
    async def lifespan(app: RawServe) -> AsyncIterator[None]:
        order.append("enter")
        yield
        order.append("exit")

    app = RawServe(lifespan=lifespan)

    @app.on_event("startup")
    def broken() -> None:
        raise RuntimeError("no model")

    with pytest.raises(RuntimeError):
        await app.startup()
    assert order == ["enter", "exit"]


# -- priority -----------------------------------------------------------------------------


async def test_route_priority_applies_when_the_client_sent_none() -> None:
    app = RawServe()

    @app.post("/urgent", priority=0)
    async def urgent(request: Request) -> dict[str, Any]:
        return {"u": request.priority.urgency, "i": request.priority.incremental}

    @app.get("/plain")
    async def plain(request: Request) -> int:
        return request.priority.urgency

    by_path = {r.path: r for r in app.routes}
    assert by_path["/urgent"].priority == Priority(0)
    assert by_path["/plain"].priority is None
    assert (await call(app, "POST", "/urgent")).json() == {"u": 0, "i": False}
    # A client signal wins, even one that spells out the default urgency.
    r = await call(app, "POST", "/urgent", priority=Priority(5, True))
    assert r.json() == {"u": 5, "i": True}
    r = await call(app, "POST", "/urgent", priority=Priority(3))
    assert r.json() == {"u": 3, "i": False}
    assert (await call(app, "GET", "/plain")).json() == 3


async def test_router_and_app_priority_defaults() -> None:
    app = RawServe(priority=6)
    router = APIRouter(priority=1)

    @router.get("/r")
    async def r(request: Request) -> int:
        return request.priority.urgency

    @app.get("/a")
    async def a(request: Request) -> int:
        return request.priority.urgency

    @app.get("/own", priority=Priority(2))
    async def own(request: Request) -> int:
        return request.priority.urgency

    app.include_router(router, prefix="/v1")
    assert (await call(app, "GET", "/v1/r")).json() == 1
    assert (await call(app, "GET", "/a")).json() == 6
    assert (await call(app, "GET", "/own")).json() == 2


async def test_an_invalid_route_priority_is_refused() -> None:
    app = RawServe()
    with pytest.raises(ValueError):
        app.get("/x", priority=9)(lambda: None)
    with pytest.raises(TypeError):
        app.get("/y", priority="high")(lambda: None)


async def test_many_concurrent_requests() -> None:
    app = RawServe()

    @app.get("/n/{n}")
    async def echo(n: int) -> int:
        await asyncio.sleep(0)
        return n

    results = await asyncio.gather(*(call(app, "GET", f"/n/{i}") for i in range(50)))
    assert [r.json() for r in results] == list(range(50))


async def test_streaming_response_from_a_sync_generator() -> None:
    app = RawServe()

    @app.get("/lines")
    def lines() -> StreamingResponse:
        return StreamingResponse((f"{i}\n" for i in range(3)), media_type="text/plain")

    r = await call(app, "GET", "/lines")
    assert r.text == "0\n1\n2\n"


# -- what FastAPI does that a program may notice ------------------------------------------


def test_on_event_warns_deprecation_as_fastapi_does() -> None:
    app = RawServe()
    router = APIRouter()
    with pytest.warns(DeprecationWarning, match="lifespan"):

        @app.on_event("startup")
        def up() -> None:
            return None

    with pytest.warns(DeprecationWarning, match="lifespan"):

        @router.on_event("shutdown")
        def down() -> None:
            return None

    assert app.router.on_startup == [up]
    assert router.on_shutdown == [down]


@pytest.mark.skipif(pydantic is None, reason="needs pydantic")
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"username=u&email=e"),
        ("text/plain", b"not json"),
    ],
)
async def test_a_body_that_is_not_json_gets_fastapis_model_attributes_422(
    content_type: str, body: bytes
) -> None:
    app = RawServe()

    @app.post("/users")
    async def create(user: UserOut) -> UserOut:
        return user

    r = await call(app, "POST", "/users", headers={"content-type": content_type}, body=body)
    assert r.status == 422
    assert r.json() == {
        "detail": [
            {
                "type": "model_attributes_type",
                "loc": ["body"],
                "msg": "Input should be a valid dictionary or object to extract fields from",
                "input": body.decode(),
            }
        ]
    }
