"""What ``python -m rawserve`` serves when no app is named: the inference app.

Endpoints, one module per group:

- ``v2_routes``: Open Inference Protocol (KServe V2) REST, as KServe and
  Triton specify it: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/{name}[/versions/{v}]`` (metadata), ``.../ready``, and
  ``POST .../infer`` with JSON tensors or the binary tensor extension. Errors
  are ``{"error": "..."}`` with 400 (bad request, bad tensor), 404 (no such
  model), 503 (queue full, shutting down) and 504 (deadline passed).
- ``predict``: ``POST /predict`` for the default model: JSON
  ``{"inputs": [...]}`` or an uploaded ``.npy`` file, answering
  ``{"prediction", "confidence", "model"}``. Errors use FastAPI's
  ``{"detail": ...}`` and 422 for a bad tensor.
- ``streaming``: ``POST /predict/stream`` (NDJSON or SSE, a result line per
  input line while the client still sends) and ``POST /predict/batch`` (a
  manifest of result paths at once, the results computed in the background).
- ``results_routes``: ``GET /results/{key}``, each answer by its content
  address, from the result cache (ETag, 304, max-age from the TTL).
- ``page``: ``GET /``, a page to try it in a browser (draw a digit).
- ``health``: ``/healthz`` (process up), ``/readyz`` (models loaded and warm;
  503 before), ``/metrics`` (Prometheus text).

``application`` holds the app object (models, engine, lifecycle, request
metrics), ``errors`` the mapping of refusals to statuses, ``submit`` the way
from an endpoint to the result cache and the engine.

Every inference response carries ``Server-Timing: queue;dur=..,
infer;dur=..`` (``cache;desc="hit"`` when answered from the cache),
``Cache-Status`` (RFC 9211) and ``Content-Location: /results/<key>``.
Priority, strongest last: the protocol's signal (RFC 9218 header, HTTP/2
PRIORITY_UPDATE or weight, which may move a queued request),
then V2 ``parameters.priority``. Deadline: V2 ``parameters.timeout``, else the
``x-request-timeout-ms`` header, else ``--queue-timeout-ms``.
"""

from __future__ import annotations

from collections.abc import Mapping

from rawserve.core.config import InferenceSettings
from rawserve.inference.app import health, page, predict, results_routes, streaming, v2_routes
from rawserve.inference.app.application import InferenceApp
from rawserve.inference.model import Model

__all__ = ["InferenceApp", "app", "create_app"]


def create_app(
    settings: InferenceSettings | None = None,
    *,
    models: Mapping[str, Model] | None = None,
    graceful_timeout_s: float = 10.0,
) -> InferenceApp:
    """The built-in inference app over ``settings.models`` (default: the
    bundled digits classifier), or over already loaded ``models``."""
    app = InferenceApp(settings, models=models, graceful_timeout_s=graceful_timeout_s)
    app.include_router(health.router, tags=["health"])
    app.include_router(v2_routes.router, tags=["v2"])
    app.include_router(predict.router, tags=["predict"])
    app.include_router(streaming.router, tags=["predict"])
    app.include_router(results_routes.router, tags=["results"])
    app.include_router(page.router)
    return app


# ``python -m rawserve rawserve.inference.app:app`` serves it with default settings.
app = create_app()
