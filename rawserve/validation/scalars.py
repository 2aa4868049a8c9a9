"""Validators for scalars (int, float, bool, str, bytes, Decimal, UUID, enums,
literals, UploadFile) with pydantic's messages, tested against it."""

from __future__ import annotations

import decimal
import enum
import typing
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from rawserve.datastructures import UploadFile
from rawserve.validation.errors import fail

__all__ = ["SCALARS", "any_value", "enum_validator", "literal_validator", "upload_file"]

_INT_MSG = "Input should be a valid integer, unable to parse string as an integer"
_INT_SIZE_MSG = "Unable to parse input string as an integer, exceeded maximum size"
_FLOAT_MSG = "Input should be a valid number, unable to parse string as a number"
_BOOL_MSG = "Input should be a valid boolean, unable to interpret input"
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


# Python's int() refuses longer digit strings (and pydantic says so with its
# own error type); the check comes first so a client's number never reaches it.
MAX_INT_DIGITS = 4300


def _parse_int_str(v: str) -> int:
    s = v.strip()
    if s.isascii():
        head, dot, frac = s.partition(".")
        if len(head.lstrip("+-")) > MAX_INT_DIGITS and head.lstrip("+-").isdigit():
            fail("int_parsing_size", _INT_SIZE_MSG, v)
        try:
            return int(s)
        except ValueError:
            # pydantic accepts an integral number written with a zero fraction.
            if dot and frac and not frac.strip("0") and head.lstrip("+-").isdigit():
                return int(head)
    fail("int_parsing", _INT_MSG, v)


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
            fail("finite_number", "Input should be a finite number", v)
        fail(
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
    fail("int_type", "Input should be a valid integer", v)


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
        fail("float_parsing", _FLOAT_MSG, v)
    if isinstance(v, int | float | decimal.Decimal):
        return float(v)
    fail("float_type", "Input should be a valid number", v)


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
        fail("bool_parsing", _BOOL_MSG, v)
    if isinstance(v, int | float) and v in (0, 1):
        return bool(v)
    if isinstance(v, int | float):
        fail("bool_parsing", _BOOL_MSG, v)
    fail("bool_type", "Input should be a valid boolean", v)


def v_str(v: Any) -> str:
    if isinstance(v, str):
        return v if type(v) is str else str(v) if not isinstance(v, enum.Enum) else v.value
    if isinstance(v, bytes | bytearray):
        try:
            return bytes(v).decode()
        except UnicodeDecodeError:
            fail(
                "string_unicode",
                "Input should be a valid string, unable to parse raw data as a unicode string",
                v,
            )
    fail("string_type", "Input should be a valid string", v)


def v_bytes(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, bytearray | memoryview):
        return bytes(v)
    fail("bytes_type", "Input should be a valid bytes", v)


def v_decimal(v: Any) -> decimal.Decimal:
    if isinstance(v, decimal.Decimal):
        return v
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        fail(
            "decimal_type", "Decimal input should be an integer, float, string or Decimal object", v
        )
    try:
        return decimal.Decimal(v.strip() if isinstance(v, str) else str(v))
    except decimal.InvalidOperation:
        fail("decimal_parsing", "Input should be a valid decimal", v)


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
            fail("uuid_parsing", f"Input should be a valid UUID, {reason}", v, {"error": reason})
    fail("uuid_type", "UUID input should be a string, bytes or UUID object", v)


def _expected(values: Sequence[Any]) -> str:
    reprs = [repr(x) for x in values]
    if len(reprs) == 1:
        return reprs[0]
    return ", ".join(reprs[:-1]) + " or " + reprs[-1]


def enum_validator(cls: type[enum.Enum]) -> Callable[[Any], Any]:
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
        fail("enum", f"Input should be {expected}", value, {"expected": expected})

    return v


def literal_validator(values: tuple[Any, ...]) -> Callable[[Any], Any]:
    expected = _expected(values)
    allowed = {(type(x), x) for x in values}

    def v(value: Any) -> Any:
        if (type(value), value) in allowed:
            return value
        for x in values:
            # Enum members compare equal to their value.
            if isinstance(x, enum.Enum) and x.value == value:
                return x
        fail("literal_error", f"Input should be {expected}", value, {"expected": expected})

    return v


def any_value(v: Any) -> Any:
    return v


def _none(v: Any) -> None:
    if v is None:
        return None
    fail("none_required", "Input should be None", v)


def upload_file(v: Any) -> UploadFile:
    if isinstance(v, UploadFile):
        return v
    # FastAPI's UploadFile validator raises a ValueError; its ctx renders as {}.
    fail(
        "value_error",
        f"Value error, Expected UploadFile, received: {type(v)}",
        v,
        {"error": {}},
    )


SCALARS: dict[Any, Callable[[Any], Any]] = {
    int: v_int,
    float: v_float,
    bool: v_bool,
    str: v_str,
    bytes: v_bytes,
    decimal.Decimal: v_decimal,
    uuid.UUID: v_uuid,
    Any: any_value,
    object: any_value,
    type(None): _none,
    None: _none,
}
