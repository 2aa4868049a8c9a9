"""build_validator: a validator for any annotation, composed from the scalar ones
for containers, unions, dataclasses and dates, or pydantic's when it is installed."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import typing
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, get_args, get_origin

from rawserve.datastructures import UploadFile
from rawserve.params import DependsParam, Param
from rawserve.validation.annotations import MAPPING_ORIGINS, SEQUENCE_ORIGINS, UNION_ORIGINS
from rawserve.validation.errors import Invalid, fail, missing, prefix_errors
from rawserve.validation.pydantic_bridge import (
    is_pydantic_model,
    pydantic_module,
    pydantic_validator,
)
from rawserve.validation.scalars import (
    SCALARS,
    any_value,
    enum_validator,
    literal_validator,
    upload_file,
    v_bool,
)

__all__ = ["build_validator", "needs_pydantic", "type_hints"]


_CONTAINER_NAMES: dict[type, str] = {
    list: "list",
    set: "set",
    frozenset: "frozenset",
    tuple: "tuple",
    deque: "list",
}


def _type_name(container: type) -> str:
    return _CONTAINER_NAMES[container]


def _sequence_validator(
    container: type, item: Callable[[Any], Any], fixed: list[Callable[[Any], Any]] | None
) -> Callable[[Any], Any]:
    kind = _type_name(container)
    accepted: tuple[type, ...] = (list, tuple, set, frozenset, deque)
    if kind == "list":
        msg, typ = "Input should be a valid list", "list_type"
    elif kind == "tuple":
        msg, typ = "Input should be a valid tuple", "tuple_type"
    elif kind == "set":
        msg, typ = "Input should be a valid set", "set_type"
    else:
        msg, typ = "Input should be a valid frozenset", "frozen_set_type"

    def v(value: Any) -> Any:
        if not isinstance(value, accepted):
            fail(typ, msg, value)
        raw: Any = value
        seq: Sequence[Any] = raw if isinstance(raw, list | tuple) else list(raw)
        out = []
        errors: list[dict[str, Any]] = []
        for i, x in enumerate(seq):
            fn = item
            if fixed is not None:
                if i >= len(fixed):
                    fail(
                        "too_long",
                        f"Tuple should have at most {len(fixed)} items after validation, "
                        f"not {len(seq)}",
                        value,
                    )
                fn = fixed[i]
            try:
                out.append(fn(x))
            except Invalid as exc:
                errors.extend(prefix_errors(exc.errors, (i,)))
        if fixed is not None and len(seq) < len(fixed):
            for i in range(len(seq), len(fixed)):
                errors.append(missing((i,)) | {"input": value})
        if errors:
            raise Invalid(errors)
        return out if container is list else container(out)

    return v


def _mapping_validator(
    key: Callable[[Any], Any], val: Callable[[Any], Any]
) -> Callable[[Any], Any]:
    def v(value: Any) -> Any:
        if not isinstance(value, Mapping):
            fail("dict_type", "Input should be a valid dictionary", value)
        if key is any_value and val is any_value:
            return value if type(value) is dict else dict(value)
        out = {}
        errors: list[dict[str, Any]] = []
        for k, x in value.items():
            try:
                kk = key(k)
            except Invalid as exc:
                errors.extend(prefix_errors(exc.errors, (k, "[key]")))
                continue
            try:
                out[kk] = val(x)
            except Invalid as exc:
                errors.extend(prefix_errors(exc.errors, (k,)))
        if errors:
            raise Invalid(errors)
        return out

    return v


def _union_validator(members: list[Callable[[Any], Any]], has_none: bool) -> Callable[[Any], Any]:
    if len(members) == 1:
        only = members[0]
        if not has_none:
            return only

        def optional(value: Any) -> Any:
            return None if value is None else only(value)

        return optional

    def v(value: Any) -> Any:
        if value is None and has_none:
            return None
        first: Invalid | None = None
        for fn in members:
            try:
                return fn(value)
            except Invalid as exc:
                first = first or exc
        assert first is not None
        raise first

    return v


def _dataclass_validator(cls: type) -> Callable[[Any], Any]:
    """Without pydantic: a dict of the dataclass's init fields, each validated
    by its annotation."""
    hints = type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        has_default = (
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        )
        fields.append((f.name, build_validator(hints.get(f.name, Any)), has_default))
    name = cls.__name__

    def v(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            fail(
                "dataclass_type",
                f"Input should be a dictionary or an instance of {name}",
                value,
                {"class_name": name},
            )
        kwargs = {}
        errors: list[dict[str, Any]] = []
        for fname, fn, has_default in fields:
            if fname not in value:
                if not has_default:
                    errors.append(
                        {
                            "type": "missing",
                            "loc": (fname,),
                            "msg": "Field required",
                            "input": value,
                        }
                    )
                continue
            try:
                kwargs[fname] = fn(value[fname])
            except Invalid as exc:
                errors.extend(prefix_errors(exc.errors, (fname,)))
        if errors:
            raise Invalid(errors)
        return cls(**kwargs)

    return v


_ISO_TYPES: dict[Any, str] = {
    datetime.datetime: "datetime",
    datetime.date: "date",
    datetime.time: "time",
}


def _iso_validator(tp: Any) -> Callable[[Any], Any]:
    """Without pydantic: ISO 8601 strings (and timestamps for datetimes)."""
    name = _ISO_TYPES[tp]

    def v(value: Any) -> Any:
        if isinstance(value, tp) and not (
            tp is datetime.date and isinstance(value, datetime.datetime)
        ):
            return value
        if (
            tp is datetime.datetime
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            return datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
        if isinstance(value, str):
            try:
                return tp.fromisoformat(value.strip())
            except ValueError as exc:
                reason = str(exc)
        else:
            reason = f"expected a string, got {type(value).__name__}"
        fail(
            f"{name}_parsing", f"Input should be a valid {name}, {reason}", value, {"error": reason}
        )

    return v


def type_hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except Exception:
        return dict(getattr(obj, "__annotations__", {}))


def needs_pydantic(tp: Any) -> bool:
    """``tp`` is or contains a pydantic model or a dataclass (what a
    response_model filters)."""
    if is_pydantic_model(tp) or dataclasses.is_dataclass(tp):
        return True
    return any(needs_pydantic(a) for a in get_args(tp) if a is not ...)


def build_validator(tp: Any) -> Callable[[Any], Any]:
    """A function ``value -> converted value`` raising ``Invalid``, for a type."""
    if tp in SCALARS:
        return SCALARS[tp]
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        if not meta or all(isinstance(m, Param | DependsParam) for m in meta):
            return build_validator(base)
        if pydantic_module() is not None:
            return pydantic_validator(tp)
        return build_validator(base)
    if origin in UNION_ORIGINS:
        args = get_args(tp)
        has_none = type(None) in args
        members = [a for a in args if a is not type(None)]
        if (
            pydantic_module() is not None
            and any(needs_pydantic(m) for m in members)
            and len(members) > 1
        ):
            return pydantic_validator(tp)
        return _union_validator([build_validator(m) for m in members], has_none)
    if origin is Literal:
        return literal_validator(get_args(tp))
    if tp in SEQUENCE_ORIGINS or origin in SEQUENCE_ORIGINS:
        container = SEQUENCE_ORIGINS[origin if origin is not None else tp]
        args = get_args(tp)
        if container is tuple and args and not (len(args) == 2 and args[1] is ...):
            if args == ((),):
                return _sequence_validator(tuple, any_value, [])
            return _sequence_validator(tuple, any_value, [build_validator(a) for a in args])
        item = build_validator(args[0]) if args else any_value
        return _sequence_validator(container, item, None)
    if tp in MAPPING_ORIGINS or origin in MAPPING_ORIGINS:
        args = get_args(tp)
        if args:
            return _mapping_validator(build_validator(args[0]), build_validator(args[1]))
        return _mapping_validator(any_value, any_value)
    if isinstance(tp, type):
        if issubclass(tp, UploadFile):
            return upload_file
        if issubclass(tp, enum.Enum):
            return enum_validator(tp)
        if issubclass(tp, bool):
            return v_bool
        if is_pydantic_model(tp):
            return pydantic_validator(tp)
    if pydantic_module() is not None:
        try:
            return pydantic_validator(tp)
        except Exception:
            # Not a type pydantic understands (an arbitrary class): fall through.
            pass
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass_validator(tp)
    if tp in _ISO_TYPES:
        return _iso_validator(tp)
    if isinstance(tp, type):
        cls = tp

        def instance_of(value: Any) -> Any:
            if isinstance(value, cls):
                return value
            fail(
                "is_instance_of",
                f"Input should be an instance of {cls.__name__}",
                value,
                {"class": cls.__name__},
            )

        return instance_of
    return any_value
