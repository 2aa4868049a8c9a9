"""Binding a handler's parameters from the request, FastAPI's way.

Three parts: the markers users write (``Query``, ``Path``, ``Body``,
``Depends``...); validators that turn strings and JSON values into the
annotated types; and ``get_dependant``/``solve``, which read a signature once
at registration and bind it per request.

Errors are pydantic v2 shaped dicts (``type``, ``loc``, ``msg``, ``input``,
optional ``ctx``) so the 422 body is the one FastAPI sends. Common scalars and
containers are validated here without pydantic (the same messages, tested
against it); models, dataclasses and other types go through
``pydantic.TypeAdapter`` when pydantic is installed, and dataclasses through a
small validator of our own when it is not.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import copy
import dataclasses
import datetime
import decimal
import enum
import functools
import inspect
import re
import sys
import types
import typing
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, NoReturn, Union, get_args, get_origin

from rawserve.datastructures import UploadFile

__all__ = [
    "Body",
    "BodyParam",
    "Cookie",
    "CookieParam",
    "Depends",
    "DependsParam",
    "File",
    "FileParam",
    "Form",
    "FormParam",
    "Header",
    "HeaderParam",
    "Invalid",
    "Param",
    "Path",
    "PathParam",
    "Query",
    "QueryParam",
    "Security",
    "build_validator",
]


class _UndefinedType:
    """No default was given: the parameter is required."""

    _instance: _UndefinedType | None = None

    def __new__(cls) -> _UndefinedType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "Undefined"

    def __bool__(self) -> bool:
        return False


Undefined: Any = _UndefinedType()


# -- markers --------------------------------------------------------------------


class Param:
    """Where a parameter comes from and how it is constrained. Keyword
    arguments FastAPI accepts for documentation only are accepted and kept."""

    in_: str = "query"

    def __init__(
        self,
        default: Any = Undefined,
        *,
        default_factory: Callable[[], Any] | None = None,
        alias: str | None = None,
        validation_alias: str | None = None,
        title: str | None = None,
        description: str | None = None,
        gt: float | None = None,
        ge: float | None = None,
        lt: float | None = None,
        le: float | None = None,
        multiple_of: float | None = None,
        min_length: int | None = None,
        max_length: int | None = None,
        pattern: str | None = None,
        regex: str | None = None,
        include_in_schema: bool = True,
        **extra: Any,
    ) -> None:
        if default is ...:
            default = Undefined
        if default is not Undefined and default_factory is not None:
            raise TypeError("cannot give both default and default_factory")
        self.default = default
        self.default_factory = default_factory
        self.alias = validation_alias or alias
        self.title = title
        self.description = description
        self.gt = gt
        self.ge = ge
        self.lt = lt
        self.le = le
        self.multiple_of = multiple_of
        self.min_length = min_length
        self.max_length = max_length
        self.pattern = pattern if pattern is not None else regex
        self.include_in_schema = include_in_schema
        self.extra = extra

    @property
    def required(self) -> bool:
        return self.default is Undefined and self.default_factory is None

    def with_default(self, default: Any) -> Param:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.default = Undefined if default is ... else default
        return clone

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.default!r})"


class PathParam(Param):
    in_ = "path"


class QueryParam(Param):
    in_ = "query"


class HeaderParam(Param):
    in_ = "header"

    def __init__(
        self, default: Any = Undefined, *, convert_underscores: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(default, **kwargs)
        self.convert_underscores = convert_underscores


class CookieParam(Param):
    in_ = "cookie"


class BodyParam(Param):
    in_ = "body"

    def __init__(
        self,
        default: Any = Undefined,
        *,
        embed: bool | None = None,
        media_type: str = "application/json",
        **kwargs: Any,
    ) -> None:
        super().__init__(default, **kwargs)
        self.embed = embed
        self.media_type = media_type


class FormParam(BodyParam):
    def __init__(
        self,
        default: Any = Undefined,
        *,
        media_type: str = "application/x-www-form-urlencoded",
        **kwargs: Any,
    ) -> None:
        super().__init__(default, media_type=media_type, **kwargs)


class FileParam(FormParam):
    def __init__(
        self, default: Any = Undefined, *, media_type: str = "multipart/form-data", **kwargs: Any
    ) -> None:
        super().__init__(default, media_type=media_type, **kwargs)


class DependsParam:
    """``Depends(f)``: the argument is what ``f`` returns, with ``f``'s own
    parameters bound the same way. Cached per request unless ``use_cache=False``;
    ``scope="function"`` ends a yield-dependency right after the handler
    returns instead of after the response is sent."""

    __slots__ = ("dependency", "scope", "scopes", "use_cache")

    def __init__(
        self,
        dependency: Callable[..., Any] | None = None,
        *,
        use_cache: bool = True,
        scope: Literal["function", "request"] | None = None,
        scopes: Sequence[str] | None = None,
    ) -> None:
        self.dependency = dependency
        self.use_cache = use_cache
        self.scope = scope
        self.scopes = list(scopes or [])

    def __repr__(self) -> str:
        name = getattr(self.dependency, "__name__", repr(self.dependency))
        return f"Depends({name})"


# The functions users call. They return Any so that ``q: int = Query(1)``
# type-checks, as FastAPI's do.


def Path(default: Any = ..., **kwargs: Any) -> Any:
    return PathParam(default, **kwargs)


def Query(default: Any = Undefined, **kwargs: Any) -> Any:
    return QueryParam(default, **kwargs)


def Header(default: Any = Undefined, **kwargs: Any) -> Any:
    return HeaderParam(default, **kwargs)


def Cookie(default: Any = Undefined, **kwargs: Any) -> Any:
    return CookieParam(default, **kwargs)


def Body(default: Any = Undefined, **kwargs: Any) -> Any:
    return BodyParam(default, **kwargs)


def Form(default: Any = Undefined, **kwargs: Any) -> Any:
    return FormParam(default, **kwargs)


def File(default: Any = Undefined, **kwargs: Any) -> Any:
    return FileParam(default, **kwargs)


def Depends(
    dependency: Callable[..., Any] | None = None,
    *,
    use_cache: bool = True,
    scope: Literal["function", "request"] | None = None,
) -> Any:
    return DependsParam(dependency, use_cache=use_cache, scope=scope)


def Security(
    dependency: Callable[..., Any] | None = None,
    *,
    scopes: Sequence[str] | None = None,
    use_cache: bool = True,
) -> Any:
    return DependsParam(dependency, use_cache=use_cache, scopes=scopes)


# -- errors ---------------------------------------------------------------------


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


def _fail(type_: str, msg: str, input_: Any, ctx: dict[str, Any] | None = None) -> NoReturn:
    raise Invalid([error(type_, msg, input_, ctx)])


def missing(loc: tuple[Any, ...]) -> dict[str, Any]:
    return {"type": "missing", "loc": loc, "msg": "Field required", "input": None}


def prefix_errors(errors: list[dict[str, Any]], loc: tuple[Any, ...]) -> list[dict[str, Any]]:
    for err in errors:
        err["loc"] = loc + tuple(err["loc"])
    return errors


# -- pydantic, when present -------------------------------------------------------


def pydantic_module() -> Any:
    """pydantic if it can be imported, else None (never a hard dependency)."""
    mod = sys.modules.get("pydantic")
    if mod is not None:
        return mod
    try:
        import pydantic
    except ImportError:
        return None
    return pydantic


def is_pydantic_model(tp: Any) -> bool:
    # A BaseModel subclass exists only if its defining program imported
    # pydantic, so looking in sys.modules avoids importing it ourselves.
    mod = sys.modules.get("pydantic")
    return mod is not None and isinstance(tp, type) and issubclass(tp, mod.BaseModel)


def pydantic_errors(exc: Any) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors(include_url=False):
        item: dict[str, Any] = {
            "type": err["type"],
            "loc": tuple(err["loc"]),
            "msg": err["msg"],
            "input": err.get("input"),
        }
        if "ctx" in err:
            item["ctx"] = err["ctx"]
        out.append(item)
    return out


def pydantic_validator(tp: Any) -> Callable[[Any], Any]:
    mod = pydantic_module()
    assert mod is not None
    validate = mod.TypeAdapter(tp).validate_python
    validation_error = mod.ValidationError

    def v(value: Any) -> Any:
        try:
            return validate(value)
        except validation_error as exc:
            raise Invalid(pydantic_errors(exc)) from None

    return v


# -- scalar validators ------------------------------------------------------------

_INT_MSG = "Input should be a valid integer, unable to parse string as an integer"
_FLOAT_MSG = "Input should be a valid number, unable to parse string as a number"
_BOOL_MSG = "Input should be a valid boolean, unable to interpret input"
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def _parse_int_str(v: str) -> int:
    s = v.strip()
    if s.isascii():
        try:
            return int(s)
        except ValueError:
            # pydantic accepts an integral number written with a zero fraction.
            head, dot, frac = s.partition(".")
            if dot and frac and not frac.strip("0") and head.lstrip("+-").isdigit():
                return int(head)
    _fail("int_parsing", _INT_MSG, v)


def v_int(v: Any) -> int:
    t = type(v)
    if t is int:
        return typing.cast(int, v)
    if t is str:
        return _parse_int_str(v)
    if t is bool:
        return int(v)
    if t is float:
        if v.is_integer():
            return int(v)
        if v != v or v in (float("inf"), float("-inf")):
            _fail("finite_number", "Input should be a finite number", v)
        _fail(
            "int_from_float",
            "Input should be a valid integer, got a number with a fractional part",
            v,
        )
    if isinstance(v, int):
        return int(v)
    if isinstance(v, str):
        return _parse_int_str(str(v))
    if isinstance(v, decimal.Decimal) and v == v.to_integral_value():
        return int(v)
    _fail("int_type", "Input should be a valid integer", v)


def v_float(v: Any) -> float:
    t = type(v)
    if t is float:
        return typing.cast(float, v)
    if t is int or t is bool:
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        if s.isascii():
            try:
                return float(s)
            except ValueError:
                pass
        _fail("float_parsing", _FLOAT_MSG, v)
    if isinstance(v, int | float | decimal.Decimal):
        return float(v)
    _fail("float_type", "Input should be a valid number", v)


def v_bool(v: Any) -> bool:
    t = type(v)
    if t is bool:
        return typing.cast(bool, v)
    if isinstance(v, str):
        low = v.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        _fail("bool_parsing", _BOOL_MSG, v)
    if isinstance(v, int | float) and v in (0, 1):
        return bool(v)
    if isinstance(v, int | float):
        _fail("bool_parsing", _BOOL_MSG, v)
    _fail("bool_type", "Input should be a valid boolean", v)


def v_str(v: Any) -> str:
    if isinstance(v, str):
        return v if type(v) is str else str(v) if not isinstance(v, enum.Enum) else v.value
    if isinstance(v, bytes | bytearray):
        try:
            return bytes(v).decode()
        except UnicodeDecodeError:
            _fail(
                "string_unicode",
                "Input should be a valid string, unable to parse raw data as a unicode string",
                v,
            )
    _fail("string_type", "Input should be a valid string", v)


def v_bytes(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, bytearray | memoryview):
        return bytes(v)
    _fail("bytes_type", "Input should be a valid bytes", v)


def v_decimal(v: Any) -> decimal.Decimal:
    if isinstance(v, decimal.Decimal):
        return v
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        _fail(
            "decimal_type", "Decimal input should be an integer, float, string or Decimal object", v
        )
    try:
        return decimal.Decimal(v.strip() if isinstance(v, str) else str(v))
    except decimal.InvalidOperation:
        _fail("decimal_parsing", "Input should be a valid decimal", v)


def _uuid_error(s: str) -> str:
    body = s
    if body.lower().startswith("urn:uuid:"):
        body = body[9:]
    if "-" in body:
        groups = body.split("-")
        expected = (8, 4, 4, 4, 12)
        if len(groups) == 5:
            for i, (group, size) in enumerate(zip(groups, expected, strict=True)):
                if len(group) != size:
                    return f"invalid group length in group {i}: expected {size}, found {len(group)}"
        else:
            return f"invalid group count: expected 5, found {len(groups)}"
    elif len(body) != 32:
        return f"invalid length: found {len(body)}"
    for i, ch in enumerate(body):
        if ch not in "0123456789abcdefABCDEF-":
            return (
                "invalid character: expected an optional prefix of `urn:uuid:` followed by "
                f"[0-9a-fA-F-], found `{ch}` at {i + 1}"
            )
    return "invalid UUID"


def v_uuid(v: Any) -> uuid.UUID:
    if isinstance(v, uuid.UUID):
        return v
    if isinstance(v, str):
        try:
            return uuid.UUID(v)
        except ValueError:
            reason = _uuid_error(v)
            _fail("uuid_parsing", f"Input should be a valid UUID, {reason}", v, {"error": reason})
    _fail("uuid_type", "UUID input should be a string, bytes or UUID object", v)


def _expected(values: Sequence[Any]) -> str:
    reprs = [repr(x) for x in values]
    if len(reprs) == 1:
        return reprs[0]
    return ", ".join(reprs[:-1]) + " or " + reprs[-1]


def _enum_validator(cls: type[enum.Enum]) -> Callable[[Any], Any]:
    values = [m.value for m in cls]
    expected = _expected(values)
    by_str: dict[str, enum.Enum] = {}
    # pydantic's lax mode reads "1" as 1 for an int-valued enum.
    for m in cls:
        if isinstance(m.value, int | float) and not isinstance(m.value, bool):
            by_str.setdefault(str(m.value), m)

    def v(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except (ValueError, TypeError):
            pass
        if isinstance(value, str) and value.strip() in by_str:
            return by_str[value.strip()]
        _fail("enum", f"Input should be {expected}", value, {"expected": expected})

    return v


def _literal_validator(values: tuple[Any, ...]) -> Callable[[Any], Any]:
    expected = _expected(values)
    allowed = {(type(x), x) for x in values}

    def v(value: Any) -> Any:
        if (type(value), value) in allowed:
            return value
        for x in values:
            # Enum members compare equal to their value.
            if isinstance(x, enum.Enum) and x.value == value:
                return x
        _fail("literal_error", f"Input should be {expected}", value, {"expected": expected})

    return v


def _any(v: Any) -> Any:
    return v


def _none(v: Any) -> None:
    if v is None:
        return None
    _fail("none_required", "Input should be None", v)


def _upload_file(v: Any) -> UploadFile:
    if isinstance(v, UploadFile):
        return v
    # FastAPI's UploadFile validator raises a ValueError; its ctx renders as {}.
    _fail(
        "value_error",
        f"Value error, Expected UploadFile, received: {type(v)}",
        v,
        {"error": {}},
    )


_SCALARS: dict[Any, Callable[[Any], Any]] = {
    int: v_int,
    float: v_float,
    bool: v_bool,
    str: v_str,
    bytes: v_bytes,
    decimal.Decimal: v_decimal,
    uuid.UUID: v_uuid,
    Any: _any,
    object: _any,
    type(None): _none,
    None: _none,
}

_SEQUENCE_ORIGINS: dict[Any, type] = {
    list: list,
    Sequence: list,
    typing.Sequence: list,
    typing.List: list,  # noqa: UP006
    set: set,
    typing.Set: set,  # noqa: UP006
    frozenset: frozenset,
    tuple: tuple,
    typing.Tuple: tuple,  # noqa: UP006
    deque: deque,
}
_MAPPING_ORIGINS = (dict, Mapping, typing.Dict, typing.Mapping)  # noqa: UP006
_UNION_ORIGINS = (Union, types.UnionType)


def is_union(tp: Any) -> bool:
    return get_origin(tp) in _UNION_ORIGINS


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
            _fail(typ, msg, value)
        raw: Any = value
        seq: Sequence[Any] = raw if isinstance(raw, list | tuple) else list(raw)
        out = []
        errors: list[dict[str, Any]] = []
        for i, x in enumerate(seq):
            fn = item
            if fixed is not None:
                if i >= len(fixed):
                    _fail(
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
            _fail("dict_type", "Input should be a valid dictionary", value)
        if key is _any and val is _any:
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
    hints = _type_hints(cls)
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
            _fail(
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
        _fail(
            f"{name}_parsing", f"Input should be a valid {name}, {reason}", value, {"error": reason}
        )

    return v


def _type_hints(obj: Any) -> dict[str, Any]:
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
    if tp in _SCALARS:
        return _SCALARS[tp]
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        if not meta or all(isinstance(m, Param | DependsParam) for m in meta):
            return build_validator(base)
        if pydantic_module() is not None:
            return pydantic_validator(tp)
        return build_validator(base)
    if origin in _UNION_ORIGINS:
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
        return _literal_validator(get_args(tp))
    if tp in _SEQUENCE_ORIGINS or origin in _SEQUENCE_ORIGINS:
        container = _SEQUENCE_ORIGINS[origin if origin is not None else tp]
        args = get_args(tp)
        if container is tuple and args and not (len(args) == 2 and args[1] is ...):
            if args == ((),):
                return _sequence_validator(tuple, _any, [])
            return _sequence_validator(tuple, _any, [build_validator(a) for a in args])
        item = build_validator(args[0]) if args else _any
        return _sequence_validator(container, item, None)
    if tp in _MAPPING_ORIGINS or origin in _MAPPING_ORIGINS:
        args = get_args(tp)
        if args:
            return _mapping_validator(build_validator(args[0]), build_validator(args[1]))
        return _mapping_validator(_any, _any)
    if isinstance(tp, type):
        if issubclass(tp, UploadFile):
            return _upload_file
        if issubclass(tp, enum.Enum):
            return _enum_validator(tp)
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
            _fail(
                "is_instance_of",
                f"Input should be an instance of {cls.__name__}",
                value,
                {"class": cls.__name__},
            )

        return instance_of
    return _any


# -- constraints -------------------------------------------------------------------


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def constrain(inner: Callable[[Any], Any], p: Param) -> Callable[[Any], Any]:
    """Wrap ``inner`` with ``p``'s numeric, length and pattern constraints.
    The error's ``input`` is the raw value, as pydantic reports it."""
    checks: list[Callable[[Any, Any], None]] = []
    if p.multiple_of is not None:
        m = p.multiple_of

        def multiple_of(value: Any, raw: Any) -> None:
            if isinstance(value, int | float | decimal.Decimal) and value % m:  # type: ignore[operator]
                _fail("multiple_of", f"Input should be a multiple of {m}", raw, {"multiple_of": m})

        checks.append(multiple_of)
    for name, op, typ, text in (
        ("le", "__le__", "less_than_equal", "less than or equal to"),
        ("lt", "__lt__", "less_than", "less than"),
        ("ge", "__ge__", "greater_than_equal", "greater than or equal to"),
        ("gt", "__gt__", "greater_than", "greater than"),
    ):
        bound = getattr(p, name)
        if bound is None:
            continue

        def compare(
            value: Any,
            raw: Any,
            bound: Any = bound,
            op: str = op,
            typ: str = typ,
            text: str = text,
            name: str = name,
        ) -> None:
            if isinstance(value, int | float | decimal.Decimal) and not getattr(value, op)(bound):
                _fail(typ, f"Input should be {text} {bound}", raw, {name: bound})

        checks.append(compare)
    if p.min_length is not None or p.max_length is not None:
        lo, hi = p.min_length, p.max_length

        def length(value: Any, raw: Any) -> None:
            if isinstance(value, str):
                kind, unit, prefix = "string", "character", "String"
            elif isinstance(value, bytes):
                kind, unit, prefix = "bytes", "byte", "Data"
            elif isinstance(value, list | tuple | set | frozenset):
                n = len(value)
                ftype = {list: "List", tuple: "Tuple", set: "Set", frozenset: "Frozenset"}.get(
                    type(value), "List"
                )
                if lo is not None and n < lo:
                    _fail(
                        "too_short",
                        f"{ftype} should have at least {_plural(lo, 'item')} "
                        f"after validation, not {n}",
                        raw,
                        {"field_type": ftype, "min_length": lo, "actual_length": n},
                    )
                if hi is not None and n > hi:
                    _fail(
                        "too_long",
                        f"{ftype} should have at most {_plural(hi, 'item')} "
                        f"after validation, not {n}",
                        raw,
                        {"field_type": ftype, "max_length": hi, "actual_length": n},
                    )
                return
            else:
                return
            n = len(value)
            if lo is not None and n < lo:
                _fail(
                    f"{kind}_too_short",
                    f"{prefix} should have at least {_plural(lo, unit)}",
                    raw,
                    {"min_length": lo},
                )
            if hi is not None and n > hi:
                _fail(
                    f"{kind}_too_long",
                    f"{prefix} should have at most {_plural(hi, unit)}",
                    raw,
                    {"max_length": hi},
                )

        checks.append(length)
    if p.pattern is not None:
        source = p.pattern
        search = re.compile(source).search

        def pattern(value: Any, raw: Any) -> None:
            if isinstance(value, str) and search(value) is None:
                _fail(
                    "string_pattern_mismatch",
                    f"String should match pattern '{source}'",
                    raw,
                    {"pattern": source},
                )

        checks.append(pattern)
    if not checks:
        return inner

    def v(raw: Any) -> Any:
        value = inner(raw)
        if value is not None:
            for check in checks:
                check(value, raw)
        return value

    return v


