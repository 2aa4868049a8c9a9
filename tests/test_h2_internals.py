"""The private internals of h2, hpack and hyperframe that rawserve's HTTP/2
adapter (rawserve/protocols/http2/) overrides, calls or reads.

pyproject.toml pins the three libraries to the versions tested; this test is
what fails, naming the internal, when one of them changes anyway (a pin
loosened, a distribution's own build). Each entry says where rawserve uses
the internal, so the failure says what to re-read. Add an entry with every
new private name the adapter touches.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import h2._typing
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import h2.stream
import hpack
import hpack.hpack
import hpack.huffman
import hpack.huffman_constants
import hpack.huffman_table
import hpack.struct
import hpack.table
import pytest

# (what, the callable, its parameter names in order, where rawserve uses it)
SIGNATURES: list[tuple[str, Callable[..., Any], list[str], str]] = []
# (what, a getter that raises when the internal is gone, where rawserve uses it)
ATTRIBUTES: list[tuple[str, Callable[[], Any], str]] = []


def _method(owner: Any, name: str, params: list[str], where: str) -> None:
    what = f"{owner.__module__}.{owner.__qualname__}.{name}"
    SIGNATURES.append((what, lambda: getattr(owner, name), params, where))


def _function(module: Any, name: str, params: list[str], where: str) -> None:
    SIGNATURES.append((f"{module.__name__}.{name}", lambda: getattr(module, name), params, where))


H2 = h2.connection.H2Connection
CORE = "protocols/http2/core.py"
_method(H2, "_receive_frame", ["self", "frame"], f"{CORE}: Core._receive_frame overrides it")
_method(H2, "_receive_headers_frame", ["self", "frame"], f"{CORE}: Core overrides it")
_method(H2, "_prepare_for_sending", ["self", "frames"], f"{CORE}: Core._dispatch_frame")
_method(H2, "_stream_is_closed_by_reset", ["self", "stream_id"], f"{CORE}: Core._dispatch_frame")
_method(H2, "_stream_is_closed_by_end", ["self", "stream_id"], f"{CORE}: Core._dispatch_frame")
_method(H2, "_terminate_connection", ["self", "error_code"], f"{CORE}: Core.receive_data")
_function(
    h2.connection,
    "_decode_headers",
    ["decoder", "encoded_header_block"],
    f"{CORE}: Core._refuse_stream, Core._unended_trailers",
)

FB = h2.frame_buffer.FrameBuffer
FRAMING = "protocols/http2/framing.py"
_method(FB, "__init__", ["self", "server"], f"{FRAMING}: FrameBuffer.__init__")
_method(FB, "_update_header_buffer", ["self", "f"], f"{FRAMING}: FrameBuffer overrides it")

HPACK = "protocols/http2/hpack_codec.py"
DEC = hpack.Decoder
_method(DEC, "decode", ["self", "data", "raw"], f"{HPACK}: FastDecoder.decode overrides it")
for _name in (
    "_decode_indexed",
    "_decode_literal_index",
    "_decode_literal_no_index",
    "_update_encoding_context",
):
    _method(DEC, _name, ["self", "data"], f"{HPACK}: FastDecoder.decode")
_method(DEC, "_assert_valid_table_size", ["self"], f"{HPACK}: FastDecoder.decode")
ENC = hpack.Encoder
_method(
    ENC, "add", ["self", "to_add", "sensitive", "huffman"], f"{HPACK}: FastEncoder.add overrides it"
)
_method(ENC, "encode", ["self", "headers", "huffman"], f"{HPACK}: FastEncoder.encode overrides it")
_method(ENC, "_encode_table_size_change", ["self"], f"{HPACK}: FastEncoder.encode")
_method(
    ENC,
    "_encode_literal",
    ["self", "name", "value", "indexbit", "huffman"],
    f"{HPACK}: FastEncoder",
)
_method(ENC, "_encode_indexed", ["self", "index"], f"{HPACK}: FastEncoder.add")
_method(
    ENC,
    "_encode_indexed_literal",
    ["self", "index", "value", "indexbit", "huffman"],
    f"{HPACK}: FastEncoder.add",
)
TABLE = hpack.table.HeaderTable
_method(TABLE, "add", ["self", "name", "value"], f"{HPACK}: FastDecoder, FastEncoder")
_method(TABLE, "search", ["self", "name", "value"], f"{HPACK}: FastEncoder.add")
_function(hpack.table, "table_entry_size", ["name", "value"], f"{HPACK}: FastDecoder.decode")
_function(hpack.huffman_table, "decode_huffman", ["huffman_string"], f"{HPACK}: FastDecoder")
_method(
    hpack.huffman.HuffmanEncoder,
    "encode",
    ["self", "bytes_to_encode"],
    f"{HPACK}: _LinearHuffman replaces Encoder.huffman_coder",
)
_method(
    h2.settings.Settings,
    "validate_received_setting",
    ["self", "setting", "value"],
    "protocols/http2/connection.py: H2Connection.initiate_upgrade",
)


def _instance_attr(what: str, make: Callable[[], Any], name: str, kind: type, where: str) -> None:
    def get() -> Any:
        value = getattr(make(), name)
        assert isinstance(value, kind), f"is {type(value).__name__}, not {kind.__name__}"
        return value

    ATTRIBUTES.append((f"{what}.{name}", get, where))


def _assert(condition: bool) -> None:
    assert condition


def _h2() -> h2.connection.H2Connection:
    return H2(h2.config.H2Configuration(client_side=False))


_instance_attr("H2Connection()", _h2, "_frame_dispatch_table", dict, f"{CORE}: _dispatch_frame")
_instance_attr("H2Connection()", _h2, "_closed_streams", dict, f"{CORE}: Core._refuse_stream")
_instance_attr("FrameBuffer()", lambda: FB(server=True), "_data", bytearray, f"{FRAMING}: __next__")
_instance_attr("FrameBuffer()", lambda: FB(server=True), "_headers_buffer", list, FRAMING)
_instance_attr("Encoder()", ENC, "table_size_changes", list, f"{HPACK}: FastEncoder")
_instance_attr(
    "Encoder()", ENC, "huffman_coder", hpack.huffman.HuffmanEncoder, f"{HPACK}: FastEncoder"
)
_instance_attr(
    "StreamClosedError(1)", lambda: h2.exceptions.StreamClosedError(1), "_events", list, CORE
)
ATTRIBUTES += [
    (
        "h2.stream.StreamClosedBy.SEND_RST_STREAM",
        lambda: h2.stream.StreamClosedBy.SEND_RST_STREAM,
        CORE,
    ),
    ("h2.stream.StreamState.OPEN", lambda: h2.stream.StreamState.OPEN, CORE),
    ("h2._typing.Buffer", lambda: h2._typing.Buffer, CORE),
    ("hpack.table.HeaderTable.STATIC_TABLE", lambda: TABLE.STATIC_TABLE, HPACK),
    ("hpack.table.HeaderTable.STATIC_TABLE_LENGTH", lambda: TABLE.STATIC_TABLE_LENGTH, HPACK),
    ("HeaderTable().dynamic_entries", lambda: TABLE().dynamic_entries, HPACK),
    ("hpack.hpack.INDEX_INCREMENTAL", lambda: hpack.hpack.INDEX_INCREMENTAL, HPACK),
    ("hpack.hpack.INDEX_NEVER", lambda: hpack.hpack.INDEX_NEVER, HPACK),
    ("hpack.struct.HeaderTuple", lambda: hpack.struct.HeaderTuple, HPACK),
    ("hpack.struct.NeverIndexedHeaderTuple", lambda: hpack.struct.NeverIndexedHeaderTuple, HPACK),
    (
        "hpack.huffman_constants.REQUEST_CODES/_LENGTH (257 codes)",
        lambda: _assert(
            len(hpack.huffman_constants.REQUEST_CODES) == 257
            and len(hpack.huffman_constants.REQUEST_CODES_LENGTH) == 257
        ),
        f"{HPACK}: huffman_encode",
    ),
    (
        "hpack.Encoder.header_table_size (a property)",
        lambda: _assert(isinstance(ENC.__dict__.get("header_table_size"), property)),
        f"{HPACK}: FastEncoder overrides it",
    ),
    ("HeaderTable().maxsize", lambda: TABLE().maxsize, f"{HPACK}: FastEncoder"),
    ("HeaderTable().resized", lambda: TABLE().resized, f"{HPACK}: FastEncoder"),
]


@pytest.mark.parametrize(
    ("what", "get", "params", "where"), SIGNATURES, ids=[s[0] for s in SIGNATURES]
)
def test_overridden_or_called_internal_keeps_its_signature(
    what: str, get: Callable[[], Any], params: list[str], where: str
) -> None:
    try:
        target = get()
    except AttributeError:
        pytest.fail(f"{what} is gone; rawserve relies on it in {where}")
    actual = list(inspect.signature(target).parameters)
    assert actual == params, (
        f"{what} changed its signature: ({', '.join(actual)}), rawserve was written against "
        f"({', '.join(params)}); re-read {where}"
    )


@pytest.mark.parametrize(("what", "get", "where"), ATTRIBUTES, ids=[a[0] for a in ATTRIBUTES])
def test_read_internal_still_exists(what: str, get: Callable[[], Any], where: str) -> None:
    try:
        get()
    except (AttributeError, ImportError, AssertionError) as exc:
        pytest.fail(f"{what} is gone or changed ({exc}); rawserve relies on it in {where}")


def test_dispatch_table_still_maps_every_frame_class_to_a_handler() -> None:
    # Core._dispatch_frame indexes the table by frame class and unpacks
    # (frames, events) from the handler.
    table = _h2()._frame_dispatch_table
    from hyperframe.frame import DataFrame, HeadersFrame, SettingsFrame, WindowUpdateFrame

    for kind in (DataFrame, HeadersFrame, SettingsFrame, WindowUpdateFrame):
        assert callable(table.get(kind)), (
            f"h2's _frame_dispatch_table has no handler for {kind.__name__}; "
            f"re-read {CORE}: Core._dispatch_frame"
        )


def test_installed_versions_are_the_pinned_ones() -> None:
    """pyproject.toml pins the exact versions this file was checked against."""
    import re
    from importlib.metadata import version
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    for dist in ("h2", "hpack", "hyperframe"):
        pin = re.search(rf'"{dist}==([0-9.]+)"', text)
        assert pin is not None, f"pyproject.toml does not pin {dist}=="
        assert version(dist) == pin.group(1), (
            f"{dist} {version(dist)} is installed but pyproject.toml pins {pin.group(1)}: "
            "re-run this file's checks against the new version before moving the pin"
        )
