"""HTTP/2 server connection (RFC 9113) on h2: bytes in, rawserve events out.

h2 does the framing, HPACK and stream state machines. This module adds what a
server facing the open internet needs on top: the RFC 9113 rules h2 leaves to
its user (request header validation, stream errors rather than connection
errors where the RFC asks for them, REFUSED_STREAM, error codes h2 gets
wrong), limits against floods (rapid reset, control frames, CONTINUATION,
HPACK bombs), RFC 9218 priorities, and a per-stream send queue that frames
response bodies as flow control allows.
"""

from __future__ import annotations

import base64
from collections import deque
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes
from h2.stream import StreamClosedBy, StreamState
from hpack import Decoder, Encoder
from hpack.exceptions import HPACKDecodingError, HPACKError, OversizedHeaderListError
from hpack.hpack import INDEX_INCREMENTAL, INDEX_NEVER
from hpack.huffman_table import decode_huffman
from hpack.struct import HeaderTuple, NeverIndexedHeaderTuple
from hpack.table import HeaderTable, table_entry_size
from hyperframe.exceptions import InvalidDataError, InvalidFrameError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    ExtensionFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from rawserve.core.config import Limits
from rawserve.core.errors import ConfigError, ProtocolError
from rawserve.core.events import (
    BodyReceived,
    ConnectionTerminated,
    EndOfRequest,
    Headers,
    IncomingEvent,
    InformationalResponse,
    OutgoingEvent,
    PriorityChanged,
    PushPromise,
    RequestReceived,
    ResetReason,
    ResetStream,
    ResponseBody,
    ResponseEnd,
    ResponseStart,
    StreamReset,
)
from rawserve.core.priority import (
    DEFAULT_PRIORITY,
    Priority,
    parse_priority_field,
    urgency_from_weight,
)
from rawserve.protocols.semantics import (
    CONNECTION_SPECIFIC,
    MalformedMessage,
    RateLimit,
    check_trailers,
    parse_request_head,
    response_head,
    write_order,
)

if TYPE_CHECKING:
    from h2._typing import Buffer

__all__ = ["H2Connection"]

PRIORITY_UPDATE = 0x10  # RFC 9218 section 7.1
NO_RFC7540_PRIORITIES = 0x9  # RFC 9218 section 2.1
MIN_FRAME_SIZE = 16_384
MAX_FRAME_SIZE = 16_777_215
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535
# Past this many HEADERS + CONTINUATION bytes (or decoded header list bytes) the
# block is not decoded at all: an attack, not a large request.
HARD_HEADER_FACTOR = 2
# Frames (HEADERS and its CONTINUATIONs) in one header block. h2 has a
# similar backlog limit but answers PROTOCOL_ERROR, not ENHANCE_YOUR_CALM.
MAX_CONTINUATIONS = 63

# RFC 9113 section 7 codes for the protocol-neutral reset reasons, and back.
_CODE_FOR_REASON: dict[ResetReason, ErrorCodes] = {
    ResetReason.NO_ERROR: ErrorCodes.NO_ERROR,
    ResetReason.CANCELLED: ErrorCodes.CANCEL,
    ResetReason.REFUSED: ErrorCodes.REFUSED_STREAM,
    ResetReason.PROTOCOL_ERROR: ErrorCodes.PROTOCOL_ERROR,
    ResetReason.INTERNAL_ERROR: ErrorCodes.INTERNAL_ERROR,
    ResetReason.FLOW_CONTROL_ERROR: ErrorCodes.FLOW_CONTROL_ERROR,
    ResetReason.EXCESSIVE_LOAD: ErrorCodes.ENHANCE_YOUR_CALM,
    ResetReason.CONNECTION_CLOSED: ErrorCodes.CANCEL,
}
_REASON_FOR_CODE: dict[int, ResetReason] = {
    **{
        int(code): reason
        for reason, code in _CODE_FOR_REASON.items()
        if reason is not ResetReason.CONNECTION_CLOSED
    },
    # Frames on a closed stream, a bad frame size: the peer broke the protocol.
    int(ErrorCodes.STREAM_CLOSED): ResetReason.PROTOCOL_ERROR,
    int(ErrorCodes.FRAME_SIZE_ERROR): ResetReason.PROTOCOL_ERROR,
}


def _reason_from_code(code: int | None) -> ResetReason:
    """A peer's RST_STREAM code as a reason; codes we do not name are cancels."""
    return _REASON_FOR_CODE.get(int(code or 0), ResetReason.CANCELLED)


class _FrameSizeError(h2.exceptions.ProtocolError):
    error_code = ErrorCodes.FRAME_SIZE_ERROR


class _CompressionError(h2.exceptions.ProtocolError):
    error_code = ErrorCodes.COMPRESSION_ERROR


