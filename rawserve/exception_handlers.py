"""The default answers to errors (FastAPI's ``fastapi.exception_handlers``), so
a custom handler can do its own thing and then fall back to them::

    @app.exception_handler(HTTPException)
    async def log_then_default(request, exc):
        log.info("HTTP error %s", exc.status_code)
        return await http_exception_handler(request, exc)

``server_error_response`` is the one 500 every part of rawserve sends when
something failed on the server's side: the app when a handler raised, and the
stream driver when a response object failed before its first byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rawserve.encoders import jsonable_encoder
from rawserve.exceptions import HTTPException, RequestValidationError
from rawserve.requests import Request
from rawserve.responses import JSONResponse, PlainTextResponse, Response
from rawserve.routing import body_allowed

__all__ = [
    "http_exception_handler",
    "request_validation_exception_handler",
    "server_error_response",
]


async def http_exception_handler(request: Request, exc: HTTPException) -> Response:
    headers = getattr(exc, "headers", None)
    if not body_allowed(exc.status_code):
        return Response(status_code=exc.status_code, headers=headers)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def request_validation_exception_handler(
    request: Request, exc: RequestValidationError
) -> JSONResponse:
    return JSONResponse({"detail": _error_list(exc.errors())}, status_code=422)


def server_error_response() -> Response:
    """500 with no internals in it (the traceback goes to the log only): plain
    text, as FastAPI (starlette's ServerErrorMiddleware) sends it."""
    return PlainTextResponse("Internal Server Error", status_code=500)


def _jsonable_ctx(value: Any) -> Any:
    # FastAPI runs the errors through jsonable_encoder, which renders an
    # exception (pydantic's ``ctx.error``) as {}.
    if isinstance(value, BaseException):
        return {}
    if isinstance(value, dict):
        return {k: _jsonable_ctx(v) for k, v in value.items()}
    return value


def _jsonable_input(value: Any) -> Any:
    try:
        return jsonable_encoder(value)
    except Exception:
        # An input JSON cannot carry (an UploadFile, say) must not turn the
        # 422 into a 500.
        return repr(value)


def _error_list(errors: Sequence[Any]) -> list[Any]:
    out = []
    for err in errors:
        if isinstance(err, dict):
            err = dict(err)
            if "loc" in err:
                err["loc"] = list(err["loc"])
            if "input" in err:
                err["input"] = _jsonable_input(err["input"])
            if "ctx" in err:
                err["ctx"] = _jsonable_input(_jsonable_ctx(err["ctx"]))
        out.append(err)
    return out
