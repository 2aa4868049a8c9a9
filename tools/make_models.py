"""Make the ONNX models rawserve ships and benchmarks.

    python tools/make_models.py digits   # model A: rawserve/models/digits.{onnx,json}
    python tools/make_models.py mlp      # model B: build/models/mlp.onnx (synthetic)
    python tools/make_models.py cnn      # model C: build/models/cnn.onnx (synthetic)
    python tools/make_models.py all

Tool-only dependencies, never needed at run time (the lead's pyproject extra
``models``): scikit-learn and skl2onnx for ``digits``, onnx for all three.
They are imported inside the functions that need them, so ``mlp`` and ``cnn``
work with onnx alone.

A (digits) is real: a small MLP trained on scikit-learn's bundled 8x8 digits
(no download), with the input scaling inside the graph so clients send raw
pixel values 0..16. It is committed (tens of KB).

B and C are synthetic: deterministic weights from a seeded numpy generator,
no training, so their outputs mean nothing. They exist to load the server the
way real models do: B (256 -> 2048 -> 2048 -> 2048 -> 10, about 34 MiB of
float32) is bound by reading its weights, so a batch of one costs nearly as
much as a batch of 32; C (a small CNN on 3x64x64) is bound by arithmetic, so
batching gains little. They are written under build/ and never committed.

Every model uses opset 17 or lower and IR version 8 so the onnxruntime>=1.17 that
rawserve depends on can load it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_MODELS = ROOT / "rawserve" / "models"
BUILD_MODELS = ROOT / "build" / "models"

OPSET = 17
ML_OPSET = 3
IR_VERSION = 8

# Digits: the split and the trainer are fixed so the committed model can be
# reproduced (up to floating point differences between BLAS builds).
DIGITS_SEED = 0
DIGITS_TEST_FRACTION = 0.25
DIGITS_HIDDEN = 32
DIGITS_SAMPLES = 10


def make_digits(out_dir: Path = PACKAGE_MODELS) -> dict[str, Any]:
    """Train the digits classifier, write digits.onnx and digits.json, return
    the metadata written."""
    import onnx
    import skl2onnx
    import sklearn
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SEED, stratify=y
    )
    # The scaler is part of the pipeline, so the exported graph takes raw
    # pixel values 0..16 and clients need not know the training statistics.
    pipeline = make_pipeline(
        StandardScaler(),
        MLPClassifier((DIGITS_HIDDEN,), max_iter=1000, random_state=DIGITS_SEED),
    )
    pipeline.fit(x_train, y_train)
    sklearn_accuracy = float(pipeline.score(x_test, y_test))

    onx = convert_sklearn(
        pipeline,
        "digits",
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
    )
    onx.ir_version = IR_VERSION
    onx.doc_string = (
        "Handwritten digit classifier (scikit-learn load_digits, 8x8 images "
        "flattened to 64 float32 pixel values 0..16). Outputs: label int64 [N], "
        "probabilities float32 [N, 10]. Made by tools/make_models.py digits."
    )
    onnx.checker.check_model(onx)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "digits.onnx"
    onnx_path.write_bytes(onx.SerializeToString())

    # Accuracy measured on the exported graph, not on sklearn's, so the claim
    # is about the file that ships.
    onnx_accuracy = _onnx_accuracy(onnx_path, x_test, y_test)
    outputs = [o.name for o in onx.graph.output]
    samples = x_test[:DIGITS_SAMPLES].astype(np.uint8)
    meta: dict[str, Any] = {
        "name": "digits",
        "description": "Handwritten digit classifier trained on scikit-learn's bundled "
        "digits data (8x8 images, 1797 samples).",
        "file": "digits.onnx",
        "input": {"name": "input", "datatype": "FP32", "shape": [-1, 64]},
        "outputs": {"label": outputs[0], "probabilities": outputs[1]},
        "labels": [str(i) for i in range(10)],
        "scaling": {
            "input_range": [0, 16],
            "in_graph": True,
            "method": "StandardScaler fitted on the training split, inside the ONNX graph: "
            "send raw pixel values 0..16 (row-major 8x8, 64 values)",
        },
        "model": f"MLPClassifier(hidden_layer_sizes=({DIGITS_HIDDEN},), "
        f"random_state={DIGITS_SEED})",
        "split": {
            "test_fraction": DIGITS_TEST_FRACTION,
            "random_state": DIGITS_SEED,
            "stratified": True,
            "train_rows": len(x_train),
            "test_rows": len(x_test),
        },
        "test_accuracy": round(onnx_accuracy, 4),
        "sklearn_test_accuracy": round(sklearn_accuracy, 4),
        "samples": {
            "note": f"the first {DIGITS_SAMPLES} rows of the held-out test split, "
            "raw pixel values 0..16",
            "inputs": samples.tolist(),
            "labels": [int(v) for v in y_test[:DIGITS_SAMPLES]],
        },
        "versions": {
            "sklearn": sklearn.__version__,
            "skl2onnx": skl2onnx.__version__,
            "onnx": onnx.__version__,
            "opsets": {(o.domain or "ai.onnx"): o.version for o in onx.opset_import},
            "ir_version": onx.ir_version,
        },
        "created_by": "python tools/make_models.py digits",
    }
    (out_dir / "digits.json").write_text(_dumps(meta) + "\n")
    # The labels file rawserve reads for any model (inference/model.py,
    # labels_sidecar): the model's own, not special-cased by name.
    (out_dir / "digits.labels.json").write_text(_dumps(meta["labels"]) + "\n")
    return meta


def _dumps(value: Any, indent: str = "") -> str:
    """JSON with one line per list of scalars (a sample row reads as a row)."""
    inner = indent + "  "
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return "[\n" + ",\n".join(inner + _dumps(v, inner) for v in value) + "\n" + indent + "]"
    return json.dumps(value, separators=(", ", ": "))


def _onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    label = session.run(["label"], {"input": x.astype(np.float32)})[0]
    return float(np.mean(label == y))


def make_mlp(
    path: Path,
    *,
    input_dim: int = 256,
    hidden: int = 2048,
    depth: int = 3,
    classes: int = 10,
    seed: int = 0,
) -> Path:
    """Model B, synthetic: ``depth`` hidden layers of ``hidden`` units
    (MatMul + Add + Relu), float32 ``input`` [N, input_dim] -> ``logits``
    [N, classes]. The defaults make about 34 MiB of weights; tests pass a
    small ``hidden``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes = []
    initializers = []
    prev, width = "input", input_dim
    sizes = [hidden] * depth + [classes]
    for i, out_width in enumerate(sizes):
        # He-scaled weights keep activations of order one through the ReLUs,
        # so the outputs stay finite at any depth.
        w = rng.standard_normal((width, out_width), dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / width))
        b = np.full(out_width, 0.01, dtype=np.float32)
        initializers += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(sizes) - 1
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"mm{i}"]))
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], ["logits" if last else f"z{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i}"]))
            prev = f"h{i}"
        width = out_width
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", input_dim])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializers,
    )
    doc = (
        f"SYNTHETIC benchmark model B: MLP {input_dim} -> "
        + " -> ".join(str(s) for s in sizes)
        + f", seeded random weights (seed {seed}), not trained; outputs mean nothing. "
        "Made by tools/make_models.py mlp."
    )
    return _save(graph, path, doc)


