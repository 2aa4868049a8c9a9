"""The model runtime: the bundled digits model, signatures, validation,
batching helpers, thread safety, and the synthetic benchmark models of
tools/make_models.py."""

from __future__ import annotations

import base64
import importlib.util
import json
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawserve.core.errors import ConfigError
from rawserve.inference.model import (
    InputError,
    Model,
    ModelLoadError,
    ModelSpec,
    TensorSpec,
    batch_buckets,
    bundled_metadata,
    concat,
    load_bundled,
    rows,
    shape_key,
    split,
)

ROOT = Path(__file__).resolve().parent.parent

# Two tiny models made with onnx.helper (onnx is not a test dependency, so
# their bytes live here):
#   TWO_INPUTS: x float32 [N, 3], k int64 [N, 2] ->
#       y float32 [N, 1] = sum(x, axis 1) + float(sum(k, axis 1)), k2 int64 [N, 2] = k + k
#   FIXED: z float32 [2, T] -> out = Relu(z); no batch dimension.
TWO_INPUTS = base64.b64decode(
    "CAg6igIKKQoBeAoEYXhlcxICc3giCVJlZHVjZVN1bSoPCghrZWVwZGltcxgBoAECCikKAWsKBGF4ZXMSAnNr"
    "IglSZWR1Y2VTdW0qDwoIa2VlcGRpbXMYAaABAgoaCgJzaxIDc2tmIgRDYXN0KgkKAnRvGAGgAQIKEQoCc3gK"
    "A3NrZhIBeSIDQWRkCg8KAWsKAWsSAmsyIgNBZGQSA3R3byoUCAEQB0IEYXhlc0oIAQAAAAAAAABaFAoBeBIP"
    "Cg0IARIJCgMSAU4KAggDWhQKAWsSDwoNCAcSCQoDEgFOCgIIAmIUCgF5Eg8KDQgBEgkKAxIBTgoCCAFiFQoC"
    "azISDwoNCAcSCQoDEgFOCgIIAkIECgAQEQ=="
)
FIXED = base64.b64decode(
    "CAg6RQoOCgF6EgNvdXQiBFJlbHUSBWZpeGVkWhQKAXoSDwoNCAESCQoCCAIKAxIBVGIWCgNvdXQSDwoNCAES"
    "CQoCCAIKAxIBVEIECgAQEQ=="
)


class SlowModel(Model):
    """A real model (default: the bundled digits) that sleeps ``latency_s``
    after every run, so that a backlog builds up behind a running batch: the
    deliberately slow model of the engine and app tests. Warm-up is not slowed
    (it does not go through ``run``)."""

    def __init__(self, latency_s: float, spec: ModelSpec | None = None, **options: Any) -> None:
        super().__init__(spec if spec is not None else load_bundled(), **options)
        self.latency_s = latency_s

    def run(
        self, inputs: Mapping[str, npt.NDArray[Any]], output_names: Sequence[str] | None = None
    ) -> dict[str, npt.NDArray[Any]]:
        outputs = super().run(inputs, output_names)
        if self.latency_s:
            time.sleep(self.latency_s)
        return outputs


class GatedModel(SlowModel):
    """The slow model whose runs wait for ``gate``: while the first request
    holds it, every later one stays queued, so a test can look at the queue
    without racing the model."""

    def __init__(self, latency_s: float) -> None:
        super().__init__(latency_s)
        self.gate = threading.Event()

    def run(
        self, inputs: Mapping[str, npt.NDArray[Any]], output_names: Sequence[str] | None = None
    ) -> dict[str, npt.NDArray[Any]]:
        assert self.gate.wait(30), "the test never opened the gate"
        return super().run(inputs, output_names)


@pytest.fixture(scope="module")
def digits() -> Model:
    return Model(load_bundled())


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    return bundled_metadata()


