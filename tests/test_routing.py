"""Route matching (NONE/PARTIAL/FULL), the route table's
first-registered-wins order, routers and their inclusion."""

# No ``from __future__ import annotations``: handlers defined inside tests
# refer to local names in their annotations, which must evaluate eagerly.

import json
import threading
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import Any

import pytest

from rawserve import (
    APIRouter,
    Depends,
    HTMLResponse,
    RawServe,
    Request,
    Response,
    StreamingResponse,
)
from rawserve.core.priority import Priority
from rawserve.routetable import RouteTable
from rawserve.routing import APIRoute, Match
from tests.test_app import call


def _noop() -> None:
    return None


def test_route_matches_none_partial_full_and_converts() -> None:
    route = APIRoute("/items/{item_id:int}/{ratio:float}/{key:uuid}", _noop, methods=["PUT"])
    key = uuid.uuid4()
    match, params = route.matches("PUT", f"/items/3/0.5/{key}")
    assert match is Match.FULL
    assert params == {"item_id": 3, "ratio": 0.5, "key": key}
    assert route.matches("GET", f"/items/3/0.5/{key}")[0] is Match.PARTIAL
    assert route.matches("PUT", "/items/x/0.5/{key}")[0] is Match.NONE


def test_get_routes_also_answer_head() -> None:
    assert APIRoute("/", _noop).methods == {"GET", "HEAD"}
    assert APIRoute("/", _noop, methods=["post"]).methods == {"POST"}


def test_url_path_for() -> None:
    app = RawServe()

    @app.get("/users/{user_id:int}/posts/{slug}", name="post")
    async def post(user_id: int, slug: str) -> None:
        return None

    assert app.url_path_for("post", user_id=5, slug="hello") == "/users/5/posts/hello"
    with pytest.raises(LookupError):
        app.url_path_for("post", user_id=5)


# -- the table ----------------------------------------------------------------------------


def test_first_registered_route_wins_between_static_and_dynamic() -> None:
    me = APIRoute("/users/me", _noop, name="me")
    anyone = APIRoute("/users/{name}", _noop, name="anyone")
    late_static = APIRoute("/users/late", _noop, name="late")
    table = RouteTable([me, anyone, late_static])
    assert table.lookup("GET", "/users/me")[0] is me
    assert table.lookup("GET", "/users/bob")[0] is anyone
    # Registered after the parameterised route, so never reached (as in starlette).
    assert table.lookup("GET", "/users/late")[0] is anyone


def test_lookup_reports_allowed_methods_for_405() -> None:
    table = RouteTable(
        [
            APIRoute("/things", _noop, methods=["GET"]),
            APIRoute("/things", _noop, methods=["POST"]),
            APIRoute("/things/{id}", _noop, methods=["DELETE"]),
        ]
    )
    route, params, allowed = table.lookup("PATCH", "/things")
    assert route is None and params == {}
    assert allowed == {"GET", "HEAD", "POST"}
    assert table.lookup("PATCH", "/nothing") == (None, {}, set())
    route, _, _ = table.lookup("POST", "/things")
    assert route is not None and route.methods == {"POST"}


# -- through the app ----------------------------------------------------------------------


async def test_path_convertors_through_the_app() -> None:
    app = RawServe()

    @app.get("/int/{n:int}")
    async def as_int(n: int) -> list[Any]:
        return [n, type(n).__name__]

    @app.get("/float/{x:float}")
    async def as_float(x: float) -> float:
        return x

    @app.get("/uuid/{u:uuid}")
    async def as_uuid(u: uuid.UUID) -> str:
        return str(u)

    @app.get("/path/{p:path}")
    async def as_path(p: str) -> str:
        return p

    @app.get("/name/{name}")
    async def as_name(name: str) -> str:
        return name

    assert (await call(app, "GET", "/int/42")).json() == [42, "int"]
    assert (await call(app, "GET", "/int/abc")).status == 404
    assert (await call(app, "GET", "/float/2.5")).json() == 2.5
    u = "12345678-1234-5678-1234-567812345678"
    assert (await call(app, "GET", f"/uuid/{u}")).json() == u
    assert (await call(app, "GET", "/path/a/b/c")).json() == "a/b/c"
    # Paths are matched percent-decoded, as ASGI servers hand them to starlette.
    assert (await call(app, "GET", "/name/a%20b")).json() == "a b"
    assert (await call(app, "GET", "/name/caf%C3%A9")).json() == "café"


