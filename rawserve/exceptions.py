"""Exceptions a handler raises to answer with an error (starlette/FastAPI shapes)."""

from __future__ import annotations

import http
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "FastAPIDeprecationWarning",
    "FastAPIError",
    "HTTPException",
    "RequestValidationError",
    "ResponseValidationError",
]


class FastAPIError(RuntimeError):
    """A mistake in the program, found when it is built (an invalid response
    model, say): FastAPI's name, so ``except FastAPIError`` moves over."""


class FastAPIDeprecationWarning(UserWarning):
    """A deprecation users should see: a UserWarning, because Python hides
    DeprecationWarning outside ``__main__`` (FastAPI's reason too)."""


class HTTPException(Exception):
    """Answer ``status_code`` with ``{"detail": detail}`` and ``headers``.

    ``detail`` defaults to the status phrase, as in starlette."""

    def __init__(
        self,
        status_code: int,
        detail: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if detail is None:
            try:
                detail = http.HTTPStatus(status_code).phrase
            except ValueError:
                detail = ""
        self.status_code = status_code
        self.detail = detail
        self.headers = headers
        super().__init__(status_code, detail)

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code!r}, detail={self.detail!r})"


class ValidationException(Exception):
    """Base of the validation errors: a list of pydantic-shaped error dicts."""

    def __init__(self, errors: Sequence[Any]) -> None:
        super().__init__(errors)
        self._errors = errors

    def errors(self) -> Sequence[Any]:
        return self._errors


class RequestValidationError(ValidationException):
    """The request does not fit the handler's signature; answered with 422 and
    ``{"detail": errors}``. ``body`` is what was received, for custom handlers."""

    def __init__(self, errors: Sequence[Any], *, body: Any = None) -> None:
        super().__init__(errors)
        self.body = body

    def __str__(self) -> str:
        lines = [f"{len(self._errors)} validation error(s):"]
        for err in self._errors:
            lines.append(f"  {tuple(err.get('loc', ()))}: {err.get('msg', '')}")
        return "\n".join(lines)


class ResponseValidationError(ValidationException):
    """The handler returned something its ``response_model`` rejects: a server
    bug, answered with 500."""

    def __init__(self, errors: Sequence[Any], *, body: Any = None) -> None:
        super().__init__(errors)
        self.body = body

    def __str__(self) -> str:
        lines = [f"{len(self._errors)} response validation error(s):"]
        for err in self._errors:
            lines.append(f"  {tuple(err.get('loc', ()))}: {err.get('msg', '')}")
        return "\n".join(lines)
