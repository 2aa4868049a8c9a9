"""``--model-dir [NAME=]DIR`` serves every ONNX model of a model repository, in
the layouts KServe mounts at /mnt/models and Triton reads, over the V2 routes
KServe's InferenceService calls; what it cannot serve is a one-line error."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from rawserve.core.config import InferenceSettings
from rawserve.core.errors import ConfigError
from rawserve.inference.app import create_app
from rawserve.inference.model import ModelSpec, load_bundled, model_repository
from tests.conftest import run_server
from tests.services import free_port
from tests.test_builtin_app import LABELS, ROWS, wait_ready
from tests.test_cli import assert_one_line_error

ROOT = Path(__file__).resolve().parent.parent
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# The tiny synthetic model: float32 input [N, TINY_INPUTS] -> logits [N, 10].
TINY_INPUTS = 16


def _make_models() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_models", ROOT / "tools/make_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digits_at(path: Path, labels: list[str] | None = None) -> Path:
    """A copy of the bundled digits classifier at ``path`` (its labels sidecar
    only when ``labels`` are given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(load_bundled().path, path)
    if labels is not None:
        path.with_name(f"{path.stem}.labels.json").write_text(json.dumps(labels))
    return path


def tiny_at(path: Path) -> Path:
    """A different graph (another input width), so a test can tell which
    file was loaded under which name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    result: Path = _make_models().make_mlp(path, input_dim=TINY_INPUTS, hidden=8, depth=1)
    return result


def v2_row(row: list[int]) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": row}]}


@contextmanager
def serve(argv: list[str], *, cwd: Path, timeout_s: float = 60) -> Iterator[str]:
    """``python -m rawserve ARGV`` until ``/readyz`` says 200; yields its
    cleartext base URL (ARGV must name ``--http-port``)."""
    port = int(argv[argv.index("--http-port") + 1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "rawserve", *argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"rawserve exited with {proc.returncode}:\n{proc.stdout}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"rawserve {argv} never became ready")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def run_failing(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "rawserve", *argv, "--http-port", str(free_port()), "--port", "-1"],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result
    return result


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """Every layout in one repository: a file at the top, NAME/model.onnx,
    and Triton's NAME/VERSION/model.onnx with config.pbtxt beside it."""
    repo = tmp_path / "repo"
    digits_at(repo / "alpha.onnx", WORDS)
    tiny_at(repo / "beta" / "model.onnx")
    (repo / "gamma").mkdir()
    (repo / "gamma" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\n')
    tiny_at(repo / "gamma" / "3" / "model.onnx")
    # 20 > 3 as numbers, though not as strings: the digits model must win.
    digits_at(repo / "gamma" / "20" / "model.onnx")
    # What Kubernetes volumes leave in a mount is not a model.
    (repo / "lost+found").mkdir()
    (repo / ".hidden").write_text("x")
    return repo


def test_every_layout_is_found_and_named(repository: Path) -> None:
    specs = {s.name: s for s in model_repository(str(repository))}
    assert list(specs) == ["alpha", "beta", "gamma"]
    assert specs["alpha"] == ModelSpec("alpha", repository / "alpha.onnx")
    assert specs["beta"] == ModelSpec("beta", repository / "beta" / "model.onnx")
    assert specs["gamma"] == ModelSpec("gamma", repository / "gamma" / "20" / "model.onnx", "20")


def test_a_single_model_onnx_is_named_by_name_or_after_its_directory(tmp_path: Path) -> None:
    digits_at(tmp_path / "mnist" / "model.onnx")
    given = model_repository(f"classifier={tmp_path / 'mnist'}")
    assert [(s.name, s.version) for s in given] == [("classifier", "1")]
    assert [s.name for s in model_repository(str(tmp_path / "mnist"))] == ["mnist"]


def test_name_also_names_a_single_file_with_another_stem(tmp_path: Path) -> None:
    # KServe copies a storageUri that names one file as that file: the
    # InferenceService's name still applies.
    digits_at(tmp_path / "exported-v7.onnx")
    assert [s.name for s in model_repository(f"svc={tmp_path}")] == ["svc"]
    assert [s.name for s in model_repository(str(tmp_path))] == ["exported-v7"]


def test_a_model_directory_may_hold_one_onnx_file_of_any_name(tmp_path: Path) -> None:
    digits_at(tmp_path / "delta" / "weights.onnx")
    (tmp_path / "delta" / "weights.onnx.data").write_bytes(b"external weights stay beside it")
    [spec] = model_repository(str(tmp_path))
    assert spec == ModelSpec("delta", tmp_path / "delta" / "weights.onnx")


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "holds no ONNX model (expected model.onnx, NAME.onnx"),
        ({"model.pkl": b"x"}, "'model.pkl' is not an ONNX model"),
        ({"README.md": b"x", "a.onnx": b""}, "'README.md' is not an ONNX model"),
        ({"m/config.pbtxt": b"x"}, "m/ holds no ONNX model"),
        (
            {"m/a.onnx": b"", "m/b.onnx": b""},
            "m/ holds 2 ONNX files and no model.onnx: a.onnx, b.onnx",
        ),
        (
            {"m/1/model.onnx": b"", "m/model.onnx": b""},
            "m/ holds both version directories and model.onnx",
        ),
        ({"m/2/config.pbtxt": b"", "m/1/model.onnx": b""}, "m/2/ holds no ONNX model"),
    ],
)
def test_what_cannot_be_served_is_refused_naming_it(
    tmp_path: Path, layout: dict[str, bytes], message: str
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name, data in layout.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    with pytest.raises(ConfigError, match=r"^--model-dir ") as caught:
        model_repository(str(repo))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_name_with_several_files_at_the_top_is_refused(tmp_path: Path) -> None:
    digits_at(tmp_path / "a.onnx")
    digits_at(tmp_path / "b.onnx")
    with pytest.raises(ConfigError, match="svc= names the one model at the top, but there are 2"):
        model_repository(f"svc={tmp_path}")


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    for text in (str(tmp_path / "nope"), f"svc={tmp_path / 'nope'}", f"={tmp_path}"):
        with pytest.raises(ConfigError, match="no such directory"):
            model_repository(text)


def test_the_app_serves_the_repository_with_model_entries_first(
    repository: Path, tmp_path: Path
) -> None:
    extra = digits_at(tmp_path / "extra.onnx")
    settings = InferenceSettings(models=(f"first={extra}",), model_dir=str(repository))
    with run_server(create_app(settings), tls=False) as srv:
        wait_ready(srv)
        with httpx.Client(base_url=srv.http_url) as client:
            names = ["first", "alpha", "beta", "gamma"]
            for name in names:
                assert client.get(f"/v2/models/{name}/ready").status_code == 200, name
            assert client.get("/v2/models/gamma").json()["versions"] == ["20"]
            assert client.get("/v2/models/beta").json()["inputs"][0]["shape"] == [-1, TINY_INPUTS]
            # Triton's old version is not served; the served one answers by number.
            assert client.get("/v2/models/gamma/versions/3").status_code == 404
            for name, path in [
                ("gamma", "/v2/models/gamma/versions/20/infer"),
                ("alpha", "/v2/models/alpha/infer"),
            ]:
                answer = client.post(path, json=v2_row(ROWS[0]))
                assert answer.status_code == 200, answer.text
                body = answer.json()
                assert body["model_name"] == name
                label = next(o for o in body["outputs"] if o["name"] == "label")
                assert label["data"] == [LABELS[0]]
            # /predict serves the first model: a --model entry comes first.
            assert client.post("/predict", json={"inputs": ROWS[1]}).json()["model"] == "first"


def test_labels_come_with_a_repository_model(tmp_path: Path) -> None:
    digits_at(tmp_path / "repo" / "alpha.onnx", WORDS)
    settings = InferenceSettings(model_dir=str(tmp_path / "repo"))
    with run_server(create_app(settings), tls=False) as srv:
        wait_ready(srv)
        answer = httpx.post(f"{srv.http_url}/predict", json={"inputs": ROWS[2]}).json()
        assert answer["model"] == "alpha"
        assert answer["prediction"] == WORDS[LABELS[2]]


def test_the_cli_serves_a_kserve_mount_under_the_inference_service_name(tmp_path: Path) -> None:
    mount = tmp_path / "mnt" / "models"
    digits_at(mount / "model.onnx")
    port = free_port()
    argv = ["--model-dir", f"digits-svc={mount}", "--http-port", str(port), "--port", "-1"]
    with serve([*argv, "--quic-port", "0"], cwd=tmp_path) as url:
        answer = httpx.post(f"{url}/v2/models/digits-svc/infer", json=v2_row(ROWS[3]))
        assert answer.status_code == 200, answer.text
        label = next(o for o in answer.json()["outputs"] if o["name"] == "label")
        assert label["data"] == [LABELS[3]]
        assert httpx.get(f"{url}/v2/models/digits/ready").status_code == 404


def test_a_duplicate_name_is_a_one_line_error(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    digits_at(repo / "alpha.onnx")
    other = digits_at(tmp_path / "other.onnx")
    result = run_failing(["--model", f"alpha={other}", "--model-dir", str(repo)], tmp_path)
    assert_one_line_error(result.stderr, "two models are named 'alpha'", "other.onnx")
    # The same name twice inside one repository: a file and a directory.
    digits_at(repo / "alpha" / "model.onnx")
    result = run_failing(["--model-dir", str(repo)], tmp_path)
    assert_one_line_error(result.stderr, "two models are named 'alpha'", "alpha/model.onnx")


def test_repository_errors_reach_the_cli_as_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_failing(["--model-dir", str(empty)], tmp_path)
    assert_one_line_error(result.stderr, "holds no ONNX model")
    (empty / "weights.pt").write_bytes(b"not onnx")
    result = run_failing(["--model-dir", str(empty)], tmp_path)
    assert_one_line_error(result.stderr, "'weights.pt' is not an ONNX model")
    (empty / "weights.pt").rename(empty / "model.onnx")
    result = run_failing(["--model-dir", str(empty)], tmp_path)
    assert_one_line_error(result.stderr, "model 'empty': cannot load", "model.onnx")
    result = run_failing(["--model-dir", str(tmp_path / "absent")], tmp_path)
    assert_one_line_error(result.stderr, "--model-dir", "no such directory")
