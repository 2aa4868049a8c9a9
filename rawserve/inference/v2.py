"""Open Inference Protocol (KServe V2) REST codec, with Triton's binary tensor extension.

Pure: bytes in, arrays out, and back. No I/O and no event loop, so the
endpoints (and tests) call it directly. References:

- KServe V2 REST: kserve/kserve docs/predict-api/v2/required_api.md
  ("Inference Request JSON Object", "Tensor Data").
- Triton binary tensor data extension: triton-inference-server/server
  docs/protocol/extension_binary_data.md (``binary_data_size``,
  ``binary_data``, ``binary_data_output``, ``Inference-Header-Content-Length``,
  and the raw binary request with a header length of 0).
- Triton schedule policy extension: docs/protocol/extension_schedule_policy.md
  (``priority``: 0 default, 1 highest; ``timeout`` in microseconds).

Every problem a client can cause raises :class:`V2Error`, whose message is the
``{"error": ...}`` body of the 400 answer.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import orjson

__all__ = [
    "BINARY_CONTENT_TYPE",
    "DEFAULT_MAX_ELEMENTS",
    "HEADER_LENGTH_HEADER",
    "JSON_CONTENT_TYPE",
    "MAX_DIMS",
    "InferRequest",
    "InputTensor",
    "RequestedOutput",
    "V2Error",
    "binary_output_names",
    "bind_raw_input",
    "decode_request",
    "encode_response",
    "encode_response_for",
    "error_body",
    "numpy_to_v2_datatype",
    "parse_header_length",
    "request_priority",
    "request_timeout_s",
    "v2_to_numpy_dtype",
]

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"
# Lower case: HTTP/2 and HTTP/3 require it on the wire, HTTP/1.1 does not care.
HEADER_LENGTH_HEADER = "inference-header-content-length"

# Per tensor. The body limit already bounds what a client can send; this bounds
# what a small body can *claim* (shape [1e9, 1e9]) before anything is allocated.
DEFAULT_MAX_ELEMENTS = 1 << 26
MAX_DIMS = 32  # numpy's own limit is 64
MAX_LENGTH_DIGITS = 18  # a byte count below 10**18
_MAX_ITEMSIZE = 8  # the widest datatype, and BYTES' object pointers
_MAX_ARRAY_BYTES = 2**63 - 1  # numpy's limit on an array's size in bytes

# Little-endian on the wire (binary extension), whatever the host.
_DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_NATIVE: dict[str, np.dtype[Any]] = {k: v.newbyteorder("=") for k, v in _DATATYPES.items()}
_BY_KIND_SIZE: dict[tuple[str, int], str] = {
    (dt.kind, dt.itemsize): name for name, dt in _DATATYPES.items() if name != "BYTES"
}
_LEN = struct.Struct("<I")


class V2Error(ValueError):
    """A request the protocol cannot accept; answer 400 with ``error_body(str(e))``."""

    status_code = 400


@dataclass(frozen=True, slots=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    # Native byte order, ``shape`` already applied. BYTES: object array of bytes.
    # Binary inputs are zero-copy views of the body, hence read-only.
    data: np.ndarray[Any, Any]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    # None: not said; the request-level ``binary_data_output`` decides.
    binary_data: bool | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InferRequest:
    id: str | None
    parameters: dict[str, Any]
    inputs: list[InputTensor]
    outputs: list[RequestedOutput]
    # Triton's raw binary request (Inference-Header-Content-Length: 0): the body
    # is one input's bytes and nothing else; ``bind_raw_input`` turns it into an
    # input once the model's signature is known.
    raw_input: memoryview | None = None

    @property
    def output_names(self) -> list[str] | None:
        """Requested outputs in request order, or None for "all the model has"."""
        return [o.name for o in self.outputs] if self.outputs else None

    def arrays(self) -> dict[str, np.ndarray[Any, Any]]:
        return {t.name: t.data for t in self.inputs}


# -- datatypes -------------------------------------------------------------------


def v2_to_numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The native numpy dtype of a V2 datatype (BYTES: object)."""
    try:
        return _NATIVE[datatype]
    except (KeyError, TypeError):
        raise V2Error(
            f"unknown datatype {datatype!r}; expected one of {', '.join(_DATATYPES)}"
        ) from None


