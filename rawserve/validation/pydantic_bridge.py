"""pydantic, when the program installed it: never a hard dependency."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from rawserve.validation.errors import Invalid

__all__ = ["is_pydantic_model", "pydantic_errors", "pydantic_module", "pydantic_validator"]


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
            return validate(value, from_attributes=True)
        except validation_error as exc:
            raise Invalid(pydantic_errors(exc)) from None

    return v
