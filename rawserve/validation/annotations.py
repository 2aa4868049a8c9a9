"""What an annotation is: a sequence, a mapping, a union, bytes."""

from __future__ import annotations

import types
import typing
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

__all__ = [
    "MAPPING_ORIGINS",
    "SEQUENCE_ORIGINS",
    "UNION_ORIGINS",
    "is_bytes_annotation",
    "is_sequence_annotation",
    "is_union",
    "lenient_issubclass",
    "strip_annotated",
]

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
UNION_ORIGINS = (Union, types.UnionType)


def is_union(tp: Any) -> bool:
    return get_origin(tp) in UNION_ORIGINS


def lenient_issubclass(cls: Any, parents: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, parents)


def is_sequence_annotation(tp: Any) -> bool:
    origin = get_origin(tp)
    if origin is Annotated:
        return is_sequence_annotation(get_args(tp)[0])
    if origin in UNION_ORIGINS:
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
