"""Solving the dependency graph against one request: dependencies first, then
path, query, header, cookie and body values, errors collected FastAPI's way."""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from rawserve.concurrency import ThreadedContextManager, run_sync
from rawserve.datastructures import UploadFile
from rawserve.dependencies.models import ASYNC, GEN, SYNC, Dependant, Field
from rawserve.dependencies.utils import get_dependant
from rawserve.validation.annotations import is_sequence_annotation, strip_annotated
from rawserve.validation.errors import Invalid, missing, prefix_errors
from rawserve.validation.pydantic_bridge import is_pydantic_model

__all__ = ["SolveContext", "extract_form", "solve"]

_NOT_SET: Any = object()


class SolveContext:
    """Per-request state shared by a handler and its dependencies."""

    __slots__ = (
        "background",
        "body",
        "cache",
        "embed",
        "errors",
        "fast_body",
        "function_stack",
        "overrides",
        "path_names",
        "request",
        "response",
        "stack",
    )

    def __init__(self, request: Any, overrides: Mapping[Any, Any] | None, embed: bool) -> None:
        self.request = request
        self.overrides = overrides
        self.embed = embed
        self.body: Any = None
        self.fast_body: Any = _NOT_SET
        self.cache: dict[Any, Any] = {}
        self.errors: list[dict[str, Any]] = []
        self.stack: contextlib.AsyncExitStack | None = None
        self.function_stack: contextlib.AsyncExitStack | None = None
        self.background: Any = None
        self.response: Any = None
        self.path_names: frozenset[str] = frozenset()

    async def enter(self, dep: Dependant, kwargs: dict[str, Any]) -> Any:
        assert dep.cm_factory is not None
        if dep.scope == "function":
            if self.function_stack is None:
                self.function_stack = contextlib.AsyncExitStack()
            stack = self.function_stack
        else:
            if self.stack is None:
                self.stack = contextlib.AsyncExitStack()
            stack = self.stack
        cm = dep.cm_factory(**kwargs)
        if dep.kind == GEN:
            cm = ThreadedContextManager(cm)
        return await stack.enter_async_context(cm)

    def background_tasks(self) -> Any:
        if self.background is None:
            from rawserve.background import BackgroundTasks

            self.background = BackgroundTasks()
        return self.background

    def sub_response(self) -> Any:
        if self.response is None:
            from rawserve.responses import Response

            response = Response()
            del response.headers["content-length"]
            # FastAPI's marker for "the handler did not set a status".
            response.status_code = None  # type: ignore[assignment]
            self.response = response
        return self.response


# The dependency graphs of overrides, built once per (replacement, route
# parameters, name, scope) rather than per request. Least recently used first;
# bounded, because tests install a fresh override (often a lambda) per test
# and each would otherwise stay here, with everything it closes over, for
# the life of the process.
OVERRIDE_CACHE_SIZE = 512
_override_cache: OrderedDict[tuple[Any, frozenset[str], Any, str | None], Dependant] = OrderedDict()
_override_lock = threading.Lock()


def _overridden(sub: Dependant, ctx: SolveContext) -> Dependant:
    assert ctx.overrides is not None
    replacement = ctx.overrides.get(sub.call)
    if replacement is None:
        return sub
    key = (replacement, ctx.path_names, sub.name, sub.scope)
    with _override_lock:  # apps on several loops (threads) share the cache
        dep = _override_cache.get(key)
        if dep is not None:
            _override_cache.move_to_end(key)
            return dep
    dep = get_dependant(
        replacement, ctx.path_names, name=sub.name, use_cache=sub.use_cache, scope=sub.scope
    )
    with _override_lock:
        _override_cache[key] = dep
        if len(_override_cache) > OVERRIDE_CACHE_SIZE:
            _override_cache.popitem(last=False)
    return dep