def make_cnn(
    path: Path,
    *,
    size: int = 64,
    width: int = 32,
    classes: int = 10,
    seed: int = 0,
) -> Path:
    """Model C, synthetic: three Conv3x3 + Relu + MaxPool2 stages (``width``,
    2x, 4x channels), global average pool, Gemm; float32 ``input``
    [N, 3, size, size] -> ``logits`` [N, classes]. At the defaults about 80
    MFLOP per image against 0.4 MiB of weights: bound by arithmetic."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes = []
    initializers = []
    prev, channels = "input", 3
    for i, out_channels in enumerate((width, 2 * width, 4 * width)):
        fan_in = channels * 9
        w = rng.standard_normal((out_channels, channels, 3, 3), dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / fan_in))
        b = np.full(out_channels, 0.01, dtype=np.float32)
        initializers += [numpy_helper.from_array(w, f"cw{i}"), numpy_helper.from_array(b, f"cb{i}")]
        nodes += [
            helper.make_node("Conv", [prev, f"cw{i}", f"cb{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
            helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]),
        ]
        prev, channels = f"p{i}", out_channels
    w = rng.standard_normal((channels, classes), dtype=np.float32)
    w *= np.float32(np.sqrt(1.0 / channels))
    initializers += [
        numpy_helper.from_array(w, "fw"),
        numpy_helper.from_array(np.zeros(classes, dtype=np.float32), "fb"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializers,
    )
    doc = (
        f"SYNTHETIC benchmark model C: CNN on 3x{size}x{size}, 3 conv stages of "
        f"{width}/{2 * width}/{4 * width} channels, seeded random weights (seed {seed}), "
        "not trained; outputs mean nothing. Made by tools/make_models.py cnn."
    )
    return _save(graph, path, doc)


def _save(graph: Any, path: Path, doc: str) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(
        graph,
        producer_name="rawserve tools/make_models.py",
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=["digits", "mlp", "cnn", "all"])
    parser.add_argument(
        "--out",
        type=Path,
        help=f"output directory (default: {PACKAGE_MODELS.relative_to(ROOT)} for digits, "
        f"{BUILD_MODELS.relative_to(ROOT)} for mlp and cnn)",
    )
    args = parser.parse_args(argv)
    which = ["digits", "mlp", "cnn"] if args.which == "all" else [args.which]
    for name in which:
        if name == "digits":
            meta = make_digits(args.out or PACKAGE_MODELS)
            where = (args.out or PACKAGE_MODELS) / "digits.onnx"
            print(f"{where}: test accuracy {meta['test_accuracy']}")
        else:
            make = make_mlp if name == "mlp" else make_cnn
            where = make((args.out or BUILD_MODELS) / f"{name}.onnx")
            print(f"{where}: {where.stat().st_size / 2**20:.1f} MiB (synthetic)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
