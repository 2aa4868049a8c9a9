"""Hostile inference requests over a real server (issue 15, findings 2, 5, 6,
7 and 9): each is refused with a status and a message that says what was
wrong with the input, and what the server allocated for it is bounded by the
input's real size, not by what it claims. Assertions are on answers and
memory, never on time."""

from __future__ import annotations

import io
import json
import struct
import time
import tracemalloc
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from rawserve.core.config import InferenceSettings
from rawserve.inference.app import create_app
from rawserve.inference.app.application import InferenceApp
from tests.conftest import RunningServer, run_server
from tests.test_builtin_app import ROWS, wait_ready

MB = 1 << 20


@pytest.fixture(scope="module")
def app() -> InferenceApp:
    return create_app(InferenceSettings(max_batch_delay_ms=1.0))


@pytest.fixture(scope="module")
def srv(app: InferenceApp) -> Iterator[RunningServer]:
    with run_server(app, tls=False) as s:
        wait_ready(s)
        yield s


class Allocations:
    """Peak traced memory (all threads, numpy included) around a block, and
    what is still held once the server has let go of the request."""

    def __enter__(self) -> Allocations:
        tracemalloc.start()
        self.base = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = tracemalloc.get_traced_memory()[1] - self.base
        # The answer can reach the client a moment before the handler's frame
        # is released: wait for the memory to go, failing only if it never does.
        deadline = time.monotonic() + 10
        while True:
            self.residual = tracemalloc.get_traced_memory()[0] - self.base
            if self.residual < 2 * MB or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        tracemalloc.stop()


def parse_peak(body: bytes) -> int:
    """What parsing ``body`` as JSON takes at its peak, the floor of any decode."""
    tracemalloc.start()
    orjson.loads(body)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def infer(srv: RunningServer, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{srv.http_url}/v2/models/digits/infer",
        content=content,
        headers={"content-type": "application/json", **headers},
        timeout=60,
    )


def v2_body(data: Any, shape: list[int], datatype: str = "FP32") -> bytes:
    tensor = {"name": "input", "shape": shape, "datatype": datatype, "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


# -- finding 2: JSON tensors --------------------------------------------------------


def test_json_values_are_counted_against_the_shape_before_an_array_is_built(
    srv: RunningServer, app: InferenceApp
) -> None:
    values = 1_000_000
    body = b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [' + (
        b"0.5," * (values - 1) + b"0.5]}]}"
    )
    before = app.decoding.off_loop
    with Allocations() as mem:
        r = infer(srv, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == (
        f"input 'input' has {values} data elements but shape [1, 64] needs 64"
    )
    # A large body is decoded in a worker thread, not on the event loop.
    assert app.decoding.off_loop == before + 1
    # Parsing is the floor; the body buffer comes on top, and nothing else.
    assert mem.peak < parse_peak(body) + len(body) + 2 * MB, mem.peak
    assert mem.residual < 2 * MB, mem.residual


def test_small_json_bodies_are_decoded_inline(srv: RunningServer, app: InferenceApp) -> None:
    before = app.decoding.off_loop
    r = infer(srv, v2_body(ROWS[0], [1, 64]))
    assert r.status_code == 200, r.text
    assert app.decoding.off_loop == before


def test_predict_rows_are_counted_before_an_array_is_built(srv: RunningServer) -> None:
    rows = 300_000  # 19.2M values: past the 16M-element limit
    body = b'{"inputs": [' + b",".join([b"[" + b"0," * 63 + b"0]"] * rows) + b"]}"
    with Allocations() as mem:
        r = httpx.post(
            f"{srv.http_url}/predict",
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        )
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == (
        f"'inputs' has {rows} rows of 64 values; the limit is {1 << 24} values"
    )
    assert mem.residual < 2 * MB, mem.residual


# -- finding 5: numbers of thousands of digits --------------------------------------


def test_header_length_of_thousands_of_digits_is_400(srv: RunningServer) -> None:
    r = infer(srv, v2_body(ROWS[0], [1, 64]), **{"inference-header-content-length": "9" * 5000})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == (
        "Inference-Header-Content-Length has 5000 digits; at most 18 are allowed"
    )


# -- finding 6: BYTES element counts -------------------------------------------------


def test_bytes_tensor_claiming_millions_of_elements_allocates_nothing(
    srv: RunningServer,
) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [16_000_000],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 4},
                }
            ]
        }
    ).encode()
    with Allocations() as mem:
        r = infer(
            srv,
            header + struct.pack("<I", 0),
            **{
                "inference-header-content-length": str(len(header)),
                "content-type": "application/octet-stream",
            },
        )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == (
        "input 'input': binary_data_size is 4 bytes but 16000000 BYTES elements need at "
        "least 64000000 (4 bytes of length each)"
    )
    assert mem.peak < 4 * MB, mem.peak  # was an object array of 16M pointers: 128 MB


