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
import h2.windows
import hpack
import hpack.hpack
import hpack.huffman
import hpack.huffman_constants
import hpack.huffman_table
import hpack.struct
import hpack.table
import pytest
from h2.connection import ConnectionState

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

_method(
    H2,
    "_begin_new_stream",
    ["self", "stream_id", "allowed_ids"],
    f"{CORE}: Core._begin_new_stream overrides it",
)
_method(
    H2,
    "acknowledge_received_data",
    ["self", "acknowledged_size", "stream_id"],
    f"{CORE}: Core.acknowledge_received_data overrides it",
)
_method(
    h2.windows.WindowManager,
    "process_bytes",
    ["self", "size"],
    f"{CORE}: Core.acknowledge_received_data",
)
_method(
    h2.stream.H2Stream,
    "__init__",
    ["self", "stream_id", "config", "inbound_window_size", "outbound_window_size"],
    f"{CORE}: Core._begin_new_stream",
)
ATTRIBUTES += [
    (
        "h2.stream.STREAM_OPEN (stream state -> counts as open)",
        lambda: _assert(
            h2.stream.STREAM_OPEN[h2.stream.StreamState.OPEN]
            and not h2.stream.STREAM_OPEN[h2.stream.StreamState.CLOSED]
        ),
        f"{CORE}: Core.acknowledge_received_data",
    ),
]


def _settings_read_as_h2_reads_them() -> None:
    from rawserve.protocols.http2.core import _INITIAL_WINDOW, _MAX_STREAMS, _setting

    codes = h2.settings.SettingCodes
    for initial in (None, {codes.MAX_CONCURRENT_STREAMS: 7, codes.INITIAL_WINDOW_SIZE: 1000}):
        settings = h2.settings.Settings(client=False, initial_values=initial)
        settings[codes.INITIAL_WINDOW_SIZE] = 2000  # pending until acknowledged
        for _ in range(2):
            _assert(_setting(settings, _MAX_STREAMS, 2**32 + 1) == settings.max_concurrent_streams)
            _assert(_setting(settings, _INITIAL_WINDOW, 65535) == settings.initial_window_size)
            settings.acknowledge()