# -- signature analysis ------------------------------------------------------------

ASYNC, SYNC, GEN, ASYNC_GEN = "async", "sync", "gen", "asyncgen"


def lenient_issubclass(cls: Any, parents: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, parents)


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


def _is_sequence_annotation(tp: Any) -> bool:
    origin = get_origin(tp)
    if origin is Annotated:
        return _is_sequence_annotation(get_args(tp)[0])
    if origin in _UNION_ORIGINS:
        return any(_is_sequence_annotation(a) for a in get_args(tp))
    t = origin if origin is not None else tp
    if lenient_issubclass(t, str | bytes):
        return False
    return t in _SEQUENCE_ORIGINS or lenient_issubclass(t, list | tuple | set | frozenset | deque)


def _is_complex(tp: Any) -> bool:
    """FastAPI's rule for "not a query parameter": models, mappings, uploads,
    sequences and dataclasses (also inside a Union)."""
    origin = get_origin(tp)
    if origin in _UNION_ORIGINS:
        return any(_is_complex(a) for a in get_args(tp))
    if origin is Annotated:
        return _is_complex(get_args(tp)[0])
    for t in (tp, origin):
        if t is None:
            continue
        if t in _MAPPING_ORIGINS or lenient_issubclass(t, Mapping | UploadFile):
            return True
        if is_pydantic_model(t) or dataclasses.is_dataclass(t):
            return True
        if _is_sequence_annotation(t):
            return True
    return False