@pytest.fixture(scope="module")
def samples(info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    x = np.array(info["samples"]["inputs"], dtype=np.uint8)
    y = np.array(info["samples"]["labels"], dtype=np.int64)
    return x, y


@pytest.fixture
def two(tmp_path: Path) -> Model:
    path = tmp_path / "two.onnx"
    path.write_bytes(TWO_INPUTS)
    return Model(ModelSpec("two", path))


@pytest.fixture
def fixed(tmp_path: Path) -> Model:
    path = tmp_path / "fixed.onnx"
    path.write_bytes(FIXED)
    return Model(ModelSpec("fixed", path))


def error_of(model: Model, inputs: dict[str, Any]) -> InputError:
    with pytest.raises(InputError) as caught:
        model.validate(inputs)
    return caught.value


# -- the bundled model ---------------------------------------------------------


def test_bundled_files_are_small_and_described(info: dict[str, Any]) -> None:
    spec = load_bundled()
    assert spec.name == "digits" and spec.version == "1"
    assert Path(spec.path).name == "digits.onnx"
    assert 1_000 < Path(spec.path).stat().st_size < 100_000
    assert info["input"] == {"name": "input", "datatype": "FP32", "shape": [-1, 64]}
    assert info["labels"] == [str(d) for d in range(10)]
    assert info["scaling"]["input_range"] == [0, 16] and info["scaling"]["in_graph"]
    assert info["test_accuracy"] >= 0.9
    assert info["created_by"] == "python tools/make_models.py digits"


def test_unknown_bundled_model() -> None:
    with pytest.raises(ModelLoadError, match=r"no bundled model file 'nope\.onnx'"):
        load_bundled("nope")


def test_signature_read_from_the_model(digits: Model) -> None:
    assert digits.batched
    assert digits.inputs == (TensorSpec("input", np.dtype(np.float32), (None, 64), "FP32"),)
    assert digits.outputs == (
        TensorSpec("label", np.dtype(np.int64), (None,), "INT64"),
        TensorSpec("probabilities", np.dtype(np.float32), (None, 10), "FP32"),
    )
    assert digits.input_names == ["input"]
    assert digits.output_names == ["label", "probabilities"]


def test_v2_metadata(digits: Model) -> None:
    assert digits.metadata() == {
        "name": "digits",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        ],
    }
    json.dumps(digits.metadata())  # what the V2 endpoint sends must serialize


def test_predicts_real_digits(digits: Model, samples: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = samples
    assert x.shape == (10, 64) and x.max() <= 16
    # Raw pixel values 0..16 go in: the scaling is inside the graph.
    out = digits.run(digits.validate({"input": x}))
    assert out["label"].dtype == np.int64 and out["label"].shape == (10,)
    assert int(np.sum(out["label"] == y)) >= 9
    probabilities = out["probabilities"]
    assert probabilities.dtype == np.float32 and probabilities.shape == (10, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), out["label"])


def test_run_selected_outputs(digits: Model, samples: tuple[np.ndarray, np.ndarray]) -> None:
    out = digits.run(digits.validate({"input": samples[0][:2]}), ["probabilities"])
    assert list(out) == ["probabilities"] and out["probabilities"].shape == (2, 10)


def test_json_numbers_are_accepted_for_float_inputs(
    digits: Model, samples: tuple[np.ndarray, np.ndarray]
) -> None:
    as_json = json.loads(json.dumps(samples[0][:3].tolist()))
    from_ints = digits.validate({"input": as_json})["input"]
    from_floats = digits.validate({"input": np.array(as_json, dtype=np.float64)})["input"]
    for array in (from_ints, from_floats):
        assert array.dtype == np.float32 and array.flags.c_contiguous
        np.testing.assert_array_equal(array, samples[0][:3])


def test_validate_returns_contiguous_exact_dtype(digits: Model) -> None:
    strided = np.zeros((4, 128), dtype=np.float32)[:, ::2]
    assert not strided.flags.c_contiguous
    array = digits.validate({"input": strided})["input"]
    assert array.flags.c_contiguous and array.dtype == np.float32 and array.shape == (4, 64)


def test_validate_shortcut_checks_all_but_the_shape() -> None:
    """A shape validate() has accepted before is taken in a few comparisons
    (the common request); dtype, layout, values, names and the row limit are
    still checked as the first time."""
    model = Model(load_bundled(), max_rows=4)
    ok = np.zeros((2, 64), dtype=np.float32)
    for _ in range(2):  # the full path, then the shortcut: the array itself
        assert model.validate({"input": ok})["input"] is ok
    nan = ok.copy()
    nan[1, 5] = np.nan
    assert "1 of 128 values are NaN or infinite" in str(error_of(model, {"input": nan}))
    assert model.validate({"input": nan}, finite=True)["input"] is nan  # the caller vouches
    for other in (np.ones((2, 64)), ok.astype(">f4"), np.zeros((2, 128), np.float32)[:, ::2]):
        array = model.validate({"input": other})["input"]
        assert array.dtype == np.dtype(np.float32) and array.flags.c_contiguous
        np.testing.assert_array_equal(array, other)
    assert "unknown input 'pixels'" in str(error_of(model, {"pixels": ok}))
    assert "unknown input 'pixels'" in str(error_of(model, {"input": ok, "pixels": ok}))
    model.max_rows = 1
    assert "2 rows exceed the limit of 1 per request" in str(error_of(model, {"input": ok}))


