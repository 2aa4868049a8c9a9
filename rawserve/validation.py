"""Checking and converting values to the annotated types, with pydantic v2's
error shapes: scalars, containers, constraints, and the bridge to pydantic.

Errors are pydantic v2 shaped dicts (``type``, ``loc``, ``msg``, ``input``,
optional ``ctx``) so the 422 body is the one FastAPI sends. Common scalars and
containers are validated here without pydantic (the same messages, tested
against it); models, dataclasses and other types go through
``pydantic.TypeAdapter`` when pydantic is installed, and dataclasses through a
small validator of our own when it is not.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import re
import sys
import types
import typing
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, NoReturn, Union, get_args, get_origin

from rawserve.datastructures import UploadFile
from rawserve.params import DependsParam, Param

__all__ = [
    "Invalid",
    "build_validator",
    "constrain",
]


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

SEQUENCE_ORIGINS: dict[Any, type] = {
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
MAPPING_ORIGINS = (dict, Mapping, typing.Dict, typing.Mapping)  # noqa: UP006
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
    if tp in SEQUENCE_ORIGINS or origin in SEQUENCE_ORIGINS:
        container = SEQUENCE_ORIGINS[origin if origin is not None else tp]
        args = get_args(tp)
        if container is tuple and args and not (len(args) == 2 and args[1] is ...):
            if args == ((),):
                return _sequence_validator(tuple, _any, [])
            return _sequence_validator(tuple, _any, [build_validator(a) for a in args])
        item = build_validator(args[0]) if args else _any
        return _sequence_validator(container, item, None)
    if tp in MAPPING_ORIGINS or origin in MAPPING_ORIGINS:
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


# -- what an annotation is ---------------------------------------------------------


def lenient_issubclass(cls: Any, parents: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, parents)


def is_sequence_annotation(tp: Any) -> bool:
    origin = get_origin(tp)
    if origin is Annotated:
        return is_sequence_annotation(get_args(tp)[0])
    if origin in _UNION_ORIGINS:
        return any(is_sequence_annotation(a) for a in get_args(tp))
    t = origin if origin is not None else tp
    if lenient_issubclass(t, str | bytes):
        return False
    return t in SEQUENCE_ORIGINS or lenient_issubclass(t, list | tuple | set | frozenset | deque)


def is_bytes_annotation(tp: Any) -> bool:
    if lenient_issubclass(tp, bytes):
        return True
    if is_union(tp):
        return any(lenient_issubclass(a, bytes) for a in get_args(tp))
    return False


def strip_annotated(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp
