"""``POST /predict``: the default model, FastAPI style. JSON ``{"inputs": [...]}``
(one row or a list of rows), an uploaded PNG or JPEG (converted by the
model's image spec, ``rawserve.inference.images``) or an uploaded ``.npy``
file in; ``{"prediction", "confidence", "model"}`` out (``"predictions"`` for
rows). Errors are ``{"detail": ...}``, 422 for a bad tensor or image."""

from __future__ import annotations

import asyncio
import functools
import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from rawserve.core.errors import ClientDisconnected
from rawserve.encoders import dumps
from rawserve.inference.app import api_docs
from rawserve.inference.app.application import InferenceApp
from rawserve.inference.app.errors import BadInput, detail_error, error_response
from rawserve.inference.app.submit import Encoder, answer, deadline_s
from rawserve.inference.cache import CachedResult, result_path
from rawserve.inference.engine import InferenceResult
from rawserve.inference.images import ImageError, image_rows, image_spec_for, looks_like_image
from rawserve.requests import Request
from rawserve.responses import Response
from rawserve.routing import APIRouter

router = APIRouter()


@router.post("/predict", openapi_extra=api_docs.PREDICT)
async def predict(request: Request) -> Response:
    app: InferenceApp = request.app
    engine = app.engine
    name = app.default_model
    if name is None or not engine.ready:
        return detail_error("models are still loading", 503, {"retry-after": "1"})
    model = engine.model(name)
    try:
        rows, batched, from_json = await _predict_input(request, app)
        arrays = {model.inputs[0].name: rows}

        return await answer(
            app,
            request,
            name,
            arrays,
            representation=representation(batched),
            encode=encoder(name, model.labels, batched),
            urgency=None,
            timeout_s=deadline_s(request, None),
            outputs=None,
            finite=from_json,
        )
    except (ClientDisconnected, asyncio.CancelledError):
        raise
    except Exception as exc:
        response = error_response(exc, as_v2=False)
        if response is None:
            raise
        return response


def representation(batched: bool) -> str:
    # One row and a list of one row are answered in different shapes.
    return "predict:rows" if batched else "predict:row"


def encoder(name: str, labels: tuple[str, ...] | None, batched: bool) -> Encoder:
    """How a /predict answer is written: prediction and confidence per row,
    the model, and the path of the result. One encoder per model and shape
    of answer, made on first use: it depends on nothing else."""
    memo = _ENCODERS.get((name, batched))
    if memo is not None and memo[0] is labels:
        return memo[1]

    def encode(result: InferenceResult, key: str) -> CachedResult:
        answers = _classify(result.outputs, labels)
        body: dict[str, Any]
        if len(answers) == 1 and not batched:
            body = {**answers[0], "model": name}
        else:
            body = {"predictions": answers, "model": name}
        if key:
            body["result"] = result_path(key)
        # What JSONResponse(body).body is, without the response around it.
        return CachedResult(dumps(body), "application/json", key)

    if len(_ENCODERS) >= _ENCODERS_MAX:
        _ENCODERS.clear()
    _ENCODERS[(name, batched)] = (labels, encode)
    return encode


# (model, batched) -> (the labels it was made with, the encoder). Bounded:
# model names come from the server's configuration, but tests make many apps.
_ENCODERS: dict[tuple[str, bool], tuple[tuple[str, ...] | None, Encoder]] = {}
_ENCODERS_MAX = 256


async def _predict_input(request: Request, app: InferenceApp) -> tuple[np.ndarray, bool, bool]:
    """``{"inputs": [...]}`` (one row, or a list of rows), or an uploaded
    ``.npy`` file in a multipart form field named ``file``; whether rows
    were sent (the answer is then a list too); and whether the values came
    from JSON (then none is NaN or infinite)."""
    from_json = False
    content_type = (request.headers.get("content-type") or "").lower()
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadInput("expected an uploaded image or .npy file in the form field 'file'")
        data = await upload.read()
        if looks_like_image(data) or (upload.content_type or "").startswith("image/"):
            array = await _image_input(data, app)
        else:
            array = _load_npy(data, app.settings.max_request_elements)
    else:
        body = await request.body()
        limit = app.settings.max_request_elements
        dtype = app.engine.model(name).inputs[0].dtype if (name := app.default_model) else None
        decoding = app.decoding
        if len(body) < decoding.off_loop_bytes:
            # What decoding.run does for a small body, without its coroutine.
            array = _json_rows(body, limit, dtype)
        else:
            array = await decoding.run(len(body), functools.partial(_json_rows, body, limit, dtype))
        from_json = True
    batched = array.ndim == 2
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2:
        raise BadInput(f"'inputs' must be one row or a list of rows, got {array.ndim} dimensions")
    if array.dtype.kind not in "iuf":
        raise BadInput(f"'inputs' must be numbers, got {array.dtype}")
    # The model converts to its input type, refusing values out of its range.
    # An array built from JSON is C-contiguous already.
    return (array if from_json else np.ascontiguousarray(array)), batched, from_json