def _contains(tp: Any, cls: type) -> bool:
    if lenient_issubclass(tp, cls):
        return True
    return any(_contains(a, cls) for a in get_args(tp) if a is not ...)


def _is_bytes_annotation(tp: Any) -> bool:
    if lenient_issubclass(tp, bytes):
        return True
    if is_union(tp):
        return any(lenient_issubclass(a, bytes) for a in get_args(tp))
    return False


def _strip_annotated(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


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
        base = _strip_annotated(annotation)
        self.is_sequence = _is_sequence_annotation(base)
        self.is_form = isinstance(marker, FormParam)
        self.is_file = isinstance(marker, FileParam)
        self.is_bytes = _is_bytes_annotation(base) or (
            self.is_sequence and any(_is_bytes_annotation(a) for a in get_args(base))
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
            elif _contains(_strip_annotated(type_ann), UploadFile):
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
            _strip_annotated(type_ann)
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
    return first.is_form and not is_pydantic_model(_strip_annotated(first.annotation))


# -- solving, per request -----------------------------------------------------------

_thread_pool: concurrent.futures.ThreadPoolExecutor | None = None
# FastAPI (anyio) lets 40 sync handlers and dependencies run at once.
THREAD_POOL_SIZE = 40


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _thread_pool
    if _thread_pool is None:
        _thread_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=THREAD_POOL_SIZE, thread_name_prefix="rawserve-sync"
        )
    return _thread_pool


async def run_sync(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``fn(**kwargs)`` in a worker thread, with the caller's contextvars."""
    ctx = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool(), functools.partial(ctx.run, fn, **kwargs))


class _ThreadedContextManager:
    """A sync generator dependency: enter and exit run in a worker thread, so
    blocking setup and cleanup never block the loop."""

    __slots__ = ("_cm",)

    def __init__(self, cm: Any) -> None:
        self._cm = cm

    async def __aenter__(self) -> Any:
        return await run_sync(self._cm.__enter__, {})

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return bool(
            await asyncio.get_running_loop().run_in_executor(
                _pool(), self._cm.__exit__, exc_type, exc, tb
            )
        )


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
            cm = _ThreadedContextManager(cm)
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


_override_cache: dict[tuple[Any, frozenset[str], Any, str | None], Dependant] = {}


def _overridden(sub: Dependant, ctx: SolveContext) -> Dependant:
    assert ctx.overrides is not None
    replacement = ctx.overrides.get(sub.call)
    if replacement is None:
        return sub
    key = (replacement, ctx.path_names, sub.name, sub.scope)
    dep = _override_cache.get(key)
    if dep is None:
        dep = get_dependant(
            replacement, ctx.path_names, name=sub.name, use_cache=sub.use_cache, scope=sub.scope
        )
        _override_cache[key] = dep
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
    model = _strip_annotated(fields[0].annotation) if fields else None
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
        out.append((alias or info.alias or name, _is_sequence_annotation(info.annotation)))
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
