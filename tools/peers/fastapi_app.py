"""The peer for tools/bench.py: a FastAPI app serving the same model with the
same semantics as rawserve's built-in ``/predict``, written the way FastAPI
users typically write it. Benchmark-only; rawserve never imports it.

    RAWSERVE_BENCH_MODEL=build/models/mlp.onnx uvicorn --app-dir tools/peers fastapi_app:app

- ``POST /predict`` with ``{"inputs": [...]}`` (one row): one ONNX Runtime run
  per request with a batch of one, in a plain ``def`` endpoint so that FastAPI
  runs it in its threadpool; answers ``{"prediction", "confidence", "model"}``.
  The first 2-D float output is the class scores, softmaxed unless it already
  holds probabilities, as rawserve does.
- ``GET /healthz``: ``{"status": "ok"}``, for the server's own overhead.

The session uses rawserve's settings: one intra-op and one inter-op thread,
sequential execution, full graph optimization, no spinning.

Environment: ``RAWSERVE_BENCH_MODEL`` (path of the ONNX model; default the
bundled digits classifier), ``RAWSERVE_BENCH_MODEL_NAME`` (the name answered
in ``model``; default the file's stem).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped]
from fastapi import FastAPI
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_MODEL = ROOT / "rawserve" / "models" / "digits.onnx"
MODEL_PATH = Path(os.environ.get("RAWSERVE_BENCH_MODEL", DEFAULT_MODEL))
MODEL_NAME = os.environ.get("RAWSERVE_BENCH_MODEL_NAME", MODEL_PATH.stem)


def _session(path: Path) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


session = _session(MODEL_PATH)
INPUT_NAME: str = session.get_inputs()[0].name
# Warm up once so the first measured request does not pay for allocation.
_width = session.get_inputs()[0].shape[1]
session.run(None, {INPUT_NAME: np.zeros((1, int(_width)), dtype=np.float32)})

app = FastAPI()


class PredictRequest(BaseModel):
    inputs: list[float]


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
def predict(request: PredictRequest) -> dict[str, Any]:
    row = np.asarray(request.inputs, dtype=np.float32).reshape(1, -1)
    outputs = session.run(None, {INPUT_NAME: row})
    scores = next(o for o in outputs if o.ndim == 2 and o.dtype.kind == "f").astype(np.float64)
    if not (np.all(scores >= 0) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)):
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
    best = int(scores[0].argmax())
    return {
        "prediction": best,
        "confidence": round(float(scores[0, best]), 6),
        "model": MODEL_NAME,
    }
