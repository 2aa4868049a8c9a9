"""Fuzzers for the parsers a client reaches above the protocol layer: the V2
JSON and binary tensor codecs, /predict's JSON rows and .npy uploads,
multipart and urlencoded bodies, the ``priority`` field, query strings and
path parameters.

The property everywhere: a well-formed answer or a refusal the protocol
defines (V2Error -> 400, BadInput -> 422, a 4xx from the app), never an
unhandled exception. Bounded in CI (``FUZZ_EXAMPLES`` examples each, a few
seconds in all); ``tools/fuzz.py --minutes N`` runs them longer. What they
found is kept as regular tests (see the ``found`` cases at the bottom).
"""

from __future__ import annotations

import io
import json
import os
import struct
from typing import Annotated, Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawserve import File, Form, Query, RawServe, UploadFile
from rawserve.core.priority import Priority, parse_priority_field
from rawserve.inference import v2
from rawserve.inference.app.errors import BadInput
from rawserve.inference.app.predict import _json_rows, _load_npy
from tests.test_app import call

FUZZ_EXAMPLES = int(os.environ.get("RAWSERVE_FUZZ_EXAMPLES", "150"))
fuzz = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_ELEMENTS = 1 << 16

# -- JSON values shaped like what clients send ----------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=30,
)
datatypes = st.sampled_from([*v2._DATATYPES, "FP8", "", "fp32"]) | json_values
shapes = (
    st.lists(
        st.integers(min_value=-2, max_value=6)
        | st.sampled_from([2**31, 2**63, 2**70])
        | json_values,
        max_size=4,
    )
    | json_values
)


def _numbers_for(shape: Any) -> Any:
    count = 1
    if isinstance(shape, list):
        for d in shape:
            count *= d if isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 8 else 1
    return st.lists(
        st.integers(-300, 300) | st.floats(width=32, allow_nan=False), max_size=count + 2
    )


@st.composite
def v2_inputs(draw: st.DrawFn) -> dict[str, Any]:
    shape = draw(shapes)
    tensor: dict[str, Any] = {
        "name": draw(st.sampled_from(["input", "", "x"]) | json_values),
        "datatype": draw(datatypes),
        "shape": shape,
    }
    choice = draw(st.integers(0, 3))
    if choice == 0:
        tensor["data"] = draw(_numbers_for(shape))
    elif choice == 1:
        tensor["data"] = draw(json_values)
    elif choice == 2:
        tensor["parameters"] = {"binary_data_size": draw(st.integers(-1, 64) | json_values)}
    return tensor


