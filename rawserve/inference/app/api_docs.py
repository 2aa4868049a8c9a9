"""What the built-in app's OpenAPI document says about the bodies its
endpoints read themselves (they take the ``Request``, so rawserve cannot see
them in the signature): passed to the routes as ``openapi_extra``, as a
FastAPI app would."""

from __future__ import annotations

from typing import Any

_ROW = {"type": "array", "items": {"type": "number"}, "title": "Row"}

PREDICT: dict[str, Any] = {
    "summary": "Classify one row, several rows, or an uploaded image",
    "description": (
        'The default model. JSON `{"inputs": [...]}` (one row of numbers, or a list of '
        "rows), or a multipart form whose field `file` is a PNG or JPEG image (converted "
        "by the model's image spec: for the bundled digits model, 8x8 grayscale, dark ink "
        "on light paper) or a `.npy` array. Answers `{prediction, confidence, model}` "
        "(`predictions` for rows). A bad tensor or image is a 422 saying why.\n\n"
        "`curl -F file=@examples/digits/seven.png localhost:8000/predict`"
    ),
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "inputs": {
                            "title": "Inputs",
                            "anyOf": [_ROW, {"type": "array", "items": _ROW}],
                        }
                    },
                },
                "example": {"inputs": [0.0] * 64},
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "contentMediaType": "application/octet-stream",
                            "description": "A PNG or JPEG image, or a .npy array",
                        }
                    },
                }
            },
        },
    },
    "responses": {
        "422": {"description": "Not rows of numbers, or not an image the model takes"},
        "503": {"description": "Models still loading, the queue full, or shutting down"},
        "504": {"description": "The deadline passed before the model ran"},
    },
}

V2_INFER: dict[str, Any] = {
    "summary": "Open Inference Protocol (KServe V2) inference",
    "description": (
        "JSON tensors, or the binary tensor data extension "
        '(`Inference-Header-Content-Length`). Errors are `{"error": ...}`.'
    ),
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "datatype": {"type": "string", "example": "FP32"},
                                    "data": {"type": "array", "items": {}},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                        "outputs": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "example": {
                    "inputs": [
                        {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}
                    ]
                },
            },
            "application/octet-stream": {
                "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
            },
        },
    },
    "responses": {
        "400": {"description": "A malformed request or tensor"},
        "404": {"description": "No such model"},
        "503": {"description": "The queue is full, or the server is shutting down"},
        "504": {"description": "The deadline passed"},
    },
}
