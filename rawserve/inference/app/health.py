"""Liveness, readiness and metrics: ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

from rawserve.inference.app.application import InferenceApp
from rawserve.inference.metrics import CONTENT_TYPE_LATEST
from rawserve.requests import Request
from rawserve.responses import JSONResponse, Response
from rawserve.routing import APIRouter

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    app: InferenceApp = request.app
    engine = app.engine
    if engine.ready:
        return JSONResponse({"ready": True, "models": engine.model_names})
    return JSONResponse({"ready": False, "detail": "models are loading"}, 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    app: InferenceApp = request.app
    return Response(app.metrics.render(), media_type=CONTENT_TYPE_LATEST)
