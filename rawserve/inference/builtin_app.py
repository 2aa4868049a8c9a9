"""What ``python -m rawserve`` serves when no app is named: the inference app.

Endpoints:

- Open Inference Protocol (KServe V2) REST, as KServe and Triton specify it:
  ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/{name}[/versions/{v}]`` (metadata), ``.../ready``, and
  ``POST .../infer`` with JSON tensors or the binary tensor extension. Errors
  are ``{"error": "..."}`` with 400 (bad request, bad tensor), 404 (no such
  model), 503 (queue full, shutting down) and 504 (deadline passed).
- ``POST /predict`` for the default model: JSON ``{"inputs": [...]}`` or an
  uploaded ``.npy`` file, answering ``{"prediction", "confidence", "model"}``.
  Errors use FastAPI's ``{"detail": ...}`` and 422 for a bad tensor.
- ``/healthz`` (process up), ``/readyz`` (models loaded and warm; 503 before),
  ``/metrics`` (Prometheus text).

Every inference response carries ``Server-Timing: queue;dur=..,
infer;dur=..``. Priority, strongest last: the protocol's signal (RFC 9218
header, HTTP/2 PRIORITY_UPDATE or weight, which may move a queued request),
then V2 ``parameters.priority``. Deadline: V2 ``parameters.timeout``, else the
``x-request-timeout-ms`` header, else ``--queue-timeout-ms``.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from rawserve.applications import RawServe
from rawserve.core.config import InferenceSettings
from rawserve.core.errors import BodyTooLarge, ClientDisconnected
from rawserve.core.priority import Priority
from rawserve.inference import v2
from rawserve.inference.engine import (
    DeadlineExceeded,
    Engine,
    EngineConfig,
    EngineStopped,
    InferenceFailed,
    InferenceResult,
    ModelNotFound,
    QueueFull,
)
from rawserve.inference.metrics import CONTENT_TYPE_LATEST, Registry
from rawserve.inference.model import (
    InputError,
    Model,
    ModelSpec,
    bundled_metadata,
    load_bundled,
)
from rawserve.requests import Request
from rawserve.responses import JSONResponse, Response

log = logging.getLogger("rawserve.inference")

VERSION = "0.1.0"
TIMEOUT_HEADER = "x-request-timeout-ms"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class InferenceApp(RawServe):
    """A RawServe app that owns an Engine: models load and warm up at startup,
    and on shutdown queued work either finishes or gets a 503."""

    def __init__(
        self,
        settings: InferenceSettings | None = None,
        *,
        models: Mapping[str, Model] | None = None,
        graceful_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(title="rawserve")
        self.settings = settings or InferenceSettings()
        self.metrics = Registry()
        s = self.settings
        self.engine = Engine(
            EngineConfig(
                max_batch_size=s.max_batch_size,
                max_batch_delay_s=s.max_batch_delay_ms / 1000,
                queue_limit=s.queue_limit,
                queue_timeout_s=s.queue_timeout_ms / 1000,
                priority_weights=s.priority_weights,
                priority_mode=s.priority_mode,
                model_workers=s.model_workers,
            ),
            self.metrics,
        )
        self._given_models = dict(models) if models else None
        self.graceful_timeout_s = graceful_timeout_s
        self.default_model: str | None = None
        self._warming: asyncio.Task[None] | None = None
        self.m_requests = self.metrics.counter(
            "rawserve_requests_total", "Requests answered", ["protocol", "route", "status"]
        )
        self.m_latency = self.metrics.histogram(
            "rawserve_request_seconds",
            "Time from request to response start",
            ["protocol", "route"],
            buckets=LATENCY_BUCKETS,
        )
        self.m_validation = self.metrics.counter(
            "rawserve_validation_errors_total", "Requests refused before queueing", ["model"]
        )
        self.router.on_startup.append(self._load_models)
        self.middleware("http")(self._observe)
        _routes(self)

    async def _load_models(self) -> None:
        s = self.settings
        models = self._given_models
        if models is None:
            specs = [ModelSpec.parse(entry) for entry in s.models] or [load_bundled()]
            loaded = await asyncio.gather(
                *(
                    asyncio.to_thread(
                        Model,
                        spec,
                        intra_op_threads=s.intra_op_threads,
                        allow_spinning=s.allow_spinning,
                    )
                    for spec in specs
                )
            )
            models = {m.name: m for m in loaded}
        for name, model in models.items():
            self.engine.add_model(name, model)
        self.default_model = next(iter(models))
        # Listen while warming up: /healthz answers, /readyz says 503 until the
        # warm-up (one run per batch size) is over.
        await self.engine.start(warm=False)
        self._warming = asyncio.get_running_loop().create_task(self._warm(list(models)))

    async def _warm(self, names: list[str]) -> None:
        try:
            await self.engine.warm()
        except Exception:
            log.exception("warm-up failed; the server stays not ready")
            return
        log.info("models ready: %s", ", ".join(names))

    async def drain(self, timeout_s: float) -> None:
        """Called by the server when shutdown begins: refuse new inferences,
        let queued ones finish within ``timeout_s``, then answer the rest 503."""
        await self.engine.stop(timeout_s)

    async def shutdown(self) -> None:
        warming = self._warming
        if warming is not None and not warming.done():
            warming.cancel()
            await asyncio.gather(warming, return_exceptions=True)
        await self.engine.stop(0)
        await super().shutdown()

    async def _observe(self, request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        route = request.route.path if request.route is not None else "unmatched"
        proto = request.http_version
        self.m_requests.labels(proto, route, str(response.status_code)).inc()
        self.m_latency.labels(proto, route).observe(time.perf_counter() - started)
        return response


def create_app(
    settings: InferenceSettings | None = None,
    *,
    models: Mapping[str, Model] | None = None,
    graceful_timeout_s: float = 10.0,
) -> InferenceApp:
    """The built-in inference app over ``settings.models`` (default: the
    bundled digits classifier), or over already loaded ``models``."""
    return InferenceApp(settings, models=models, graceful_timeout_s=graceful_timeout_s)


# -- helpers -----------------------------------------------------------------------


def _v2_error(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    return Response(v2.error_body(message), status, headers, media_type="application/json")


def _detail(message: Any, status: int, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"detail": message}, status, headers)


def _deadline(request: Request, v2_timeout: float | None) -> float | None:
    if v2_timeout is not None:
        return v2_timeout
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        ms = float(raw)
    except ValueError:
        return None  # an unusable deadline header falls back to the default
    return ms / 1000 if ms > 0 else None


def _timing(result: InferenceResult) -> dict[str, str]:
    return {"server-timing": result.server_timing()}


async def _run(
    app: InferenceApp,
    request: Request,
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    urgency: int | None,
    timeout_s: float | None,
    outputs: list[str] | None,
) -> InferenceResult:
    priority: Priority = Priority(urgency) if urgency is not None else request.priority
    # A V2 parameters.priority is the last word; otherwise a PRIORITY_UPDATE
    # arriving while the request waits moves it in the queue.
    hook = request.on_priority_change if urgency is None else None
    try:
        return await app.engine.infer(
            model,
            inputs,
            priority=priority,
            timeout_s=timeout_s,
            outputs=outputs,
            on_priority_change=hook,
        )
    except InputError:
        app.m_validation.labels(model).inc()
        raise


def _error_response(exc: Exception, as_v2: bool) -> Response | None:
    """The answer to a request the endpoint or the engine refused, in V2's
    shape or FastAPI's; None for an exception that is a server bug."""
    make = _v2_error if as_v2 else _detail
    if isinstance(exc, v2.V2Error):
        return make(str(exc), 400)
    if isinstance(exc, _BadInput):
        return make(str(exc), 422)
    if isinstance(exc, BodyTooLarge):
        return make(str(exc), 413)
    if isinstance(exc, QueueFull):
        return make(str(exc), 503, {"retry-after": str(exc.retry_after_s)})
    if isinstance(exc, DeadlineExceeded):
        return make(str(exc), 504)
    if isinstance(exc, EngineStopped):
        return make(str(exc), 503, {"retry-after": "1"})
    if isinstance(exc, ModelNotFound):
        return make(str(exc), 404)
    if isinstance(exc, InferenceFailed):
        return make(str(exc), 500)
    if isinstance(exc, InputError):
        return make(str(exc), 400 if as_v2 else 422)
    return None


