"""The result-cache peer for tools/bench.py: fastapi_app's ``/predict`` with a
Redis cache in front of the model, written the way a FastAPI user would
(redis-py's asyncio client, the key a hash of the request body, the answer
stored with a TTL). Benchmark-only.

    RAWSERVE_BENCH_REDIS_URL=redis://127.0.0.1:6379/0 uvicorn --app-dir tools/peers \
        fastapi_redis_app:app

Environment: as fastapi_app, and ``RAWSERVE_BENCH_REDIS_URL``.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import redis.asyncio as redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi_app import INPUT_NAME, classify, session

TTL_S = 3600

cache = redis.Redis.from_url(os.environ.get("RAWSERVE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
app = FastAPI()


@app.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@app.post("/predict")
async def predict(request: Request) -> Response:
    body = await request.body()
    key = "predict:" + hashlib.sha256(body).hexdigest()
    cached = await cache.get(key)
    if cached is not None:
        return Response(cached, media_type="application/json")
    row = np.asarray(json.loads(body)["inputs"], dtype=np.float32).reshape(1, -1)
    answer = json.dumps(classify(session.run(None, {INPUT_NAME: row}))).encode()
    await cache.set(key, answer, ex=TTL_S)
    return Response(answer, media_type="application/json")
