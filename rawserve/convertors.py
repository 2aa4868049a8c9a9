"""Path templates: the convertors a ``{name:type}`` placeholder names, and
``compile_path``, which turns a template into a regex (starlette's convertors.py)."""

from __future__ import annotations

import math
import re
import uuid
from typing import Any, Generic, TypeVar

__all__ = [
    "CONVERTOR_TYPES",
    "Convertor",
    "FloatConvertor",
    "IntegerConvertor",
    "PathConvertor",
    "StringConvertor",
    "UUIDConvertor",
    "compile_path",
    "register_url_convertor",
]

T = TypeVar("T")


class Convertor(Generic[T]):
    regex = ""

    def convert(self, value: str) -> T:
        raise NotImplementedError

    def to_string(self, value: T) -> str:
        raise NotImplementedError


class StringConvertor(Convertor[str]):
    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        value = str(value)
        if "/" in value or not value:
            raise ValueError(f"{value!r} is not a valid path segment")
        return value


class PathConvertor(Convertor[str]):
    regex = ".*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


class IntegerConvertor(Convertor[int]):
    regex = "[0-9]+"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        value = int(value)
        if value < 0:
            raise ValueError("negative integers are not supported")
        return str(value)


class FloatConvertor(Convertor[float]):
    regex = r"[0-9]+(?:\.[0-9]+)?"

    def convert(self, value: str) -> float:
        return float(value)

    def to_string(self, value: float) -> str:
        value = float(value)
        if value < 0 or math.isnan(value) or math.isinf(value):
            raise ValueError(f"{value!r} cannot appear in a path")
        return f"{value:0.20f}".rstrip("0").rstrip(".")


class UUIDConvertor(Convertor[uuid.UUID]):
    regex = "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"

    def convert(self, value: str) -> uuid.UUID:
        return uuid.UUID(value)

    def to_string(self, value: uuid.UUID) -> str:
        return str(value)


CONVERTOR_TYPES: dict[str, Convertor[Any]] = {
    "str": StringConvertor(),
    "path": PathConvertor(),
    "int": IntegerConvertor(),
    "float": FloatConvertor(),
    "uuid": UUIDConvertor(),
}


def register_url_convertor(key: str, convertor: Convertor[Any]) -> None:
    CONVERTOR_TYPES[key] = convertor


PARAM_REGEX = re.compile("{([a-zA-Z_][a-zA-Z0-9_]*)(:[a-zA-Z_][a-zA-Z0-9_]*)?}")


def compile_path(path: str) -> tuple[re.Pattern[str], str, dict[str, Convertor[Any]]]:
    """``"/items/{id:int}"`` -> (regex, ``"/items/{id}"``, ``{"id": IntegerConvertor}``)."""
    regex = "^"
    fmt = ""
    idx = 0
    convertors: dict[str, Convertor[Any]] = {}
    duplicated = set()
    for m in PARAM_REGEX.finditer(path):
        name, kind = m.groups("str")
        kind = kind.lstrip(":")
        if kind not in CONVERTOR_TYPES:
            raise ValueError(f"unknown path convertor {kind!r} in {path!r}")
        conv = CONVERTOR_TYPES[kind]
        regex += re.escape(path[idx : m.start()]) + f"(?P<{name}>{conv.regex})"
        fmt += path[idx : m.start()] + "{" + name + "}"
        if name in convertors:
            duplicated.add(name)
        convertors[name] = conv
        idx = m.end()
    if duplicated:
        names = ", ".join(sorted(duplicated))
        raise ValueError(f"duplicated path parameter(s) {names} in {path!r}")
    regex += re.escape(path[idx:]) + "$"
    fmt += path[idx:]
    return re.compile(regex), fmt, convertors
