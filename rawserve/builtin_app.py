"""What ``python -m rawserve`` serves when no app is named.

Until the inference engine lands this is a minimal app: liveness and a short
description of the server, so that a fresh install answers something real.
"""

from __future__ import annotations

from typing import Any

from rawserve.app import RawServe
from rawserve.requests import Request

app = RawServe(title="rawserve")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/")
async def index(request: Request) -> dict[str, Any]:
    return {
        "server": "rawserve",
        "http_version": request.http_version,
        "endpoints": ["/healthz"],
    }
