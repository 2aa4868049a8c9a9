"""Class labels come from the model itself, whatever it is called: the ONNX
metadata key ``labels``, else a ``<stem>.labels.json`` file beside the model,
else none (``/predict`` answers class indices). The bundled digits model
carries a sidecar like any other."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import onnx
import orjson
import pytest

from rawserve.core.config import InferenceSettings
from rawserve.inference.app import create_app
from rawserve.inference.app.predict import encoder
from rawserve.inference.engine import InferenceResult
from rawserve.inference.model import (
    Model,
    ModelLoadError,
    ModelSpec,
    labels_sidecar,
    load_bundled,
)
from tests.conftest import run_server
from tests.test_builtin_app import LABELS, ROWS, wait_ready

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def plain_copy(tmp_path: Path, stem: str = "mine") -> Path:
    """The bundled graph under another name, with no labels of its own."""
    path = tmp_path / f"{stem}.onnx"
    shutil.copyfile(load_bundled().path, path)
    return path


def with_metadata(tmp_path: Path, value: str) -> Path:
    proto = onnx.load(str(load_bundled().path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "labels", value
    path = tmp_path / "tagged.onnx"
    onnx.save(proto, str(path))
    return path


def test_bundled_model_labels_come_from_its_sidecar() -> None:
    spec = load_bundled()
    assert labels_sidecar(spec.path).name == "digits.labels.json"
    assert Model(spec).labels == tuple(str(i) for i in range(10))


def test_a_model_without_labels_has_none_even_when_named_digits(tmp_path: Path) -> None:
    assert Model(ModelSpec("digits", plain_copy(tmp_path))).labels is None


def test_labels_from_onnx_metadata(tmp_path: Path) -> None:
    path = with_metadata(tmp_path, json.dumps(WORDS))
    assert Model(ModelSpec("any", path)).labels == tuple(WORDS)


def test_labels_from_a_sidecar_file(tmp_path: Path) -> None:
    path = plain_copy(tmp_path)
    (tmp_path / "mine.labels.json").write_text(json.dumps(WORDS))
    assert Model(ModelSpec("any", path)).labels == tuple(WORDS)


def test_metadata_wins_over_a_sidecar(tmp_path: Path) -> None:
    path = with_metadata(tmp_path, json.dumps(WORDS))
    (tmp_path / "tagged.labels.json").write_text(json.dumps(["x"] * 10))
    assert Model(ModelSpec("any", path)).labels == tuple(WORDS)


@pytest.mark.parametrize("bad", ["not json", '{"0": "zero"}', "[0, 1, 2]"])
def test_malformed_labels_fail_the_load_naming_the_source(tmp_path: Path, bad: str) -> None:
    path = plain_copy(tmp_path)
    (tmp_path / "mine.labels.json").write_text(bad)
    with pytest.raises(ModelLoadError, match=r"mine\.labels\.json must be a JSON array of strings"):
        Model(ModelSpec("any", path))
    meta = with_metadata(tmp_path, bad)
    with pytest.raises(ModelLoadError, match=r"metadata_props\['labels'\]"):
        Model(ModelSpec("any", meta))


def test_predict_answers_with_each_models_own_labels(tmp_path: Path) -> None:
    """``--model digits=mine.onnx`` (no labels) answers indices; a model with
    labels answers them, whatever its name."""
    labelled = plain_copy(tmp_path, "words")
    (tmp_path / "words.labels.json").write_text(json.dumps(WORDS))
    for name, path, expected in [
        ("digits", plain_copy(tmp_path), LABELS[0]),
        ("mine", labelled, WORDS[LABELS[0]]),
    ]:
        settings = InferenceSettings(models=(f"{name}={path}",), max_batch_delay_ms=1.0)
        with run_server(create_app(settings), tls=False) as srv:
            wait_ready(srv)
            r = httpx.post(f"{srv.http_url}/predict", json={"inputs": ROWS[0]}, timeout=10)
            assert r.status_code == 200, r.text
            assert r.json()["prediction"] == expected
            assert r.json()["model"] == name


def test_predict_encoder_is_made_once_per_model_and_labels() -> None:
    """/predict's encoder is reused across requests, and remade when the
    model's labels are another tuple (another app, another model file)."""
    words = tuple(WORDS[:2])
    first = encoder("mine", words, False)
    assert encoder("mine", words, False) is first
    assert encoder("mine", words, True) is not first
    result = InferenceResult(
        {"probabilities": np.array([[0.25, 0.75]], dtype=np.float32)}, 0.0, 0.0, 1, "mine", "1"
    )
    assert orjson.loads(first(result, "").body) == {
        "prediction": "one",
        "confidence": 0.75,
        "model": "mine",
    }
    other = encoder("mine", ("a", "b"), False)
    assert other is not first and orjson.loads(other(result, "").body)["prediction"] == "b"
    assert orjson.loads(encoder("mine", None, True)(result, "").body) == {
        "predictions": [{"prediction": 1, "confidence": 0.75}],
        "model": "mine",
    }