class _FrameBuffer(FrameBuffer):
    """h2's frame splitter, with checks that must run on the frame header:
    h2 would buffer a 16 MiB frame before refusing it, accepts any first
    frame, and answers a SETTINGS ACK with payload with the wrong code."""

    def __init__(self, max_header_block: int) -> None:
        super().__init__(server=True)
        self._max_block = max_header_block
        self._block = 0
        self._preface_settings = False

    def __next__(self) -> Frame:
        data = self._data
        if len(data) >= 9:
            length = (data[0] << 16) | (data[1] << 8) | data[2]
            kind, flags = data[3], data[4]
            if length > self.max_frame_size:
                msg = f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE"
                raise h2.exceptions.FrameTooLargeError(msg)
            if not self._preface_settings:
                # RFC 9113 section 3.4: the preface is followed by SETTINGS.
                if kind != 0x4 or flags & 0x1:
                    msg = "connection preface is not followed by a SETTINGS frame"
                    raise h2.exceptions.ProtocolError(msg)
                self._preface_settings = True
            if kind == 0x4 and flags & 0x1 and length:
                # RFC 9113 section 6.5
                raise _FrameSizeError("SETTINGS frame with ACK and a payload")
            if kind == 0x8 and length == 4 and len(data) >= 13 and not self._headers_buffer:
                sid = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
                if sid and not int.from_bytes(data[9:13], "big") & 0x7FFFFFFF:
                    # A zero increment on a stream is a stream error (RFC 9113
                    # section 6.9); hyperframe refuses to parse it at all.
                    del data[:13]
                    return WindowUpdateFrame(sid, window_increment=0)
        return super().__next__()

    def _update_header_buffer(self, f: Frame | None) -> Frame | None:
        if isinstance(f, (HeadersFrame, ContinuationFrame)) and (
            self._headers_buffer or "END_HEADERS" not in f.flags
        ):
            self._block += len(f.data)
            if self._block > self._max_block:
                msg = f"header block larger than {self._max_block} bytes"
                raise h2.exceptions.DenialOfServiceError(msg)
            if len(self._headers_buffer) >= MAX_CONTINUATIONS:
                # Also counts empty frames, which the byte limit cannot see.
                msg = f"header block of more than {MAX_CONTINUATIONS} frames"
                raise h2.exceptions.DenialOfServiceError(msg)
        result = super()._update_header_buffer(f)
        if not self._headers_buffer:
            self._block = 0
        return result


class _Decoder(Decoder):
    """hpack's decoder, with the common representations decoded inline: an
    indexed field (RFC 7541 section 6.1), and a literal value under an
    indexed name (section 6.2) that fits one-byte lengths. A client repeating
    its requests sends little else, and hpack spends about a microsecond on
    each field (memoryview slices, a copy of the rest of the block, a debug
    log call, two tuple copies). Every other representation, and every
    error, is left to hpack's own code."""

    def decode(self, data: bytes, raw: bool = False) -> list[HeaderTuple]:
        if not raw:
            return list(super().decode(data, raw))
        data = bytes(data)  # slices below must be bytes, not views
        static = HeaderTable.STATIC_TABLE
        n_static = HeaderTable.STATIC_TABLE_LENGTH
        table = self.header_table
        dynamic = table.dynamic_entries
        limit = self.max_header_list_size
        mem = memoryview(data)
        headers: list[HeaderTuple] = []
        size = 0
        i = 0
        end = len(data)
        while i < end:
            b = data[i]
            header: HeaderTuple | None = None
            if b & 0x80:
                index = b & 0x7F
                if 0 < index <= n_static:
                    header = HeaderTuple(*static[index - 1])
                elif n_static < index < 0x7F and index - n_static <= len(dynamic):
                    header = HeaderTuple(*dynamic[index - n_static - 1])
                if header is not None:
                    consumed = 1
                else:  # index 0, a multi-byte index, or out of range
                    header, consumed = self._decode_indexed(mem[i:])
            elif (b & 0xE0) != 0x20:  # a literal field, not a table size update
                indexing = b & 0x40
                index = b & 0x3F if indexing else b & 0x0F
                length = data[i + 1] & 0x7F if i + 1 < end else 0x7F
                name = None
                if index < (0x3F if indexing else 0x0F) and length < 0x7F and i + 2 + length <= end:
                    if 0 < index <= n_static:
                        name = static[index - 1][0]
                    elif n_static < index and index - n_static <= len(dynamic):
                        name = dynamic[index - n_static - 1][0]
                if name is not None:
                    value = data[i + 2 : i + 2 + length]
                    if data[i + 1] & 0x80:
                        value = decode_huffman(value)
                    if b & 0x10 and not indexing:
                        header = NeverIndexedHeaderTuple(name, value)
                    else:
                        header = HeaderTuple(name, value)
                    if indexing:
                        table.add(name, value)
                    consumed = 2 + length
                elif indexing:
                    header, consumed = self._decode_literal_index(mem[i:])
                else:
                    header, consumed = self._decode_literal_no_index(mem[i:])
            else:
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                consumed = self._update_encoding_context(mem[i:])
            if header is not None:
                headers.append(header)
                size += table_entry_size(header[0], header[1])
                if size > limit:
                    msg = f"A header list larger than {limit} has been received"
                    raise OversizedHeaderListError(msg)
            i += consumed
        self._assert_valid_table_size()
        # Literal names and values are bytes already (hpack copies them out
        # of the block), so hpack's final copy of every field is skipped.
        return headers


# An indexed field (RFC 7541 section 6.1) with an index below 127 is one byte.
_INDEXED = [bytes((0x80 | i,)) for i in range(127)]


class _Encoder(Encoder):
    """hpack's encoder without its debug log call per field, and with the
    one-byte indexed fields that repeated response headers become made once."""

    def add(self, to_add: tuple[bytes, bytes], sensitive: bool, huffman: bool = False) -> bytes:
        # hpack's Encoder.add, the same decisions.
        name, value = to_add
        table = self.header_table
        indexbit = INDEX_NEVER if sensitive else INDEX_INCREMENTAL
        match = table.search(name, value)
        if match is None:
            encoded = self._encode_literal(name, value, indexbit, huffman)
            if not sensitive:
                table.add(name, value)
            return encoded
        index, name, perfect = match
        if perfect is not None:
            return _INDEXED[index] if index < 127 else self._encode_indexed(index)
        encoded = self._encode_indexed_literal(index, value, indexbit, huffman)
        if not sensitive:
            table.add(name, value)
        return encoded