async def test_redirect_slashes() -> None:
    app = RawServe()

    @app.get("/items/")
    async def items() -> list[int]:
        return []

    @app.get("/users")
    async def users() -> list[int]:
        return []

    r = await call(app, "GET", "/items?x=1")
    assert r.status == 307
    assert r.headers["location"] == "http://testserver/items/?x=1"
    r = await call(app, "GET", "/users/")
    assert (r.status, r.headers["location"]) == (307, "http://testserver/users")
    assert (await call(app, "GET", "/")).status == 404

    strict = RawServe(redirect_slashes=False)
    strict.get("/items/")(items)
    assert (await call(strict, "GET", "/items")).status == 404


async def test_include_router_with_prefix_tags_and_dependencies() -> None:
    seen: list[str] = []

    def router_dep() -> None:
        seen.append("router")

    def include_dep() -> None:
        seen.append("include")

    router = APIRouter(prefix="/users", tags=["users"], dependencies=[Depends(router_dep)])

    @router.get("/")
    async def list_users() -> list[str]:
        return ["a"]

    @router.get("/{username}", response_class=HTMLResponse, status_code=203)
    async def user(username: str) -> str:
        return f"<b>{username}</b>"

    admin = APIRouter()

    @admin.post("/reset")
    async def reset() -> dict[str, bool]:
        return {"reset": True}

    router.include_router(admin, prefix="/admin")
    app = RawServe()
    app.include_router(router, prefix="/v1", tags=["v1"], dependencies=[Depends(include_dep)])

    # The app's own routes (/openapi.json, /docs, ...) are not in the schema.
    assert sorted(r.path for r in app.routes if r.include_in_schema) == [
        "/v1/users/",
        "/v1/users/admin/reset",
        "/v1/users/{username}",
    ]
    route = next(r for r in app.routes if r.path == "/v1/users/")
    assert route.tags == ["v1", "users"]
    assert (await call(app, "GET", "/v1/users/")).json() == ["a"]
    assert seen == ["include", "router"]
    r = await call(app, "GET", "/v1/users/ann")
    assert (r.status, r.text, r.headers["content-type"]) == (
        203,
        "<b>ann</b>",
        "text/html; charset=utf-8",
    )
    assert (await call(app, "POST", "/v1/users/admin/reset")).json() == {"reset": True}


async def test_routes_added_to_a_router_after_inclusion_are_not_served() -> None:
    router = APIRouter()
    app = RawServe()
    app.include_router(router)

    @router.get("/late")
    async def late() -> None:
        return None

    assert (await call(app, "GET", "/late")).status == 404


def test_router_prefix_rules() -> None:
    with pytest.raises(ValueError):
        APIRouter(prefix="users")
    with pytest.raises(ValueError):
        APIRouter(prefix="/users/")
    app = RawServe()
    with pytest.raises(ValueError):
        app.include_router(APIRouter(), prefix="/x/")
    with pytest.raises(ValueError):
        app.router.include_router(app.router)


async def test_route_priority_through_router_inclusion() -> None:
    router = APIRouter()

    @router.get("/default")
    async def default(request: Request) -> int:
        return request.priority.urgency

    @router.get("/own", priority=7)
    async def own(request: Request) -> int:
        return request.priority.urgency

    app = RawServe()
    app.include_router(router, prefix="/p", priority=Priority(1, incremental=True))
    routes = {r.path: r for r in app.routes}
    assert routes["/p/default"].priority == Priority(1, True)
    assert routes["/p/own"].priority == Priority(7)
    assert (await call(app, "GET", "/p/default")).json() == 1
    assert (await call(app, "GET", "/p/own")).json() == 7


