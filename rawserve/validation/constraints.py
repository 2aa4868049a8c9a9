"""Numeric, length and pattern constraints from a parameter marker."""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable
from typing import Any

from rawserve.params import Param
from rawserve.validation.errors import fail

__all__ = ["constrain"]


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
                fail("multiple_of", f"Input should be a multiple of {m}", raw, {"multiple_of": m})

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
                fail(typ, f"Input should be {text} {bound}", raw, {name: bound})

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
                    fail(
                        "too_short",
                        f"{ftype} should have at least {_plural(lo, 'item')} "
                        f"after validation, not {n}",
                        raw,
                        {"field_type": ftype, "min_length": lo, "actual_length": n},
                    )
                if hi is not None and n > hi:
                    fail(
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
                fail(
                    f"{kind}_too_short",
                    f"{prefix} should have at least {_plural(lo, unit)}",
                    raw,
                    {"min_length": lo},
                )
            if hi is not None and n > hi:
                fail(
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
                fail(
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