ATTRIBUTES.append(
    (
        "h2.settings.Settings._settings (code -> deque, [0] in force)",
        _settings_read_as_h2_reads_them,
        f"{CORE}: _setting",
    )
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
_method(
    ENC,
    "_encode_table_size_change",
    ["self"],
    f"{HPACK}: FastEncoder._encode_table_size_change overrides it (hpack's encode calls it)",
)
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
_function(
    hpack.table,
    "table_entry_size",
    ["name", "value"],
    f"{HPACK}: FastDecoder.decode computes it inline (RFC 7541 4.1); hpack's own paths call it",
)
ATTRIBUTES.append(
    (
        "hpack.struct.HeaderTuple / NeverIndexedHeaderTuple are plain tuple subclasses",
        lambda: _assert(
            all(
                cls.__bases__ in ((tuple,), (hpack.struct.HeaderTuple,))
                and cls.__slots__ == ()
                and tuple.__new__(cls, (b"n", b"v")) == cls(b"n", b"v")
                and type(tuple.__new__(cls, (b"n", b"v"))) is cls
                for cls in (hpack.struct.HeaderTuple, hpack.struct.NeverIndexedHeaderTuple)
            )
        ),
        f"{HPACK}: FastDecoder builds them with tuple.__new__, skipping their __new__",
    )
)
_method(TABLE, "add", ["self", "name", "value"], f"{CORE}: _CountingTable.add overrides it")
ATTRIBUTES.append(
    (
        "hpack.table.HeaderTable.maxsize (a property with a setter)",
        lambda: _assert(isinstance(TABLE.maxsize, property) and TABLE.maxsize.fset is not None),
        f"{CORE}: _CountingTable.maxsize overrides its setter",
    )
)
ATTRIBUTES.append(
    (
        "hpack.Decoder().header_table (replaceable)",
        lambda: _assert(isinstance(hpack.Decoder().header_table, TABLE)),
        f"{CORE}: Core gives its decoder a _CountingTable",
    )
)
_function(
    hpack.hpack,
    "encode_integer",
    ["integer", "prefix_bits"],
    f"{HPACK}: _unindexed_prefix, FastEncoder.add, FastEncoder._encode_table_size_change",
)
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
    ("hpack.hpack.INDEX_NONE", lambda: hpack.hpack.INDEX_NONE, f"{HPACK}: _unindexed_prefix"),
    (
        "hpack.table.HeaderTable.STATIC_TABLE_MAPPING (name -> (first index, values))",
        lambda: _assert(TABLE.STATIC_TABLE_MAPPING[b"content-length"][0] == 28),
        f"{HPACK}: _unindexed_prefix",
    ),
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


FAST = f"{CORE}: Core.send_final_headers / send_body / send_whole_body (the response fast path)"
_instance_attr("H2Connection()", _h2, "_data_to_send", bytearray, FAST)
_instance_attr("H2Connection()", _h2, "outbound_flow_control_window", int, FAST)
_instance_attr(
    "H2StreamStateMachine(1)",
    lambda: h2.stream.H2StreamStateMachine(1),
    "headers_sent",
    object,
    FAST,
)
ATTRIBUTES += [
    ("h2.connection.ConnectionState.SERVER_OPEN", lambda: ConnectionState.SERVER_OPEN, FAST),
    (
        "h2.stream.StreamClosedBy.SEND_END_STREAM",
        lambda: h2.stream.StreamClosedBy.SEND_END_STREAM,
        FAST,
    ),
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


# -- the response fast path against h2's own -------------------------------
#
# Core.send_final_headers and Core.send_body write a response's frames without
# h2's frame objects and state machine calls. They must write the same bytes
# and leave the same state as h2's send_headers / send_data / end_stream, or
# later frames on the stream (the client's DATA, RST_STREAM, WINDOW_UPDATE)
# would be judged against a state h2 never reached.


def _core(fast: bool) -> Any:
    """rawserve's Core as its adapter makes it, the fast paths on or off."""
    from rawserve.core.config import Limits
    from rawserve.protocols.http2.core import Core, server_config

    core = Core(server_config(), Limits())
    core.fast_paths = fast
    core.initiate_connection()
    return core


def _server_with_request(end_request: bool, frame_size: int = 16384) -> Any:
    server = _core(True)
    client = H2(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    if frame_size != 16384:
        client.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: frame_size})
    head = [(":method", "POST"), (":scheme", "http"), (":path", "/p"), (":authority", "a")]
    client.send_headers(1, head, end_stream=end_request)
    server.receive_data(client.data_to_send())
    server.data_to_send()
    return server


def _state(server: Any) -> tuple[Any, ...]:
    stream = server.streams[1]
    machine = stream.state_machine
    return (
        machine.state,
        machine.headers_sent,
        machine.trailers_sent,
        machine.stream_closed_by,
        stream.outbound_flow_control_window,
        stream.request_method,
        server.outbound_flow_control_window,
        server.state_machine.state,
    )


HEAD = [(b":status", b"200"), (b"content-type", b"application/json"), (b"x-a", b"b" * 40)]


@pytest.mark.parametrize("end_request", [True, False], ids=["half-closed-remote", "open"])
@pytest.mark.parametrize(
    ("head", "body", "frame_size"),
    [
        (HEAD, None, 16384),  # HEADERS with END_STREAM
        (HEAD, b'{"class": 3}', 16384),  # HEADERS, then DATA with END_STREAM
        (HEAD, b"", 16384),  # HEADERS, then an empty DATA with END_STREAM
        ([*HEAD, (b"x-long", b"v" * 40000)], b"x" * 100, 16384),  # HEADERS + CONTINUATIONs
        (HEAD, b"y" * 20000, 16384),  # DATA beyond the frame size: h2 raises in both
        (HEAD, b"z" * 70000, 100000),  # DATA beyond the stream window: h2 raises in both
    ],
    ids=["headers-only", "headers-data", "empty-data", "continuation", "frame-size", "window"],
)
def test_fast_path_writes_and_leaves_what_h2_does(
    end_request: bool, head: list[tuple[bytes, bytes]], body: bytes | None, frame_size: int
) -> None:
    slow = _server_with_request(end_request, frame_size)
    fast = _server_with_request(end_request, frame_size)
    slow.send_headers(1, head, end_stream=body is None)
    fast.send_final_headers(1, head, body is None)
    assert fast.data_to_send() == slow.data_to_send()
    assert _state(fast) == _state(slow)
    if body is None:
        return
    errors: list[type[Exception]] = []
    for server, send in ((slow, None), (fast, fast.send_body)):
        try:
            if send is None:
                server.send_data(1, body, end_stream=True) if body else server.end_stream(1)
            else:
                send(1, body, True)
        except h2.exceptions.ProtocolError as exc:
            errors.append(type(exc))
    assert errors == [] or (len(errors) == 2 and errors[0] is errors[1]), errors
    assert fast.data_to_send() == slow.data_to_send()
    assert _state(fast) == _state(slow)


@pytest.mark.parametrize("end_request", [True, False], ids=["half-closed-remote", "open"])
@pytest.mark.parametrize(
    ("body", "frame_size"),
    [
        (b'{"class": 3}', 16384),  # sent: the same bytes and state as h2's send_data
        (b"", 16384),  # not sent: an empty body is the sender's END_STREAM
        (b"y" * 20000, 16384),  # not sent: beyond the frame size
        (b"z" * 70000, 100000),  # not sent: beyond the stream window
    ],
    ids=["fits", "empty", "frame-size", "window"],
)
def test_whole_body_is_sent_as_h2_would_or_not_at_all(
    end_request: bool, body: bytes, frame_size: int
) -> None:
    slow = _server_with_request(end_request, frame_size)
    fast = _server_with_request(end_request, frame_size)
    for server in (slow, fast):
        server.send_final_headers(1, HEAD, False)
        server.data_to_send()
    sent = fast.send_whole_body(1, body)
    assert sent == (len(body) == 12)
    if sent:
        slow.send_data(1, body, end_stream=True)
    assert fast.data_to_send() == slow.data_to_send()
    assert _state(fast) == _state(slow)


def test_fast_path_leaves_trailers_and_closed_streams_to_h2() -> None:
    # A second head on the stream is trailers: h2 checks and frames them.
    server = _server_with_request(False)
    server.send_final_headers(1, HEAD, False)
    server.send_final_headers(1, [(b"x-trailer", b"1")], True)
    assert server.streams[1].state_machine.trailers_sent
    # On a closed stream h2 raises, as it would for send_data.
    with pytest.raises(h2.exceptions.ProtocolError):
        server.send_body(1, b"late", True)


# -- the request fast path against h2's own --------------------------------
#
# Core._receive_request_headers and Core._receive_request_data take a new
# request's HEADERS and its DATA without h2's state-machine calls. The same
# frames fed to a Core with the fast paths off (h2's own handling, with
# rawserve's hardening) must give equal events, bytes out, errors and state.


def _frame(kind: type, sid: int, flags: tuple[str, ...] = (), **fields: Any) -> bytes:
    frame = kind(sid)
    for flag in flags:
        frame.flags.add(flag)
    for name, value in fields.items():
        setattr(frame, name, value)
    return bytes(frame.serialize())


def _snapshot(core: Any) -> tuple[Any, ...]:
    streams = {
        sid: (
            s.state_machine.state,
            s.state_machine.client,
            s.state_machine.headers_received,
            s.state_machine.stream_closed_by,
            s._inbound_window_manager.current_window_size,
            s._expected_content_length,
            s._actual_content_length,
        )
        for sid, s in core.streams.items()
    }
    return (
        streams,
        core.highest_inbound_stream_id,
        core._inbound_flow_control_window_manager.current_window_size,
        core.state_machine.state,
    )


def _feed(core: Any, data: bytes) -> tuple[Any, ...]:
    # h2's events compare by identity: compare what they say.
    try:
        events: Any = [
            (repr(e), repr(getattr(e, "stream_ended", None))) for e in core.receive_data(data)
        ]
    except h2.exceptions.ProtocolError as exc:
        events = (type(exc), exc.error_code)
    return events, core.data_to_send(), _snapshot(core)


_REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/p"), (b":authority", b"a")]
_HF = "hyperframe.frame"


def _cases() -> dict[str, list[tuple[str, int, tuple[str, ...], dict[str, Any]]]]:
    def headers(sid: int, extra: list[tuple[bytes, bytes]], *flags: str) -> Any:
        return ("HEADERS", sid, ("END_HEADERS", *flags), {"fields": _REQUEST + extra})

    def data(sid: int, payload: bytes, *flags: str, pad: int = 0) -> Any:
        fields: dict[str, Any] = {"data": payload}
        if pad:
            fields["pad_length"] = pad
            flags = (*flags, "PADDED")
        return ("DATA", sid, flags, fields)

    cl5 = [(b"content-length", b"5")]
    return {
        "get-ended-by-headers": [headers(3, [], "END_STREAM")],
        "body-in-two-frames": [headers(3, cl5), data(3, b"hel"), data(3, b"lo", "END_STREAM")],
        "body-longer-than-declared": [headers(3, cl5), data(3, b"hello world", "END_STREAM")],
        "body-shorter-than-declared": [headers(3, cl5), data(3, b"hi", "END_STREAM")],
        "padded-data": [headers(3, []), data(3, b"abc", "END_STREAM", pad=7)],
        "status-in-request": [headers(3, [(b":status", b"100")], "END_STREAM")],
        "final-status-in-request": [headers(3, [(b":status", b"200")], "END_STREAM")],
        "stream-id-going-down": [headers(5, [], "END_STREAM"), headers(3, [], "END_STREAM")],
        "even-stream-id": [headers(4, [], "END_STREAM")],
        "data-after-end": [headers(3, [], "END_STREAM"), data(3, b"late", "END_STREAM")],
        "data-beyond-window": [headers(3, [])] + [data(3, b"x" * 16384) for _ in range(5)],
        "large-body-still-open": [headers(3, [])] + [data(3, b"x" * 16384) for _ in range(3)],
        "empty-data-frames": [
            headers(3, []),
            data(3, b""),
            data(3, b"x"),
            data(3, b"", "END_STREAM"),
        ],
        "headers-on-an-open-stream": [headers(3, []), headers(3, [])],
        "trailers-end-the-request": [
            headers(3, []),
            data(3, b"body"),
            ("HEADERS", 3, ("END_HEADERS", "END_STREAM"), {"fields": [(b"x-t", b"1")]}),
        ],
        "data-on-an-idle-stream": [data(7, b"early", "END_STREAM")],
        "headers-reusing-a-closed-id": [headers(3, [], "END_STREAM"), headers(3, [], "END_STREAM")],
        "two-requests-interleaved": [
            headers(3, []),
            headers(5, []),
            data(5, b"five", "END_STREAM"),
            data(3, b"three", "END_STREAM"),
        ],
    }


def _opened(case: str) -> tuple[Any, Any, list[tuple[str, int, bytes]]]:
    """A fast and a slow Core past their first request, and the case's frames."""
    from hyperframe.frame import DataFrame, HeadersFrame

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    preface = client.data_to_send()
    encoder = hpack.Encoder()
    # Stream 1 first: the connection leaves h2's IDLE state with it, and the
    # fast paths only run on an open connection.
    warm = _frame(HeadersFrame, 1, ("END_HEADERS", "END_STREAM"), data=encoder.encode(_REQUEST))
    fast, slow = _core(True), _core(False)
    assert _feed(fast, preface + warm) == _feed(slow, preface + warm)
    frames = []
    for kind, sid, flags, fields in _cases()[case]:
        if kind == "HEADERS":
            raw = _frame(HeadersFrame, sid, flags, data=encoder.encode(fields["fields"]))
        else:
            raw = _frame(DataFrame, sid, flags, **fields)
        frames.append((kind, sid, raw))
    return fast, slow, frames


@pytest.mark.parametrize("case", list(_cases()))
def test_request_fast_path_matches_h2(case: str) -> None:
    fast, slow, frames = _opened(case)
    for kind, sid, raw in frames:
        assert _feed(fast, raw) == _feed(slow, raw), f"{case}: {kind} on stream {sid}"


@pytest.mark.parametrize("case", list(_cases()))
def test_request_fast_path_matches_h2_in_one_read(case: str) -> None:
    # Every frame of the case in one read: Core takes them from one buffer,
    # the lean ones and the others in turn.
    fast, slow, frames = _opened(case)
    raw = b"".join(f[2] for f in frames)
    assert _feed(fast, raw) == _feed(slow, raw), case


@pytest.mark.parametrize(
    ("case", "size", "sid"),
    [
        ("body-in-two-frames", 5, 3),  # the request ended: only the connection's window
        ("two-requests-interleaved", 4, 5),
        ("large-body-still-open", 40000, 3),  # an open stream: a WINDOW_UPDATE on it
        ("large-body-still-open", 100, 3),  # too little for an update
        ("large-body-still-open", 0, 3),
        ("large-body-still-open", -1, 3),  # ValueError, as h2 raises it
        ("large-body-still-open", 10, 9),  # a stream never opened: h2's NoSuchStreamError
        ("data-beyond-window", 40000, 3),  # after the connection error
        ("get-ended-by-headers", 10, 3),  # a stream closed and still known
    ],
)
def test_acknowledging_data_matches_h2(case: str, size: int, sid: int) -> None:
    """Core.acknowledge_received_data (its own arithmetic for a known stream)
    gives the window updates h2's gives, and the same errors."""
    fast, slow, frames = _opened(case)
    for _, _, raw in frames:
        _feed(fast, raw)
        _feed(slow, raw)
    outcomes = []
    for core in (fast, slow):
        try:
            core.acknowledge_received_data(size, sid)
            outcome: Any = None
        except (ValueError, h2.exceptions.ProtocolError) as exc:
            outcome = type(exc)
        outcomes.append((outcome, core.data_to_send(), _snapshot(core)))
    assert outcomes[0] == outcomes[1]


def _block(*fields: bytes) -> bytes:
    # :method POST, :scheme http, :path / (static 3, 6, 4), then :authority
    # "a" as a literal without indexing (it leaves the table alone).
    return b"\x83\x86\x84\x01\x01a" + b"".join(fields)


def _add_tag(value: bytes) -> bytes:
    # x-tag: value, a literal with incremental indexing under a new name:
    # it becomes dynamic entry 62, moving the older ones up by one.
    return b"\x40\x05x-tag" + bytes((len(value),)) + value


def test_a_repeated_header_block_decodes_as_the_table_says() -> None:
    """Core remembers a header block that left the dynamic table as it was
    (Core._decode_request_block). The same bytes mean something else once the
    table has changed: index 62 is "x-tag: one", then "x-tag: two", then
    nothing (a size update empties the table). Decoding must follow the table,
    as h2's does, errors included."""
    from hyperframe.frame import HeadersFrame

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    preface = client.data_to_send()
    refer = _block(b"\xbe")  # indexed field 62
    blocks = [
        _block(_add_tag(b"one")),
        refer,
        refer,
        _block(_add_tag(b"two")),
        refer,
        refer,
        b"\x20" + _block(),  # table size 0: the table empties
        refer,  # 62 is out of range now: COMPRESSION_ERROR
    ]
    fast, slow = _core(True), _core(False)
    assert _feed(fast, preface) == _feed(slow, preface)
    heads = []
    for i, block in enumerate(blocks):
        raw = _frame(HeadersFrame, 1 + 2 * i, ("END_HEADERS", "END_STREAM"), data=block)
        if i in (2, 5):
            # The repeat is the memo's list, read by the adapter as before.
            events = fast.receive_data(raw)
            heads.append(events[0].headers)
            slow_events = slow.receive_data(raw)
            assert events[0].headers == slow_events[0].headers
            assert fast.data_to_send() == slow.data_to_send()
            continue
        assert _feed(fast, raw) == _feed(slow, raw), f"block {i}"
    assert (b"x-tag", b"one") in heads[0] and (b"x-tag", b"two") in heads[1]
    # The last block failed on both, the same way.
    assert fast.state_machine.state is ConnectionState.CLOSED


def test_the_memo_hands_out_one_list_and_stays_bounded() -> None:
    from hyperframe.frame import HeadersFrame

    from rawserve.protocols.http2.core import BLOCK_MEMO_BYTES, BLOCK_MEMO_ENTRIES

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    core = _core(True)
    core.receive_data(client.data_to_send())
    sid = 1
    lists = []
    # Stream 1 opens the connection through h2's own path; then a miss, a hit.
    for _ in range(3):
        raw = _frame(HeadersFrame, sid, ("END_HEADERS", "END_STREAM"), data=_block())
        lists.append(core.receive_data(raw)[0].headers)
        sid += 2
    assert lists[1] is lists[2]
    # Many distinct blocks (each a different :authority literal), and one
    # too large to keep: the memo never holds more than its bounds.
    for i in range(3 * BLOCK_MEMO_ENTRIES):
        value = b"host%d" % i
        block = b"\x83\x86\x84\x01" + bytes((len(value),)) + value
        core.receive_data(_frame(HeadersFrame, sid, ("END_HEADERS", "END_STREAM"), data=block))
        sid += 2
        assert len(core._blocks) <= BLOCK_MEMO_ENTRIES
    length = bytes(hpack.hpack.encode_integer(BLOCK_MEMO_BYTES, 7))
    big = b"\x83\x86\x84\x01" + length + b"h" * BLOCK_MEMO_BYTES
    core.receive_data(_frame(HeadersFrame, sid, ("END_HEADERS", "END_STREAM"), data=big))
    assert big not in core._blocks
    assert all(len(key) <= BLOCK_MEMO_BYTES for key in core._blocks)
