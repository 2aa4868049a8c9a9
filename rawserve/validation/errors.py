"""Validation errors in pydantic v2's shape (``type``, ``loc``, ``msg``, ``input``,
optional ``ctx``), so the 422 body is the one FastAPI sends."""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["Invalid", "error", "fail", "missing", "prefix_errors"]


class Invalid(Exception):
    """A value failed validation; ``errors`` have ``loc`` relative to it."""

    __slots__ = ("errors",)

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


def error(
    type_: str, msg: str, input_: Any, ctx: dict[str, Any] | None = None, loc: tuple[Any, ...] = ()
) -> dict[str, Any]:
    err: dict[str, Any] = {"type": type_, "loc": loc, "msg": msg, "input": input_}
    if ctx is not None:
        err["ctx"] = ctx
    return err


def fail(type_: str, msg: str, input_: Any, ctx: dict[str, Any] | None = None) -> NoReturn:
    raise Invalid([error(type_, msg, input_, ctx)])


def missing(loc: tuple[Any, ...]) -> dict[str, Any]:
    return {"type": "missing", "loc": loc, "msg": "Field required", "input": None}


def prefix_errors(errors: list[dict[str, Any]], loc: tuple[Any, ...]) -> list[dict[str, Any]]:
    for err in errors:
        err["loc"] = loc + tuple(err["loc"])
    return errors
