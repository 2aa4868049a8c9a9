"""JSON encoding for handler results: orjson, numpy-aware.

``dumps`` is the hot path (every JSON response): orjson serializes dicts,
lists, dataclasses, datetimes, UUIDs, enums and contiguous numpy arrays
natively, and ``_default`` handles the rest. ``jsonable_encoder`` is
FastAPI's function of that name, for code that calls it directly.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from types import GeneratorType
from typing import Any
from uuid import UUID

import orjson

__all__ = ["dumps", "jsonable_encoder"]

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_OPTIONS_NON_STR_KEYS = _OPTIONS | orjson.OPT_NON_STR_KEYS


def _decimal(d: Decimal) -> int | float:
    # FastAPI's choice: integral decimals stay integers, the rest become floats.
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= 0:
        return int(d)
    return float(d)


def _numpy_value(obj: Any) -> tuple[bool, Any]:
    # Only look at numpy if the program imported it: an object cannot be a
    # numpy value otherwise, and importing numpy here would cost every app.
    np = sys.modules.get("numpy")
    if np is None:
        return False, None
    if isinstance(obj, np.ndarray):
        return True, obj.tolist()  # non-contiguous or of a dtype orjson skips
    if isinstance(obj, np.generic):
        return True, obj.item()
    return False, None


def _default(obj: Any) -> Any:
    """orjson's fallback: turn what it cannot serialize into what it can."""
    model_dump = getattr(obj, "model_dump", None)
    if model_dump is not None and not isinstance(obj, type):
        return model_dump(mode="json")  # pydantic v2
    if isinstance(obj, Decimal):
        return _decimal(obj)
    if isinstance(obj, datetime.timedelta):
        return obj.total_seconds()
    if isinstance(obj, set | frozenset | deque | GeneratorType):
        return list(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).decode()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    found, value = _numpy_value(obj)
    if found:
        return value
    if hasattr(obj, "dict") and hasattr(obj, "__fields__"):
        return obj.dict()  # pydantic v1
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> bytes:
    """``obj`` as compact UTF-8 JSON bytes."""
    try:
        return orjson.dumps(obj, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        # Keys other than str are rare; only then pay for OPT_NON_STR_KEYS.
        if "str" not in str(exc):
            raise
        return orjson.dumps(obj, default=_default, option=_OPTIONS_NON_STR_KEYS)


_PRIMITIVES = (str, int, float, type(None))


def jsonable_encoder(
    obj: Any,
    include: set[str] | None = None,
    exclude: set[str] | None = None,
    by_alias: bool = True,
    exclude_unset: bool = False,
    exclude_defaults: bool = False,
    exclude_none: bool = False,
    custom_encoder: Mapping[Any, Callable[[Any], Any]] | None = None,
    sqlalchemy_safe: bool = True,
) -> Any:
    """``obj`` converted to JSON-compatible Python values (dict, list, str,
    int, float, bool, None), as FastAPI's ``jsonable_encoder`` does."""
    if custom_encoder:
        if type(obj) in custom_encoder:
            return custom_encoder[type(obj)](obj)
        for cls, enc in custom_encoder.items():
            if isinstance(obj, cls):
                return enc(obj)
    if isinstance(obj, _PRIMITIVES):
        return obj
    kw: dict[str, Any] = {
        "by_alias": by_alias,
        "exclude_unset": exclude_unset,
        "exclude_defaults": exclude_defaults,
        "exclude_none": exclude_none,
        "custom_encoder": custom_encoder,
        "sqlalchemy_safe": sqlalchemy_safe,
    }
    if isinstance(obj, Enum):
        return jsonable_encoder(obj.value, **kw)
    if isinstance(obj, dict):
        out: dict[Any, Any] = {}
        allowed = set(obj.keys())
        if include is not None:
            allowed &= set(include)
        if exclude is not None:
            allowed -= set(exclude)
        for key, value in obj.items():
            if key not in allowed:
                continue
            if sqlalchemy_safe and isinstance(key, str) and key.startswith("_sa"):
                continue
            if exclude_none and value is None:
                continue
            out[jsonable_encoder(key, **kw)] = jsonable_encoder(value, **kw)
        return out
    if isinstance(obj, list | tuple | set | frozenset | deque | GeneratorType):
        return [jsonable_encoder(item, **kw) for item in obj]
    model_dump = getattr(obj, "model_dump", None)
    if model_dump is not None and not isinstance(obj, type):
        data = model_dump(
            mode="json",
            include=include,
            exclude=exclude,
            by_alias=by_alias,
            exclude_unset=exclude_unset,
            exclude_none=exclude_none,
            exclude_defaults=exclude_defaults,
        )
        return jsonable_encoder(data, **kw)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable_encoder(dataclasses.asdict(obj), include=include, exclude=exclude, **kw)
    if isinstance(obj, datetime.datetime | datetime.date | datetime.time):
        return obj.isoformat()
    if isinstance(obj, UUID):
        return str(obj)
    found, value = _numpy_value(obj)
    if found:
        return value
    try:
        return jsonable_encoder(_default(obj), **kw)
    except TypeError:
        pass
    try:
        data = dict(obj)
    except Exception:
        try:
            data = vars(obj)
        except TypeError as exc:
            raise ValueError(f"cannot encode {type(obj).__name__} as JSON") from exc
    return jsonable_encoder(data, include=include, exclude=exclude, **kw)
