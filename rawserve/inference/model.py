"""One ONNX model: its session, its signature, and checks on what clients send.

A ``Model`` wraps an ONNX Runtime ``InferenceSession``. Its input and output
signatures are read from the file; ``validate`` turns a client's arrays into
exactly what the session takes or raises ``InputError`` (422) naming the input,
what was given and what was expected. ``run`` is meant for worker threads:
``InferenceSession.run`` is thread-safe and releases the GIL, so the engine
calls it through an executor and the event loop never blocks. Nothing here
starts a thread or reads a clock.

The batch dimension is the first dimension of every input when it is dynamic
in the model (``None`` in ``TensorSpec.shape``, ``-1`` in V2 metadata). Items
for one batch are stacked with ``concat`` and the batch's outputs are cut back
into per-item results with ``split``; ``shape_key`` tells which items may
share a batch.

Casting rules in ``validate`` (JSON gives int64 or float64 arrays, so some
conversion has to be allowed):
- float inputs take any integer or float array; values that do not fit the
  model's float type (float64 1e300 for FP32) are refused rather than
  becoming infinity;
- integer inputs take integer arrays whose values fit; floats are refused,
  even integral ones, because silently truncating 1.5 would be wrong;
- bool inputs take bool arrays only; string (BYTES) inputs take str, bytes or
  object arrays;
- NaN and infinity in float inputs are refused unless ``allow_nonfinite``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]

from rawserve.core.errors import ConfigError, RawServeError

Array = npt.NDArray[Any]

PLATFORM = "onnxruntime_onnx"

# ONNX Runtime's type strings -> (numpy dtype, Open Inference Protocol datatype).
ORT_TYPES: dict[str, tuple[np.dtype[Any], str]] = {
    "tensor(bool)": (np.dtype(np.bool_), "BOOL"),
    "tensor(uint8)": (np.dtype(np.uint8), "UINT8"),
    "tensor(uint16)": (np.dtype(np.uint16), "UINT16"),
    "tensor(uint32)": (np.dtype(np.uint32), "UINT32"),
    "tensor(uint64)": (np.dtype(np.uint64), "UINT64"),
    "tensor(int8)": (np.dtype(np.int8), "INT8"),
    "tensor(int16)": (np.dtype(np.int16), "INT16"),
    "tensor(int32)": (np.dtype(np.int32), "INT32"),
    "tensor(int64)": (np.dtype(np.int64), "INT64"),
    "tensor(float16)": (np.dtype(np.float16), "FP16"),
    "tensor(float)": (np.dtype(np.float32), "FP32"),
    "tensor(double)": (np.dtype(np.float64), "FP64"),
    "tensor(string)": (np.dtype(object), "BYTES"),
}

# V2 datatype of a numpy dtype, for messages about what a client sent.
_V2_NAMES: dict[np.dtype[Any], str] = {dtype: name for dtype, name in ORT_TYPES.values()}


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The Open Inference Protocol name of a numpy dtype (``str(dtype)`` when
    the protocol has none)."""
    if dtype.kind in "USO":
        return "BYTES"
    return _V2_NAMES.get(dtype, str(dtype))