# -- routes --------------------------------------------------------------------------


def _routes(app: InferenceApp) -> None:
    engine = app.engine

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        if engine.ready:
            return JSONResponse({"ready": True, "models": engine.model_names})
        return JSONResponse({"ready": False, "detail": "models are loading"}, 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(app.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # -- Open Inference Protocol -------------------------------------------------------

    @app.get("/v2")
    async def v2_server() -> dict[str, Any]:
        return {"name": "rawserve", "version": VERSION, "extensions": ["binary_tensor_data"]}

    @app.get("/v2/health/live")
    async def v2_live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def v2_ready() -> Response:
        return JSONResponse({"ready": engine.ready}, 200 if engine.ready else 503)

    def lookup(name: str, version: str | None) -> Model | Response:
        try:
            model: Model = engine.model(name)
        except ModelNotFound as exc:
            return _v2_error(str(exc), 404)
        if version is not None and version != model.version:
            return _v2_error(
                f"model '{name}' has no version '{version}' (served: '{model.version}')", 404
            )
        return model

    async def metadata(name: str, version: str | None) -> Response:
        found = lookup(name, version)
        if isinstance(found, Response):
            return found
        return JSONResponse(found.metadata())

    async def model_ready(name: str, version: str | None) -> Response:
        found = lookup(name, version)
        if isinstance(found, Response):
            return found
        ready = engine.ready
        return JSONResponse({"name": name, "ready": ready}, 200 if ready else 503)

    async def infer(request: Request, name: str, version: str | None) -> Response:
        found = lookup(name, version)
        if isinstance(found, Response):
            return found
        model = found
        try:
            body = await request.body()
            req = v2.decode_request(
                body,
                request.headers.get("content-type"),
                v2.parse_header_length(request.headers.get(v2.HEADER_LENGTH_HEADER)),
                max_elements=app.settings.max_request_elements,
            )
            if req.raw_input is not None:
                if len(model.inputs) != 1:
                    raise v2.V2Error(
                        "a raw binary request (Inference-Header-Content-Length: 0) needs a "
                        f"model with one input; '{name}' has {len(model.inputs)}"
                    )
                spec = model.inputs[0]
                shape = [1] + [(-1 if d is None else d) for d in (spec.shape or ())[1:]]
                req = v2.bind_raw_input(req, spec.name, spec.datatype, shape)
            _check_datatypes(model, req)
            result = await _run(
                app,
                request,
                name,
                req.arrays(),
                urgency=v2.request_priority(req),
                timeout_s=_deadline(request, v2.request_timeout_s(req)),
                outputs=req.output_names,
            )
            payload, headers = v2.encode_response_for(req, name, result.version, result.outputs)
        except (ClientDisconnected, asyncio.CancelledError):
            raise
        except Exception as exc:
            response = _error_response(exc, as_v2=True)
            if response is None:
                raise
            return response
        headers.update(_timing(result))
        return Response(payload, 200, headers)

    # Both spellings of every model path, with and without a version.
    @app.get("/v2/models/{name}")
    async def v2_metadata(name: str) -> Response:
        return await metadata(name, None)

    @app.get("/v2/models/{name}/versions/{version}")
    async def v2_metadata_version(name: str, version: str) -> Response:
        return await metadata(name, version)

    @app.get("/v2/models/{name}/ready")
    async def v2_model_ready(name: str) -> Response:
        return await model_ready(name, None)

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def v2_model_ready_version(name: str, version: str) -> Response:
        return await model_ready(name, version)

    @app.post("/v2/models/{name}/infer")
    async def v2_infer(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def v2_infer_version(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)

    # -- /predict -----------------------------------------------------------------------

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        name = app.default_model
        if name is None or not engine.ready:
            return _detail("models are still loading", 503, {"retry-after": "1"})
        model = engine.model(name)
        try:
            rows, batched = await _predict_input(request)
            arrays = {model.inputs[0].name: rows}
            result = await _run(
                app,
                request,
                name,
                arrays,
                urgency=None,
                timeout_s=_deadline(request, None),
                outputs=None,
            )
        except (ClientDisconnected, asyncio.CancelledError):
            raise
        except Exception as exc:
            response = _error_response(exc, as_v2=False)
            if response is None:
                raise
            return response
        answers = _classify(result.outputs, _labels(name))
        body: dict[str, Any]
        if len(answers) == 1 and not batched:
            body = {**answers[0], "model": name}
        else:
            body = {"predictions": answers, "model": name}
        return JSONResponse(body, headers=_timing(result))


class _BadInput(ValueError):
    pass


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


async def _predict_input(request: Request) -> tuple[np.ndarray, bool]:
    """``{"inputs": [...]}`` (one row, or a list of rows), or an uploaded
    ``.npy`` file in a multipart form field named ``file``; and whether rows
    were sent (the answer is then a list too)."""
    content_type = (request.headers.get("content-type") or "").lower()
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise _BadInput("expected an uploaded .npy file in the form field 'file'")
        data = await upload.read()
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:
            raise _BadInput(f"'file' is not a .npy array: {exc}") from None
    else:
        try:
            payload = await request.json()
        except ValueError as exc:
            raise _BadInput(f"the body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict) or "inputs" not in payload:
            raise _BadInput('expected a JSON object {"inputs": [...]}')
        try:
            array = np.asarray(payload["inputs"], dtype=np.float64)
        except (ValueError, TypeError):
            raise _BadInput("'inputs' must be a list of numbers or a list of rows") from None
    batched = array.ndim == 2
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2:
        raise _BadInput(f"'inputs' must be one row or a list of rows, got {array.ndim} dimensions")
    if array.dtype.kind not in "iuf":
        raise _BadInput(f"'inputs' must be numbers, got {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32), batched


@functools.lru_cache(maxsize=64)
def _labels(model: str) -> tuple[str, ...] | None:
    """The bundled model's class labels, read once (not per request)."""
    if model != "digits":
        return None
    try:
        labels = bundled_metadata("digits").get("labels")
    except Exception:
        return None
    return tuple(labels) if labels else None


def _classify(
    outputs: Mapping[str, np.ndarray], labels: tuple[str, ...] | None
) -> list[dict[str, Any]]:
    """(prediction, confidence) per row, from a classifier's outputs: a
    ``probabilities``-like 2-D output (softmaxed when it is not one already),
    and a ``label`` output when the model has it."""
    probs = None
    for value in outputs.values():
        if value.ndim == 2 and value.dtype.kind == "f":
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
    answers = []
    for i, k in enumerate(best):
        label: Any = int(k)
        if labels is not None and k < len(labels):
            text = labels[k]
            label = int(text) if text.isdigit() else text
        answers.append({"prediction": label, "confidence": round(float(probs[i, k]), 6)})
    return answers


# ``python -m rawserve rawserve.inference.builtin_app:app`` serves it with default settings.
app = create_app()