# -- validation errors: each names the input, what came and what was expected ----


def test_missing_input(digits: Model) -> None:
    err = error_of(digits, {})
    assert err.input_name == "input" and err.status_code == 422
    assert str(err) == "missing input 'input' for model 'digits' (expected: 'input' FP32 [-1, 64])"


def test_unknown_input(digits: Model) -> None:
    err = error_of(digits, {"input": np.zeros((1, 64)), "pixels": np.zeros((1, 64))})
    assert err.input_name == "pixels"
    assert "unknown input 'pixels'" in str(err) and "'input' FP32 [-1, 64]" in str(err)


@pytest.mark.parametrize(
    ("shape", "given"),
    [((1, 63), "[1, 63]"), ((64,), "[64]"), ((1, 8, 8), "[1, 8, 8]"), ((), "[]")],
)
def test_wrong_shape(digits: Model, shape: tuple[int, ...], given: str) -> None:
    err = error_of(digits, {"input": np.zeros(shape, dtype=np.float32)})
    assert err.input_name == "input"
    assert str(err) == f"input 'input': shape {given} does not match expected [-1, 64]"


def test_empty_batch(digits: Model) -> None:
    err = error_of(digits, {"input": np.zeros((0, 64), dtype=np.float32)})
    assert "empty batch" in str(err)


def test_ragged_input(digits: Model) -> None:
    err = error_of(digits, {"input": [[1.0] * 64, [1.0] * 63]})
    assert err.input_name == "input" and "not a rectangular array" in str(err)


@pytest.mark.parametrize(
    ("array", "given"),
    [
        (np.ones((1, 64), dtype=np.bool_), "BOOL"),
        (np.full((1, 64), "1"), "BYTES"),
        (np.array([[None] * 64]), "BYTES"),
    ],
)
def test_wrong_dtype_for_float_input(digits: Model, array: np.ndarray, given: str) -> None:
    err = error_of(digits, {"input": array})
    assert str(err) == f"input 'input': datatype {given} cannot be converted to expected FP32"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_rejected(digits: Model, bad: float) -> None:
    x = np.zeros((2, 64), dtype=np.float32)
    x[1, 5] = bad
    err = error_of(digits, {"input": x})
    assert err.input_name == "input"
    assert "1 of 128 values are NaN or infinite" in str(err)


def test_overflow_to_infinity_rejected(digits: Model) -> None:
    err = error_of(digits, {"input": np.full((1, 64), 1e300)})
    assert "values out of range for FP32" in str(err) and "1e+300" in str(err)


def test_non_finite_allowed_when_configured() -> None:
    model = Model(load_bundled(), allow_nonfinite=True)
    x = np.zeros((1, 64), dtype=np.float32)
    x[0, 0] = np.nan
    assert np.isnan(model.validate({"input": x})["input"][0, 0])


def test_max_rows() -> None:
    model = Model(load_bundled(), max_rows=4)
    model.validate({"input": np.zeros((4, 64))})
    err = error_of(model, {"input": np.zeros((5, 64))})
    assert "5 rows exceed the limit of 4 per request" in str(err)


def test_int_input_accepts_fitting_ints_only(two: Model) -> None:
    x = np.zeros((2, 3), dtype=np.float32)
    ok = two.validate({"x": x, "k": np.array([[1, 2], [3, 4]], dtype=np.int32)})
    assert ok["k"].dtype == np.int64 and list(ok) == ["x", "k"]
    ok = two.validate({"x": x, "k": np.array([[1, 2], [3, 2**63 - 1]], dtype=np.uint64)})
    assert ok["k"][1, 1] == 2**63 - 1
    err = error_of(two, {"x": x, "k": np.array([[1, 2], [3, 2**63]], dtype=np.uint64)})
    assert err.input_name == "k" and "values out of range for INT64" in str(err)
    err = error_of(two, {"x": x, "k": np.array([[1.0, 2.0], [3.0, 4.0]])})
    assert str(err) == "input 'k': datatype FP64 cannot be converted to expected INT64"


def test_batch_sizes_must_agree(two: Model) -> None:
    err = error_of(two, {"x": np.zeros((2, 3)), "k": np.zeros((3, 2), dtype=np.int64)})
    assert err.input_name == "k"
    assert str(err) == "input 'k': batch size 3 differs from input 'x', which has 2"


