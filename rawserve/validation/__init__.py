"""Checking and converting values to the annotated types, with pydantic v2's
error shapes.

Errors are pydantic v2 shaped dicts (``type``, ``loc``, ``msg``, ``input``,
optional ``ctx``) so the 422 body is the one FastAPI sends. Common scalars and
containers are validated here without pydantic (the same messages, tested
against it); models, dataclasses and other types go through
``pydantic.TypeAdapter`` when pydantic is installed, and dataclasses through a
small validator of our own when it is not.

Modules: ``errors`` (the error shape), ``pydantic_bridge``, ``scalars``,
``builder`` (``build_validator`` for any annotation), ``constraints``
(``constrain``), ``annotations`` (what an annotation is).
"""

from rawserve.validation.builder import build_validator
from rawserve.validation.constraints import constrain
from rawserve.validation.errors import Invalid

__all__ = ["Invalid", "build_validator", "constrain"]
