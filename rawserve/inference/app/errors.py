"""What a refused request is answered: each exception an endpoint or the engine
raises, mapped to its status, in V2's ``{"error": ...}`` shape or FastAPI's
``{"detail": ...}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rawserve.core.errors import BodyTooLarge
from rawserve.inference import v2
from rawserve.inference.engine import (
    DeadlineExceeded,
    EngineStopped,
    InferenceFailed,
    ModelNotFound,
    QueueFull,
)
from rawserve.inference.model import InputError
from rawserve.responses import JSONResponse, Response


class BadInput(ValueError):
    """A ``/predict`` body that is not rows of numbers: a 422."""


def v2_error(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    return Response(v2.error_body(message), status, headers, media_type="application/json")


def detail_error(message: Any, status: int, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"detail": message}, status, headers)


def error_response(exc: Exception, as_v2: bool) -> Response | None:
    """The answer to a request the endpoint or the engine refused, in V2's
    shape or FastAPI's; None for an exception that is a server bug."""
    make = v2_error if as_v2 else detail_error
    if isinstance(exc, v2.V2Error):
        return make(str(exc), 400)
    if isinstance(exc, BadInput):
        return make(str(exc), 422)
    if isinstance(exc, BodyTooLarge):
        return make(str(exc), 413)
    if isinstance(exc, QueueFull):
        return make(str(exc), 503, {"retry-after": str(exc.retry_after_s)})
    if isinstance(exc, DeadlineExceeded):
        return make(str(exc), 504)
    if isinstance(exc, EngineStopped):
        return make(str(exc), 503, {"retry-after": "1"})
    if isinstance(exc, ModelNotFound):
        return make(str(exc), 404)
    if isinstance(exc, InferenceFailed):
        return make(str(exc), 500)
    if isinstance(exc, InputError):
        return make(str(exc), 400 if as_v2 else 422)
    return None
