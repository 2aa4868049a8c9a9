"""The Open Inference Protocol (KServe V2) REST endpoints: server and model
health and metadata, and inference with JSON tensors or Triton's binary
tensor extension. Every path exists with and without ``/versions/{version}``.
Errors are ``{"error": "..."}`` (the codec is ``rawserve.inference.v2``)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from typing import Any

import orjson

from rawserve.core.errors import ClientDisconnected
from rawserve.inference import v2
from rawserve.inference.app import api_docs
from rawserve.inference.app.application import InferenceApp
from rawserve.inference.app.errors import error_response, v2_error
from rawserve.inference.app.submit import answer, deadline_s
from rawserve.inference.cache import CachedResult
from rawserve.inference.engine import InferenceResult, ModelNotFound
from rawserve.inference.model import Model
from rawserve.requests import Request
from rawserve.responses import JSONResponse, Response
from rawserve.routing import APIRouter

VERSION = "0.1.0"

router = APIRouter()


@router.get("/v2")
async def v2_server() -> dict[str, Any]:
    return {"name": "rawserve", "version": VERSION, "extensions": ["binary_tensor_data"]}


@router.get("/v2/health/live")
async def v2_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready")
async def v2_ready(request: Request) -> Response:
    app: InferenceApp = request.app
    ready = app.engine.ready
    return JSONResponse({"ready": ready}, 200 if ready else 503)


@router.get("/v2/models/{name}")
async def v2_metadata(request: Request, name: str) -> Response:
    return _metadata(request.app, name, None)


@router.get("/v2/models/{name}/versions/{version}")
async def v2_metadata_version(request: Request, name: str, version: str) -> Response:
    return _metadata(request.app, name, version)


@router.get("/v2/models/{name}/ready")
async def v2_model_ready(request: Request, name: str) -> Response:
    return _model_ready(request.app, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready")
async def v2_model_ready_version(request: Request, name: str, version: str) -> Response:
    return _model_ready(request.app, name, version)


@router.post("/v2/models/{name}/infer", openapi_extra=api_docs.V2_INFER)
async def v2_infer(request: Request, name: str) -> Response:
    return await _infer(request, name, None)


@router.post("/v2/models/{name}/versions/{version}/infer", openapi_extra=api_docs.V2_INFER)
async def v2_infer_version(request: Request, name: str, version: str) -> Response:
    return await _infer(request, name, version)


def _lookup(app: InferenceApp, name: str, version: str | None) -> Model | Response:
    """The model served as ``name`` (at ``version``, if given), or the 404."""
    try:
        model: Model = app.engine.model(name)
    except ModelNotFound as exc:
        return v2_error(str(exc), 404)
    if version is not None and version != model.version:
        return v2_error(
            f"model '{name}' has no version '{version}' (served: '{model.version}')", 404
        )
    return model


def _metadata(app: InferenceApp, name: str, version: str | None) -> Response:
    found = _lookup(app, name, version)
    if isinstance(found, Response):
        return found
    return JSONResponse(found.metadata())


def _model_ready(app: InferenceApp, name: str, version: str | None) -> Response:
    found = _lookup(app, name, version)
    if isinstance(found, Response):
        return found
    ready = app.engine.ready
    return JSONResponse({"name": name, "ready": ready}, 200 if ready else 503)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    app: InferenceApp = request.app
    found = _lookup(app, name, version)
    if isinstance(found, Response):
        return found
    model = found
    try:
        header_length = v2.parse_header_length(request.headers.get(v2.HEADER_LENGTH_HEADER))
        body = await request.body()
        req = await app.decoding.run(
            len(body),
            functools.partial(
                v2.decode_request,
                body,
                request.headers.get("content-type"),
                header_length,
                max_elements=app.settings.max_request_elements,
            ),
        )
        if req.raw_input is not None:
            if len(model.inputs) != 1:
                raise v2.V2Error(
                    "a raw binary request (Inference-Header-Content-Length: 0) needs a "
                    f"model with one input; '{name}' has {len(model.inputs)}"
                )
            spec = model.inputs[0]
            # Triton treats a raw request as a batch of one.
            shape = [1, *spec.v2_shape()[1:]]
            req = v2.bind_raw_input(req, spec.name, spec.datatype, shape)
        _check_datatypes(model, req)
        # The cached answer carries no request id (ids are per request, the
        # answer is not); the id is written into each request's own copy.
        anonymous = dataclasses.replace(req, id=None)

        def encode(result: InferenceResult, key: str) -> CachedResult:
            payload, headers = v2.encode_response_for(
                anonymous, name, result.version, result.outputs
            )
            content_type = headers.pop("content-type")
            return CachedResult(payload, content_type, key, tuple(headers.items()))

        order = req.output_names
        binary = v2.binary_output_names(req, order or [t.name for t in model.outputs])
        return await answer(
            app,
            request,
            name,
            req.arrays(),
            representation="v2:" + orjson.dumps([order, sorted(binary)]).decode(),
            encode=encode,
            personalize=None if req.id is None else functools.partial(_with_id, req.id),
            urgency=v2.request_priority(req),
            timeout_s=deadline_s(request, v2.request_timeout_s(req)),
            outputs=order,
        )
    except (ClientDisconnected, asyncio.CancelledError):
        raise
    except Exception as exc:
        response = error_response(exc, as_v2=True)
        if response is None:
            raise
        return response


def _with_id(request_id: str, value: CachedResult) -> CachedResult:
    """``value`` with ``"id"`` set in its JSON header (V2 echoes the request's id)."""
    headers = dict(value.headers)
    length = headers.get(v2.HEADER_LENGTH_HEADER)
    split = int(length) if length is not None else len(value.body)
    head = orjson.loads(value.body[:split])
    head["id"] = request_id
    new_head = orjson.dumps(head)
    if length is not None:
        headers[v2.HEADER_LENGTH_HEADER] = str(len(new_head))
    return dataclasses.replace(
        value, body=new_head + value.body[split:], headers=tuple(headers.items())
    )


def _check_datatypes(model: Model, req: v2.InferRequest) -> None:
    """V2 names each tensor's datatype; like Triton, refuse one that differs
    from the model's rather than converting it silently."""
    specs = {t.name: t for t in model.inputs}
    for tensor in req.inputs:
        spec = specs.get(tensor.name)
        if spec is not None and tensor.datatype != spec.datatype:
            raise v2.V2Error(
                f"input '{tensor.name}': datatype {tensor.datatype} does not match the "
                f"model's {spec.datatype}"
            )
