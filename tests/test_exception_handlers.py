"""The names FastAPI programs import for errors, and the default handlers a
custom handler falls back to."""

# No ``from __future__ import annotations``: handlers defined inside tests
# refer to local names in their annotations, which must evaluate eagerly.

import warnings

import pytest

from rawserve import HTTPException, RawServe, Request
from rawserve.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from rawserve.exceptions import FastAPIDeprecationWarning, FastAPIError, RequestValidationError
from tests.test_app import call


def test_fastapi_error_and_deprecation_warning_are_fastapis_kinds() -> None:
    assert issubclass(FastAPIError, RuntimeError)
    # A UserWarning, so Python shows it by default (a DeprecationWarning it hides).
    assert issubclass(FastAPIDeprecationWarning, UserWarning)
    with pytest.warns(FastAPIDeprecationWarning):
        warnings.warn("old", FastAPIDeprecationWarning, stacklevel=1)


async def test_a_custom_handler_falls_back_to_the_default_ones() -> None:
    app = RawServe()
    seen: list[str] = []

    @app.exception_handler(HTTPException)
    async def log_http(request: Request, exc: HTTPException) -> object:
        seen.append(f"http {exc.status_code}")
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def log_validation(request: Request, exc: RequestValidationError) -> object:
        seen.append("validation")
        return await request_validation_exception_handler(request, exc)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        if item_id == 3:
            raise HTTPException(418, "Nope", headers={"x-why": "teapot"})
        return {"item_id": item_id}

    r = await call(app, "GET", "/items/3")
    assert (r.status, r.json(), r.headers["x-why"]) == (418, {"detail": "Nope"}, "teapot")
    r = await call(app, "GET", "/items/x")
    assert r.status == 422
    assert r.json()["detail"][0]["type"] == "int_parsing"
    assert r.json()["detail"][0]["loc"] == ["path", "item_id"]
    assert seen == ["http 418", "validation"]


async def test_http_exception_handler_sends_no_body_where_the_status_forbids_it() -> None:
    app = RawServe()

    @app.get("/gone")
    async def gone() -> None:
        raise HTTPException(304)

    r = await call(app, "GET", "/gone")
    assert (r.status, r.body) == (304, b"")


def test_the_handlers_are_the_ones_the_app_installs() -> None:
    app = RawServe()
    assert app.exception_handlers[HTTPException] is http_exception_handler
    assert app.exception_handlers[RequestValidationError] is request_validation_exception_handler
