"""Open Inference Protocol (KServe V2) REST codec and Triton's binary extension."""

from __future__ import annotations

import json
import struct
import tracemalloc
from typing import Any

import numpy as np
import orjson
import pytest

from rawserve.inference.v2 import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH_HEADER,
    JSON_CONTENT_TYPE,
    InferRequest,
    V2Error,
    binary_output_names,
    bind_raw_input,
    decode_request,
    encode_response,
    encode_response_for,
    error_body,
    numpy_to_v2_datatype,
    parse_header_length,
    request_priority,
    request_timeout_s,
    v2_to_numpy_dtype,
)

# -- helpers: a client, written from the docs rather than from the codec ----------


def binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, int]:
    head = orjson.dumps(header)
    return head + b"".join(chunks), len(head)


def split_response(body: bytes, headers: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What tritonclient's InferResult does: JSON header, then each output with
    binary_data_size takes its bytes in order. Returns (doc, name -> array)."""
    length = headers.get(HEADER_LENGTH_HEADER)
    if length is None:
        doc = orjson.loads(body)
        rest = b""
    else:
        doc = orjson.loads(body[: int(length)])
        rest = body[int(length) :]
    arrays: dict[str, Any] = {}
    offset = 0
    wire = {
        "BOOL": "?",
        "UINT8": "<u1",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }
    for out in doc["outputs"]:
        size = out.get("parameters", {}).get("binary_data_size")
        if size is None:
            if out["datatype"] == "BYTES":
                arrays[out["name"]] = np.array(
                    [s.encode() for s in out["data"]], dtype=object
                ).reshape(out["shape"])
            else:
                arrays[out["name"]] = np.array(out["data"], dtype=wire[out["datatype"]]).reshape(
                    out["shape"]
                )
            continue
        assert "data" not in out
        raw = rest[offset : offset + size]
        offset += size
        if out["datatype"] == "BYTES":
            items, i = [], 0
            while i < len(raw):
                (n,) = struct.unpack_from("<I", raw, i)
                items.append(raw[i + 4 : i + 4 + n])
                i += 4 + n
            arrays[out["name"]] = np.array(items, dtype=object).reshape(out["shape"])
        else:
            arrays[out["name"]] = np.frombuffer(raw, dtype=wire[out["datatype"]]).reshape(
                out["shape"]
            )
    assert offset == len(rest)
    return doc, arrays


def bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


# -- requests: the docs' own examples ---------------------------------------------


def test_kserve_json_request_example() -> None:
    # kserve/kserve docs/predict-api/v2/required_api.md, "Inference Request
    # Examples"; input1 there has shape [3] but one element, a typo in the
    # spec, so it gets three here.
    body = b"""{
      "id" : "42",
      "inputs" : [
        {"name" : "input0", "shape" : [ 2, 2 ], "datatype" : "UINT32", "data" : [ 1, 2, 3, 4 ]},
        {"name" : "input1", "shape" : [ 3 ], "datatype" : "BOOL", "data" : [ true, false, true ]}
      ],
      "outputs" : [ {"name" : "output0"} ]
    }"""
    req = decode_request(body, JSON_CONTENT_TYPE, None)
    assert req.id == "42"
    assert [t.name for t in req.inputs] == ["input0", "input1"]
    in0, in1 = req.inputs
    assert in0.datatype == "UINT32" and in0.shape == (2, 2)
    assert in0.data.dtype == np.uint32
    np.testing.assert_array_equal(in0.data, [[1, 2], [3, 4]])
    assert in1.data.dtype == np.bool_
    np.testing.assert_array_equal(in1.data, [True, False, True])
    assert req.output_names == ["output0"]
    assert req.outputs[0].binary_data is None


def test_kserve_spec_example_with_one_element_for_shape_3_is_rejected() -> None:
    body = b'{"inputs":[{"name":"input1","shape":[3],"datatype":"BOOL","data":[true]}]}'
    with pytest.raises(V2Error, match=r"'input1' has 1 data elements but shape \[3\] needs 3"):
        decode_request(body, None, None)


def test_kserve_json_response_example() -> None:
    # Same document: a [3, 2] FP32 output comes back with flat data.
    req = decode_request(
        b'{"id":"42","inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],'
        b'"outputs":[{"name":"output0"}]}'
    )
    out = np.array([[1.0, 1.1], [2.0, 2.1], [3.0, 3.1]], dtype=np.float32)
    body, headers = encode_response_for(req, "mymodel", None, {"output0": out, "other": out})
    assert headers == {"content-type": "application/json"}
    assert orjson.loads(body) == {
        "model_name": "mymodel",
        "id": "42",
        "outputs": [
            {
                "name": "output0",
                "datatype": "FP32",
                "shape": [3, 2],
                "data": [1.0, 1.1, 2.0, 2.1, 3.0, 3.1],
            }
        ],
    }


def test_triton_binary_request_and_response_example() -> None:
    # triton-inference-server/server docs/protocol/extension_binary_data.md,
    # "Examples": 16 bytes of UINT32 then 3 bytes of BOOL; output0 wanted binary.
    header = {
        "model_name": "mymodel",
        "inputs": [
            {"name": "input0", "shape": [2, 2], "datatype": "UINT32",
             "parameters": {"binary_data_size": 16}},
            {"name": "input1", "shape": [3], "datatype": "BOOL",
             "parameters": {"binary_data_size": 3}},
        ],
        "outputs": [{"name": "output0", "parameters": {"binary_data": True}}],
    }  # fmt: skip
    body, length = binary_body(header, np.array([1, 2, 3, 4], "<u4").tobytes(), bytes([1, 0, 1]))
    req = decode_request(body, BINARY_CONTENT_TYPE, length)
    np.testing.assert_array_equal(req.inputs[0].data, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(req.inputs[1].data, [True, False, True])
    assert req.outputs[0].binary_data is True

    out = np.arange(6, dtype=np.float32).reshape(3, 2)
    resp, headers = encode_response_for(req, "mymodel", "1", {"output0": out})
    assert headers["content-type"] == BINARY_CONTENT_TYPE
    doc, arrays = split_response(resp, headers)
    assert doc["outputs"] == [
        {"name": "output0", "datatype": "FP32", "shape": [3, 2],
         "parameters": {"binary_data_size": 24}}
    ]  # fmt: skip
    assert doc["model_version"] == "1"
    assert len(resp) == int(headers[HEADER_LENGTH_HEADER]) + 24
    np.testing.assert_array_equal(arrays["output0"], out)


def test_triton_parameters_example_custom_parameter_is_kept() -> None:
    # docs/protocol/extension_parameters.md (with its missing comma fixed)
    body = (
        b'{"parameters":{"my_custom_parameter":42},"inputs":[{"name":"input0","shape":[2,2],'
        b'"datatype":"UINT32","data":[1,2,3,4]}],"outputs":[{"name":"output0"}]}'
    )
    assert decode_request(body).parameters == {"my_custom_parameter": 42}


# -- round trips -------------------------------------------------------------------

ROUND_TRIP = [
    np.array([[0.5, -1.25, 3.0e-8], [1e30, 0.0, -0.0]], dtype=np.float32),
    np.array([[2**62, -(2**63)], [0, 7]], dtype=np.int64),
    np.array([True, False, True, True]),
    np.array([[0, 255], [17, 128]], dtype=np.uint8),
    np.array([0.5, -2.0, 65504.0, 0.099975586], dtype=np.float16),
]


@pytest.mark.parametrize("arr", ROUND_TRIP, ids=lambda a: str(a.dtype))
def test_json_round_trip(arr: np.ndarray[Any, Any]) -> None:
    datatype = numpy_to_v2_datatype(arr.dtype)
    flat = orjson.dumps(
        {"inputs": [{"name": "x", "shape": list(arr.shape), "datatype": datatype,
                     "data": arr.ravel().tolist()}]}
    )  # fmt: skip
    nested = orjson.dumps(
        {"inputs": [{"name": "x", "shape": list(arr.shape), "datatype": datatype,
                     "data": arr.tolist()}]}
    )  # fmt: skip
    for body in (flat, nested):
        tensor = decode_request(body).inputs[0]
        assert tensor.data.dtype == arr.dtype
        assert tensor.shape == arr.shape
        np.testing.assert_array_equal(tensor.data, arr)
    resp, headers = encode_response("m", "1", {"y": tensor.data})
    assert headers == {"content-type": JSON_CONTENT_TYPE}
    doc, arrays = split_response(resp, headers)
    assert doc["outputs"][0]["datatype"] == datatype
    assert doc["outputs"][0]["shape"] == list(arr.shape)
    assert isinstance(doc["outputs"][0]["data"], list)
    assert all(not isinstance(v, list) for v in doc["outputs"][0]["data"]), "data must be flat"
    np.testing.assert_array_equal(arrays["y"], arr)


@pytest.mark.parametrize("arr", ROUND_TRIP, ids=lambda a: str(a.dtype))
def test_binary_round_trip(arr: np.ndarray[Any, Any]) -> None:
    datatype = numpy_to_v2_datatype(arr.dtype)
    raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    body, length = binary_body(
        {"inputs": [{"name": "x", "shape": list(arr.shape), "datatype": datatype,
                     "parameters": {"binary_data_size": len(raw)}}]},
        raw,
    )  # fmt: skip
    tensor = decode_request(body, BINARY_CONTENT_TYPE, length).inputs[0]
    assert tensor.data.dtype == arr.dtype and tensor.shape == arr.shape
    np.testing.assert_array_equal(tensor.data, arr)
    resp, headers = encode_response("m", "1", {"y": tensor.data}, binary_outputs="all")
    doc, arrays = split_response(resp, headers)
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": len(raw)}
    np.testing.assert_array_equal(arrays["y"], arr)


def test_binary_input_is_zero_copy_and_aligned() -> None:
    arr = np.arange(12, dtype=np.float32)
    for pad in range(4):  # the JSON header's length moves the tensor's offset
        header = {"id": "x" * pad, "inputs": [
            {"name": "x", "shape": [3, 4], "datatype": "FP32",
             "parameters": {"binary_data_size": 48}}]}  # fmt: skip
        body, length = binary_body(header, arr.tobytes())
        data = decode_request(body, None, length).inputs[0].data
        assert data.flags.aligned and data.flags.c_contiguous
        np.testing.assert_array_equal(data.ravel(), arr)
    # Aligned buffer, tensor at an aligned offset: the array is a view of the body.
    for pad in range(4):
        body, length = binary_body({"id": "x" * pad, "inputs": header["inputs"]}, arr.tobytes())
        if length % 4 == 0:
            break
    buf = np.empty(len(body), dtype=np.uint8)
    buf[:] = np.frombuffer(body, dtype=np.uint8)
    data = decode_request(buf.data, None, length).inputs[0].data
    assert np.shares_memory(data, buf)


def test_bytes_json_and_binary() -> None:
    body = orjson.dumps(
        {"inputs": [{"name": "s", "shape": [2, 2], "datatype": "BYTES",
                     "data": [["a", "héllo"], ["", "z"]]}]}
    )  # fmt: skip
    tensor = decode_request(body).inputs[0]
    assert tensor.data.dtype == object and tensor.shape == (2, 2)
    assert tensor.data.tolist() == [[b"a", "héllo".encode()], [b"", b"z"]]

    raw = bytes_tensor(b"\x00\xff", b"", b"abc")
    body, length = binary_body(
        {"inputs": [{"name": "s", "shape": [3], "datatype": "BYTES",
                     "parameters": {"binary_data_size": len(raw)}}]},
        raw,
    )  # fmt: skip
    tensor = decode_request(body, None, length).inputs[0]
    assert tensor.data.tolist() == [b"\x00\xff", b"", b"abc"]

    out = {"txt": np.array(["héllo", "w"], dtype=object), "bin": tensor.data}
    resp, headers = encode_response("m", None, out, binary_outputs={"bin"})
    doc, arrays = split_response(resp, headers)
    assert doc["outputs"][0]["data"] == ["héllo", "w"]
    assert arrays["bin"].tolist() == [b"\x00\xff", b"", b"abc"]
    # Non-UTF-8 bytes cannot travel as JSON text: the client is told how to ask.
    with pytest.raises(V2Error, match="binary_data"):
        encode_response("m", None, {"bin": tensor.data})
    # numpy str arrays are BYTES too
    resp, headers = encode_response("m", None, {"u": np.array(["ab", "c"])})
    assert orjson.loads(resp)["outputs"][0] == {
        "name": "u", "datatype": "BYTES", "shape": [2], "data": ["ab", "c"]}  # fmt: skip


def test_mixed_binary_and_json_outputs_follow_requested_order() -> None:
    req = decode_request(
        orjson.dumps(
            {
                "parameters": {"binary_data_output": True},
                "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                "outputs": [
                    {"name": "c"},
                    {"name": "a", "parameters": {"binary_data": False}},
                    {"name": "b", "parameters": {"binary_data": True}},
                ],
            }
        )
    )
    # binary_data on an output overrides binary_data_output (extension_binary_data.md)
    assert binary_output_names(req, ["a", "b", "c"]) == {"b", "c"}
    outputs: dict[str, np.ndarray[Any, Any]] = {
        "a": np.array([1, 2], dtype=np.int64),
        "b": np.array([[1.5]], dtype=np.float32),
        "c": np.array([True]),
        "unrequested": np.zeros(3),
    }
    resp, headers = encode_response_for(req, "m", "2", outputs)
    doc, arrays = split_response(resp, headers)
    assert [o["name"] for o in doc["outputs"]] == ["c", "a", "b"]
    assert doc["outputs"][1]["data"] == [1, 2]
    assert "data" not in doc["outputs"][0] and "data" not in doc["outputs"][2]
    for name in "abc":
        np.testing.assert_array_equal(arrays[name], outputs[name])


def test_binary_data_output_without_outputs_makes_all_binary() -> None:
    # tritonclient sets binary_data_output when no outputs are given.
    req = decode_request(
        b'{"parameters":{"binary_data_output":true},'
        b'"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}'
    )
    assert req.output_names is None
    resp, headers = encode_response_for(
        req, "m", "1", {"p": np.ones((1, 10), np.float32), "l": np.array([3], np.int64)}
    )
    doc, arrays = split_response(resp, headers)
    assert [o["name"] for o in doc["outputs"]] == ["p", "l"]
    assert all("binary_data_size" in o["parameters"] for o in doc["outputs"])
    assert arrays["l"].tolist() == [3]


def test_requesting_an_unknown_output_is_a_v2_error() -> None:
    req = decode_request(
        b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],'
        b'"outputs":[{"name":"nope"}]}'
    )
    with pytest.raises(V2Error, match="unknown output 'nope'; the model has probabilities"):
        encode_response_for(req, "m", "1", {"probabilities": np.zeros(2)})


def test_response_parameters_and_non_finite_values() -> None:
    resp, _ = encode_response(
        "m",
        "1",
        {"y": np.array([np.nan, np.inf, 1.0], dtype=np.float32)},
        request_id="r",
        parameters={"queue_ms": 1.5},
    )
    doc = orjson.loads(resp)  # must stay valid JSON
    assert doc["parameters"] == {"queue_ms": 1.5}
    assert doc["outputs"][0]["data"] == [None, None, 1.0]


def test_non_contiguous_and_big_endian_outputs() -> None:
    arr = np.arange(12, dtype=">i8").reshape(3, 4)[:, ::2]
    for binary in (None, "all"):
        resp, headers = encode_response("m", None, {"y": arr}, binary_outputs=binary)
        _, arrays = split_response(resp, headers)
        np.testing.assert_array_equal(arrays["y"], arr)


def test_zero_size_and_scalar_tensors() -> None:
    req = decode_request(
        b'{"inputs":[{"name":"e","shape":[0,4],"datatype":"INT64","data":[]},'
        b'{"name":"s","shape":[],"datatype":"FP64","data":[2.5]}]}'
    )
    assert req.inputs[0].data.shape == (0, 4) and req.inputs[0].data.dtype == np.int64
    assert req.inputs[1].data.shape == () and float(req.inputs[1].data) == 2.5
    resp, _ = encode_response("m", None, req.arrays())
    assert orjson.loads(resp)["outputs"][1] == {
        "name": "s", "datatype": "FP64", "shape": [], "data": [2.5]}  # fmt: skip


def test_raw_binary_request() -> None:
    # extension_binary_data.md, "Raw Binary Request": header length 0, the body
    # is the single input's bytes, every output comes back binary.
    raw = np.arange(128, dtype=np.float32).tobytes()
    req = decode_request(raw, BINARY_CONTENT_TYPE, 0)
    assert req.inputs == [] and req.raw_input is not None
    bound = bind_raw_input(req, "input", "FP32", [1, -1])
    assert bound.inputs[0].shape == (1, 128)
    np.testing.assert_array_equal(bound.inputs[0].data.ravel(), np.arange(128))
    assert binary_output_names(bound, ["a", "b"]) == {"a", "b"}
    with pytest.raises(V2Error, match="does not fit"):
        bind_raw_input(req, "input", "FP32", [1, -1, 3])
    with pytest.raises(V2Error, match="needs 256"):
        bind_raw_input(req, "input", "FP32", [64])
    with pytest.raises(V2Error, match="more than one variable"):
        bind_raw_input(req, "input", "FP32", [-1, -1])
    text = bind_raw_input(decode_request(b"hello", None, 0), "t", "BYTES", [-1])
    assert text.inputs[0].data.tolist() == [b"hello"]
    with pytest.raises(V2Error, match="needs a body"):
        decode_request(b"", None, 0)
    plain = decode_request(b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}')
    assert bind_raw_input(plain, "input", "FP32", [1]) is plain


# -- errors ------------------------------------------------------------------------


def _input(**fields: Any) -> bytes:
    tensor = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}
    tensor.update(fields)
    # stdlib json: it writes integers beyond 64 bits, which orjson reads back as floats
    return json.dumps({"inputs": [{k: v for k, v in tensor.items() if v is not None}]}).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{nope", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", "'inputs' must be a non-empty array"),
        (b'{"inputs": []}', "'inputs' must be a non-empty array"),
        (b'{"inputs": [1]}', r"inputs\[0\] must be a JSON object"),
        (b'{"id": 42, "inputs": [{}]}', "'id' must be a string"),
        (b'{"parameters": [1], "inputs": [{}]}', "'parameters' of the request"),
        (_input(name=None), r"inputs\[0\] needs a 'name'"),
        (_input(datatype=None), "'x' needs a 'datatype'"),
        (_input(datatype="FLOAT32"), "unknown datatype 'FLOAT32'; expected one of BOOL"),
        (_input(datatype="BF16"), "unknown datatype 'BF16'"),
        (_input(shape=None), "'x' needs a 'shape' array"),
        (_input(shape=[2.0]), "must hold integers only"),
        (_input(shape=[True, 2]), "must hold integers only"),
        (_input(shape=[-1, 2]), "has a negative dimension"),
        (_input(shape=[1] * 40), "40 dimensions; at most 32"),
        (_input(data=None), "'x' has no 'data'"),
        (_input(data=7), "'data' must be a JSON array"),
        (_input(data=[1, 2, 3]), r"'x' has 3 data elements but shape \[2\] needs 2"),
        (_input(data=[[1, 2], [3]]), "evenly nested"),
        (_input(data=["a", "b"]), "FP32 data must be numbers"),
        (_input(data=[None, 1]), "FP32 data must be numbers"),
        (_input(datatype="INT64", data=[1.5, 2]), "INT64 data must be integers"),
        (_input(datatype="INT64", data=[True, False]), "INT64 data must be integers"),
        (_input(datatype="UINT8", data=[1, 256]), r"out of range for UINT8 \(0\.\.255\)"),
        (_input(datatype="UINT8", data=[-1, 0]), "out of range for UINT8"),
        (_input(datatype="INT64", data=[1, 2**64]), "INT64 data must be integers"),
        (_input(datatype="BOOL", data=[1, 0]), "BOOL data must be true/false"),
        (_input(datatype="BYTES", data=["a", 1]), "BYTES data must be strings, got a number"),
        (_input(parameters=[]), "'parameters' of input 'x'"),
        (_input(parameters={"shared_memory_region": "r"}), "shared-memory extension"),
        (
            orjson.dumps(
                {
                    "inputs": [
                        {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
                        {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
                    ]
                }
            ),
            "'x' is given twice",
        ),
        (
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"outputs":{}}',
            "'outputs' must be an array",
        ),
        (
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"outputs":[{}]}',
            r"outputs\[0\] needs a 'name'",
        ),
        (
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],'
            b'"outputs":[{"name":"y"},{"name":"y"}]}',
            "output 'y' is requested twice",
        ),
        (
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],'
            b'"outputs":[{"name":"y","parameters":{"binary_data":"yes"}}]}',
            "binary_data must be true or false",
        ),
        (
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],'
            b'"outputs":[{"name":"y","parameters":{"classification":3}}]}',
            "'classification' is not supported",
        ),
        (
            b'{"parameters":{"priority":-1},'
            b'"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}',
            "parameters.priority must be a non-negative integer",
        ),
        (
            b'{"parameters":{"timeout":"1s"},'
            b'"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}',
            "parameters.timeout must be a non-negative integer",
        ),
    ],
)
def test_json_errors_name_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(V2Error, match=message):
        decode_request(body, JSON_CONTENT_TYPE, None)


def test_octet_stream_without_header_length_gets_a_hint() -> None:
    raw = np.zeros(4, np.float32).tobytes()
    with pytest.raises(V2Error, match="needs the Inference-Header-Content-Length header"):
        decode_request(raw, "application/octet-stream", None)


def _binary_request(sizes: list[int], payload: bytes, datatype: str = "FP32") -> tuple[bytes, int]:
    inputs = [
        {"name": f"in{i}", "shape": [2], "datatype": datatype,
         "parameters": {"binary_data_size": s}}
        for i, s in enumerate(sizes)
    ]  # fmt: skip
    return binary_body({"inputs": inputs}, payload)


@pytest.mark.parametrize(
    ("sizes", "payload", "datatype", "message"),
    [
        ([8, 8], bytes(12), "FP32", "'in1' declares binary_data_size 8 but only 4 bytes"),
        ([8], bytes(12), "FP32", "is 12 bytes but the inputs' binary_data_size add up to 8"),
        ([4], bytes(4), "FP32", r"binary_data_size is 4 bytes but shape \[2\] of FP32 needs 8"),
        ([-8], bytes(8), "FP32", "binary_data_size must be a non-negative integer"),
        ([2], bytes([1, 2]), "BOOL", "BOOL elements must be bytes 0 or 1"),
        ([6], bytes_tensor(b"ab"), "BYTES", "2 BYTES elements need at least 8"),
        ([10], bytes_tensor(b"ab", b"c")[:-1], "BYTES", "element 1 claims 1 bytes but only 0"),
        ([12], bytes_tensor(b"ab", b"c") + b"\x00", "BYTES", "its 2 BYTES elements use 11"),
    ],
)
def test_binary_errors_name_the_problem(
    sizes: list[int], payload: bytes, datatype: str, message: str
) -> None:
    body, length = _binary_request(sizes, payload, datatype)
    with pytest.raises(V2Error, match=message):
        decode_request(body, BINARY_CONTENT_TYPE, length)


def test_binary_header_errors() -> None:
    body, length = _binary_request([8], bytes(8))
    with pytest.raises(V2Error, match="Inference-Header-Content-Length is 9999 but the body"):
        decode_request(body, None, 9999)
    with pytest.raises(V2Error, match="no Inference-Header-Content-Length header"):
        decode_request(body[:length], None, None)
    with pytest.raises(V2Error, match="not valid JSON"):
        decode_request(body, None, length - 1)
    both = _input(parameters={"binary_data_size": 8})
    with pytest.raises(V2Error, match=r"both 'data' and parameters\.binary_data_size"):
        decode_request(both + bytes(8), None, len(both))


def test_parse_header_length() -> None:
    assert parse_header_length(None) is None
    assert parse_header_length("17") == 17
    assert parse_header_length(b" 0 ") == 0
    for bad in (
        "-1",
        "abc",
        "1e3",
        "",
        "\uff11\uff12",
    ):  # fullwidth digits: isdigit() but not ASCII
        with pytest.raises(V2Error, match="non-negative integer"):
            parse_header_length(bad)


# -- memory bombs ------------------------------------------------------------------


@pytest.mark.parametrize("shape", [[10**9, 10**9], [2**62, 2**62, 2**62], [2**63 - 1], [2**26 + 1]])
def test_memory_bomb_shapes_are_rejected_before_allocating(shape: list[int]) -> None:
    for body, length in (
        (_input(shape=shape, data=[1.0]), None),
        _binary_request_with_shape(shape),
        (_input(shape=shape, datatype="BYTES", data=["a"]), None),
    ):
        tracemalloc.start()
        try:
            with pytest.raises(V2Error, match="elements; the limit is"):
                decode_request(body, None, length)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # Refused before anything the size of the claim was allocated.
        assert peak < 64 * 1024, peak


def test_dims_beyond_64_bits_are_not_integers() -> None:
    with pytest.raises(V2Error, match="must hold integers only"):
        decode_request(_input(shape=[10**30], data=[1.0]))


def _binary_request_with_shape(shape: list[int]) -> tuple[bytes, int]:
    return binary_body(
        {"inputs": [{"name": "x", "shape": shape, "datatype": "FP64",
                     "parameters": {"binary_data_size": 8}}]},
        bytes(8),
    )  # fmt: skip


def test_max_elements_is_configurable() -> None:
    body = _input(shape=[4], data=[1, 2, 3, 4])
    assert decode_request(body, max_elements=4).inputs[0].data.size == 4
    with pytest.raises(V2Error, match="has 4 elements; the limit is 3"):
        decode_request(body, max_elements=3)
    with pytest.raises(V2Error, match="the limit is 3"):
        bind_raw_input(decode_request(bytes(16), None, 0), "x", "FP32", [-1], max_elements=3)


def test_zero_element_shape_with_huge_dims_is_cheap() -> None:
    body = _input(shape=[0, 10**12], data=[])
    assert decode_request(body).inputs[0].data.shape == (0, 10**12)


# -- datatypes, priority and timeout -------------------------------------------------


def test_datatype_mappings() -> None:
    pairs = {
        "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
        "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
        "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    }  # fmt: skip
    for name, dtype in pairs.items():
        assert v2_to_numpy_dtype(name) == np.dtype(dtype)
        assert numpy_to_v2_datatype(np.dtype(dtype)) == name
        assert numpy_to_v2_datatype(dtype) == name
    assert v2_to_numpy_dtype("BYTES") == np.dtype(object)
    for dtype in (np.object_, np.str_, np.bytes_):
        assert numpy_to_v2_datatype(dtype) == "BYTES"
    with pytest.raises(V2Error, match="unknown datatype 'fp32'"):
        v2_to_numpy_dtype("fp32")  # names are case-sensitive (required_api.md)
    with pytest.raises(TypeError, match="complex128"):
        numpy_to_v2_datatype(np.complex128)


def _with_parameters(parameters: dict[str, Any]) -> InferRequest:
    return decode_request(
        orjson.dumps(
            {
                "parameters": parameters,
                "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
            }
        )
    )


@pytest.mark.parametrize(
    ("priority", "urgency"),
    [(None, None), (0, None), (1, 0), (2, 1), (4, 3), (8, 7), (9, 7), (10**6, 7)],
)
def test_priority_maps_triton_levels_to_urgency(priority: int | None, urgency: int | None) -> None:
    # extension_schedule_policy.md: 0 is the default level, 1 the highest.
    params = {} if priority is None else {"priority": priority}
    assert request_priority(_with_parameters(params)) == urgency


@pytest.mark.parametrize(
    ("timeout", "seconds"), [(None, None), (0, None), (1, 1e-6), (250_000, 0.25), (3_000_000, 3.0)]
)
def test_timeout_is_microseconds(timeout: int | None, seconds: float | None) -> None:
    params = {} if timeout is None else {"timeout": timeout}
    assert request_timeout_s(_with_parameters(params)) == seconds


@pytest.mark.parametrize("bad", [True, 1.5, "3"])
def test_priority_and_timeout_must_be_integers(bad: Any) -> None:
    for key in ("priority", "timeout"):
        with pytest.raises(V2Error, match=f"parameters.{key} must be a non-negative integer"):
            _with_parameters({key: bad})


def test_error_body() -> None:
    assert orjson.loads(error_body('bad "input" x')) == {"error": 'bad "input" x'}
