"""Building the dependency graph from a handler's signature, the way FastAPI
reads one: which parameter comes from where, and which are dependencies."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, get_args, get_origin

from rawserve.datastructures import UploadFile
from rawserve.dependencies.models import Dependant, Field
from rawserve.params import (
    BodyParam,
    CookieParam,
    DependsParam,
    FileParam,
    HeaderParam,
    Param,
    PathParam,
    QueryParam,
    Undefined,
)
from rawserve.validation.annotations import (
    MAPPING_ORIGINS,
    is_sequence_annotation,
    is_union,
    lenient_issubclass,
    strip_annotated,
)
from rawserve.validation.pydantic_bridge import is_pydantic_model

__all__ = ["get_dependant", "should_embed"]


def _is_complex(tp: Any) -> bool:
    """FastAPI's rule for "not a query parameter": models, mappings, uploads,
    sequences and dataclasses (also inside a Union)."""
    origin = get_origin(tp)
    if is_union(tp):
        return any(_is_complex(a) for a in get_args(tp))
    if origin is Annotated:
        return _is_complex(get_args(tp)[0])
    for t in (tp, origin):
        if t is None:
            continue
        if t in MAPPING_ORIGINS or lenient_issubclass(t, Mapping | UploadFile):
            return True
        if is_pydantic_model(t) or dataclasses.is_dataclass(t):
            return True
        if is_sequence_annotation(t):
            return True
    return False


def _contains(tp: Any, cls: type) -> bool:
    if lenient_issubclass(tp, cls):
        return True
    return any(_contains(a, cls) for a in get_args(tp) if a is not ...)


def _signature(call: Callable[..., Any]) -> tuple[inspect.Signature, dict[str, Any]]:
    try:
        sig = inspect.signature(call)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot read the signature of {call!r}: {exc}") from None
    target: Any = call
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.isclass(target):
        target = target.__init__
    elif not inspect.isroutine(target):
        target = getattr(target, "__call__", target)  # noqa: B004
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:
        hints = _hints_one_by_one(target, sig)
    return sig, hints


def _hints_one_by_one(target: Any, sig: inspect.Signature) -> dict[str, Any]:
    globalns = getattr(inspect.unwrap(target), "__globals__", {})
    hints: dict[str, Any] = {}
    for name, p in sig.parameters.items():
        ann = p.annotation
        if isinstance(ann, str):
            try:
                ann = eval(ann, globalns)
            except Exception as exc:
                qual = getattr(target, "__qualname__", repr(target))
                raise TypeError(
                    f"cannot resolve the annotation {ann!r} of parameter {name!r} of {qual}: {exc}"
                ) from None
        hints[name] = ann
    return hints


def get_dependant(
    call: Callable[..., Any],
    path_param_names: frozenset[str] | set[str],
    *,
    name: str | None = None,
    use_cache: bool = True,
    scope: str | None = None,
) -> Dependant:
    """Analyse ``call``'s signature the way FastAPI does."""
    # Imported here: requests/responses import datastructures, not us, but
    # keeping this module importable on its own keeps its tests cheap.
    from rawserve.background import BackgroundTasks
    from rawserve.requests import Request
    from rawserve.responses import Response

    dep = Dependant(call, name=name, use_cache=use_cache, scope=scope)
    sig, hints = _signature(call)
    for pname, p in sig.parameters.items():
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        annotation = hints.get(pname, p.annotation)
        if annotation is inspect.Parameter.empty:
            annotation = Any
        default = Undefined if p.default is inspect.Parameter.empty else p.default
        type_ann = annotation
        marker: Param | None = None
        depends: DependsParam | None = None
        if get_origin(annotation) is Annotated:
            type_ann, *meta = get_args(annotation)
            ours = [m for m in meta if isinstance(m, Param | DependsParam)]
            if ours:
                last = ours[-1]
                if isinstance(last, Param):
                    marker = last.with_default(default)
                else:
                    depends = last
        if isinstance(default, DependsParam):
            if depends is not None or marker is not None:
                raise TypeError(f"{pname!r}: Depends given both in Annotated and as default")
            depends = default
        elif isinstance(default, Param):
            if marker is not None:
                raise TypeError(f"{pname!r}: a marker given both in Annotated and as default")
            marker = default
        if depends is not None:
            target = depends.dependency if depends.dependency is not None else type_ann
            if not callable(target):
                raise TypeError(f"{pname!r}: Depends() needs a callable, got {target!r}")
            dep.dependencies.append(
                get_dependant(
                    target,
                    path_param_names,
                    name=pname,
                    use_cache=depends.use_cache,
                    scope=depends.scope,
                )
            )
            continue
        if marker is None:
            if lenient_issubclass(type_ann, Request):
                dep.request_name = pname
                continue
            if lenient_issubclass(type_ann, Response):
                dep.response_name = pname
                continue
            if lenient_issubclass(type_ann, BackgroundTasks):
                dep.background_name = pname
                continue
            if pname in path_param_names:
                marker = PathParam()
            elif _contains(strip_annotated(type_ann), UploadFile):
                marker = FileParam(default)
            elif _is_complex(type_ann):
                marker = BodyParam(default)
            else:
                marker = QueryParam(default)
        if pname in path_param_names:
            if not isinstance(marker, PathParam):
                raise TypeError(
                    f"{pname!r} is a path parameter; it cannot be a {type(marker).__name__}"
                )
        elif isinstance(marker, PathParam):
            raise TypeError(f"{pname!r} is declared with Path() but is not in the path")
        if isinstance(marker, QueryParam | HeaderParam | CookieParam) and is_pydantic_model(
            strip_annotated(type_ann)
        ):
            raise TypeError(
                f"{pname!r}: a pydantic model as a {marker.in_} parameter is not supported"
            )
        field = Field(pname, annotation, marker)
        if isinstance(marker, BodyParam):
            dep.body.append(field)
        else:
            dep.params.append(field)
    # FastAPI's order: path, query, header, cookie (errors come out in it).
    order = {"path": 0, "query": 1, "header": 2, "cookie": 3}
    dep.params.sort(key=lambda f: order[f.in_])
    return dep


def should_embed(body_fields: list[Field]) -> bool:
    """FastAPI's rule: several body parameters, ``embed=True``, or a form field
    that is not a model are looked up by name in the body object."""
    if not body_fields:
        return False
    if len({f.name for f in body_fields}) > 1:
        return True
    first = body_fields[0]
    if getattr(first.marker, "embed", None):
        return True
    return first.is_form and not is_pydantic_model(strip_annotated(first.annotation))