def test_two_inputs_run(two: Model) -> None:
    x = np.array([[1, 2, 3], [0.5, 0, 0]], dtype=np.float32)
    k = np.array([[1, 1], [10, -4]], dtype=np.int64)
    out = two.run(two.validate({"k": k, "x": x}))
    np.testing.assert_array_equal(out["y"], [[8.0], [6.5]])
    np.testing.assert_array_equal(out["k2"], 2 * k)


def test_unknown_output(two: Model) -> None:
    assert two.check_outputs(["k2"]) == ["k2"]
    with pytest.raises(InputError, match="unknown output 'z' for model 'two'") as caught:
        two.check_outputs(["y", "z"])
    assert caught.value.input_name == "z"


def test_fixed_shape_model_is_not_batched(fixed: Model) -> None:
    assert not fixed.batched
    assert fixed.inputs[0].shape == (2, None)
    assert fixed.metadata()["inputs"] == [{"name": "z", "datatype": "FP32", "shape": [2, -1]}]
    out = fixed.run(fixed.validate({"z": np.array([[-1, 2, 3], [4, -5, 6]])}))
    np.testing.assert_array_equal(out["out"], [[0, 2, 3], [4, 0, 6]])
    err = error_of(fixed, {"z": np.zeros((3, 3))})
    assert str(err) == "input 'z': shape [3, 3] does not match expected [2, -1]"
    assert fixed.warmup(max_batch_size=8) == [1]


# -- loading -----------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="model 'm': no such file"):
        Model(ModelSpec("m", tmp_path / "missing.onnx"))


def test_not_an_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelLoadError, match="model 'junk': cannot load"):
        Model(ModelSpec("junk", path))


@pytest.mark.parametrize(
    "options",
    [{"intra_op_threads": -1}, {"max_rows": 0}],
)
def test_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Model(load_bundled(), **options)


def test_model_spec_parse() -> None:
    assert ModelSpec.parse("b=/models/mlp.onnx") == ModelSpec("b", "/models/mlp.onnx")
    assert ModelSpec.parse("/models/mlp.onnx") == ModelSpec("mlp", "/models/mlp.onnx")
    for bad in ("=x.onnx", "b="):
        with pytest.raises(ConfigError, match="NAME=PATH"):
            ModelSpec.parse(bad)


def test_spinning_and_threads_are_options() -> None:
    model = Model(load_bundled(), intra_op_threads=2, allow_spinning=True)
    out = model.run(model.validate({"input": np.zeros((1, 64))}))
    assert out["label"].shape == (1,)


# -- warm-up, batching helpers, threads ----------------------------------------------


def test_batch_buckets() -> None:
    assert batch_buckets(1) == (1,)
    assert batch_buckets(64) == (1, 2, 4, 8, 16, 32, 64)
    assert batch_buckets(48) == (1, 2, 4, 8, 16, 32, 48)
    with pytest.raises(ValueError):
        batch_buckets(0)


def test_warmup(digits: Model, two: Model) -> None:
    assert digits.warmup(max_batch_size=16) == [1, 2, 4, 8, 16]
    assert digits.warmup([3, 5]) == [3, 5]
    assert two.warmup(max_batch_size=2) == [1, 2]


def test_zeros_use_one_for_dynamic_dims(fixed: Model, two: Model) -> None:
    assert fixed.zeros(fixed.inputs[0], 8).shape == (2, 1)
    k = two.zeros(two.inputs[1], 8)
    assert k.shape == (8, 2) and k.dtype == np.int64


def test_concat_split_round_trip(digits: Model, samples: tuple[np.ndarray, np.ndarray]) -> None:
    x = samples[0]
    items = [digits.validate({"input": x[a:b]}) for a, b in ((0, 1), (1, 4), (4, 10))]
    assert len({shape_key(item) for item in items}) == 1
    batch = concat(items)
    assert batch["input"].shape == (10, 64)
    sizes = [rows(item) for item in items]
    assert sizes == [1, 3, 6]
    whole = digits.run(batch)
    parts = split(whole, sizes)
    for item, part in zip(items, parts, strict=True):
        alone = digits.run(item)
        assert part.keys() == alone.keys()
        np.testing.assert_array_equal(part["label"], alone["label"])
        np.testing.assert_allclose(part["probabilities"], alone["probabilities"], rtol=1e-5)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=8))
def test_split_undoes_concat(sizes: list[int]) -> None:
    items: list[dict[str, npt.NDArray[Any]]] = [
        {"a": np.full((n, 2), i, dtype=np.float32), "b": np.full((n,), i, dtype=np.int64)}
        for i, n in enumerate(sizes)
    ]
    for item, part in zip(items, split(concat(items), sizes), strict=True):
        for name in item:
            np.testing.assert_array_equal(item[name], part[name])


