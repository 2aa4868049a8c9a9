"""Dependencies: ``Depends`` chains cached per request, route and app
dependencies, yield-dependency cleanup and scopes, overrides, sync dependencies
in threads, and errors in reading a signature."""

# ruff: noqa: B008 - FastAPI's Depends()/Header() defaults are the API under test

# No ``from __future__ import annotations``: handlers defined inside tests
# refer to local names in their annotations, which must evaluate eagerly.

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import pytest

from rawserve import BackgroundTasks, Depends, Header, HTTPException, RawServe
from tests.test_app import call, make_request
from tests.test_params import INT_MSG, detail


async def test_dependency_chain_is_cached_per_request() -> None:
    app = RawServe()
    calls: list[str] = []

    async def common(q: str | None = None, skip: int = 0, limit: int = 100) -> dict[str, Any]:
        calls.append("common")
        return {"q": q, "skip": skip, "limit": limit}

    def user(
        commons: Annotated[dict[str, Any], Depends(common)], x_user: str = Header("anon")
    ) -> str:
        return f"{x_user}:{commons['q']}"

    class Pager:
        def __init__(self, commons: dict[str, Any] = Depends(common)) -> None:
            self.limit = commons["limit"]

    @app.get("/items")
    async def items(
        commons: dict[str, Any] = Depends(common),
        who: str = Depends(user),
        pager: Pager = Depends(),
        fresh: dict[str, Any] = Depends(common, use_cache=False),
    ) -> dict[str, Any]:
        return {"commons": commons, "who": who, "limit": pager.limit, "same": fresh == commons}

    r = await call(app, "GET", "/items?q=z&limit=5", headers={"x-user": "ann"})
    assert r.json() == {
        "commons": {"q": "z", "skip": 0, "limit": 5},
        "who": "ann:z",
        "limit": 5,
        "same": True,
    }
    assert calls == ["common", "common"]  # once cached, once use_cache=False
    # As in FastAPI, a dependency that fails is not cached, so each of its
    # four uses reports the error.
    assert (
        detail(await call(app, "GET", "/items?skip=no"))
        == [
            {"type": "int_parsing", "loc": ["query", "skip"], "msg": INT_MSG, "input": "no"},
        ]
        * 4
    )


async def test_route_and_app_dependencies_run_first() -> None:
    order: list[str] = []

    def app_dep() -> None:
        order.append("app")

    async def verify_token(x_token: str = Header()) -> None:
        order.append("token")
        if x_token != "secret":
            raise HTTPException(400, "X-Token header invalid")

    app = RawServe(dependencies=[Depends(app_dep)])

    @app.get("/items", dependencies=[Depends(verify_token)])
    async def items() -> str:
        order.append("handler")
        return "ok"

    r = await call(app, "GET", "/items", headers={"x-token": "secret"})
    assert r.json() == "ok"
    assert order == ["app", "token", "handler"]
    r = await call(app, "GET", "/items", headers={"x-token": "bad"})
    assert (r.status, r.json()) == (400, {"detail": "X-Token header invalid"})
    assert detail(await call(app, "GET", "/items"))[0]["loc"] == ["header", "x-token"]


async def test_yield_dependencies_clean_up_after_the_response() -> None:
    app = RawServe()
    events: list[str] = []

    async def db() -> AsyncIterator[str]:
        events.append("open db")
        try:
            yield "db"
        finally:
            events.append("close db")

    def sync_resource() -> Iterator[int]:
        events.append(f"open sync in {'loop' if threading.current_thread() is main else 'thread'}")
        yield 1
        events.append("close sync")

    main = threading.current_thread()

    @app.get("/")
    async def root(
        tasks: BackgroundTasks,
        conn: str = Depends(db),
        res: int = Depends(sync_resource),
    ) -> list[Any]:
        events.append("handler")
        tasks.add_task(events.append, "background")
        return [conn, res]

    request = make_request("GET", "/")
    response = await app.handle(request)
    assert response.body == b'["db",1]'
    assert events == ["open db", "open sync in thread", "handler"]
    await response.run_background()
    # FastAPI's order: body sent, background tasks, then the cleanup.
    assert events[3:] == ["background", "close sync", "close db"]


async def test_yield_dependency_sees_the_handler_exception() -> None:
    app = RawServe()
    seen: list[str] = []

    async def guard() -> AsyncIterator[None]:
        try:
            yield
        except KeyError as exc:
            seen.append(f"caught {exc}")
            raise HTTPException(409, "conflict") from exc

    @app.get("/")
    async def root(_: None = Depends(guard)) -> None:
        raise KeyError("k")

    r = await call(app, "GET", "/")
    assert (r.status, r.json()) == (409, {"detail": "conflict"})
    assert seen == ["caught 'k'"]


async def test_function_scope_yield_dependency_exits_before_the_response() -> None:
    app = RawServe()
    events: list[str] = []

    async def short() -> AsyncIterator[None]:
        yield
        events.append("exit")

    @app.get("/")
    async def root(_: None = Depends(short, scope="function")) -> None:
        events.append("handler")

    response = await app.handle(make_request("GET", "/"))
    assert events == ["handler", "exit"]
    await response.run_background()


async def test_dependency_overrides() -> None:
    app = RawServe()

    async def real_db() -> str:
        return "real"

    @app.get("/")
    async def root(db: str = Depends(real_db)) -> str:
        return db

    async def fake_db(q: str = "fake") -> str:
        return q

    app.dependency_overrides[real_db] = fake_db
    assert (await call(app, "GET", "/?q=over")).json() == "over"
    app.dependency_overrides.clear()
    assert (await call(app, "GET", "/")).json() == "real"


async def test_sync_dependencies_run_in_threads() -> None:
    app = RawServe()
    loop_thread = threading.get_ident()

    def where() -> int:
        return threading.get_ident()

    @app.get("/")
    async def root(t: int = Depends(where)) -> bool:
        return t != loop_thread

    assert (await call(app, "GET", "/")).json() is True


def test_unresolvable_annotation_is_a_clear_error() -> None:
    app = RawServe()

    def handler(x: "NotDefinedAnywhere") -> None:  # type: ignore[name-defined]  # noqa: F821
        return None

    with pytest.raises(TypeError, match="NotDefinedAnywhere"):
        app.get("/")(handler)
