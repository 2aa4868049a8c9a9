"""``get_openapi``: the OpenAPI 3.1 document of an app's routes, in FastAPI's
shape (operation ids, summaries, parameters, request bodies, responses, the
422 ``HTTPValidationError``), so tools written against FastAPI's read it.
"""

from __future__ import annotations

import copy
import http.client
import inspect
import re
import warnings
from collections.abc import Sequence
from typing import Any

from rawserve.dependencies.models import Dependant, Field
from rawserve.openapi.schemas import REF_PREFIX, Spec, make_schemas
from rawserve.params import BodyParam, FormParam
from rawserve.responses import JSONResponse, Response
from rawserve.routing import APIRoute, DefaultPlaceholder, body_allowed
from rawserve.serialization import stream_item_type
from rawserve.validation.annotations import lenient_issubclass
from rawserve.validation.builder import type_hints

__all__ = ["get_openapi", "unique_id"]

METHODS_WITH_BODY = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})

validation_error_definition: dict[str, Any] = {
    "title": "ValidationError",
    "type": "object",
    "properties": {
        "loc": {
            "title": "Location",
            "type": "array",
            "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        },
        "msg": {"title": "Message", "type": "string"},
        "type": {"title": "Error Type", "type": "string"},
        "input": {"title": "Input"},
        "ctx": {"title": "Context", "type": "object"},
    },
    "required": ["loc", "msg", "type"],
}

validation_error_response_definition: dict[str, Any] = {
    "title": "HTTPValidationError",
    "type": "object",
    "properties": {
        "detail": {
            "title": "Detail",
            "type": "array",
            "items": {"$ref": REF_PREFIX + "ValidationError"},
        }
    },
}

status_code_ranges: dict[str, str] = {
    "1XX": "Information",
    "2XX": "Success",
    "3XX": "Redirection",
    "4XX": "Client Error",
    "5XX": "Server Error",
    "DEFAULT": "Default Response",
}


def _methods(route: APIRoute) -> list[str]:
    """The methods the user asked for (not the HEAD rawserve adds to GET)."""
    given = route.kwargs.get("methods") or ["GET"]
    return [m.upper() for m in given]


def unique_id(route: APIRoute) -> str:
    """FastAPI's default operation id: name, path and first method."""
    operation_id = re.sub(r"\W", "_", f"{route.name}{route.path_format}")
    return f"{operation_id}_{_methods(route)[0].lower()}"


def _title(name: str) -> str:
    return name.title().replace("_", " ")


class _RouteDoc:
    """What one route contributes to the document, gathered before the schemas
    are made so that one schema generator sees them all."""

    def __init__(self, route: APIRoute) -> None:
        self.route = route
        self.uid = route.kwargs.get("operation_id") or unique_id(route)
        self.params = _params(route.dependant)
        self.param_specs = [
            Spec(f.annotation, marker=f.marker, is_file=f.is_file) for f in self.params
        ]
        self.body: Spec | None = None
        self.body_media_type = "application/json"
        self.body_required = False
        self.body_title = ""
        flat = [f for f in route.flat_body if f.marker.include_in_schema]
        if flat:
            self._body(flat)
        self.response: Spec | None = None
        self.stream_item: Spec | None = None
        model = _response_model(route)
        if model is not None:
            if route.is_stream:
                explicit = not isinstance(route.response_model_arg, DefaultPlaceholder)
                item = model if explicit else stream_item_type(model)
                if item is not None:
                    self.stream_item = Spec(item, mode="serialization")
            else:
                self.response = Spec(model, mode="serialization")
        self.extra_responses: dict[str, Spec] = {}
        for code, value in (route.kwargs.get("responses") or {}).items():
            if isinstance(value, dict) and value.get("model") is not None:
                self.extra_responses[str(code)] = Spec(value["model"], mode="serialization")

    def _body(self, flat: list[Field]) -> None:
        route = self.route
        if any(f.is_file for f in flat):
            self.body_media_type = "multipart/form-data"
        elif any(f.is_form for f in flat):
            self.body_media_type = "application/x-www-form-urlencoded"
        else:
            types_ = {
                f.marker.media_type
                for f in flat
                if isinstance(f.marker, BodyParam) and not isinstance(f.marker, FormParam)
            }
            if len(types_) == 1:
                self.body_media_type = types_.pop()
        if not route.embed:
            f = flat[0]
            self.body = Spec(f.annotation, marker=f.marker, is_file=f.is_file)
            self.body_required = f.required
            self.body_title = f.marker.title or _title(f.alias)
            return
        name = f"Body_{self.uid}"
        members = [(f.name, f.alias, f.annotation, f.marker, f.is_file) for f in flat]
        self.body = Spec(None, members=members, model_name=name)
        self.body_required = any(f.required for f in flat)

    def specs(self) -> list[Spec]:
        out = list(self.param_specs)
        for spec in (self.body, self.response, self.stream_item):
            if spec is not None:
                out.append(spec)
        out.extend(self.extra_responses.values())
        return out


def _params(dependant: Dependant) -> list[Field]:
    """Path, query, header and cookie parameters of the route and its
    dependencies, each (location, name) once, a required one winning."""
    seen: set[Any] = set()
    found: dict[tuple[str, str], Field] = {}
    stack = [dependant]
    order: list[Field] = []
    while stack:
        current = stack.pop()
        key = (current.call, current.scope)
        if key in seen and current is not dependant:
            continue
        seen.add(key)
        order.extend(current.params)
        stack.extend(reversed(current.dependencies))
    groups: dict[str, list[Field]] = {"path": [], "query": [], "header": [], "cookie": []}
    for f in order:
        if f.in_ in groups and f.marker.include_in_schema:
            groups[f.in_].append(f)
    for in_ in ("path", "query", "header", "cookie"):
        for f in groups[in_]:
            k = (in_, f.alias)
            if k not in found or (f.required and not found[k].required):
                found[k] = f
    return list(found.values())


def _response_model(route: APIRoute) -> Any:
    arg = route.response_model_arg
    if not isinstance(arg, DefaultPlaceholder):
        return arg
    ret = type_hints(route.endpoint).get("return")
    if ret is None or ret is type(None) or lenient_issubclass(ret, Response):
        return None
    return ret


def _deep_update(main: dict[Any, Any], update: dict[Any, Any]) -> None:
    for key, value in update.items():
        if key in main and isinstance(main[key], dict) and isinstance(value, dict):
            _deep_update(main[key], value)
        elif key in main and isinstance(main[key], list) and isinstance(value, list):
            main[key] = main[key] + value
        else:
            main[key] = value


def _titled(schema: dict[str, Any], title: str) -> dict[str, Any]:
    schema = dict(schema)
    if "$ref" not in schema:
        schema["title"] = title
    return schema


def _operation(
    doc: _RouteDoc,
    method: str,
    schemas: dict[Spec, dict[str, Any]],
    definitions: dict[str, Any],
    operation_ids: set[str],
) -> dict[str, Any]:
    route = doc.route
    kwargs = route.kwargs
    op: dict[str, Any] = {}
    if route.tags:
        op["tags"] = list(route.tags)
    op["summary"] = route.summary or route.name.replace("_", " ").title()
    if route.description:
        op["description"] = route.description
    if doc.uid in operation_ids:
        warnings.warn(f"Duplicate Operation ID {doc.uid} for function {route.name}", stacklevel=3)
    operation_ids.add(doc.uid)
    op["operationId"] = doc.uid
    if kwargs.get("deprecated"):
        op["deprecated"] = True

    parameters = []
    for f, spec in zip(doc.params, doc.param_specs, strict=True):
        marker = f.marker
        param: dict[str, Any] = {
            "name": f.alias,
            "in": f.in_,
            "required": f.required,
            "schema": _titled(schemas.get(spec, {}), marker.title or _title(f.alias)),
        }
        if marker.description:
            param["description"] = marker.description
        openapi_examples = marker.extra.get("openapi_examples")
        if openapi_examples:
            param["examples"] = openapi_examples
        elif marker.extra.get("example") is not None:
            param["example"] = marker.extra["example"]
        if marker.extra.get("deprecated"):
            param["deprecated"] = True
        parameters.append(param)
    if parameters:
        op["parameters"] = parameters

    if method in METHODS_WITH_BODY and doc.body is not None:
        body_schema = schemas.get(doc.body, {})
        if doc.body.members is None:
            body_schema = _titled(body_schema, doc.body_title)
        request_body: dict[str, Any] = {}
        if doc.body_required:
            request_body["required"] = True
        media: dict[str, Any] = {"schema": body_schema}
        body_marker = doc.body.marker
        if body_marker is not None and body_marker.extra.get("openapi_examples"):
            media["examples"] = body_marker.extra["openapi_examples"]
        elif body_marker is not None and body_marker.extra.get("example") is not None:
            media["example"] = body_marker.extra["example"]
        request_body["content"] = {doc.body_media_type: media}
        op["requestBody"] = request_body

    response_class = route.response_class
    if route.status_code is not None:
        status = str(route.status_code)
    else:
        default = inspect.signature(response_class.__init__).parameters.get("status_code")
        status = str(default.default) if default and isinstance(default.default, int) else "200"
    responses: dict[str, Any] = op.setdefault("responses", {})
    responses.setdefault(status, {})["description"] = kwargs.get(
        "response_description", "Successful Response"
    )
    if body_allowed(int(status)):
        content = responses[status].setdefault("content", {})
        if route.is_stream and route.default_json:
            item = schemas.get(doc.stream_item, {}) if doc.stream_item is not None else {}
            content["application/jsonl"] = {"itemSchema": item}
        elif route.is_stream and response_class.media_type:
            content[response_class.media_type] = {"schema": {"type": "string"}}
        elif response_class.media_type:
            schema: dict[str, Any] = {"type": "string"}
            if lenient_issubclass(response_class, JSONResponse):
                schema = {}
                if doc.response is not None and doc.response in schemas:
                    schema = _titled(schemas[doc.response], _title(f"Response_{doc.uid}"))
            content.setdefault(response_class.media_type, {})["schema"] = schema
        if not content:
            del responses[status]["content"]
    for code, extra in (kwargs.get("responses") or {}).items():
        extra = copy.deepcopy(extra)
        extra.pop("model", None)
        key = str(code).upper()
        if key == "DEFAULT":
            key = "default"
        target = responses.setdefault(key, {})
        extra_spec = doc.extra_responses.get(str(code))
        if extra_spec is not None and extra_spec in schemas:
            media_type = response_class.media_type or "application/json"
            slot = extra.setdefault("content", {}).setdefault(media_type, {})
            _deep_update(slot.setdefault("schema", {}), _titled(schemas[extra_spec], ""))
            if slot["schema"].get("title") == "":
                del slot["schema"]["title"]
        phrase = status_code_ranges.get(str(code).upper())
        if phrase is None and str(code).isdigit():
            phrase = http.client.responses.get(int(code))
        description = extra.get("description") or target.get("description") or phrase
        _deep_update(target, extra)
        target["description"] = description or "Additional Response"

    if (doc.params or doc.body is not None) and not any(
        s in responses for s in ("422", "4XX", "default")
    ):
        responses["422"] = {
            "description": "Validation Error",
            "content": {
                "application/json": {"schema": {"$ref": REF_PREFIX + "HTTPValidationError"}}
            },
        }
        definitions.setdefault("ValidationError", validation_error_definition)
        definitions.setdefault("HTTPValidationError", validation_error_response_definition)
    openapi_extra = kwargs.get("openapi_extra")
    if openapi_extra:
        _deep_update(op, copy.deepcopy(openapi_extra))
    return op


def _drop_none(value: Any) -> Any:
    # FastAPI encodes the document with exclude_none: no null anywhere, a
    # ``default: null`` included.
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def get_openapi(
    *,
    title: str,
    version: str,
    openapi_version: str = "3.1.0",
    summary: str | None = None,
    description: str | None = None,
    routes: Sequence[APIRoute],
    tags: list[dict[str, Any]] | None = None,
    servers: list[dict[str, Any]] | None = None,
    terms_of_service: str | None = None,
    contact: dict[str, Any] | None = None,
    license_info: dict[str, Any] | None = None,
    external_docs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The OpenAPI document of ``routes`` (FastAPI's ``get_openapi``)."""
    info: dict[str, Any] = {"title": title, "version": version}
    if summary:
        info["summary"] = summary
    if description:
        info["description"] = description
    if terms_of_service:
        info["termsOfService"] = terms_of_service
    if contact:
        info["contact"] = contact
    if license_info:
        info["license"] = license_info
    output: dict[str, Any] = {"openapi": openapi_version, "info": info}
    if servers:
        output["servers"] = servers
    docs = [
        _RouteDoc(route)
        for route in routes
        if isinstance(route, APIRoute) and route.include_in_schema and not route.raw
    ]
    specs = [spec for doc in docs for spec in doc.specs()]
    schemas, definitions = make_schemas().generate(specs)
    definitions = dict(definitions)
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for doc in docs:
        for method in _methods(doc.route):
            op = _operation(doc, method, schemas, definitions, operation_ids)
            paths.setdefault(doc.route.path_format, {})[method.lower()] = op
    # FastAPI's key order: paths before components.
    output["paths"] = paths
    if definitions:
        output["components"] = {"schemas": {k: definitions[k] for k in sorted(definitions)}}
    if tags:
        output["tags"] = tags
    if external_docs:
        output["externalDocs"] = external_docs
    result: dict[str, Any] = _drop_none(output)
    return result
