"""From an endpoint to the engine: a request's urgency and deadline, the
result cache in front of the engine, and the headers of the answer
(``Server-Timing``, ``Cache-Status``, ``Content-Location``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from rawserve.core.priority import Priority
from rawserve.inference.app.application import InferenceApp
from rawserve.inference.cache import CachedResult, result_key, result_path
from rawserve.inference.engine import InferenceResult
from rawserve.inference.model import InputError
from rawserve.requests import Request
from rawserve.responses import Response

# (inference result, its cache key) -> the encoded answer.
Encoder = Callable[[InferenceResult, str], CachedResult]

TIMEOUT_HEADER = "x-request-timeout-ms"


def deadline_s(request: Request, v2_timeout: float | None) -> float | None:
    """V2 ``parameters.timeout`` if given, else the ``x-request-timeout-ms``
    header; None leaves the configured queue timeout."""
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


def timing_headers(result: InferenceResult) -> dict[str, str]:
    return {"server-timing": result.server_timing()}


async def submit(
    app: InferenceApp,
    request: Request,
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    urgency: int | None,
    timeout_s: float | None,
    outputs: list[str] | None,
    validated: bool = False,
    on_late_result: Callable[[InferenceResult], None] | None = None,
) -> InferenceResult:
    """Run ``inputs`` on ``model`` at the request's priority (``urgency``, from
    V2 ``parameters.priority``, overrides the protocol's signal)."""
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
            validated=validated,
            on_late_result=on_late_result,
        )
    except InputError:
        app.m_validation.labels(model).inc()
        raise


@dataclass(frozen=True, slots=True)
class Answer:
    """One inference's encoded answer and how it came (the headers it gets)."""

    value: CachedResult
    key: str  # "" with the cache off
    cache_status: str  # RFC 9211 Cache-Status
    server_timing: str

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """``headers()`` as the (name, value) bytes a Response sends, with its
        content-length, for an answer without fields of its own."""
        assert not self.value.headers
        out = [
            (b"content-type", self.value.content_type.encode("latin-1")),
            (b"cache-status", self.cache_status.encode("latin-1")),
            (b"server-timing", self.server_timing.encode("latin-1")),
        ]
        if self.key:
            out.append((b"content-location", result_path(self.key).encode("latin-1")))
        out.append((b"content-length", b"%d" % len(self.value.body)))
        return out

    def headers(self) -> dict[str, str]:
        out = {"content-type": self.value.content_type}
        if self.value.headers:
            out.update(self.value.headers)
        out["cache-status"] = self.cache_status
        out["server-timing"] = self.server_timing
        if self.key:
            out["content-location"] = result_path(self.key)
        return out


def prepare(
    app: InferenceApp,
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    representation: str,
    outputs: list[str] | None,
    finite: bool = False,
) -> tuple[dict[str, np.ndarray], str]:
    """Validated inputs and their cache key ("" with the cache off). A bad
    tensor is refused here, before anything is cached or queued. ``finite``:
    the inputs came from JSON (see ``Model.validate``)."""
    spec = app.engine.model(model)
    try:
        arrays = spec.validate(inputs, finite=finite)
        if outputs:
            spec.check_outputs(outputs)
    except InputError:
        app.m_validation.labels(model).inc()
        raise
    if app.cache is None:
        return arrays, ""
    return arrays, result_key(model, spec.version, arrays, outputs, representation)


async def infer_cached(
    app: InferenceApp,
    request: Request,
    model: str,
    arrays: dict[str, np.ndarray],
    key: str,
    *,
    encode: Encoder,
    urgency: int | None,
    timeout_s: float | None,
    outputs: list[str] | None,
) -> Answer:
    """The answer for prepared inputs: from the result cache when an identical
    inference was answered (or is being answered) already, else computed."""
    timing: dict[str, str] = {}
    cache = app.cache

    def late(result: InferenceResult) -> None:
        # Every client of this inference went away while its batch ran: the
        # result is still worth keeping for the next identical request.
        if cache is not None and key:
            cache.keep(encode(result, key))

    async def compute() -> CachedResult:
        result = await submit(
            app,
            request,
            model,
            arrays,
            urgency=urgency,
            timeout_s=timeout_s,
            outputs=outputs,
            validated=True,
            on_late_result=late,
        )
        timing["server-timing"] = result.server_timing()
        return encode(result, key)

    if cache is None or not key:
        value = await compute()
        status = "rawserve; fwd=bypass; detail=disabled"
    else:
        value, how = await cache.get_or_compute(key, compute)
        if how == "hit":
            status = f"rawserve; hit; ttl={int(cache.ttl_left(key))}"
        elif how == "collapsed":
            status = "rawserve; fwd=miss; collapsed"
        else:
            status = "rawserve; fwd=miss"
    return Answer(
        value, key, status, timing.get("server-timing") or f'cache;desc="{how_of(status)}"'
    )


def how_of(cache_status: str) -> str:
    return "hit" if "; hit" in cache_status else "collapsed"


async def answer(
    app: InferenceApp,
    request: Request,
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    representation: str,
    encode: Encoder,
    personalize: Callable[[CachedResult], CachedResult] | None = None,
    urgency: int | None,
    timeout_s: float | None,
    outputs: list[str] | None,
    finite: bool = False,
) -> Response:
    """The response to one inference request (``prepare`` then ``infer_cached``):
    ``representation`` names how ``encode`` writes the answer, so two
    endpoints never share a body; ``personalize`` adapts the shared body to
    this request (V2 writes the request's id into it)."""
    arrays, key = prepare(
        app, model, inputs, representation=representation, outputs=outputs, finite=finite
    )
    got = await infer_cached(
        app,
        request,
        model,
        arrays,
        key,
        encode=encode,
        urgency=urgency,
        timeout_s=timeout_s,
        outputs=outputs,
    )
    if personalize is None and not got.value.headers:
        # The merge below would only write the content type over itself; the
        # fields are known to be lowercase latin-1, so they go in as bytes.
        return Response.from_raw(got.value.body, 200, got.raw_headers())
    value = got.value if personalize is None else personalize(got.value)
    return Response(
        value.body,
        200,
        {**got.headers(), **{"content-type": value.content_type}, **dict(value.headers)},
    )