def test_concat_of_one_item_copies_nothing() -> None:
    a = np.zeros((2, 3))
    assert concat([{"a": a}])["a"] is a


def test_batch_helper_errors() -> None:
    with pytest.raises(ValueError):
        concat([])
    with pytest.raises(ValueError, match="different inputs"):
        concat([{"a": np.zeros((1, 2))}, {"b": np.zeros((1, 2))}])
    with pytest.raises(ValueError, match="no batch dimension of 3 rows"):
        split({"y": np.zeros((2, 2))}, [1, 2])
    with pytest.raises(ValueError):
        rows({})


def test_shape_key_groups_by_shape_and_dtype() -> None:
    base = shape_key({"x": np.zeros((1, 3), dtype=np.float32)})
    assert shape_key({"x": np.zeros((7, 3), dtype=np.float32)}) == base
    assert shape_key({"x": np.zeros((1, 4), dtype=np.float32)}) != base
    assert shape_key({"x": np.zeros((1, 3), dtype=np.float64)}) != base
    assert hash(base) == hash(shape_key({"x": np.ones((2, 3), dtype=np.float32)}))


def test_run_from_threads(digits: Model, samples: tuple[np.ndarray, np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    batches = [
        digits.validate({"input": samples[0][rng.integers(0, 10, size=n)]})
        for n in (1, 2, 5, 8, 3, 7, 4, 6)
    ]
    expected = [digits.run(batch) for batch in batches]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(digits.run, batches))
            for want, have in zip(expected, got, strict=True):
                np.testing.assert_array_equal(want["label"], have["label"])
                np.testing.assert_array_equal(want["probabilities"], have["probabilities"])


def test_slow_model_sleeps_after_each_run_but_not_in_warm_up() -> None:
    slow = SlowModel(0.05)
    batch = slow.validate({"input": np.zeros((1, 64))})
    slow.warmup([1])  # warm-up is not a request: no added latency
    start = time.perf_counter()
    slow.run(batch)
    assert time.perf_counter() - start >= 0.05


# -- the synthetic benchmark models ---------------------------------------------------


@pytest.fixture(scope="module")
def make_models() -> ModuleType:
    import onnx  # noqa: F401 - the test extra installs it; fail loudly if it is missing

    spec = importlib.util.spec_from_file_location("make_models", ROOT / "tools/make_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_b_full_size(make_models: ModuleType, tmp_path: Path) -> None:
    path = make_models.make_mlp(tmp_path / "mlp.onnx")
    # 256*2048 + 2*2048*2048 + 2048*10 weights plus biases, float32: about 34 MiB.
    assert 33 * 2**20 < path.stat().st_size < 36 * 2**20
    model = Model(ModelSpec("b", path))
    assert model.inputs == (TensorSpec("input", np.dtype(np.float32), (None, 256), "FP32"),)
    assert model.outputs == (TensorSpec("logits", np.dtype(np.float32), (None, 10), "FP32"),)
    x = np.random.default_rng(1).standard_normal((4, 256), dtype=np.float32)
    logits = model.run(model.validate({"input": x}))["logits"]
    assert logits.shape == (4, 10) and np.isfinite(logits).all() and logits.std() > 0


def test_model_b_is_deterministic_and_scales(make_models: ModuleType, tmp_path: Path) -> None:
    a = make_models.make_mlp(tmp_path / "a.onnx", hidden=64, depth=2)
    b = make_models.make_mlp(tmp_path / "b.onnx", hidden=64, depth=2)
    assert a.read_bytes() == b.read_bytes()
    assert a.stat().st_size < 100_000
    c = make_models.make_mlp(tmp_path / "c.onnx", hidden=64, depth=2, seed=1)
    assert c.read_bytes() != a.read_bytes()


def test_model_c(make_models: ModuleType, tmp_path: Path) -> None:
    path = make_models.make_cnn(tmp_path / "cnn.onnx")
    assert path.stat().st_size < 2**20
    model = Model(ModelSpec("c", path))
    assert model.inputs[0].shape == (None, 3, 64, 64)
    assert model.outputs[0].shape == (None, 10)
    x = np.random.default_rng(2).random((2, 3, 64, 64), dtype=np.float32)
    logits = model.run(model.validate({"input": x}))["logits"]
    assert logits.shape == (2, 10) and np.isfinite(logits).all()
    model.warmup(max_batch_size=2)