async def solve(dep: Dependant, ctx: SolveContext) -> dict[str, Any]:
    """Bind ``dep``'s arguments: dependencies first, then path, query, header,
    cookie and body parameters. Errors collect in ``ctx.errors``."""
    values: dict[str, Any] = {}
    errors = ctx.errors
    request = ctx.request
    for sub in dep.dependencies:
        key = sub.cache_key
        if ctx.overrides:
            sub = _overridden(sub, ctx)
        if sub.use_cache and key in ctx.cache:
            if sub.name is not None:
                values[sub.name] = ctx.cache[key]
            continue
        before = len(errors)
        kwargs = await solve(sub, ctx)
        if len(errors) != before:
            continue
        kind = sub.kind
        if kind == ASYNC:
            solved = await sub.call(**kwargs)
        elif kind == SYNC:
            solved = await run_sync(sub.call, kwargs)
        else:
            solved = await ctx.enter(sub, kwargs)
        if sub.name is not None:
            values[sub.name] = solved
        if key not in ctx.cache:
            ctx.cache[key] = solved
    for f in dep.params:
        in_ = f.in_
        if in_ == "path":
            raw = request.path_params.get(f.alias)
        elif in_ == "query":
            if f.is_sequence:
                raw = request.query_params.getlist(f.alias) or None
            else:
                raw = request.query_params.get(f.alias)
        elif in_ == "header":
            if f.is_sequence:
                raw = request.headers.getlist(f.alias) or None
            else:
                raw = request.headers.get(f.alias)
        else:
            raw = request.cookies.get(f.alias)
        if raw is None:
            if f.required:
                errors.append(missing(f.loc))
            else:
                values[f.name] = f.default_value()
            continue
        try:
            values[f.name] = f.validate(raw)
        except Invalid as exc:
            errors.extend(prefix_errors(exc.errors, f.loc))
    if dep.body:
        _bind_body(dep.body, ctx, values)
    if dep.request_name is not None:
        values[dep.request_name] = request
    if dep.background_name is not None:
        values[dep.background_name] = ctx.background_tasks()
    if dep.response_name is not None:
        values[dep.response_name] = ctx.sub_response()
    return values


def _bind_body(fields: list[Field], ctx: SolveContext, values: dict[str, Any]) -> None:
    errors = ctx.errors
    body = ctx.body
    if not ctx.embed:
        f = fields[0]
        if ctx.fast_body is not _NOT_SET:
            values[f.name] = ctx.fast_body
            return
        if body is None:
            if f.required:
                errors.append(missing(("body",)))
            else:
                values[f.name] = f.default_value()
            return
        try:
            values[f.name] = f.validate(body)
        except Invalid as exc:
            errors.extend(prefix_errors(exc.errors, ("body",)))
        return
    for f in fields:
        loc = ("body", f.alias)
        value = None
        if body is not None and not isinstance(body, bytes):
            try:
                value = body.get(f.alias)
            except AttributeError:  # a JSON list or scalar, not an object
                errors.append(missing(loc))
                continue
        if value is None:
            if f.required:
                errors.append(missing(loc))
            else:
                values[f.name] = f.default_value()
            continue
        try:
            values[f.name] = f.validate(value)
        except Invalid as exc:
            errors.extend(prefix_errors(exc.errors, loc))


async def extract_form(fields: list[Field], form: Any, embed: bool) -> dict[str, Any]:
    """FastAPI's ``_extract_form_body``: the values the form gives each field
    (a model's fields when one model is the whole body); empty strings of Form
    fields count as absent, ``bytes`` files are read."""
    values: dict[str, Any] = {}
    model = strip_annotated(fields[0].annotation) if fields else None
    if not embed and len(fields) == 1 and is_pydantic_model(model):
        for alias, is_seq in _model_form_fields(model):
            _collect_form_value(alias, is_seq, False, form, values)
    else:
        for f in fields:
            _collect_form_value(f.alias, f.is_sequence, f.is_form, form, values)
            if f.is_file and f.is_bytes and f.alias in values:
                value = values[f.alias]
                if isinstance(value, UploadFile):
                    values[f.alias] = await value.read()
                elif isinstance(value, list):
                    values[f.alias] = [
                        await v.read() if isinstance(v, UploadFile) else v for v in value
                    ]
    seen = {f.alias for f in fields}
    for key in form.keys():
        if key not in seen and key not in values:
            items = form.getlist(key)
            values[key] = items[0] if len(items) == 1 else items
    return values


def _model_form_fields(model: Any) -> list[tuple[str, bool]]:
    out = []
    for name, info in model.model_fields.items():
        alias = info.validation_alias if isinstance(info.validation_alias, str) else None
        out.append((alias or info.alias or name, is_sequence_annotation(info.annotation)))
    return out


def _collect_form_value(
    alias: str, is_seq: bool, is_form: bool, form: Any, values: dict[str, Any]
) -> None:
    value = form.getlist(alias) if is_seq else form.get(alias)
    if value is None or (is_form and isinstance(value, str) and value == ""):
        return
    if is_seq and len(value) == 0:
        return
    values[alias] = value
