"""The dependency graph: a ``Dependant`` (a callable and the ``Field`` each of
its parameters binds), built once per route (FastAPI's dependencies/models.py)."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from collections.abc import Callable
from typing import Any, get_args

from rawserve.params import FileParam, FormParam, HeaderParam, Param
from rawserve.validation.annotations import (
    is_bytes_annotation,
    is_sequence_annotation,
    strip_annotated,
)
from rawserve.validation.builder import build_validator
from rawserve.validation.constraints import constrain

__all__ = ["ASYNC", "ASYNC_GEN", "GEN", "SYNC", "Dependant", "Field", "call_kind"]

# How a callable is called: awaited, run in a thread, or entered as a context.
ASYNC, SYNC, GEN, ASYNC_GEN = "async", "sync", "gen", "asyncgen"


def call_kind(call: Callable[..., Any]) -> str:
    fn: Any = call
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.isclass(fn):
        return SYNC
    if not inspect.isroutine(fn):
        fn = getattr(fn, "__call__", fn)  # noqa: B004 - instances with __call__
    if inspect.isasyncgenfunction(fn):
        return ASYNC_GEN
    if inspect.isgeneratorfunction(fn):
        return GEN
    if inspect.iscoroutinefunction(fn):
        return ASYNC
    return SYNC


class Field:
    """One bound parameter: where to look, what to call it in errors, how to
    validate, what to use when absent."""

    __slots__ = (
        "alias",
        "annotation",
        "default",
        "default_factory",
        "in_",
        "is_bytes",
        "is_file",
        "is_form",
        "is_sequence",
        "loc",
        "marker",
        "name",
        "required",
        "validate",
    )

    def __init__(self, name: str, annotation: Any, marker: Param) -> None:
        self.name = name
        self.annotation = annotation
        self.marker = marker
        self.in_ = marker.in_
        if isinstance(marker, HeaderParam) and not marker.alias and marker.convert_underscores:
            self.alias = name.replace("_", "-")
        else:
            self.alias = marker.alias or name
        self.loc: tuple[Any, ...] = (self.in_, self.alias)
        self.required = marker.required
        self.default = marker.default
        self.default_factory = marker.default_factory
        base = strip_annotated(annotation)
        self.is_sequence = is_sequence_annotation(base)
        self.is_form = isinstance(marker, FormParam)
        self.is_file = isinstance(marker, FileParam)
        self.is_bytes = is_bytes_annotation(base) or (
            self.is_sequence and any(is_bytes_annotation(a) for a in get_args(base))
        )
        self.validate = constrain(build_validator(annotation), marker)

    def default_value(self) -> Any:
        if self.default_factory is not None:
            return self.default_factory()
        d = self.default
        if isinstance(d, list | dict | set):
            return copy.deepcopy(d)
        return d

    def __repr__(self) -> str:
        return f"<Field {self.in_}:{self.alias}>"


class Dependant:
    """A callable and what its parameters need, analysed once at registration."""

    __slots__ = (
        "background_name",
        "body",
        "cache_key",
        "call",
        "cm_factory",
        "dependencies",
        "kind",
        "name",
        "params",
        "request_name",
        "response_name",
        "scope",
        "use_cache",
    )

    def __init__(
        self,
        call: Callable[..., Any],
        *,
        name: str | None = None,
        use_cache: bool = True,
        scope: str | None = None,
    ) -> None:
        self.call = call
        self.name = name
        self.use_cache = use_cache
        self.scope = scope
        self.kind = call_kind(call)
        self.cache_key: Any = call
        self.cm_factory: Callable[..., Any] | None = None
        if self.kind == ASYNC_GEN:
            self.cm_factory = contextlib.asynccontextmanager(call)
        elif self.kind == GEN:
            self.cm_factory = contextlib.contextmanager(call)
        self.params: list[Field] = []
        self.body: list[Field] = []
        self.dependencies: list[Dependant] = []
        self.request_name: str | None = None
        self.response_name: str | None = None
        self.background_name: str | None = None

    def flat_body(self) -> list[Field]:
        out: list[Field] = []
        stack = [self]
        while stack:
            d = stack.pop()
            out.extend(d.body)
            stack.extend(reversed(d.dependencies))
        return out

    def __repr__(self) -> str:
        return f"<Dependant {getattr(self.call, '__name__', self.call)!r}>"
