"""rawserve.concurrency: sync handlers and dependencies run on the loop's
default executor (the one asyncio.to_thread uses), sized for FastAPI's 40
concurrent sync calls; a sync generator dependency's teardown sees the
contextvars its setup set; and the dependency-override cache is bounded."""

import asyncio
import contextvars
import threading
from collections.abc import Iterator
from typing import Annotated

import pytest

from rawserve import Depends, RawServe
from rawserve.concurrency import THREAD_POOL_SIZE, ThreadedContextManager, run_sync
from rawserve.dependencies import solving
from tests.test_app import call

request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="-")
setup_var: contextvars.ContextVar[str] = contextvars.ContextVar("setup_var", default="-")


async def test_sync_calls_share_one_pool_with_to_thread_sized_for_forty() -> None:
    # Twelve calls that each wait for all twelve: they pass only if twelve
    # threads run at once (asyncio's default pool has cores + 4). The barrier's
    # timeout bounds a failure; nothing here measures time.
    n = 12
    assert n <= THREAD_POOL_SIZE
    barrier = threading.Barrier(n, timeout=30)
    names = await asyncio.gather(
        *(
            run_sync(lambda: (barrier.wait(), threading.current_thread().name)[1], {})
            for _ in range(n)
        )
    )
    assert all(name.startswith("rawserve-sync") for name in names)
    # asyncio.to_thread runs on the same pool.
    name = await asyncio.to_thread(lambda: threading.current_thread().name)
    assert name.startswith("rawserve-sync")


async def test_run_sync_carries_the_callers_contextvars() -> None:
    request_var.set("from the caller")
    assert await run_sync(request_var.get, {}) == "from the caller"


async def test_threaded_context_manager_exit_sees_what_its_entry_set() -> None:
    seen: dict[str, str] = {}

    class CM:
        def __enter__(self) -> str:
            setup_var.set("set in __enter__")
            return "value"

        def __exit__(self, *exc: object) -> None:
            seen["setup"] = setup_var.get()
            seen["request"] = request_var.get()

    request_var.set("request")
    async with ThreadedContextManager(CM()) as value:
        assert value == "value"
    assert seen == {"setup": "set in __enter__", "request": "request"}
    assert setup_var.get() == "-"  # the entry's context is a copy: the caller's is untouched


async def test_sync_generator_dependency_teardown_sees_its_setup_contextvars() -> None:
    app = RawServe()
    seen: list[str] = []

    def resource() -> Iterator[str]:
        setup_var.set("opened")
        yield "db"
        seen.append(setup_var.get())

    @app.get("/")
    def handler(db: Annotated[str, Depends(resource)]) -> dict[str, str]:
        return {"db": db}

    r = await call(app, "GET", "/")
    assert r.status == 200 and r.json() == {"db": "db"}
    assert seen == ["opened"]


async def test_override_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(solving, "OVERRIDE_CACHE_SIZE", 8)
    monkeypatch.setattr(solving, "_override_cache", type(solving._override_cache)())
    app = RawServe()

    def real() -> int:
        return 0

    @app.get("/")
    async def handler(n: Annotated[int, Depends(real)]) -> dict[str, int]:
        return {"n": n}

    for i in range(1, 40):
        # A fresh override per "test", as test suites install them.
        app.dependency_overrides[real] = lambda i=i: i
        r = await call(app, "GET", "/")
        assert r.json() == {"n": i}
        assert len(solving._override_cache) <= 8
    # A replacement still in use stays cached (least recently used goes first).
    keep = app.dependency_overrides[real]
    assert any(key[0] is keep for key in solving._override_cache)