async def _image_input(data: bytes, app: InferenceApp) -> np.ndarray:
    """An uploaded PNG or JPEG as one row of the default model, by the image
    spec shipped beside it (``<stem>.image.json``)."""
    name = app.default_model
    assert name is not None
    spec = image_spec_for(str(app.engine.model(name).spec.path))
    if spec is None:
        raise BadInput(f"model {name!r} takes no images: it has no image spec beside it")
    try:
        # Decoding is CPU work: large files go to a worker thread.
        rows = await app.decoding.run(len(data), functools.partial(image_rows, data, spec))
    except ImageError as exc:
        raise BadInput(str(exc)) from None
    # One image is one row, answered like one JSON row.
    return rows.reshape(-1) if spec.layout == "flat" else rows


def _json_rows(body: bytes, max_elements: int, dtype: np.dtype[Any] | None = None) -> np.ndarray:
    """``{"inputs": [...]}`` as a float64 array (float32 when ``dtype`` is, and
    every value fits): numbers only (no strings, no booleans), counted against
    ``max_elements`` before the array is built."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadInput('expected a JSON object {"inputs": [...]}')
    inputs = payload["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise BadInput("'inputs' must be a list of numbers or a list of rows")
    rows = inputs if isinstance(inputs[0], list) else [inputs]
    width = len(rows[0])
    if len(rows) * width > max_elements:
        raise BadInput(
            f"'inputs' has {len(rows)} rows of {width} values; the limit is {max_elements} values"
        )
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise BadInput(f"'inputs' rows must all have {width} values; row {i} does not")
        # bool is an int subclass: refuse it by type, as strings are. The set
        # of types is built in C; the loop only looks for what to name.
        if not _NUMBER_TYPES.issuperset(map(type, row)):
            value = next(v for v in row if type(v) not in _NUMBER_TYPES)
            raise BadInput(f"'inputs' must hold numbers only; row {i} has {_json_kind(value)}")
    try:
        if dtype is not None and dtype == np.float32:
            # Straight to the model's type: validate() then has nothing to
            # convert. A value beyond FP32 goes on as float64 instead, for
            # validate() to name it (JSON has no NaN or infinity).
            try:
                with np.errstate(over="raise"):
                    return np.array(inputs, dtype=np.float32)
            except FloatingPointError:
                pass
        return np.asarray(inputs, dtype=np.float64)
    except OverflowError:
        raise BadInput("'inputs' holds an integer too large for a number") from None


_NUMBER_TYPES = frozenset((float, int))


def _load_npy(data: bytes, max_elements: int) -> np.ndarray:
    """An uploaded ``.npy`` file, its header checked before anything is
    allocated. Errors say what is wrong with the file, never what numpy said
    (its messages carry object reprs and allocation sizes)."""
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
    except Exception:
        raise BadInput("'file' is not a .npy array: its header is malformed") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise BadInput(f"'file' must hold numbers, not {dtype.kind!r}-kind data") from None
    count = math.prod(shape)
    if count > max_elements:
        raise BadInput(f"'file' holds {count} values; the limit is {max_elements}")
    if len(data) - buf.tell() != count * dtype.itemsize:
        raise BadInput(
            f"'file' declares shape {list(shape)} of {dtype.name} ({count * dtype.itemsize} "
            f"bytes) but carries {len(data) - buf.tell()} bytes of data"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=buf.tell())
    return array.reshape(shape, order="F" if fortran else "C")


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list nested too deep"
    return "an object"


def _classify(
    outputs: Mapping[str, np.ndarray], labels: tuple[str, ...] | None
) -> list[dict[str, Any]]:
    """(prediction, confidence) per row, from a classifier's outputs: a
    ``probabilities``-like 2-D output (softmaxed when it is not one already),
    and a ``label`` output when the model has it."""
    probs = None
    for value in outputs.values():
        if value.ndim == 2 and value.dtype.kind == "f":
            if value.shape[0] == 1:
                return [_classify_row(value[0].tolist(), labels)]
            probs = value.astype(np.float64)
            break
    if probs is None:
        first = next(iter(outputs.values()))
        return [{"prediction": v.item() if hasattr(v, "item") else v} for v in first]
    # Probabilities already (non-negative rows summing to 1)? Else softmax.
    if probs.min() < 0 or float(np.abs(probs.sum(axis=1) - 1.0).max()) > 1e-3:
        shifted = np.exp(probs - probs.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
    best = probs.argmax(axis=1)
    return [_answer(int(k), float(probs[i, k]), labels) for i, k in enumerate(best)]


def _classify_row(row: list[float], labels: tuple[str, ...] | None) -> dict[str, Any]:
    """``_classify`` for one row, in Python floats: for a handful of classes
    each numpy call (astype, min, sum, abs, max, argmax) costs more than its
    work, and one /predict answer made six of them."""
    if min(row) < 0 or abs(math.fsum(row) - 1.0) > 1e-3:
        top = max(row)
        shifted = [math.exp(v - top) for v in row]
        total = math.fsum(shifted)
        row = [v / total for v in shifted]
    k = row.index(max(row))  # the first of equals, as argmax
    return _answer(k, row[k], labels)


def _answer(k: int, confidence: float, labels: tuple[str, ...] | None) -> dict[str, Any]:
    label: Any = k
    if labels is not None and k < len(labels):
        text = labels[k]
        label = int(text) if text.isdigit() else text
    return {"prediction": label, "confidence": round(confidence, 6)}