# -- finding 7: messages say what was wrong with the input ---------------------------


def npy_upload(srv: RunningServer, data: bytes) -> httpx.Response:
    return httpx.post(
        f"{srv.http_url}/predict",
        files={"file": ("x.npy", data, "application/octet-stream")},
        timeout=60,
    )


def npy_with_header(header: str) -> bytes:
    text = header.encode("latin-1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


@pytest.mark.parametrize(
    "header",
    [
        "{'descr': <object object at 0x7f00>, 'fortran_order': False, 'shape': (64,)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (64,), 'extra': 1}",
        "not a dict at all",
    ],
)
def test_malformed_npy_header_is_named_without_internals(srv: RunningServer, header: str) -> None:
    r = npy_upload(srv, npy_with_header(header) + bytes(256))
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "'file' is not a .npy array: its header is malformed"


def test_npy_claiming_a_huge_shape_is_refused_before_allocating(srv: RunningServer) -> None:
    data = npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (80000, 40000), }")
    with Allocations() as mem:
        r = npy_upload(srv, data)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail == f"'file' holds 3200000000 values; the limit is {1 << 24}"
    assert "allocate" not in detail and "GiB" not in detail
    assert mem.peak < 4 * MB, mem.peak


def test_npy_shorter_than_its_header_says_is_refused(srv: RunningServer) -> None:
    data = npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (64,), }")
    r = npy_upload(srv, data + bytes(100))
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == (
        "'file' declares shape [64] of float32 (256 bytes) but carries 100 bytes of data"
    )


def test_well_formed_npy_is_still_answered(srv: RunningServer) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray([ROWS[0], ROWS[1]], dtype=np.float64))
    r = npy_upload(srv, buf.getvalue())
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 2


# -- finding 9: ranges and types ----------------------------------------------------


def test_fp32_out_of_range_is_said_so_without_a_warning(srv: RunningServer) -> None:
    row = [1e300] + [0.0] * 63
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = infer(srv, v2_body(row, [1, 64]))
        p = httpx.post(f"{srv.http_url}/predict", json={"inputs": row}, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == (
        "input 'input': values out of range for FP32 (largest magnitude given: 1e+300, "
        "largest allowed: 3.40282e+38)"
    )
    assert p.status_code == 422, p.text
    assert "out of range for FP32" in p.json()["detail"]
    assert "NaN" not in p.json()["detail"]
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize(
    ("inputs", "kind"),
    [
        (["1.5"] + [0] * 63, "a string"),
        ([True] + [0] * 63, "a boolean"),
        ([[0] * 63 + [False]], "a boolean"),
        ([None] * 64, "null"),
    ],
)
def test_predict_refuses_strings_and_booleans_as_numbers(
    srv: RunningServer, inputs: list[Any], kind: str
) -> None:
    r = httpx.post(f"{srv.http_url}/predict", json={"inputs": inputs}, timeout=10)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == f"'inputs' must hold numbers only; row 0 has {kind}"


def test_empty_tensor_with_a_dimension_past_numpys_range_is_400(srv: RunningServer) -> None:
    # Found by tests/test_fuzz.py: it was a 500 from numpy's reshape.
    r = infer(srv, v2_body([], [0, 2**63], "BOOL"))
    assert r.status_code == 400, r.text
    assert r.json()["error"] == (
        f"input 'input' of shape [0, {2**63}] has no elements, but its other dimensions are "
        "larger than any array can be"
    )
