"""JSON schemas for what an OpenAPI document describes: parameters, bodies,
responses. Two makers with one interface:

- ``PydanticSchemas``: pydantic's JSON schema, built the way FastAPI builds
  it (one generator for the whole document, so models become shared
  ``#/components/schemas`` entries, ``-Input``/``-Output`` where they differ);
- ``PlainSchemas``: rawserve's own, for the types rawserve validates without
  pydantic (scalars, enums, literals, unions, containers, dataclasses), with
  the output pydantic would give for them.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import types
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from rawserve.datastructures import UploadFile
from rawserve.params import DependsParam, Param
from rawserve.validation.annotations import MAPPING_ORIGINS, SEQUENCE_ORIGINS, lenient_issubclass
from rawserve.validation.builder import type_hints
from rawserve.validation.pydantic_bridge import pydantic_module

__all__ = [
    "REF_PREFIX",
    "PlainSchemas",
    "PydanticSchemas",
    "Spec",
    "make_schemas",
]

REF_PREFIX = "#/components/schemas/"
_FILE_SCHEMA = {"type": "string", "contentMediaType": "application/octet-stream"}
Mode = Literal["validation", "serialization"]


@dataclasses.dataclass(eq=False)
class Spec:
    """One thing to describe: a parameter, a body (a model made of several
    body parameters when they are embedded), a response."""

    annotation: Any
    mode: Mode = "validation"
    marker: Param | None = None
    is_file: bool = False
    # Embedded bodies: (name, alias, annotation, marker, is_file) of each member.
    members: list[tuple[str, str, Any, Param, bool]] | None = None
    model_name: str = ""


def make_schemas() -> PydanticSchemas | PlainSchemas:
    """pydantic's schemas when it is installed, rawserve's own otherwise."""
    return PydanticSchemas() if pydantic_module() is not None else PlainSchemas()


def _marker_kwargs(marker: Param | None, *, with_default: bool = True) -> dict[str, Any]:
    if marker is None:
        return {}
    kwargs: dict[str, Any] = {}
    if with_default and not marker.required:
        if marker.default_factory is not None:
            kwargs["default_factory"] = marker.default_factory
        else:
            kwargs["default"] = marker.default
    for name in (
        "title",
        "description",
        "gt",
        "ge",
        "lt",
        "le",
        "multiple_of",
        "min_length",
        "max_length",
        "pattern",
    ):
        value = getattr(marker, name)
        if value is not None:
            kwargs[name] = value
    for name in ("examples", "deprecated", "json_schema_extra"):
        value = marker.extra.get(name)
        if value is not None:
            kwargs[name] = value
    return kwargs


def _is_file_type(tp: Any) -> bool:
    return lenient_issubclass(tp, UploadFile | bytes)


# -- pydantic --------------------------------------------------------------------------


class PydanticSchemas:
    """All specs go through one pydantic ``GenerateJsonSchema``, as in FastAPI."""

    def __init__(self) -> None:
        self.pyd = pydantic_module()

    def _file_type(self) -> Any:
        return Annotated[bytes, self.pyd.WithJsonSchema(dict(_FILE_SCHEMA))]

    def _doc_type(self, tp: Any) -> Any:
        """``tp`` with UploadFile (not a pydantic type) as the file schema."""
        if lenient_issubclass(tp, UploadFile):
            return self._file_type()
        origin = get_origin(tp)
        args = get_args(tp)
        if not args:
            return tp
        if origin is Annotated:
            base, *meta = args
            meta = [m for m in meta if not isinstance(m, Param | DependsParam)]
            base = self._doc_type(base)
            return Annotated[(base, *meta)] if meta else base
        if origin in (Union, types.UnionType):
            return Union[tuple(self._doc_type(a) for a in args)]  # noqa: UP007
        if origin in SEQUENCE_ORIGINS:
            new_args = tuple(self._doc_type(a) if a is not ... else a for a in args)
            if new_args != args:
                return SEQUENCE_ORIGINS[origin][new_args]  # type: ignore[index]
        return tp

    def _field(self, annotation: Any, marker: Param | None, is_file: bool, **extra: Any) -> Any:
        tp = self._file_type() if is_file and _is_file_type(annotation) else annotation
        tp = self._doc_type(tp)
        return tp, self.pyd.Field(**_marker_kwargs(marker), **extra)

    def _adapter(self, spec: Spec) -> Any:
        with warnings.catch_warnings():
            # Field attributes that only a model field uses (alias) are fine here.
            warnings.simplefilter("ignore")
            if spec.members is not None:
                fields = {
                    name: self._field(annotation, marker, is_file, alias=alias)
                    for name, alias, annotation, marker, is_file in spec.members
                }
                model = self.pyd.create_model(spec.model_name, **fields)
                return self.pyd.TypeAdapter(model)
            tp, info = self._field(spec.annotation, spec.marker, spec.is_file)
            return self.pyd.TypeAdapter(Annotated[tp, info])

    def generate(
        self, specs: Sequence[Spec]
    ) -> tuple[dict[Spec, dict[str, Any]], dict[str, dict[str, Any]]]:
        from pydantic.json_schema import GenerateJsonSchema

        class Generate(GenerateJsonSchema):
            def bytes_schema(self, schema: Any) -> dict[str, Any]:
                # FastAPI's choice for OpenAPI 3.1 (not pydantic's format: binary).
                out = dict(_FILE_SCHEMA)
                self.update_with_validations(out, schema, self.ValidationsMapping.bytes)
                return out

        inputs = []
        usable = []
        for spec in specs:
            try:
                adapter = self._adapter(spec)
                inputs.append((spec, spec.mode, adapter.core_schema))
                usable.append(spec)
            except Exception:
                continue  # a type pydantic cannot describe: documented as {}
        generator = Generate(ref_template=REF_PREFIX + "{model}")
        mapping, definitions = generator.generate_definitions(inputs=inputs)
        out = {spec: dict(mapping[(spec, spec.mode)]) for spec in usable}
        return out, {str(k): v for k, v in definitions.items()}


# -- rawserve's own ----------------------------------------------------------------------

_SCALARS: dict[Any, dict[str, Any]] = {
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
    bytes: dict(_FILE_SCHEMA),
    uuid.UUID: {"type": "string", "format": "uuid"},
    datetime.datetime: {"type": "string", "format": "date-time"},
    datetime.date: {"type": "string", "format": "date"},
    datetime.time: {"type": "string", "format": "time"},
    decimal.Decimal: {
        "anyOf": [
            {"type": "number"},
            {"type": "string", "pattern": r"^(?!^[-+.]*$)[+-]?0*\d*\.?\d*$"},
        ]
    },
}


def _json_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


class PlainSchemas:
    """JSON schemas from annotations, without pydantic."""

    def __init__(self) -> None:
        self.definitions: dict[str, dict[str, Any]] = {}

    def generate(
        self, specs: Sequence[Spec]
    ) -> tuple[dict[Spec, dict[str, Any]], dict[str, dict[str, Any]]]:
        out: dict[Spec, dict[str, Any]] = {}
        for spec in specs:
            if spec.members is not None:
                out[spec] = self._body_model(spec)
            else:
                out[spec] = self.field(spec.annotation, spec.marker, spec.is_file)
        return out, self.definitions

    def _body_model(self, spec: Spec) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        for _name, alias, annotation, marker, is_file in spec.members or []:
            schema = self.field(annotation, marker, is_file)
            if "$ref" not in schema:
                schema.setdefault("title", alias.replace("_", " ").title())
            properties[alias] = schema
            if marker.required:
                required.append(alias)
        model: dict[str, Any] = {"properties": properties, "type": "object"}
        if required:
            model["required"] = required
        model["title"] = spec.model_name
        self.definitions[spec.model_name] = model
        return {"$ref": REF_PREFIX + spec.model_name}

    def field(self, annotation: Any, marker: Param | None, is_file: bool = False) -> dict[str, Any]:
        schema = self.schema(annotation)
        if marker is None:
            return schema
        kwargs = _marker_kwargs(marker)
        target = schema
        members = schema.get("anyOf")
        if members is not None:
            # Constraints go to the member that is not null, as pydantic puts them.
            real = [m for m in members if m != {"type": "null"}]
            if len(real) == 1:
                target = real[0]
        kind = target.get("type")
        for key, name in (
            ("gt", "exclusiveMinimum"),
            ("ge", "minimum"),
            ("lt", "exclusiveMaximum"),
            ("le", "maximum"),
            ("multiple_of", "multipleOf"),
        ):
            if key in kwargs:
                target[name] = kwargs[key]
        for key, (string_name, array_name) in (
            ("min_length", ("minLength", "minItems")),
            ("max_length", ("maxLength", "maxItems")),
        ):
            if key in kwargs:
                target[array_name if kind == "array" else string_name] = kwargs[key]
        if "pattern" in kwargs:
            target["pattern"] = kwargs["pattern"]
        for key in ("title", "description", "examples", "deprecated"):
            if key in kwargs:
                schema[key] = kwargs[key]
        if "default" in kwargs:
            schema["default"] = _encode_default(kwargs["default"])
        extra = kwargs.get("json_schema_extra")
        if isinstance(extra, dict):
            schema.update(extra)
        return schema

    def schema(self, tp: Any) -> dict[str, Any]:
        origin = get_origin(tp)
        args = get_args(tp)
        if origin is Annotated:
            return self.schema(args[0])
        if tp is None or tp is type(None):
            return {"type": "null"}
        if tp is Any or tp is object:
            return {}
        if tp in _SCALARS:
            return dict(_SCALARS[tp])
        if lenient_issubclass(tp, UploadFile):
            return dict(_FILE_SCHEMA)
        if origin in (Union, types.UnionType):
            members: list[dict[str, Any]] = []
            for arg in args:
                member = self.schema(arg)
                members.extend(member["anyOf"] if list(member) == ["anyOf"] else [member])
            return {"anyOf": members}
        if origin is Literal:
            values = list(args)
            kinds = {_json_type(v) for v in values}
            out: dict[str, Any] = {"const": values[0]} if len(values) == 1 else {"enum": values}
            if len(kinds) == 1 and None not in kinds:
                out["type"] = kinds.pop()
            return out
        if tp in SEQUENCE_ORIGINS or origin in SEQUENCE_ORIGINS:
            container = SEQUENCE_ORIGINS[origin if origin is not None else tp]
            if container is tuple and args and not (len(args) == 2 and args[1] is ...):
                items = [self.schema(a) for a in args]
                return {
                    "maxItems": len(items),
                    "minItems": len(items),
                    "prefixItems": items,
                    "type": "array",
                }
            out = {"items": self.schema(args[0]) if args else {}, "type": "array"}
            if container in (set, frozenset):
                out["uniqueItems"] = True
            return out
        if tp in MAPPING_ORIGINS or origin in MAPPING_ORIGINS:
            value = self.schema(args[1]) if len(args) == 2 else {}
            return {"additionalProperties": value if value else True, "type": "object"}
        if lenient_issubclass(tp, enum.Enum):
            return self._ref(tp, self._enum)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self._ref(tp, self._dataclass)
        return {}

    def _ref(self, tp: type, build: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        name = tp.__name__
        if name not in self.definitions:
            self.definitions[name] = {}  # recursion stops here
            self.definitions[name] = build(tp)
        return {"$ref": REF_PREFIX + name}

    def _enum(self, cls: type[enum.Enum]) -> dict[str, Any]:
        values = [m.value for m in cls]
        out: dict[str, Any] = {"enum": values, "title": cls.__name__}
        kinds = {_json_type(v) for v in values}
        if len(kinds) == 1 and None not in kinds:
            out["type"] = kinds.pop()
        if (
            cls.__doc__
            and cls.__doc__ != enum.Enum.__doc__
            and "An enumeration." not in cls.__doc__
        ):
            out["description"] = cls.__doc__
        return out

    def _dataclass(self, cls: type) -> dict[str, Any]:
        hints = type_hints(cls)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for f in dataclasses.fields(cls):
            schema = self.schema(hints.get(f.name, Any))
            if "$ref" not in schema:
                schema["title"] = f.name.replace("_", " ").title()
            if f.default is not dataclasses.MISSING:
                schema["default"] = _encode_default(f.default)
            elif f.default_factory is dataclasses.MISSING:
                required.append(f.name)
            properties[f.name] = schema
        out: dict[str, Any] = {"properties": properties, "type": "object"}
        if required:
            out["required"] = required
        out["title"] = cls.__name__
        return out


def _encode_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, Mapping | list | str | int | float | bool) or value is None:
        return value
    return str(value)
