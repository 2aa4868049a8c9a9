"""From an endpoint to the engine: a request's urgency and deadline, and the
``Server-Timing`` header of its answer."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rawserve.core.priority import Priority
from rawserve.inference.app.application import InferenceApp
from rawserve.inference.engine import InferenceResult
from rawserve.inference.model import InputError
from rawserve.requests import Request

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
        )
    except InputError:
        app.m_validation.labels(model).inc()
        raise