def _stream_reset(stream_id: int, error_code: int) -> h2.events.StreamReset:
    event = h2.events.StreamReset(stream_id=stream_id, error_code=error_code)
    event.remote_reset = False
    return event


class _Core(h2.connection.H2Connection):
    """h2's connection plus the frame-level rules and limits it leaves out."""

    def __init__(self, config: h2.config.H2Configuration, limits: Limits) -> None:
        super().__init__(config=config)
        hard_cap = HARD_HEADER_FACTOR * limits.max_header_bytes + 4096
        self.incoming_buffer = _FrameBuffer(hard_cap)
        self.decoder = _Decoder()
        self.encoder = _Encoder()
        self.decoder.max_header_list_size = hard_cap
        self.now = 0.0
        self.max_streams = limits.max_concurrent_streams
        self.refuse_new = False  # after our GOAWAY
        self.control = RateLimit(limits.max_control_frames_per_s)
        self.resets = RateLimit(limits.max_resets_per_s)
        # Each DATA frame we send earns the peer two WINDOW_UPDATEs (stream and
        # connection) that do not count as control frames: they are progress.
        self.window_credit = 0
        self._purge_at = 0

    @property
    def open_inbound_streams(self) -> int:
        # h2 counts open streams, purging closed ones as it goes, by walking
        # every stream for each new one: O(open streams) per request. The
        # dict's size is an upper bound of the count, so below the limit the
        # walk is needed only now and then, to purge (bounding the dict at
        # about twice its live streams).
        n = len(self.streams)
        if n < self.local_settings.max_concurrent_streams and n < self._purge_at:
            return n
        count = super().open_inbound_streams
        self._purge_at = 2 * len(self.streams) + 32
        return count

    def receive_data(self, data: Buffer) -> list[h2.events.Event]:
        try:
            return super().receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # A bad preface fails before h2 writes its GOAWAY.
            if self.state_machine.state != ConnectionState.CLOSED:
                self._terminate_connection(exc.error_code)
            raise

    def _count_control(self, what: str) -> None:
        if self.control.exceeded(self.now):
            raise h2.exceptions.DenialOfServiceError(f"too many {what} frames per second")

    def _count_reset(self) -> None:
        if self.resets.exceeded(self.now):
            raise h2.exceptions.DenialOfServiceError("too many streams reset per second")

    def _receive_frame(self, frame: Frame) -> list[h2.events.Event]:
        kind = type(frame)
        if kind is DataFrame:
            assert isinstance(frame, DataFrame)
            if not frame.data and "END_STREAM" not in frame.flags:
                self._count_control("empty DATA")
        elif kind is HeadersFrame:
            assert isinstance(frame, HeadersFrame)
            if "PRIORITY" in frame.flags and frame.depends_on == frame.stream_id:
                return self._self_dependent_headers(frame)
        elif kind is RstStreamFrame:
            self._count_reset()
        elif kind is PriorityFrame:
            assert isinstance(frame, PriorityFrame)
            self._count_control("PRIORITY")
            if frame.depends_on == frame.stream_id:
                return self._self_dependent_priority(frame)
        elif kind is WindowUpdateFrame:
            assert isinstance(frame, WindowUpdateFrame)
            if not frame.window_increment:
                return self._zero_window_increment(frame.stream_id)
            if self.window_credit > 0:
                self.window_credit -= 1
            else:
                self._count_control("WINDOW_UPDATE")
        elif kind is GoAwayFrame:
            assert isinstance(frame, GoAwayFrame)
            return [self._peer_goaway(frame)]
        elif kind is ExtensionFrame:
            assert isinstance(frame, ExtensionFrame)
            self._count_control("unknown")
            if frame.type == PRIORITY_UPDATE:
                _check_priority_update(frame)
        elif kind is PingFrame or kind is SettingsFrame:
            self._count_control("PING/SETTINGS")
        try:
            return self._dispatch_frame(frame)
        except h2.exceptions.InvalidBodyLengthError:
            # RFC 9113 section 8.1.1: content-length mismatch is malformed, a
            # stream error. h2 raises it after counting the DATA against both
            # windows and before ending the stream.
            assert isinstance(frame, DataFrame)
            sid = frame.stream_id
            self._count_reset()
            self.reset_stream(sid, ErrorCodes.PROTOCOL_ERROR)
            self.acknowledge_received_data(frame.flow_controlled_length, sid)
            return [_stream_reset(sid, ErrorCodes.PROTOCOL_ERROR)]

    def _dispatch_frame(self, frame: Frame) -> list[h2.events.Event]:
        """h2's ``_receive_frame`` minus its first line, which formats
        ``repr(frame)`` for a no-op trace log: a few percent of the CPU of a
        small request."""
        events: list[h2.events.Event]
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except h2.exceptions.StreamClosedError as e:
            # Closed by RST_STREAM: a stream error, answered with RST_STREAM;
            # otherwise a connection error.
            if not self._stream_is_closed_by_reset(e.stream_id):
                raise
            rst = RstStreamFrame(e.stream_id)
            rst.error_code = e.error_code
            self._prepare_for_sending([rst])
            events = e._events
        except h2.exceptions.StreamIDTooLowError as e:
            # A stream that was closed and forgotten: a stream error if it was
            # reset, a connection error otherwise (STREAM_CLOSED after
            # END_STREAM, PROTOCOL_ERROR if closed implicitly).
            if self._stream_is_closed_by_reset(e.stream_id):
                rst = RstStreamFrame(e.stream_id)
                rst.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([rst])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise h2.exceptions.StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events

    def _peer_goaway(self, frame: GoAwayFrame) -> h2.events.ConnectionTerminated:
        # h2 would close its state machine and drop queued output; the streams
        # below the peer's last stream id may still complete, so keep going.
        event = h2.events.ConnectionTerminated()
        event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return event

    def _self_dependent_headers(self, frame: HeadersFrame) -> list[h2.events.Event]:
        # RFC 9113 section 5.3.1 asks for a stream error; h2 makes it a
        # connection error. Process the block without the priority (HPACK must
        # stay in sync), then reset the stream.
        frame.flags.discard("PRIORITY")
        events = super()._receive_frame(frame)
        sid = frame.stream_id
        if sid in self.streams and not self.streams[sid].closed:
            self._count_reset()
            self.reset_stream(sid, ErrorCodes.PROTOCOL_ERROR)
        kept = [e for e in events if getattr(e, "stream_id", None) != sid]
        return [*kept, _stream_reset(sid, ErrorCodes.PROTOCOL_ERROR)]

    def _zero_window_increment(self, sid: int) -> list[h2.events.Event]:
        self._count_control("WINDOW_UPDATE")
        stream = self.streams.get(sid)
        if stream is not None and not stream.closed:
            self.reset_stream(sid, ErrorCodes.PROTOCOL_ERROR)
            return [_stream_reset(sid, ErrorCodes.PROTOCOL_ERROR)]
        if sid > self.highest_inbound_stream_id:
            raise h2.exceptions.ProtocolError(f"WINDOW_UPDATE on idle stream {sid}")
        return []

    def _self_dependent_priority(self, frame: PriorityFrame) -> list[h2.events.Event]:
        sid = frame.stream_id
        stream = self.streams.get(sid)
        if stream is not None and not stream.closed:
            self._count_reset()
            self.reset_stream(sid, ErrorCodes.PROTOCOL_ERROR)
            return [_stream_reset(sid, ErrorCodes.PROTOCOL_ERROR)]
        if sid > self.highest_inbound_stream_id:
            # RST_STREAM must not be sent on an idle stream (RFC 9113 section
            # 6.4), so the stream error can only be a connection error here.
            msg = f"PRIORITY frame makes idle stream {sid} depend on itself"
            raise h2.exceptions.ProtocolError(msg)
        rst = RstStreamFrame(sid)
        rst.error_code = ErrorCodes.PROTOCOL_ERROR
        self._prepare_for_sending([rst])
        return []

    def _receive_headers_frame(
        self, frame: HeadersFrame
    ) -> tuple[list[Frame], list[h2.events.Event]]:
        sid = frame.stream_id
        try:
            if (
                sid not in self.streams
                and sid > self.highest_inbound_stream_id
                and sid % 2 == 1
                and (
                    self.refuse_new
                    # len(streams) first: open_inbound_streams walks them all.
                    or (
                        len(self.streams) >= self.max_streams
                        and self.open_inbound_streams >= self.max_streams
                    )
                )
            ):
                return self._refuse_stream(frame)
            stream = self.streams.get(sid)
            if (
                stream is not None
                and "END_STREAM" not in frame.flags
                and stream.state_machine.state == StreamState.OPEN
            ):
                return self._unended_trailers(frame)
            return super()._receive_headers_frame(frame)
        except h2.exceptions.DenialOfServiceError:
            raise
        except h2.exceptions.ProtocolError as exc:
            if isinstance(exc.__cause__, (HPACKError, IndexError, TypeError, UnicodeDecodeError)):
                if isinstance(exc.__cause__, OversizedHeaderListError):
                    raise
                # RFC 9113 section 4.3: a field block decoding error is a
                # COMPRESSION_ERROR; h2 says PROTOCOL_ERROR.
                raise _CompressionError(str(exc)) from exc
            raise

    def _unended_trailers(self, frame: HeadersFrame) -> tuple[list[Frame], list[h2.events.Event]]:
        # Trailers without END_STREAM make the request malformed (RFC 9113
        # section 8.1): a stream error, where h2 closes the connection.
        h2.connection._decode_headers(self.decoder, frame.data)
        self._count_reset()
        self.reset_stream(frame.stream_id, ErrorCodes.PROTOCOL_ERROR)
        return [], [_stream_reset(frame.stream_id, ErrorCodes.PROTOCOL_ERROR)]

    def _refuse_stream(self, frame: HeadersFrame) -> tuple[list[Frame], list[h2.events.Event]]:
        # h2 answers one stream too many with a connection error and without
        # decoding the block. Decode it (HPACK state is connection-wide), then
        # refuse only this stream so the client can retry it.
        sid = frame.stream_id
        h2.connection._decode_headers(self.decoder, frame.data)
        self._count_reset()
        self.highest_inbound_stream_id = sid
        self._closed_streams[sid] = StreamClosedBy.SEND_RST_STREAM
        rst = RstStreamFrame(sid)
        rst.error_code = ErrorCodes.REFUSED_STREAM
        return [rst], []