async def test_api_route_and_starlette_style_routes() -> None:
    app = RawServe()

    @app.api_route("/both", methods=["GET", "POST"])
    async def both(request: Request) -> str:
        return request.method

    async def plain(request: Request) -> Response:
        return Response(f"plain {request.method}".encode(), media_type="text/plain")

    app.add_route("/plain", plain, methods=["GET"])

    @app.route("/decorated")
    def decorated(request: Request) -> Response:
        return Response(b"sync plain")

    assert (await call(app, "POST", "/both")).json() == "POST"
    assert (await call(app, "GET", "/both")).json() == "GET"
    assert (await call(app, "GET", "/plain")).text == "plain GET"
    assert (await call(app, "GET", "/decorated")).text == "sync plain"
    assert (await call(app, "POST", "/plain")).status == 405


async def test_every_method_decorator() -> None:
    app = RawServe()
    for method in ("get", "post", "put", "patch", "delete", "options", "head", "trace"):

        async def handler(request: Request) -> str:
            return request.method

        getattr(app, method)(f"/{method}")(handler)
        r = await call(app, method.upper(), f"/{method}")
        assert r.status == 200, method
        if method != "head":
            assert r.json() == method.upper()


def test_fastapi_keyword_arguments_are_accepted() -> None:
    app = RawServe(title="t", version="1", docs_url=None, openapi_url=None)

    @app.get(
        "/",
        summary="s",
        description="d",
        response_description="ok",
        responses={404: {"description": "nope"}},
        deprecated=True,
        include_in_schema=False,
        operation_id="root",
        tags=["x"],
        name="root",
    )
    async def root() -> None:
        return None

    route = app.routes[0]
    assert (route.name, route.summary, route.tags, route.include_in_schema) == (
        "root",
        "s",
        ["x"],
        False,
    )


async def test_a_path_operation_that_yields_objects_streams_json_lines() -> None:
    app = RawServe()

    @app.get("/items")
    async def items() -> AsyncIterator[dict[str, Any]]:
        for i in range(3):
            yield {"i": i, "text": "a\nb"}

    r = await call(app, "GET", "/items")
    assert r.status == 200
    assert r.headers["content-type"] == "application/jsonl"
    lines = r.body.split(b"\n")
    assert lines[-1] == b""  # every line ends with a newline, the last one too
    assert [json.loads(line) for line in lines[:-1]] == [{"i": i, "text": "a\nb"} for i in range(3)]


async def test_a_sync_generator_path_operation_streams_from_a_thread() -> None:
    app = RawServe()
    loop_thread = threading.get_ident()
    threads: list[int] = []

    @app.get("/numbers/{n}", status_code=201)
    def numbers(n: int) -> Iterator[int]:
        for i in range(n):
            threads.append(threading.get_ident())
            yield i

    r = await call(app, "GET", "/numbers/3")
    assert (r.status, r.body) == (201, b"0\n1\n2\n")
    assert threads and loop_thread not in threads


async def test_yielded_items_are_validated_by_the_annotations_item_model() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Item(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        name: str
        price: float = 0.0

    app = RawServe()

    @app.get("/items")
    async def items() -> AsyncIterable[Item]:
        yield Item(name="a")
        yield {"name": "b", "price": "2", "secret": "dropped"}

    r = await call(app, "GET", "/items")
    assert r.body == b'{"name":"a","price":0.0}\n{"name":"b","price":2.0}\n'


async def test_yield_with_a_streaming_response_class_sends_the_chunks_as_they_are() -> None:
    app = RawServe()

    @app.get("/text", response_class=StreamingResponse)
    async def text() -> AsyncIterator[str]:
        yield "hello "
        yield "world"

    r = await call(app, "GET", "/text")
    assert r.body == b"hello world"


async def test_dependencies_of_a_streaming_path_operation_stay_open_until_it_ends() -> None:
    app = RawServe()
    events: list[str] = []

    async def resource() -> AsyncIterator[str]:
        events.append("open")
        yield "db"
        events.append("close")

    @app.get("/rows")
    async def rows(db: str = Depends(resource)) -> AsyncIterator[str]:
        for i in range(2):
            events.append(f"row {i}")
            yield f"{db}{i}"

    r = await call(app, "GET", "/rows")
    assert r.body == b'"db0"\n"db1"\n'
    assert events == ["open", "row 0", "row 1", "close"]