class InputError(RawServeError):
    """A client's tensor does not fit the model: answer 422 with the message."""

    status_code = 422

    def __init__(self, message: str, input_name: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.input_name = input_name


class ModelLoadError(ConfigError):
    """A model file cannot be served (missing, not ONNX, unsupported types)."""


class ModelRunError(RawServeError):
    """ONNX Runtime failed on a batch that had passed validation: a 500."""

    status_code = 500


LABELS_METADATA_KEY = "labels"


def labels_sidecar(model_path: str | Path) -> Path:
    """Where a model's labels file goes: ``digits.onnx`` -> ``digits.labels.json``."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}.labels.json")


@dataclass(frozen=True)
class ModelSpec:
    """A model to load: the name clients use, the ONNX file, the version."""

    name: str
    path: str | Path
    version: str = "1"

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """``NAME=PATH`` as given to ``--model``; a bare ``PATH`` is named after
        its file stem."""
        name, sep, path = text.partition("=")
        if not sep:
            name, path = Path(text).stem, text
        if not name or not path:
            raise ConfigError(f"--model expects NAME=PATH, got {text!r}")
        return cls(name, path)


# Entries of a model repository that are not models: Kubernetes mounts (a
# PersistentVolume's lost+found, a Secret's ..data links) and dotfiles.
_NOT_MODELS = frozenset({"lost+found"})
_ONNX = ".onnx"
_LAYOUTS = "model.onnx, NAME.onnx, NAME/model.onnx or NAME/VERSION/model.onnx"


def model_repository(text: str) -> list[ModelSpec]:
    """The models of ``--model-dir [NAME=]DIR``, in the layouts KServe mounts at
    /mnt/models and Triton reads, sorted by name:

    - ``DIR/*.onnx``: each named by its stem (``model.onnx`` after DIR
      itself); with NAME (a ServingRuntime passes the InferenceService's
      name), the top may hold one file only, served as NAME;
    - ``DIR/NAME/*.onnx``: one ONNX file (``model.onnx`` if there are
      several), named after its directory;
    - ``DIR/NAME/VERSION/model.onnx`` (Triton): the highest numeric VERSION,
      served as that version.

    Labels are found as for ``--model`` (ONNX metadata, else
    ``<stem>.labels.json`` beside the file). Any other file at the top of DIR
    is refused, so a misplaced model is not silently left out; inside a
    model's own directory other files (Triton's config.pbtxt, external
    weights) are left to the model. Errors are one-line ConfigErrors.
    """
    root = Path(text)
    name: str | None = None
    if not root.is_dir():
        name, sep, rest = text.partition("=")
        if not sep or not name:
            raise ConfigError(f"--model-dir {text!r}: no such directory")
        root = Path(rest)
        if not root.is_dir():
            raise ConfigError(f"--model-dir {text!r}: no such directory {rest!r}")
    where = f"--model-dir {str(root)!r}"
    files: list[Path] = []
    dirs: list[Path] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name in _NOT_MODELS:
            continue
        if entry.is_dir():
            dirs.append(entry)
        elif entry.suffix == _ONNX:
            files.append(entry)
        elif not entry.name.endswith(".labels.json"):
            raise ConfigError(
                f"{where}: {entry.name!r} is not an ONNX model (expected {_LAYOUTS}, "
                "labels in <stem>.labels.json)"
            )
    if name is not None and len(files) > 1:
        raise ConfigError(
            f"{where}: {name}= names the one model at the top, but there are {len(files)}: "
            + ", ".join(f.name for f in files)
        )
    specs: list[ModelSpec] = []
    for path in files:
        if name is not None:
            specs.append(ModelSpec(name, path))
        elif path.name == "model" + _ONNX:
            specs.append(ModelSpec(root.resolve().name or "model", path))
        else:
            specs.append(ModelSpec(path.stem, path))
    specs.extend(_model_directory(root, d) for d in dirs)
    if not specs:
        raise ConfigError(f"{where} holds no ONNX model (expected {_LAYOUTS})")
    specs.sort(key=lambda s: s.name)
    return specs


def _model_directory(root: Path, directory: Path) -> ModelSpec:
    """``NAME/*.onnx`` or Triton's ``NAME/VERSION/model.onnx``."""
    where = f"--model-dir {str(root)!r}"
    versions = [
        d for d in directory.iterdir() if d.is_dir() and d.name.isascii() and d.name.isdigit()
    ]
    loose = [f for f in directory.glob("*" + _ONNX) if f.is_file()]
    if versions and loose:
        raise ConfigError(
            f"{where}: {directory.name}/ holds both version directories and "
            f"{loose[0].name}; keep one layout"
        )
    if versions:
        # Triton serves the highest version by default; so does rawserve, and
        # says which one in the V2 metadata and /versions/{v} paths.
        latest = max(versions, key=lambda d: int(d.name))
        return ModelSpec(directory.name, _one_onnx(root, latest), str(int(latest.name)))
    return ModelSpec(directory.name, _one_onnx(root, directory))


def _one_onnx(root: Path, directory: Path) -> Path:
    found = sorted(f for f in directory.glob("*" + _ONNX) if f.is_file())
    preferred = directory / ("model" + _ONNX)
    if preferred in found:
        return preferred
    if len(found) == 1:
        return found[0]
    where = f"--model-dir {str(root)!r}"
    shown = directory.relative_to(root)
    if not found:
        raise ConfigError(f"{where}: {shown}/ holds no ONNX model (expected model.onnx)")
    raise ConfigError(
        f"{where}: {shown}/ holds {len(found)} ONNX files and no model.onnx: "
        + ", ".join(f.name for f in found)
    )


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model. ``shape`` holds ``None`` for dynamic
    dimensions; it is ``None`` itself when the model does not say the rank
    (possible for outputs only)."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int | None, ...] | None
    datatype: str

    def v2_shape(self) -> list[int]:
        if self.shape is None:
            return [-1]
        return [-1 if d is None else d for d in self.shape]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.v2_shape()}


def _format_shape(shape: Iterable[int | None]) -> str:
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"


def _shape_matches(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    if len(shape) != len(expected):
        return False
    return all(want is None or got == want for got, want in zip(shape, expected, strict=True))


# Shapes a one-input model remembers as accepted (Model.validate).
_ACCEPTED_SHAPES_MAX = 256


def batch_buckets(max_batch_size: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to and including ``max_batch_size``."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
    sizes = []
    size = 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch_size)
    return tuple(sizes)


class Model:
    """A loaded ONNX model. Construct it before serving (loading reads and
    optimizes the graph), call ``warmup``, then ``validate`` on the event loop
    and ``run`` from worker threads.

    ``intra_op_threads``: threads ONNX Runtime uses inside one run (0: its
    default, one per core). ``allow_spinning``: let those threads spin between
    runs; off by default because spinning burns an edge box's cores while idle.
    ``max_rows``: rows one request may carry (``None``: no limit beyond the
    body size).
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        intra_op_threads: int = 1,
        allow_spinning: bool = False,
        allow_nonfinite: bool = False,
        max_rows: int | None = None,
    ) -> None:
        if intra_op_threads < 0:
            raise ConfigError(f"intra_op_threads must be 0 or more, got {intra_op_threads}")
        if max_rows is not None and max_rows < 1:
            raise ConfigError(f"max_rows must be at least 1, got {max_rows}")
        self.spec = spec
        self.allow_nonfinite = allow_nonfinite
        self.max_rows = max_rows

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        # Parallelism across requests comes from the engine's worker threads,
        # each running a whole batch; inter-op threads would only compete.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        spin = "1" if allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        options.log_severity_level = 3  # errors only; ORT's warnings are noise here
        path = Path(spec.path)
        if not path.is_file():
            raise ModelLoadError(f"model {spec.name!r}: no such file {str(path)!r}")
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types per failure
            raise ModelLoadError(f"model {spec.name!r}: cannot load {str(path)!r}: {exc}") from exc

        self.inputs: tuple[TensorSpec, ...] = tuple(
            self._tensor_spec(arg, "input") for arg in self._session.get_inputs()
        )
        self.outputs: tuple[TensorSpec, ...] = tuple(
            self._tensor_spec(arg, "output") for arg in self._session.get_outputs()
        )
        self._inputs_by_name = {t.name: t for t in self.inputs}
        # The signature as error messages name it; built once, not per request.
        self._expected_inputs = ", ".join(
            f"{t.name!r} {t.datatype} {_format_shape(t.v2_shape())}" for t in self.inputs
        )
        self._output_names = [t.name for t in self.outputs]
        # validate()'s shortcut, for a model of one numeric input: the input,
        # and the shapes it has accepted (whether a shape passes depends on
        # nothing else). Bounded: cleared when full.
        numeric = len(self.inputs) == 1 and self.inputs[0].dtype.kind in "fiub"
        self._sole: TensorSpec | None = self.inputs[0] if numeric else None
        self._accepted_shapes: set[tuple[int, ...]] = set()
        self.labels: tuple[str, ...] | None = self._read_labels(path)
        # Batching needs a dynamic first dimension on every input; a model with
        # fixed shapes takes exactly one item per run.
        self.batched = bool(self.inputs) and all(
            t.shape is not None and len(t.shape) >= 1 and t.shape[0] is None for t in self.inputs
        )

    def _tensor_spec(self, arg: Any, kind: str) -> TensorSpec:
        types = ORT_TYPES.get(arg.type)
        if types is None:
            raise ModelLoadError(
                f"model {self.spec.name!r}: {kind} {arg.name!r} has type {arg.type}, "
                f"which rawserve cannot serve (supported: {', '.join(ORT_TYPES)})"
            )
        raw = arg.shape
        shape: tuple[int | None, ...] | None
        if raw is None:
            if kind == "input":
                raise ModelLoadError(
                    f"model {self.spec.name!r}: input {arg.name!r} has no known rank"
                )
            shape = None
        else:
            # Symbolic dimensions come back as strings ("N", "batch"), unknown
            # ones as None: both are dynamic.
            shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in raw)
        return TensorSpec(arg.name, types[0], shape, types[1])

    def _read_labels(self, path: Path) -> tuple[str, ...] | None:
        """Class labels, index by index, from the model itself: the ONNX
        metadata key ``labels`` (a JSON array of strings), else the sidecar
        file ``<stem>.labels.json`` beside the model (the same array). None
        when the model has neither."""
        where = f"metadata_props[{LABELS_METADATA_KEY!r}] of {str(path)!r}"
        raw = self._session.get_modelmeta().custom_metadata_map.get(LABELS_METADATA_KEY)
        if raw is None:
            sidecar = labels_sidecar(path)
            if not sidecar.is_file():
                return None
            where = str(sidecar)
            try:
                raw = sidecar.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ModelLoadError(
                    f"model {self.spec.name!r}: cannot read {where}: {exc}"
                ) from exc
        try:
            labels = json.loads(raw)
        except ValueError:
            labels = None
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ModelLoadError(
                f"model {self.spec.name!r}: the labels in {where} must be a JSON array of strings"
            )
        return tuple(labels)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs_by_name)

    @property
    def output_names(self) -> list[str]:
        return list(self._output_names)

    def metadata(self) -> dict[str, Any]:
        """The Open Inference Protocol (KServe V2) model metadata response."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": [t.metadata() for t in self.inputs],
            "outputs": [t.metadata() for t in self.outputs],
        }

    # -- checks ---------------------------------------------------------------

    def validate(self, inputs: Mapping[str, Any], *, finite: bool = False) -> dict[str, Array]:
        """Check one request's tensors against the signature and return them
        converted: C-contiguous, the model's exact dtypes, in the model's input
        order. Raises ``InputError`` naming the first input that is wrong.
        ``finite``: the caller knows the values hold no NaN or infinity (they
        came from JSON, which cannot carry them), so they are not looked for;
        a value out of the model's range is still refused."""
        sole = self._sole
        if sole is not None and len(inputs) == 1:
            # The common request, checked in a few comparisons: the model's one
            # input, already of its dtype, C-contiguous, of a shape that passed
            # before, with nothing to look for (or allowed) in its values. It
            # is what the checks below would return.
            array = inputs.get(sole.name)
            if (
                type(array) is np.ndarray
                and array.dtype == sole.dtype
                and array.shape in self._accepted_shapes
                and array.flags.c_contiguous
                and (finite or self.allow_nonfinite or sole.dtype.kind != "f")
                and (self.max_rows is None or not self.batched or array.shape[0] <= self.max_rows)
            ):
                return {sole.name: array}
        expected = self._expected_inputs
        for name in inputs:
            if name not in self._inputs_by_name:
                raise InputError(
                    f"unknown input {name!r} for model {self.name!r} (expected: {expected})", name
                )
        result: dict[str, Array] = {}
        rows: int | None = None
        rows_from = ""
        for spec in self.inputs:
            if spec.name not in inputs:
                raise InputError(
                    f"missing input {spec.name!r} for model {self.name!r} (expected: {expected})",
                    spec.name,
                )
            array = self._check_tensor(spec, inputs[spec.name], finite)
            if self.batched:
                if rows is None:
                    rows, rows_from = array.shape[0], spec.name
                elif array.shape[0] != rows:
                    raise InputError(
                        f"input {spec.name!r}: batch size {array.shape[0]} differs from "
                        f"input {rows_from!r}, which has {rows}",
                        spec.name,
                    )
            result[spec.name] = array
        if self.batched and self.max_rows is not None and rows is not None and rows > self.max_rows:
            raise InputError(
                f"input {rows_from!r}: {rows} rows exceed the limit of {self.max_rows} per request",
                rows_from,
            )
        if sole is not None and len(result) == 1:
            shapes = self._accepted_shapes
            if len(shapes) >= _ACCEPTED_SHAPES_MAX:
                shapes.clear()
            shapes.add(result[sole.name].shape)
        return result

    def _check_tensor(self, spec: TensorSpec, value: Any, finite: bool = False) -> Array:
        name = spec.name
        if isinstance(value, np.ndarray):
            given = value
        else:
            try:
                given = np.asarray(value)
            except (ValueError, TypeError) as exc:
                raise InputError(f"input {name!r}: not a rectangular array ({exc})", name) from exc
        assert spec.shape is not None  # inputs always have a rank (see _tensor_spec)
        if not _shape_matches(given.shape, spec.shape):
            raise InputError(
                f"input {name!r}: shape {_format_shape(given.shape)} does not match "
                f"expected {_format_shape(spec.shape)}",
                name,
            )
        if self.batched and given.shape[0] == 0:
            raise InputError(f"input {name!r}: empty batch (shape {list(given.shape)})", name)
        return np.ascontiguousarray(self._convert(spec, given, finite))

    def _convert(self, spec: TensorSpec, given: Array, finite: bool = False) -> Array:
        name, want = spec.name, spec.dtype
        have = given.dtype
        if want.kind == "f":
            if have.kind not in "iuf":
                raise self._refused(spec, have)
            if have.kind == "f" and not self.allow_nonfinite and not finite:
                self._check_finite(name, given)
            if have == want:
                return given
            with np.errstate(over="ignore"):
                converted = given.astype(want)
            if have.kind == "f" and not self.allow_nonfinite:
                if not np.isfinite(converted).all():
                    largest = float(np.abs(given).max())
                    raise InputError(
                        f"input {name!r}: values out of range for {spec.datatype} "
                        f"(largest magnitude given: {largest:g})",
                        name,
                    )
            return converted
        if want.kind in "iu":
            if have.kind not in "iu":
                raise self._refused(spec, have)
            if have == want:
                return given
            if given.size and not np.can_cast(have, want):
                info = np.iinfo(want)
                low, high = given.min(), given.max()
                if low < info.min or high > info.max:
                    raise InputError(
                        f"input {name!r}: values out of range for {spec.datatype} "
                        f"(given {low}..{high}, allowed {info.min}..{info.max})",
                        name,
                    )
            return given.astype(want)
        if want.kind == "b":
            if have.kind != "b":
                raise self._refused(spec, have)
            return given
        # BYTES: ONNX Runtime takes str objects for string tensors.
        if have.kind not in "USO":
            raise self._refused(spec, have)
        return given.astype(object)

    @staticmethod
    def _refused(spec: TensorSpec, have: np.dtype[Any]) -> InputError:
        return InputError(
            f"input {spec.name!r}: datatype {datatype_of(have)} cannot be converted to "
            f"expected {spec.datatype}",
            spec.name,
        )

    @staticmethod
    def _check_finite(name: str, array: Array) -> None:
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(array.size - np.count_nonzero(finite))
            raise InputError(
                f"input {name!r}: {bad} of {array.size} values are NaN or infinite "
                "(expected finite numbers)",
                name,
            )

    def check_outputs(self, names: Iterable[str]) -> list[str]:
        """The requested output names, or ``InputError`` for one the model lacks."""
        wanted = list(names)
        for name in wanted:
            if name not in self._output_names:
                known = ", ".join(repr(n) for n in self._output_names)
                raise InputError(
                    f"unknown output {name!r} for model {self.name!r} (outputs: {known})", name
                )
        return wanted

    # -- running ----------------------------------------------------------------

    def run(
        self, inputs: Mapping[str, Array], output_names: Sequence[str] | None = None
    ) -> dict[str, Array]:
        """Run one batch of validated inputs; blocks, so call it from a worker
        thread. Returns every output, or those in ``output_names``."""
        names = self._output_names if output_names is None else list(output_names)
        try:
            values = self._session.run(names, dict(inputs))
        except Exception as exc:
            raise ModelRunError(f"model {self.name!r} failed: {exc}") from exc
        return dict(zip(names, values, strict=True))

    def warmup(
        self, batch_sizes: Iterable[int] | None = None, *, max_batch_size: int = 64
    ) -> list[int]:
        """One run per batch size (default: ``batch_buckets(max_batch_size)``)
        on zeros, so the first requests do not pay for ONNX Runtime's lazy
        allocations. Dynamic non-batch dimensions are 1. A model without a
        batch dimension runs once. Returns the batch sizes run."""
        sizes = (
            list(batch_sizes) if batch_sizes is not None else list(batch_buckets(max_batch_size))
        )
        if not self.batched:
            sizes = [1]
        for size in sizes:
            feed = {spec.name: self.zeros(spec, size) for spec in self.inputs}
            try:
                # The session itself, not run(): warm-up is not a request.
                self._session.run(self._output_names, feed)
            except Exception as exc:
                raise ModelLoadError(
                    f"model {self.name!r}: warm-up at batch size {size} failed: {exc}"
                ) from exc
        return sizes

    def zeros(self, spec: TensorSpec, rows: int = 1) -> Array:
        """A zero tensor for ``spec``: ``rows`` in the batch dimension (if the
        model has one), 1 in other dynamic dimensions."""
        assert spec.shape is not None
        shape = [1 if d is None else d for d in spec.shape]
        if self.batched:
            shape[0] = rows
        if spec.dtype.kind == "O":
            return np.full(shape, "", dtype=object)
        return np.zeros(shape, dtype=spec.dtype)


# -- batches ---------------------------------------------------------------------


def rows(inputs: Mapping[str, Array]) -> int:
    """The batch size of one item (the first dimension of its first input)."""
    for array in inputs.values():
        return int(array.shape[0])
    raise ValueError("an item with no inputs has no batch size")


ShapeKey = tuple[tuple[str, tuple[int, ...], str], ...]
# One-input keys by (name, non-batch dimensions, dtype): building the key
# (a sort, a tuple per input, dtype.str) cost 2.6 us a request, its lookup
# 0.3. Bounded: cleared when full, so odd shapes cannot grow it for good.
_ONE_INPUT_KEYS: dict[tuple[str, tuple[int, ...], np.dtype[Any]], ShapeKey] = {}
_ONE_INPUT_KEYS_MAX = 1024


def shape_key(inputs: Mapping[str, Array]) -> ShapeKey:
    """What must match for items to share a batch: each input's name,
    non-batch dimensions and dtype."""
    if len(inputs) == 1:
        ((name, array),) = inputs.items()
        memo = (name, array.shape[1:], array.dtype)
        key = _ONE_INPUT_KEYS.get(memo)
        if key is None:
            if len(_ONE_INPUT_KEYS) >= _ONE_INPUT_KEYS_MAX:
                _ONE_INPUT_KEYS.clear()
            key = _ONE_INPUT_KEYS[memo] = ((name, tuple(array.shape[1:]), array.dtype.str),)
        return key
    return tuple(
        (name, tuple(array.shape[1:]), array.dtype.str) for name, array in sorted(inputs.items())
    )


def concat(items: Sequence[Mapping[str, Array]]) -> dict[str, Array]:
    """Stack validated items with the same ``shape_key`` into one batch."""
    if not items:
        raise ValueError("cannot concatenate no items")
    first = items[0]
    if len(items) == 1:
        return dict(first)
    for item in items[1:]:
        if item.keys() != first.keys():
            raise ValueError(f"items have different inputs: {sorted(first)} vs {sorted(item)}")
    return {name: np.concatenate([item[name] for item in items], axis=0) for name in first}


def split(outputs: Mapping[str, Array], sizes: Sequence[int]) -> list[dict[str, Array]]:
    """Cut a batch's outputs back into one result per item, ``sizes`` being
    the items' row counts in ``concat`` order. The parts are views."""
    total = sum(sizes)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise ValueError(
                f"output {name!r} has shape {list(array.shape)}, which has no batch "
                f"dimension of {total} rows to split"
            )
    parts: list[dict[str, Array]] = []
    start = 0
    for size in sizes:
        end = start + size
        parts.append({name: array[start:end] for name, array in outputs.items()})
        start = end
    return parts


# -- the bundled model -------------------------------------------------------------

_BUNDLED = "models"
# Keeps extracted copies alive when the package is imported from a zip file.
_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


def _bundled_file(filename: str) -> Path:
    resource = resources.files("rawserve").joinpath(_BUNDLED, filename)
    if not resource.is_file():
        raise ModelLoadError(f"no bundled model file {filename!r} in rawserve/{_BUNDLED}")
    if isinstance(resource, Path):
        return resource
    return _extracted.enter_context(resources.as_file(resource))


def load_bundled(name: str = "digits") -> ModelSpec:
    """The spec of a model shipped in the package (``rawserve/models/NAME.onnx``)."""
    return ModelSpec(name, _bundled_file(f"{name}.onnx"))


def bundled_metadata(name: str = "digits") -> dict[str, Any]:
    """The JSON written beside a bundled model by tools/make_models.py: labels,
    input scaling, test accuracy, a few sample inputs with their labels."""
    info: dict[str, Any] = json.loads(_bundled_file(f"{name}.json").read_text(encoding="utf-8"))
    return info