def _describe(exc: Exception) -> str:
    text = str(exc)
    # Some h2 errors carry only numbers (StreamIDTooLowError: "3").
    return text if any(c.isalpha() for c in text) else f"{type(exc).__name__}({text})"


def _check_priority_update(frame: ExtensionFrame) -> None:
    # RFC 9218 section 7.1
    if frame.stream_id != 0:
        raise h2.exceptions.ProtocolError("PRIORITY_UPDATE frame on a stream other than 0")
    if len(frame.body) < 4:
        raise _FrameSizeError("PRIORITY_UPDATE frame shorter than 4 bytes")
    if int.from_bytes(frame.body[:4], "big") & 0x7FFFFFFF == 0:
        raise h2.exceptions.ProtocolError("PRIORITY_UPDATE for stream 0")


class _Stream:
    """One request stream: its response queue and flow-control bookkeeping."""

    __slots__ = (
        "closing",
        "expected_length",
        "priority",
        "queue",
        "queued",
        "received",
        "request_ended",
        "response_done",
        "response_started",
        "rfc9218",
        "unacked",
    )

    def __init__(self, priority: Priority, rfc9218: bool, expected_length: int | None) -> None:
        self.priority = priority
        self.rfc9218 = rfc9218  # priority came from a header or PRIORITY_UPDATE
        self.queue: deque[bytes | memoryview] = deque()
        self.queued = 0
        self.closing = False  # END_STREAM goes out once the queue is empty
        self.response_started = False
        self.response_done = False
        self.request_ended = False
        self.unacked = 0  # body bytes delivered but not acknowledged
        self.expected_length = expected_length
        self.received = 0