def numpy_to_v2_datatype(dtype: np.dtype[Any] | type[Any]) -> str:
    """The V2 datatype of a numpy dtype; str, bytes and object arrays are BYTES."""
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return "BYTES"
    name = _BY_KIND_SIZE.get((dt.kind, dt.itemsize))
    if name is None:
        raise TypeError(f"numpy dtype {dt} has no Open Inference Protocol datatype")
    return name


# -- request ---------------------------------------------------------------------


def parse_header_length(value: str | bytes | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header as an int (None if absent)."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        raise V2Error(
            f"Inference-Header-Content-Length must be a non-negative integer, got {text[:40]!r}"
        )
    if len(text) > MAX_LENGTH_DIGITS:
        # More than any body can be, and int() on thousands of digits raises.
        raise V2Error(
            f"Inference-Header-Content-Length has {len(text)} digits; at most "
            f"{MAX_LENGTH_DIGITS} are allowed"
        )
    return int(text)


def decode_request(
    body: bytes | bytearray | memoryview,
    content_type: str | None = None,
    header_length: int | None = None,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> InferRequest:
    """Decode a V2 inference request body.

    ``header_length`` is the Inference-Header-Content-Length header: the JSON
    object is the first ``header_length`` bytes and binary tensors follow in
    input order. 0 means Triton's raw binary request (see ``bind_raw_input``).
    ``content_type`` only sharpens error messages: Triton ignores it, and curl
    ``-d`` sends form-urlencoded JSON.
    """
    view = memoryview(body).cast("B")
    binary: memoryview | None = None
    if header_length is not None:
        if header_length < 0 or header_length > len(view):
            raise V2Error(
                f"Inference-Header-Content-Length is {header_length} but the body has "
                f"{len(view)} bytes"
            )
        if header_length == 0:
            if not view:
                raise V2Error(
                    "a raw binary request (Inference-Header-Content-Length: 0) needs a body"
                )
            # Triton: a raw request wants every output back as binary.
            return InferRequest(None, {"binary_data_output": True}, [], [], raw_input=view)
        binary = view[header_length:]
        view = view[:header_length]
    try:
        doc = orjson.loads(view)
    except orjson.JSONDecodeError as exc:
        hint = ""
        if header_length is None and content_type and "octet-stream" in content_type.lower():
            hint = " (a binary request needs the Inference-Header-Content-Length header)"
        raise V2Error(f"request body is not valid JSON: {exc}{hint}") from None
    if not isinstance(doc, dict):
        raise V2Error("the inference request must be a JSON object")

    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2Error(f"'id' must be a string, got {_json_type(request_id)}")
    parameters = _parameters(doc.get("parameters"), "the request")
    _check_schedule_parameters(parameters)

    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise V2Error("'inputs' must be a non-empty array of input tensors")
    reader = _BinaryReader(binary)
    inputs: list[InputTensor] = []
    seen: set[str] = set()
    for index, item in enumerate(raw_inputs):
        tensor = _decode_input(item, index, reader, max_elements)
        if tensor.name in seen:
            raise V2Error(f"input {tensor.name!r} is given twice")
        seen.add(tensor.name)
        inputs.append(tensor)
    reader.finish()
    return InferRequest(request_id, parameters, inputs, _decode_outputs(doc.get("outputs")))


def bind_raw_input(
    request: InferRequest,
    name: str,
    datatype: str,
    shape: Sequence[int],
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> InferRequest:
    """Turn a raw binary request into one with a single input.

    ``shape`` is the model input's shape with at most one -1, which is deduced
    from the byte count (the caller sets a batch dimension to 1, as Triton
    treats a raw request as a batch of one). BYTES inputs take the whole body
    as their single element, so their shape must hold exactly one element.
    """
    raw = request.raw_input
    if raw is None:
        return request
    dtype = v2_to_numpy_dtype(datatype)
    dims = list(shape)
    unknown = [i for i, d in enumerate(dims) if d < 0]
    if len(unknown) > 1:
        raise V2Error(
            f"a raw binary request cannot feed input {name!r} of shape {dims}: "
            "more than one variable dimension"
        )
    if datatype == "BYTES":
        dims = [1 if d < 0 else d for d in dims]
        if math.prod(dims) != 1:
            raise V2Error(
                f"a raw binary request can feed a BYTES input only of shape [1], not {dims}"
            )
        data = np.empty(dims, dtype=object)
        data.reshape(-1)[0] = bytes(raw)
    else:
        known = math.prod(d for d in dims if d >= 0) * dtype.itemsize
        if unknown:
            if known == 0 or len(raw) % known:
                raise V2Error(
                    f"raw binary request of {len(raw)} bytes does not fit input {name!r} of "
                    f"shape {list(shape)} and datatype {datatype}"
                )
            dims[unknown[0]] = len(raw) // known
        elif len(raw) != known:
            raise V2Error(
                f"raw binary request has {len(raw)} bytes but input {name!r} of shape {dims} "
                f"and datatype {datatype} needs {known}"
            )
        _check_count(name, dims, max_elements)
        data = _from_binary(raw, datatype, dims, name)
    tensor = InputTensor(name, datatype, tuple(dims), data, {"binary_data_size": len(raw)})
    return replace(request, inputs=[tensor], raw_input=None)


class _BinaryReader:
    """Hands out the binary section of the body in input order."""

    __slots__ = ("_buf", "_offset")

    def __init__(self, buf: memoryview | None) -> None:
        self._buf = buf
        self._offset = 0

    def take(self, name: str, size: int) -> memoryview:
        if self._buf is None:
            raise V2Error(
                f"input {name!r} has binary_data_size but the request has no "
                "Inference-Header-Content-Length header"
            )
        remaining = len(self._buf) - self._offset
        if size > remaining:
            raise V2Error(
                f"input {name!r} declares binary_data_size {size} but only {remaining} bytes "
                "of binary data remain after the JSON header"
            )
        chunk = self._buf[self._offset : self._offset + size]
        self._offset += size
        return chunk

    def finish(self) -> None:
        if self._buf is not None and self._offset != len(self._buf):
            raise V2Error(
                f"the binary data after the JSON header is {len(self._buf)} bytes but the "
                f"inputs' binary_data_size add up to {self._offset}"
            )


def _decode_input(item: Any, index: int, reader: _BinaryReader, max_elements: int) -> InputTensor:
    if not isinstance(item, dict):
        raise V2Error(f"inputs[{index}] must be a JSON object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise V2Error(f"inputs[{index}] needs a 'name' string")
    datatype = item.get("datatype")
    if datatype is None:
        raise V2Error(f"input {name!r} needs a 'datatype'")
    v2_to_numpy_dtype(datatype)
    shape = _shape(item.get("shape"), name)
    _check_count(name, shape, max_elements)
    parameters = _parameters(item.get("parameters"), f"input {name!r}")
    if "shared_memory_region" in parameters:
        raise V2Error(f"input {name!r}: the shared-memory extension is not supported")
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in item:
            raise V2Error(f"input {name!r} has both 'data' and parameters.binary_data_size")
        if not _is_int(size) or size < 0:
            raise V2Error(f"input {name!r}: binary_data_size must be a non-negative integer")
        data = _from_binary(reader.take(name, size), datatype, shape, name)
    elif "data" in item:
        data = _from_json(item["data"], datatype, shape, name)
    else:
        raise V2Error(f"input {name!r} has no 'data' (nor parameters.binary_data_size)")
    return InputTensor(name, datatype, tuple(shape), data, parameters)


def _decode_outputs(raw: Any) -> list[RequestedOutput]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise V2Error("'outputs' must be an array of requested outputs")
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise V2Error(f"outputs[{index}] must be a JSON object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise V2Error(f"outputs[{index}] needs a 'name' string")
        if name in seen:
            raise V2Error(f"output {name!r} is requested twice")
        seen.add(name)
        parameters = _parameters(item.get("parameters"), f"output {name!r}")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise V2Error(f"output {name!r}: parameters.binary_data must be true or false")
        for unsupported in ("classification", "shared_memory_region"):
            if unsupported in parameters:
                raise V2Error(f"output {name!r}: parameter {unsupported!r} is not supported")
        outputs.append(RequestedOutput(name, binary, parameters))
    return outputs


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise V2Error(f"'parameters' of {where} must be a JSON object")
    return raw


def _shape(raw: Any, name: str) -> list[int]:
    if not isinstance(raw, list):
        raise V2Error(f"input {name!r} needs a 'shape' array of integers")
    if len(raw) > MAX_DIMS:
        raise V2Error(f"input {name!r} has {len(raw)} dimensions; at most {MAX_DIMS} are allowed")
    for dim in raw:
        if not _is_int(dim):
            raise V2Error(f"input {name!r}: shape {raw} must hold integers only")
        if dim < 0:
            raise V2Error(f"input {name!r}: shape {raw} has a negative dimension")
    return raw


def _check_count(name: str, shape: Sequence[int], max_elements: int) -> None:
    # Python ints: no overflow, and nothing is allocated yet.
    count = math.prod(shape)
    # A zero dimension makes the count 0, but numpy still refuses a shape whose
    # other dimensions' bytes would not fit its index type ([0, 2**63]).
    if not count and math.prod(d for d in shape if d) * _MAX_ITEMSIZE > _MAX_ARRAY_BYTES:
        raise V2Error(
            f"input {name!r} of shape {list(shape)} has no elements, but its other "
            "dimensions are larger than any array can be"
        )
    if count > max_elements:
        raise V2Error(
            f"input {name!r} of shape {list(shape)} has {count} elements; "
            f"the limit is {max_elements}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _from_binary(
    buf: memoryview, datatype: str, shape: Sequence[int], name: str
) -> np.ndarray[Any, Any]:
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_from_binary(buf, count, name).reshape(shape)
    wire = _DATATYPES[datatype]
    if len(buf) != count * wire.itemsize:
        raise V2Error(
            f"input {name!r}: binary_data_size is {len(buf)} bytes but shape {list(shape)} of "
            f"{datatype} needs {count * wire.itemsize}"
        )
    if datatype == "BOOL":
        raw = np.frombuffer(buf, dtype=np.uint8)
        if raw.size and int(raw.max()) > 1:
            raise V2Error(f"input {name!r}: BOOL elements must be bytes 0 or 1")
    arr = np.frombuffer(buf, dtype=wire)
    if not arr.dtype.isnative:
        arr = arr.astype(_NATIVE[datatype])
    elif not arr.flags.aligned:
        # The JSON header's length puts tensors at any offset; kernels want alignment.
        arr = arr.copy()
    return arr.reshape(shape)


def _bytes_from_binary(buf: memoryview, count: int, name: str) -> np.ndarray[Any, Any]:
    end = len(buf)
    # Each element takes at least its 4-byte length: refuse a claimed count the
    # buffer cannot hold before allocating anything for it.
    if count * 4 > end:
        raise V2Error(
            f"input {name!r}: binary_data_size is {end} bytes but {count} BYTES elements "
            f"need at least {count * 4} (4 bytes of length each)"
        )
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if end - offset < 4:
            raise V2Error(f"input {name!r}: BYTES binary data ends inside element {i}'s length")
        (length,) = _LEN.unpack_from(buf, offset)
        offset += 4
        if length > end - offset:
            raise V2Error(
                f"input {name!r}: BYTES element {i} claims {length} bytes but only "
                f"{end - offset} remain"
            )
        out[i] = bytes(buf[offset : offset + length])
        offset += length
    if offset != end:
        raise V2Error(
            f"input {name!r}: binary_data_size is {end} bytes but its {count} BYTES elements "
            f"use {offset}"
        )
    return out


def _from_json(data: Any, datatype: str, shape: Sequence[int], name: str) -> np.ndarray[Any, Any]:
    if not isinstance(data, list):
        raise V2Error(f"input {name!r}: 'data' must be a JSON array")
    count = math.prod(shape)
    if datatype == "BYTES":
        flat = _flatten_bytes(data, name)
        if len(flat) != count:
            raise _count_mismatch(name, len(flat), shape, count)
        out = np.empty(count, dtype=object)
        out[:] = flat
        return out.reshape(shape)
    # Count before building: the array (and its float64 staging copy) is made
    # only for as many values as the shape holds. Evenly nested data has the
    # product of the first elements' lengths; uneven data fails in asarray.
    dims = _json_dims(data)
    implied = math.prod(dims)
    if implied != count:
        if len(dims) == 1:
            raise _count_mismatch(name, implied, shape, count)
        raise V2Error(
            f"input {name!r}: 'data' must be a flat or evenly nested array of the {count} "
            f"values of shape {list(shape)}; its first elements nest as {dims}"
        )
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise V2Error(
            f"input {name!r}: 'data' must be a flat or evenly nested array of {datatype} values"
        ) from None
    if arr.size != count:
        raise _count_mismatch(name, arr.size, shape, count)
    target = _NATIVE[datatype]
    if arr.size:
        _check_kind(arr, datatype, target, name)
    return arr.astype(target, copy=False).reshape(shape)


def _json_dims(data: list[Any]) -> list[int]:
    """The shape of evenly nested JSON arrays, read down the first elements:
    O(depth), nothing allocated. Uneven nesting is found later, by asarray."""
    dims: list[int] = []
    level: Any = data
    while isinstance(level, list) and len(dims) <= MAX_DIMS:
        dims.append(len(level))
        if not level:
            break
        level = level[0]
    return dims


def _check_kind(arr: np.ndarray[Any, Any], datatype: str, target: np.dtype[Any], name: str) -> None:
    kind = arr.dtype.kind
    if target.kind == "b":
        ok = kind == "b"
        expected = "true/false"
    elif target.kind in "iu":
        ok = kind in "iu"
        expected = "integers"
        if ok:
            info = np.iinfo(target)
            lo, hi = arr.min(), arr.max()
            if lo < info.min or hi > info.max:
                raise V2Error(
                    f"input {name!r}: values {lo}..{hi} are out of range for {datatype} "
                    f"({info.min}..{info.max})"
                )
    else:
        ok = kind in "iuf"
        expected = "numbers"
        if ok and (kind in "iu" or target.itemsize < arr.dtype.itemsize):
            # JSON numbers arrive as float64 (or int64): one that the target
            # cannot hold would become inf in the cast, then be blamed as
            # "infinite" (and numpy would warn in the log).
            largest = float(np.abs(arr).max())
            limit = float(np.finfo(target).max)
            if largest > limit:
                raise V2Error(
                    f"input {name!r}: values out of range for {datatype} (largest magnitude "
                    f"given: {largest:g}, largest allowed: {limit:g})"
                )
    if not ok:
        raise V2Error(f"input {name!r}: {datatype} data must be {expected}")


def _flatten_bytes(data: list[Any], name: str) -> list[bytes]:
    out: list[bytes] = []
    stack: list[Iterable[Any]] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, str):
                out.append(item.encode("utf-8"))
            elif isinstance(item, list):
                stack.append(iter(item))
                break
            else:
                raise V2Error(f"input {name!r}: BYTES data must be strings, got {_json_type(item)}")
        else:
            stack.pop()
    return out


def _count_mismatch(name: str, got: int, shape: Sequence[int], count: int) -> V2Error:
    return V2Error(f"input {name!r} has {got} data elements but shape {list(shape)} needs {count}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# -- schedule parameters (Triton's schedule policy extension) --------------------


def _check_schedule_parameters(parameters: Mapping[str, Any]) -> None:
    for key in ("priority", "timeout"):
        value = parameters.get(key)
        if value is not None and (not _is_int(value) or value < 0):
            raise V2Error(f"parameters.{key} must be a non-negative integer, got {value!r}")


def request_priority(request: InferRequest) -> int | None:
    """RFC 9218 urgency from ``parameters.priority``, or None to keep other sources.

    Triton: 0 is the default level, 1 the highest, larger is lower. Mapped as
    urgency = min(priority - 1, 7): 1 -> 0, 2 -> 1, ..., 8 and above -> 7.
    """
    value = request.parameters.get("priority")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return min(value - 1, 7)


def request_timeout_s(request: InferRequest) -> float | None:
    """``parameters.timeout`` (microseconds, Triton) in seconds; None if absent or 0."""
    value = request.parameters.get("timeout")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value / 1_000_000


# -- response --------------------------------------------------------------------


def binary_output_names(request: InferRequest, output_names: Iterable[str]) -> set[str]:
    """Which of ``output_names`` go back as binary: an output's own
    ``binary_data`` wins, else the request's ``binary_data_output``."""
    default = request.parameters.get("binary_data_output") is True
    said = {o.name: o.binary_data for o in request.outputs}
    chosen = set()
    for name in output_names:
        flag = said.get(name)
        if flag is True or (flag is None and default):
            chosen.add(name)
    return chosen


def encode_response(
    model_name: str,
    model_version: str | None,
    outputs: Mapping[str, np.ndarray[Any, Any]],
    *,
    request_id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    binary_outputs: set[str] | Literal["all"] | None = None,
    order: Sequence[str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Encode an inference response; returns the body and its headers
    (``content-type``, and ``inference-header-content-length`` when any output
    is binary).

    ``order`` lists the outputs to send, in order (default: all of ``outputs``);
    naming one the model does not have raises V2Error. JSON data is flat,
    row-major, as Triton sends it; NaN and infinities become null.
    """
    names = list(outputs) if order is None else list(order)
    entries: list[dict[str, Any]] = []
    chunks: list[Any] = []
    for name in names:
        if name not in outputs:
            raise V2Error(
                f"unknown output {name!r}; the model has {', '.join(sorted(outputs)) or 'none'}"
            )
        arr = np.asarray(outputs[name])
        datatype = numpy_to_v2_datatype(arr.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary_outputs == "all" or (binary_outputs is not None and name in binary_outputs):
            chunk = _to_binary(arr, datatype)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = _to_json(arr, datatype, name)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = dict(parameters)
    doc["outputs"] = entries
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {"content-type": JSON_CONTENT_TYPE}
    return b"".join([header, *chunks]), {
        "content-type": BINARY_CONTENT_TYPE,
        HEADER_LENGTH_HEADER: str(len(header)),
    }


def encode_response_for(
    request: InferRequest,
    model_name: str,
    model_version: str | None,
    outputs: Mapping[str, np.ndarray[Any, Any]],
    *,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """``encode_response`` with the id, output selection and binary choices the
    request asked for."""
    order = request.output_names
    names = order if order is not None else list(outputs)
    return encode_response(
        model_name,
        model_version,
        outputs,
        request_id=request.id,
        parameters=parameters,
        binary_outputs=binary_output_names(request, names),
        order=order,
    )


def _to_binary(arr: np.ndarray[Any, Any], datatype: str) -> bytes | memoryview:
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in arr.reshape(-1).tolist():
            raw = item.encode("utf-8") if isinstance(item, str) else _as_bytes(item)
            parts.append(_LEN.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    wire = np.ascontiguousarray(arr, dtype=_DATATYPES[datatype])
    return wire.reshape(-1).view(np.uint8).data


def _to_json(arr: np.ndarray[Any, Any], datatype: str, name: str) -> Any:
    if datatype == "BYTES":
        out: list[str] = []
        for item in arr.reshape(-1).tolist():
            if isinstance(item, str):
                out.append(item)
                continue
            try:
                out.append(_as_bytes(item).decode("utf-8"))
            except UnicodeDecodeError:
                raise V2Error(
                    f"output {name!r} holds bytes that are not UTF-8 text; request it with "
                    "parameters.binary_data = true"
                ) from None
        return out
    # orjson writes a native, C-contiguous array as a flat JSON list directly.
    return np.ascontiguousarray(arr.reshape(-1), dtype=_NATIVE[datatype])


def _as_bytes(item: Any) -> bytes:
    # bytes(5) would be five zero bytes: only real byte strings pass.
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    raise TypeError(f"a BYTES output element must be str or bytes, not {type(item).__name__}")


def error_body(message: str) -> bytes:
    """The V2 error body: ``{"error": message}``."""
    return orjson.dumps({"error": message})
