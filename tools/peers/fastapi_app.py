"""The peers for tools/bench.py: FastAPI apps serving the same model with the
same answers as rawserve's built-in app. Benchmark-only; rawserve never
imports them, and they run from the ``bench`` virtualenv (.venv-bench).

    RAWSERVE_BENCH_MODEL=build/models/mlp.onnx uvicorn --app-dir tools/peers fastapi_app:app

``app`` is FastAPI written the fastest way FastAPI allows:

- ``POST /predict``: an ``async def`` endpoint, ``await request.json()``,
  ONNX Runtime called inline on the event loop (no threadpool hop), and a
  ``JSONResponse`` returned directly (no response-model serialization).
  ``{"inputs": [one row]}`` in; ``{"prediction", "confidence", "model"}`` out,
  the class scores softmaxed unless they already are probabilities, as
  rawserve does.
- ``POST /v2/models/{name}/infer``: the KServe V2 JSON request rawserve
  takes (one FP32 tensor, ``shape`` and flat ``data``), for the CNN whose
  4-D input ``/predict`` does not take; the same V2 answer.
- ``GET /healthz``: ``{"status": "ok"}``.

``sync_app`` is how FastAPI apps are commonly written, and what tools/bench.py
compared against before: a pydantic body model and a plain ``def``
endpoint, which FastAPI runs in its threadpool (a thread hop per request),
returning a dict that FastAPI serializes.

The session has rawserve's settings: one intra-op and one inter-op thread,
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
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
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
OUTPUT_NAMES: list[str] = [o.name for o in session.get_outputs()]
# One warm-up run so that the first measured request does not pay for allocation.
_shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
session.run(None, {INPUT_NAME: np.zeros(_shape, dtype=np.float32)})


def classify(outputs: list[Any]) -> dict[str, Any]:
    """rawserve's /predict answer for one row."""
    scores = next(o for o in outputs if o.ndim == 2 and o.dtype.kind == "f").astype(np.float64)
    if scores.min() < 0 or float(np.abs(scores.sum(axis=1) - 1.0).max()) > 1e-3:
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
    best = int(scores[0].argmax())
    return {"prediction": best, "confidence": round(float(scores[0, best]), 6), "model": MODEL_NAME}


# -- the fastest reasonable FastAPI ---------------------------------------------------

app = FastAPI()


@app.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@app.post("/predict")
async def predict(request: Request) -> JSONResponse:
    payload = await request.json()
    row = np.asarray(payload["inputs"], dtype=np.float32).reshape(1, -1)
    return JSONResponse(classify(session.run(None, {INPUT_NAME: row})))


@app.post("/v2/models/{model_name}/infer")
async def v2_infer(model_name: str, request: Request) -> JSONResponse:
    if model_name != MODEL_NAME:
        return JSONResponse({"error": f"unknown model {model_name!r}"}, status_code=404)
    payload = await request.json()
    (tensor,) = payload["inputs"]
    x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    outputs = session.run(None, {INPUT_NAME: x})
    return JSONResponse(
        {
            "model_name": MODEL_NAME,
            "model_version": "1",
            "outputs": [
                {
                    "name": name,
                    "datatype": "FP32",
                    "shape": list(value.shape),
                    "data": value.ravel().tolist(),
                }
                for name, value in zip(OUTPUT_NAMES, outputs, strict=True)
            ],
        }
    )


# -- FastAPI as it is commonly written (sync endpoint, pydantic body) ----------------

sync_app = FastAPI()


class PredictRequest(BaseModel):
    inputs: list[float]


@sync_app.get("/healthz")
async def sync_healthz() -> dict[str, str]:
    return {"status": "ok"}


@sync_app.post("/predict")
def sync_predict(request: PredictRequest) -> dict[str, Any]:
    row = np.asarray(request.inputs, dtype=np.float32).reshape(1, -1)
    return classify(session.run(None, {INPUT_NAME: row}))