class H2Connection:
    """A server-side HTTP/2 connection: ``receive_data`` -> events, ``send``
    events -> ``data_to_send``. Call ``initiate`` (or ``initiate_upgrade``) first."""

    def __init__(
        self, limits: Limits, *, scheme: str = "https", server_header: bytes | None = b"rawserve"
    ) -> None:
        if not MIN_FRAME_SIZE <= limits.max_frame_bytes <= MAX_FRAME_SIZE:
            raise ConfigError(f"max_frame_bytes must be within {MIN_FRAME_SIZE}..{MAX_FRAME_SIZE}")
        if not 0 <= limits.initial_window_bytes <= MAX_WINDOW:
            raise ConfigError(f"initial_window_bytes must be within 0..{MAX_WINDOW}")
        if not 0 < limits.connection_window_bytes <= MAX_WINDOW:
            raise ConfigError(f"connection_window_bytes must be within 1..{MAX_WINDOW}")
        self._limits = limits
        self._scheme = scheme
        self._server_header = server_header
        self._date: bytes | None = None
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # Validation and normalization happen here, in one pass.
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self._conn = _Core(config, limits)
        self._conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window_bytes,
                SettingCodes.MAX_FRAME_SIZE: limits.max_frame_bytes,
                SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_bytes,
                SettingCodes.ENABLE_CONNECT_PROTOCOL: 0,
            },
        )
        self._conn.max_inbound_frame_size = limits.max_frame_bytes
        self._streams: dict[int, _Stream] = {}
        # Streams answered before their request ended (bounded by h2, which
        # still counts them as open).
        self._answered: set[int] = set()
        self._last_stream_id = 0  # highest stream handed to the application
        # PRIORITY_UPDATE frames that arrived before their request (RFC 9218
        # section 7.1), at most max_concurrent_streams of them.
        self._early_priorities: dict[int, bytes] = {}
        self._rfc7540_priorities = True
        self._out = bytearray()  # frames we write ourselves, after h2's
        self._closed = False
        self._goaway_sent = False
        self._peer_goaway = False

    # -- lifecycle ---------------------------------------------------------

    def initiate(self) -> None:
        """Queue the server preface: SETTINGS, then the connection window."""
        self._conn.initiate_connection()
        self._open_connection_window()

    def initiate_upgrade(self, settings: bytes, request: RequestReceived) -> list[IncomingEvent]:
        """Take over after ``101 Switching Protocols`` (RFC 7540 section 3.2):
        ``settings`` is the decoded HTTP2-Settings payload and ``request``
        becomes stream 1, already complete. Raises ProtocolError (400) for bad
        settings before queueing anything."""
        if len(settings) % 6:
            raise ProtocolError("HTTP2-Settings is not a whole number of settings")
        frame = SettingsFrame(0)
        try:
            frame.parse_body(memoryview(settings))
            for code, value in frame.settings.items():
                self._conn.remote_settings.validate_received_setting(code, value)
        except (InvalidDataError, InvalidFrameError, h2.exceptions.ProtocolError) as exc:
            raise ProtocolError(f"invalid HTTP2-Settings: {exc}") from exc
        self._conn.initiate_upgrade_connection(base64.urlsafe_b64encode(settings))
        self._open_connection_window()
        headers = [
            h
            for h in request.headers
            if h[0] not in CONNECTION_SPECIFIC and h[0] != b"http2-settings"
        ]
        req = RequestReceived(
            stream_id=1,
            method=request.method,
            target=request.target,
            headers=headers,
            http_version="2",
            scheme=request.scheme,
            authority=request.authority,
            priority=request.priority,
            end_stream=True,
        )
        stream = _Stream(request.priority, False, None)
        stream.request_ended = True
        self._streams[1] = stream
        self._last_stream_id = 1
        return [req, EndOfRequest(1)]

    def _open_connection_window(self) -> None:
        extra = self._limits.connection_window_bytes - DEFAULT_WINDOW
        if extra > 0:
            self._conn.increment_flow_control_window(extra)

    def start_shutdown(self, error_code: int = 0) -> None:
        """Send GOAWAY: streams already accepted may finish, new ones are
        refused. A non-zero ``error_code`` closes at once."""
        if self._closed or self._goaway_sent:
            return
        self._goaway_sent = True
        self._conn.refuse_new = True
        self._write_frame(
            GoAwayFrame(0, last_stream_id=self._last_stream_id, error_code=error_code)
        )
        if error_code:
            self._close()

    def set_date_header(self, value: bytes) -> None:
        """The ``date`` value for responses; the I/O layer updates it once a second."""
        self._date = value

    @property
    def should_close(self) -> bool:
        return self._closed or ((self._goaway_sent or self._peer_goaway) and not self._streams)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    # -- bytes in ----------------------------------------------------------

    def receive_data(self, data: bytes, now: float = 0.0) -> list[IncomingEvent]:
        if self._closed:
            return []
        self._conn.now = now
        try:
            h2_events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued the GOAWAY with exc.error_code.
            return [self._terminated(int(exc.error_code), _describe(exc))]
        except Exception as exc:  # odd input must never escape as a crash
            return [self._abort(ErrorCodes.INTERNAL_ERROR, f"internal error: {exc!r}")]
        try:
            return self._translate(h2_events)
        except h2.exceptions.ProtocolError as exc:
            return [self._abort(int(exc.error_code), _describe(exc))]
        except Exception as exc:
            return [self._abort(ErrorCodes.INTERNAL_ERROR, f"internal error: {exc!r}")]

    def _abort(self, error_code: int, reason: str) -> ConnectionTerminated:
        """A connection error found outside h2: write the GOAWAY ourselves."""
        self._write_frame(
            GoAwayFrame(
                0, last_stream_id=self._conn.highest_inbound_stream_id, error_code=error_code
            )
        )
        return self._terminated(error_code, reason)

    def _terminated(self, error_code: int, reason: str) -> ConnectionTerminated:
        self._close()
        return ConnectionTerminated(
            error_code=error_code,
            last_stream_id=self._conn.highest_inbound_stream_id,
            reason=reason,
        )

    def _close(self) -> None:
        self._closed = True
        self._streams.clear()
        self._answered.clear()
        self._early_priorities.clear()

    def _translate(self, h2_events: list[h2.events.Event]) -> list[IncomingEvent]:
        out: list[IncomingEvent] = []
        attached: h2.events.PriorityUpdated | None = None
        flush_all = False
        for ev in h2_events:
            if isinstance(ev, h2.events.DataReceived):
                self._on_data(ev, out)
            elif isinstance(ev, h2.events.RequestReceived):
                attached = ev.priority_updated
                self._on_request(ev, out)
            elif isinstance(ev, h2.events.StreamEnded):
                self._on_stream_ended(ev.stream_id, out)
            elif isinstance(ev, h2.events.WindowUpdated):
                if ev.stream_id:
                    stream = self._streams.get(ev.stream_id)
                    if stream is not None:
                        self._flush(ev.stream_id, stream)
                else:
                    flush_all = True
            elif isinstance(ev, h2.events.StreamReset):
                self._answered.discard(ev.stream_id)
                stream = self._streams.get(ev.stream_id)
                if stream is not None:
                    self._drop(ev.stream_id, stream)
                    out.append(StreamReset(ev.stream_id, _reason_from_code(ev.error_code)))
            elif isinstance(ev, h2.events.TrailersReceived):
                self._on_trailers(ev, out)
            elif isinstance(ev, h2.events.PriorityUpdated):
                if ev is not attached:
                    self._on_priority_frame(ev, out)
            elif isinstance(ev, h2.events.UnknownFrameReceived):
                frame = ev.frame
                if isinstance(frame, ExtensionFrame) and frame.type == PRIORITY_UPDATE:
                    self._on_priority_update(frame.body, out)
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                changed = ev.changed_settings
                if SettingCodes.INITIAL_WINDOW_SIZE in changed:
                    flush_all = True
                if NO_RFC7540_PRIORITIES in changed:
                    self._rfc7540_priorities = changed[NO_RFC7540_PRIORITIES].new_value != 1
            elif isinstance(ev, h2.events.ConnectionTerminated):
                out.append(self._on_goaway(ev))
                if self._closed:
                    return out
        if flush_all:
            self._flush_all()
        return out

    def _on_request(self, ev: h2.events.RequestReceived, out: list[IncomingEvent]) -> None:
        sid = ev.stream_id
        ended = ev.stream_ended is not None
        try:
            req = parse_request_head(ev.headers)
            if ended and req.content_length:
                raise MalformedMessage("content-length without a body")
        except MalformedMessage:
            self._reset(sid, ErrorCodes.PROTOCOL_ERROR)
            self._conn._count_reset()
            return
        if req.size > self._limits.max_header_bytes:
            self._refuse(sid, 431, ended)
            self._conn._count_reset()
            return
        priority = DEFAULT_PRIORITY
        rfc9218 = False
        signal = ev.priority_updated
        if (
            signal is not None
            and self._rfc7540_priorities
            and signal.weight is not None
            and not (signal.weight == 16 and not signal.depends_on and not signal.exclusive)
        ):
            priority = Priority(urgency_from_weight(signal.weight))
        early = self._early_priorities.pop(sid, None)
        if early is not None:
            priority = parse_priority_field(early)
            rfc9218 = True
        elif req.priority_field is not None:
            priority = parse_priority_field(req.priority_field, priority)
            rfc9218 = True
        stream = _Stream(priority, rfc9218, req.content_length)
        self._streams[sid] = stream
        self._last_stream_id = max(self._last_stream_id, sid)
        method = req.method.decode("ascii")
        target = (req.authority if method == "CONNECT" else req.path) or b""
        out.append(
            RequestReceived(
                stream_id=sid,
                method=method,
                target=target.decode("latin-1"),
                headers=req.headers,
                http_version="2",
                scheme=req.scheme.decode("ascii") if req.scheme else self._scheme,
                authority=req.authority.decode("latin-1") if req.authority is not None else None,
                priority=priority,
                end_stream=ended,
                expect_continue=req.expect_continue,
            )
        )

    def _on_data(self, ev: h2.events.DataReceived, out: list[IncomingEvent]) -> None:
        sid = ev.stream_id
        data = ev.data
        stream = self._streams.get(sid)
        if stream is None:
            # Nobody will consume it (a stream reset in this same batch, or
            # one whose response is complete): hand the window back now.
            self._conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            if sid in self._answered and ev.stream_ended is None:
                # RFC 9113 section 8.1: the response is complete, so the
                # client may stop sending the request.
                self._answered.discard(sid)
                self._reset(sid, ErrorCodes.NO_ERROR)
            return
        padding = ev.flow_controlled_length - len(data)
        if padding:
            self._conn.acknowledge_received_data(padding, sid)
        if data:
            stream.unacked += len(data)
            stream.received += len(data)
            out.append(BodyReceived(sid, data))

    def _on_stream_ended(self, sid: int, out: list[IncomingEvent]) -> None:
        stream = self._streams.get(sid)
        if stream is None:
            self._answered.discard(sid)
            return
        if stream.expected_length is not None and stream.received != stream.expected_length:
            # Only trailers can end a stream short of content-length: h2
            # checks DATA frames itself.
            self._reset(sid, ErrorCodes.PROTOCOL_ERROR)
            out.append(StreamReset(sid, ResetReason.PROTOCOL_ERROR))
            return
        stream.request_ended = True
        out.append(EndOfRequest(sid))

    def _on_trailers(self, ev: h2.events.TrailersReceived, out: list[IncomingEvent]) -> None:
        sid = ev.stream_id
        if sid not in self._streams:
            return
        try:
            check_trailers(ev.headers)
        except MalformedMessage:
            self._reset(sid, ErrorCodes.PROTOCOL_ERROR)
            out.append(StreamReset(sid, ResetReason.PROTOCOL_ERROR))

    def _on_priority_frame(self, ev: h2.events.PriorityUpdated, out: list[IncomingEvent]) -> None:
        sid = ev.stream_id
        if sid is None or ev.weight is None or not self._rfc7540_priorities:
            return
        stream = self._streams.get(sid)
        if stream is None or stream.rfc9218:
            return
        priority = Priority(urgency_from_weight(ev.weight), stream.priority.incremental)
        if priority != stream.priority:
            stream.priority = priority
            out.append(PriorityChanged(sid, priority))

    def _on_priority_update(self, body: bytes, out: list[IncomingEvent]) -> None:
        sid = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
        value = body[4:]
        stream = self._streams.get(sid)
        if stream is not None:
            priority = parse_priority_field(value)
            stream.rfc9218 = True
            if priority != stream.priority:
                stream.priority = priority
                out.append(PriorityChanged(sid, priority))
        elif sid > self._conn.highest_inbound_stream_id and sid % 2 == 1:
            if len(self._early_priorities) < self._limits.max_concurrent_streams:
                self._early_priorities[sid] = value

    def _on_goaway(self, ev: h2.events.ConnectionTerminated) -> ConnectionTerminated:
        code = int(ev.error_code or 0)
        self._peer_goaway = True
        self._conn.refuse_new = True
        reason = (ev.additional_data or b"").decode("utf-8", "replace")
        if code:
            self._close()
        return ConnectionTerminated(code, ev.last_stream_id, reason or "GOAWAY from peer")

    # -- events out --------------------------------------------------------

    def send(self, event: OutgoingEvent) -> None:
        """Queue a response event. Events for streams that are gone (reset,
        connection closed) are dropped: the application learns of it from
        StreamReset / ConnectionTerminated."""
        if self._closed:
            return
        if isinstance(event, PushPromise):
            raise NotImplementedError("server push is not supported yet")
        sid = event.stream_id
        stream = self._streams.get(sid)
        if stream is None:
            return
        if isinstance(event, ResponseBody):
            if not stream.response_started:
                raise RuntimeError(f"ResponseBody before ResponseStart on stream {sid}")
            if event.data:
                stream.queue.append(event.data)
                stream.queued += len(event.data)
            if event.end_stream:
                stream.closing = True
            self._flush(sid, stream)
        elif isinstance(event, ResponseStart):
            if stream.response_started:
                raise RuntimeError(f"second ResponseStart on stream {sid}")
            stream.response_started = True
            headers = self._response_headers(event.status, event.headers, final=True)
            if self._send_headers(sid, stream, headers, event.end_stream) and event.end_stream:
                stream.response_done = True
                self._finish(sid, stream)
        elif isinstance(event, ResponseEnd):
            if not stream.response_started:
                raise RuntimeError(f"ResponseEnd before ResponseStart on stream {sid}")
            stream.closing = True
            self._flush(sid, stream)
        elif isinstance(event, ResetStream):
            self._reset(sid, _CODE_FOR_REASON[event.reason])
        elif isinstance(event, InformationalResponse):
            if not stream.response_started:
                headers = self._response_headers(event.status, event.headers, final=False)
                self._send_headers(sid, stream, headers, False)

    def _response_headers(self, status: int, headers: Headers, *, final: bool) -> Headers:
        if final:
            return response_head(status, headers, server=self._server_header, date=self._date)
        return response_head(status, headers)

    def _send_headers(self, sid: int, stream: _Stream, headers: Headers, end: bool) -> bool:
        try:
            self._conn.send_headers(sid, headers, end_stream=end)
        except h2.exceptions.ProtocolError:
            self._drop(sid, stream)
            return False
        return True

    def data_to_send(self) -> bytes:
        if self._out:
            self._out += self._conn.data_to_send()
            data = bytes(self._out)
            self._out.clear()
            return data
        return self._conn.data_to_send()

    def _write_frame(self, frame: Frame) -> None:
        # Frames h2's state machine would refuse (a graceful GOAWAY must not
        # close it), written after whatever h2 has queued.
        self._out += self._conn.data_to_send()
        self._out += frame.serialize()

    # -- flow control ------------------------------------------------------

    def buffered(self, stream_id: int) -> int:
        """Response body bytes accepted by ``send`` but not yet framed."""
        stream = self._streams.get(stream_id)
        return stream.queued if stream is not None else 0

    def acknowledge(self, stream_id: int, n: int) -> None:
        """The application consumed ``n`` body bytes of ``stream_id``: give the
        client that much window back."""
        stream = self._streams.get(stream_id)
        if stream is None or self._closed or n <= 0:
            return
        n = min(n, stream.unacked)
        if n:
            stream.unacked -= n
            self._conn.acknowledge_received_data(n, stream_id)

    def _flush(self, sid: int, stream: _Stream, max_frames: int = -1) -> bool:
        """Frame queued body bytes as far as the windows allow. True when the
        stream could send more right away (for round-robin)."""
        conn = self._conn
        queue = stream.queue
        try:
            while queue and max_frames:
                window = conn.local_flow_control_window(sid)
                if window <= 0:
                    return False
                chunk = queue[0]
                size = min(window, conn.max_outbound_frame_size)
                if len(chunk) <= size:
                    queue.popleft()
                    piece = chunk
                else:
                    view = chunk if isinstance(chunk, memoryview) else memoryview(chunk)
                    piece = view[:size]
                    queue[0] = view[size:]
                stream.queued -= len(piece)
                last = stream.closing and not queue
                conn.send_data(sid, piece, end_stream=last)
                conn.window_credit += 2
                max_frames -= 1
                if last:
                    stream.response_done = True
            if stream.closing and not queue and not stream.response_done:
                conn.end_stream(sid)
                stream.response_done = True
        except h2.exceptions.ProtocolError:
            self._drop(sid, stream)
            return False
        if stream.response_done:
            self._finish(sid, stream)
            return False
        return bool(queue)

    def _flush_all(self) -> None:
        """Serve waiting streams in RFC 9218 order (``write_order``): a
        non-incremental stream as far as the windows allow, incremental ones
        round-robin, a frame each."""
        ready = [
            (sid, s.priority)
            for sid, s in self._streams.items()
            if s.queue or (s.closing and not s.response_done)
        ]
        for group in write_order(ready):
            if not group.incremental:
                for sid in group.stream_ids:
                    stream = self._streams.get(sid)
                    if stream is not None:
                        self._flush(sid, stream)
                continue
            ids = list(group.stream_ids)
            while ids and self._conn.outbound_flow_control_window > 0:
                ids = [g for g in ids if g in self._streams and self._flush(g, self._streams[g], 1)]

    # -- stream endings ----------------------------------------------------

    def _finish(self, sid: int, stream: _Stream) -> None:
        """The response is complete."""
        if not stream.request_ended:
            # The rest of the request body is discarded as it arrives. The
            # stream is reset (NO_ERROR) only if more DATA comes: resetting at
            # once would race the client's own frames on the stream, and
            # h2's stream state keeps it within the concurrency limit.
            self._answered.add(sid)
        self._forget(sid, stream)

    def _reset(self, sid: int, error_code: int) -> None:
        try:
            self._conn.reset_stream(sid, error_code)
        except h2.exceptions.ProtocolError:
            pass
        stream = self._streams.get(sid)
        if stream is not None:
            self._drop(sid, stream)

    def _refuse(self, sid: int, status: int, request_ended: bool) -> None:
        """Answer a request the application never sees, e.g. 431."""
        headers = self._response_headers(status, [(b"content-length", b"0")], final=True)
        try:
            self._conn.send_headers(sid, headers, end_stream=True)
        except h2.exceptions.ProtocolError:
            return
        if not request_ended:
            self._answered.add(sid)

    def _drop(self, sid: int, stream: _Stream) -> None:
        stream.queue.clear()
        stream.queued = 0
        self._forget(sid, stream)

    def _forget(self, sid: int, stream: _Stream) -> None:
        self._streams.pop(sid, None)
        if stream.unacked and not self._closed:
            # The application will not acknowledge bytes of a finished
            # stream; without this the connection window would leak.
            self._conn.acknowledge_received_data(stream.unacked, sid)
            stream.unacked = 0