@st.composite
def v2_documents(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    doc: dict[str, Any] = {"inputs": draw(st.lists(v2_inputs(), max_size=3) | json_values)}
    if draw(st.booleans()):
        doc["outputs"] = draw(
            st.lists(st.fixed_dictionaries({"name": st.text(max_size=4) | json_values}), max_size=2)
            | json_values
        )
    if draw(st.booleans()):
        doc["parameters"] = draw(
            st.fixed_dictionaries({"priority": json_values, "timeout": json_values}) | json_values
        )
    if draw(st.booleans()):
        doc["id"] = draw(json_values)
    return doc


def _decodes_or_refuses(body: bytes, header_length: int | None, content_type: str | None) -> None:
    try:
        req = v2.decode_request(body, content_type, header_length, max_elements=MAX_ELEMENTS)
    except v2.V2Error as exc:
        assert str(exc)
        assert "0x" not in str(exc), str(exc)  # no object reprs with addresses
        return
    for tensor in req.inputs:
        assert tensor.data.size <= MAX_ELEMENTS
        assert tuple(tensor.data.shape) == tensor.shape
    v2.request_priority(req)
    v2.request_timeout_s(req)


@fuzz
@given(v2_documents())
def test_v2_json_codec_decodes_or_refuses(doc: Any) -> None:
    _decodes_or_refuses(json.dumps(doc).encode(), None, "application/json")


@fuzz
@given(st.binary(max_size=300), st.sampled_from([None, "application/octet-stream"]))
def test_v2_codec_on_arbitrary_bytes(body: bytes, content_type: str | None) -> None:
    _decodes_or_refuses(body, None, content_type)


@fuzz
@given(v2_documents(), st.binary(max_size=200), st.integers(-3, 3))
def test_v2_binary_codec_decodes_or_refuses(doc: Any, tail: bytes, skew: int) -> None:
    header = json.dumps(doc).encode()
    length = max(0, len(header) + skew)
    _decodes_or_refuses(header + tail, length, "application/octet-stream")


@fuzz
@given(st.lists(st.binary(max_size=8), max_size=6), st.integers(0, 8), st.binary(max_size=6))
def test_v2_bytes_tensors_decode_or_refuse(elements: list[bytes], count: int, junk: bytes) -> None:
    raw = b"".join(struct.pack("<I", len(e)) + e for e in elements) + junk
    doc = {
        "inputs": [
            {
                "name": "s",
                "datatype": "BYTES",
                "shape": [count],
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    header = json.dumps(doc).encode()
    _decodes_or_refuses(header + raw, len(header), None)


@fuzz
@given(
    st.binary(max_size=64),
    st.sampled_from(["BYTES", "FP32", "INT8", "BOOL"]),
    st.lists(st.integers(-1, 9), max_size=3),
)
def test_v2_raw_binary_requests_bind_or_refuse(raw: bytes, datatype: str, shape: list[int]) -> None:
    req = v2.decode_request(raw or b"x", None, 0)
    try:
        bound = v2.bind_raw_input(req, "input", datatype, shape, max_elements=MAX_ELEMENTS)
    except v2.V2Error:
        return
    assert bound.raw_input is None and len(bound.inputs) == 1


@fuzz
@given(
    st.dictionaries(st.text(max_size=5), st.lists(st.integers(-3, 3), max_size=4), max_size=3),
    st.sets(st.text(max_size=5), max_size=3),
)
def test_v2_response_encoder_round_trips_or_refuses(
    outputs: dict[str, list[int]], binary: set[str]
) -> None:
    arrays = {k: np.asarray(v, dtype=np.int32) for k, v in outputs.items()}
    try:
        body, headers = v2.encode_response("m", "1", arrays, binary_outputs=binary)
    except v2.V2Error:
        return
    length = headers.get(v2.HEADER_LENGTH_HEADER)
    head = json.loads(body[: int(length)] if length else body)
    assert [o["name"] for o in head["outputs"]] == list(arrays)


# -- /predict's inputs ---------------------------------------------------------------


@fuzz
@given(
    st.one_of(
        st.fixed_dictionaries({"inputs": json_values}),
        st.fixed_dictionaries(
            {"inputs": st.lists(st.lists(st.integers(-9, 9) | scalars, max_size=5), max_size=4)}
        ),
        json_values,
    )
)
def test_predict_json_rows_parse_or_refuse(payload: Any) -> None:
    try:
        array = _json_rows(json.dumps(payload).encode(), MAX_ELEMENTS)
    except BadInput as exc:
        assert str(exc)
        return
    assert array.dtype == np.float64 and array.ndim in (1, 2)
    # Straight to the model's FP32 when every value fits: the same numbers as
    # the float64 array cast, else the float64 array itself (validate names
    # the value out of range).
    narrow = _json_rows(json.dumps(payload).encode(), MAX_ELEMENTS, np.dtype(np.float32))
    if narrow.dtype == np.float32:
        with np.errstate(over="ignore"):
            assert np.array_equal(narrow, array.astype(np.float32))
    else:
        assert np.array_equal(narrow, array)
        assert np.abs(array).max() > np.finfo(np.float32).max


_FP32_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize(
    "value",
    [
        _FP32_MAX,
        -_FP32_MAX,
        _FP32_MAX + 2.0**102,  # above the largest float32, still rounds to it
        float(np.nextafter(_FP32_MAX + 2.0**103, 0)),
        _FP32_MAX + 2.0**103,  # the first that rounds to infinity
        -(_FP32_MAX + 2.0**103),
        1e300,
        2**24 + 1,  # integers FP32 cannot hold exactly
        2**60 + 12345,
        10**38 * 3,
        10**39,
        1.5e-45,  # subnormal in FP32
        0.1,
    ],
)
def test_predict_json_rows_at_the_fp32_edges(value: float | int) -> None:
    # The FP32 path takes what np.array(..., dtype=float32) would take without
    # overflowing, and makes the same numbers; past it, float64 goes on.
    for payload in ({"inputs": [1, value, 2]}, {"inputs": [[1, 2, 3], [4, value, 6]]}):
        body = json.dumps(payload).encode()
        wide = _json_rows(body, MAX_ELEMENTS)
        narrow = _json_rows(body, MAX_ELEMENTS, np.dtype(np.float32))
        assert narrow.shape == wide.shape
        with np.errstate(over="ignore"):
            reference = np.array(payload["inputs"], dtype=np.float32)
        if np.isfinite(reference).all():
            assert narrow.dtype == np.float32
            assert np.array_equal(narrow, reference)
        else:
            assert narrow.dtype == np.float64
            assert np.array_equal(narrow, wide)


@st.composite
def npy_files(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        buf = io.BytesIO()
        dtype = draw(st.sampled_from(["<f4", "<f8", "<i2", "|u1", "|b1", "<U3", ">f4"]))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        np.save(buf, np.zeros(shape, dtype=dtype))
        data = bytearray(buf.getvalue())
        for _ in range(draw(st.integers(0, 3))):  # flip some bytes
            if data:
                i = draw(st.integers(0, len(data) - 1))
                data[i] = draw(st.integers(0, 255))
        return bytes(data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data)
    header = draw(
        st.sampled_from(
            [
                "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }",
                "{'descr': %s, 'fortran_order': False, 'shape': (2,), }",
                "{'descr': '<f8', 'fortran_order': %s, 'shape': (1,), }",
                "%s",
            ]
        )
    ) % draw(st.sampled_from(["10**9, 10**9", "object()", "'O'", "-1,", "(", "True", ""]))
    text = header.encode()
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + draw(st.binary(max_size=32))


@fuzz
@given(npy_files())
def test_npy_uploads_load_or_refuse_without_internals(data: bytes) -> None:
    try:
        array = _load_npy(data, MAX_ELEMENTS)
    except BadInput as exc:
        message = str(exc)
        assert "0x" not in message and "allocate" not in message, message
        return
    assert array.size <= MAX_ELEMENTS and array.dtype.kind in "biuf"


# -- the priority field ----------------------------------------------------------------

sf_pieces = st.sampled_from(["u", "i", "u=", "i=", "=", ",", ";", " ", "?0", "?1", "-", '"', "*"])


@fuzz
@given(st.lists(sf_pieces | st.text(max_size=4) | st.just("9" * 5000), max_size=8).map("".join))
def test_priority_field_parses_to_a_priority(value: str) -> None:
    priority = parse_priority_field(value)
    assert isinstance(priority, Priority) and 0 <= priority.urgency <= 7
    assert parse_priority_field(value.encode("utf-8")) == priority or not value.isascii()


# -- the app surface: query strings, path parameters, forms -------------------------------

app = RawServe()


@app.get("/items/{item_id}/{name}")
async def item(
    item_id: int,
    name: str,
    q: Annotated[list[str] | None, Query()] = None,
    limit: int = 10,
    ratio: float = 0.5,
    flag: bool = False,
) -> dict[str, Any]:
    return {"id": item_id, "name": name, "q": q, "limit": limit, "flag": flag}


@app.get("/files/{path:path}")
async def files(path: str) -> dict[str, str]:
    return {"path": path}


@app.post("/form")
async def form(
    title: Annotated[str, Form()],
    count: Annotated[int, Form()] = 0,
    upload: Annotated[UploadFile | None, File()] = None,
) -> dict[str, Any]:
    size = len(await upload.read()) if upload is not None else None
    return {"title": title, "count": count, "size": size}


url_text = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12
) | st.sampled_from(["%", "%zz", "%00", "%ff", "..", "/", "9" * 5000, "1e9999", "-0", "NaN"])


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="%/=&?") if text else text


@fuzz
@given(url_text, url_text, st.lists(st.tuples(url_text, url_text), max_size=4))
async def test_query_strings_and_path_parameters_answer_below_500(
    item_id: str, name: str, query: list[tuple[str, str]]
) -> None:
    qs = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in query)
    target = f"/items/{_quote(item_id)}/{_quote(name)}?{qs}"
    r = await call(app, "GET", target)
    # 307: the redirect that adds or drops a trailing slash.
    assert r.status in (200, 307, 404, 422), (target, r.status, r.body[:200])
    r = await call(app, "GET", f"/files/{_quote(item_id)}/{_quote(name)}?{qs}")
    assert r.status in (200, 307, 404), r.status


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    boundary = draw(st.sampled_from(["b0undary", "x", "a" * 70, "--", "ü"]))
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["title", "count", "upload", "", "x"]) | url_text)
        filename = draw(st.none() | st.sampled_from(["a.bin", "", "../x", "ü.txt"]))
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        headers = draw(
            st.sampled_from(
                [
                    f"Content-Disposition: {disposition}\r\n",
                    f"Content-Disposition: {disposition}\r\nContent-Type: text/plain\r\n",
                    "Content-Type: text/plain\r\n",
                    f"content-disposition:{disposition}\r\n",
                    "",
                ]
            )
        )
        body = draw(st.binary(max_size=40) | st.just(b"9" * 5000))
        parts.append(f"--{boundary}\r\n{headers}\r\n".encode() + body + b"\r\n")
    ending = draw(st.sampled_from([f"--{boundary}--\r\n", f"--{boundary}", "", "--\r\n"]))
    data = b"".join(parts) + ending.encode()
    if draw(st.booleans()) and data:
        cut = draw(st.integers(0, len(data)))
        data = data[:cut]
    content_type = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                "multipart/form-data",
                f'multipart/form-data; boundary="{boundary}"',
                "application/x-www-form-urlencoded",
            ]
        )
    )
    return content_type, data


@fuzz
@given(multipart_bodies())
async def test_form_bodies_answer_below_500(body: tuple[str, bytes]) -> None:
    content_type, data = body
    r = await call(app, "POST", "/form", headers={"content-type": content_type}, body=data)
    assert r.status in (200, 400, 422), (r.status, r.body[:300])


# -- what the fuzzers found, kept as regular tests ------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/items/" + "9" * 5000 + "/x",
        "/items/1/x?limit=" + "9" * 5000 + ".0",
        "/items/1/x?ratio=" + "9" * 5000,
    ],
)
async def test_found_long_numbers_in_paths_and_queries(target: str) -> None:
    r = await call(app, "GET", target)
    assert r.status in (200, 422), r.status


def test_found_empty_tensor_with_a_dimension_past_numpys_range_is_refused() -> None:
    # [0, 2**63] holds no elements, so the count check passed it, and numpy's
    # reshape raised "Maximum allowed dimension exceeded": a 500.
    doc = {"inputs": [{"name": "input", "datatype": "BOOL", "shape": [0, 2**63], "data": []}]}
    with pytest.raises(v2.V2Error, match="has no elements, but its other dimensions are larger"):
        v2.decode_request(json.dumps(doc).encode(), max_elements=MAX_ELEMENTS)
