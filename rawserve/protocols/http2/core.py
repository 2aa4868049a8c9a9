"""h2's connection, hardened: the frame-level rules of RFC 9113 h2 gets wrong
or leaves out (stream errors rather than connection errors where the RFC asks
for them, REFUSED_STREAM, COMPRESSION_ERROR, GOAWAY from the peer), limits
against floods (rapid reset, control frames, empty DATA), and a frame
dispatch without h2's per-frame trace formatting. Works in h2's terms: h2
events out, h2 exceptions raised; the adapter translates.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.connection import AllowedStreamIDs, ConnectionState
from h2.errors import ErrorCodes
from h2.stream import STREAM_OPEN, StreamClosedBy, StreamState
from hpack.exceptions import HPACKError, OversizedHeaderListError
from hpack.table import HeaderTable
from hyperframe.exceptions import InvalidPaddingError
from hyperframe.frame import (
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
from rawserve.protocols.http2.framing import (
    PRIORITY_UPDATE,
    FrameBuffer,
    check_priority_update,
    lean_frame,
)
from rawserve.protocols.http2.hpack_codec import FastDecoder, FastEncoder
from rawserve.protocols.semantics import RateLimit

if TYPE_CHECKING:
    from h2._typing import Buffer


# Past this many HEADERS + CONTINUATION bytes (or decoded header list bytes) the
# block is not decoded at all: an attack, not a large request.
HARD_HEADER_FACTOR = 2


# A frame's 9-byte head (RFC 9113 section 4.1): length (24 bits, as a byte and
# a short), type, flags, stream id.
_FRAME_HEAD = struct.Struct(">BHBBL")
_DATA, _HEADERS, _WINDOW_UPDATE, _CONTINUATION = 0x0, 0x1, 0x8, 0x9
_INCREMENT = struct.Struct(">L")
_END_STREAM, _END_HEADERS = 0x1, 0x4


# The request header blocks a connection remembers decoded (see
# Core._decode_request_block): a client repeating a request sends the same
# block, a few dozen bytes. Bounded per connection in entries and in bytes.
BLOCK_MEMO_ENTRIES = 16
BLOCK_MEMO_BYTES = 1024


class _CountingTable(HeaderTable):
    """hpack's dynamic table, counting its changes: decoding a block depends
    on the block's bytes and on the table, so (bytes, generation) names a
    decoding exactly. Every change goes through ``add`` or ``maxsize``."""

    generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        super().add(name, value)

    @HeaderTable.maxsize.setter  # type: ignore[attr-defined,untyped-decorator]
    def maxsize(self, newmax: int) -> None:
        self.generation += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


def server_config() -> h2.config.H2Configuration:
    """h2 as rawserve's server connection runs it: header validation and
    normalization are the adapter's (one pass, in semantics.py)."""
    return h2.config.H2Configuration(
        client_side=False,
        header_encoding=None,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )


_MAX_STREAMS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
_INITIAL_WINDOW = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE
_UNLIMITED_STREAMS = 2**32 + 1  # h2's value for MAX_CONCURRENT_STREAMS unset


def _setting(settings: h2.settings.Settings, code: int, default: int) -> int:
    """A setting's value in force, as Settings.get(code, default) gives it,
    without the two property and mapping calls per read (four reads per
    request)."""
    values = settings._settings.get(code)
    value = values[0] if values else None
    return default if value is None else value


class _CompressionError(h2.exceptions.ProtocolError):
    error_code = ErrorCodes.COMPRESSION_ERROR


def _block_error(exc: h2.exceptions.ProtocolError) -> h2.exceptions.ProtocolError:
    """The error to raise for a failed header block: RFC 9113 section 4.3 makes
    a field block decoding error a COMPRESSION_ERROR; h2 says PROTOCOL_ERROR."""
    if isinstance(
        exc.__cause__, (HPACKError, IndexError, TypeError, UnicodeDecodeError)
    ) and not isinstance(exc.__cause__, OversizedHeaderListError):
        return _CompressionError(str(exc))
    return exc


def _stream_reset(stream_id: int, error_code: int) -> h2.events.StreamReset:
    event = h2.events.StreamReset(stream_id=stream_id, error_code=error_code)
    event.remote_reset = False
    return event


class Core(h2.connection.H2Connection):
    """h2's connection plus the frame-level rules and limits it leaves out."""

    # The request and response fast paths below; tests turn them off to
    # compare with h2's own handling of the same frames.
    fast_paths = True

    def __init__(self, config: h2.config.H2Configuration, limits: Limits) -> None:
        super().__init__(config=config)
        hard_cap = HARD_HEADER_FACTOR * limits.max_header_bytes + 4096
        self.incoming_buffer = self._frames = FrameBuffer(hard_cap)
        self.decoder = FastDecoder()
        self.decoder.header_table = self._table = _CountingTable()
        self._blocks: dict[bytes, tuple[int, list[tuple[bytes, bytes]]]] = {}
        self.encoder = FastEncoder()
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
        limit = _setting(self.local_settings, _MAX_STREAMS, _UNLIMITED_STREAMS)
        if n < limit and n < self._purge_at:
            return n
        count = super().open_inbound_streams
        self._purge_at = 2 * len(self.streams) + 32
        return count

    # -- the response fast path ---------------------------------------------
    #
    # h2 sends a frame by building hyperframe objects (a Flags set each),
    # running two state machines through dict lookups keyed by enum pairs, and
    # serializing: about a quarter of the loop's time on an h2c /predict. A
    # server's final response on a stream the client opened is the common
    # case; these two methods write its frames directly and make exactly the
    # state changes h2 would (the stream's state, headers_sent, closed_by, both
    # flow-control windows). Anything else (the connection closing, trailers,
    # a window or frame size exceeded) goes to h2, which raises as before.

    def _sendable(self, sid: int) -> h2.stream.H2Stream | None:
        stream = self.streams.get(sid)
        if (
            stream is None
            or self.state_machine.state is not ConnectionState.SERVER_OPEN
            or not self.fast_paths
        ):
            return None
        state = stream.state_machine.state
        if state is StreamState.HALF_CLOSED_REMOTE or state is StreamState.OPEN:
            return stream
        return None

    @staticmethod
    def _send_end_stream(stream: h2.stream.H2Stream) -> None:
        machine = stream.state_machine
        if machine.state is StreamState.HALF_CLOSED_REMOTE:
            machine.state = StreamState.CLOSED
            machine.stream_closed_by = StreamClosedBy.SEND_END_STREAM
        else:
            machine.state = StreamState.HALF_CLOSED_LOCAL

    def send_final_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        """``send_headers`` for a final (non-1xx) response head."""
        stream = self._sendable(sid)
        if stream is None or stream.state_machine.headers_sent or stream.state_machine.client:
            self.send_headers(sid, headers, end_stream=end)
            return
        stream.state_machine.headers_sent = True
        stream.request_method = None  # as h2's send_headers leaves it
        if end:
            self._send_end_stream(stream)
        # After the state change, as in h2: encoding changes the HPACK context
        # for good.
        block = self.encoder.encode(headers)
        out = self._data_to_send
        size = self.max_outbound_frame_size
        if len(block) <= size:
            flags = _END_HEADERS | _END_STREAM if end else _END_HEADERS
            n = len(block)
            out += _FRAME_HEAD.pack(n >> 16, n & 0xFFFF, _HEADERS, flags, sid)
            out += block
            return
        view = memoryview(block)
        for start in range(0, len(block), size):
            piece = view[start : start + size]
            n = len(piece)
            kind = _HEADERS if start == 0 else _CONTINUATION
            flags = _END_STREAM if end and start == 0 else 0
            if start + size >= len(block):
                flags |= _END_HEADERS
            out += _FRAME_HEAD.pack(n >> 16, n & 0xFFFF, kind, flags, sid)
            out += piece

    def send_body(self, sid: int, data: bytes | memoryview, end: bool) -> None:
        """``send_data`` (or ``end_stream`` for no data): one DATA frame."""
        stream = self._sendable(sid)
        n = len(data)
        if (
            stream is None
            or n > self.outbound_flow_control_window
            or n > stream.outbound_flow_control_window
            or n > self.max_outbound_frame_size
        ):
            if n or not end:
                self.send_data(sid, data, end_stream=end)
            else:
                self.end_stream(sid)
            return
        if end:
            self._send_end_stream(stream)
        out = self._data_to_send
        out += _FRAME_HEAD.pack(n >> 16, n & 0xFFFF, _DATA, _END_STREAM if end else 0, sid)
        if n:
            out += data
            stream.outbound_flow_control_window -= n
            self.outbound_flow_control_window -= n

    def send_whole_body(self, sid: int, data: bytes) -> bool:
        """A final DATA frame carrying a whole response body, if both windows
        and the frame size allow it now (``send_body`` with ``end``, without
        the sender's queue); False, with nothing sent, otherwise."""
        stream = self._sendable(sid)
        n = len(data)
        if (
            stream is None
            or not n
            or n > self.outbound_flow_control_window
            or n > stream.outbound_flow_control_window
            or n > self.max_outbound_frame_size
        ):
            return False
        self._send_end_stream(stream)
        out = self._data_to_send
        out += _FRAME_HEAD.pack(n >> 16, n & 0xFFFF, _DATA, _END_STREAM, sid)
        out += data
        stream.outbound_flow_control_window -= n
        self.outbound_flow_control_window -= n
        return True

    def receive_data(self, data: Buffer) -> list[h2.events.Event]:
        """h2's ``receive_data``, taking a new request's HEADERS and its DATA
        straight from the frame buffer's lean tuples (``_receive_lean``)."""
        events: list[h2.events.Event] = []
        buffer = self._frames
        try:
            buffer.add_data(data)
        except h2.exceptions.ProtocolError as exc:
            # A bad preface fails before any frame, where h2 writes no GOAWAY.
            if self.state_machine.state != ConnectionState.CLOSED:
                self._terminate_connection(exc.error_code)
            raise
        buffer.max_frame_size = self.max_inbound_frame_size
        try:
            while (item := buffer.next_item()) is not None:
                if isinstance(item, Frame):
                    events += self._receive_frame(item)
                    continue
                got = self._receive_lean(*item)
                if got is None:
                    got = self._receive_frame(lean_frame(*item))
                events += got
        except InvalidPaddingError as exc:
            self._terminate_connection(ErrorCodes.PROTOCOL_ERROR)
            msg = "Received frame with invalid padding."
            raise h2.exceptions.ProtocolError(msg) from exc
        except h2.exceptions.ProtocolError as exc:
            self._terminate_connection(exc.error_code)
            raise
        return events

    def _receive_lean(
        self, kind: int, flags: int, sid: int, payload: bytes
    ) -> list[h2.events.Event] | None:
        """The two frames of a common request, from the frame buffer's tuple:
        a HEADERS opening a new stream, and DATA on a stream whose request is
        open. They take the same path as through ``_receive_frame`` (same
        checks, order, state and events) without a frame object, its flag
        set and the dispatch. None: anything else, for ``_receive_frame``."""
        if self.state_machine.state is not ConnectionState.SERVER_OPEN or not self.fast_paths:
            return None
        end = bool(flags & _END_STREAM)
        if kind == _DATA:
            stream = self.streams.get(sid)
            if stream is None or stream.state_machine.state is not StreamState.OPEN:
                return None
            if not payload and not end:
                self._count_control("empty DATA")
            try:
                return self._receive_request_data(sid, payload, len(payload), end, stream)
            except h2.exceptions.InvalidBodyLengthError:
                return self._body_length_mismatch(sid, len(payload))
        # HEADERS (whole block, no padding, no priority) on a new stream,
        # below the limits: what _receive_headers_frame sends to the fast path.
        if (
            sid in self.streams
            or sid <= self.highest_inbound_stream_id
            or not sid & 1
            or self.refuse_new
            or len(self.streams) >= self.max_streams
        ):
            return None
        try:
            return self._receive_request_headers(sid, payload, end)
        except h2.exceptions.DenialOfServiceError:
            raise
        except h2.exceptions.ProtocolError as exc:
            raise _block_error(exc) from exc.__cause__

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None:
        """h2's, for a stream it knows: the same window arithmetic and the
        same WINDOW_UPDATE bytes, without its four calls and trace lines per
        acknowledgement (one per request body)."""
        stream = self.streams.get(stream_id)
        if stream is None or acknowledged_size < 0 or not self.fast_paths:
            super().acknowledge_received_data(acknowledged_size, stream_id)
            return
        out = self._data_to_send
        increment = self._inbound_flow_control_window_manager.process_bytes(acknowledged_size)
        if increment:
            out += _FRAME_HEAD.pack(0, 4, _WINDOW_UPDATE, 0, 0)
            out += _INCREMENT.pack(increment)
        if STREAM_OPEN[stream.state_machine.state]:
            increment = stream._inbound_window_manager.process_bytes(acknowledged_size)
            if increment:
                out += _FRAME_HEAD.pack(0, 4, _WINDOW_UPDATE, 0, stream_id)
                out += _INCREMENT.pack(increment)

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
            stream = self.streams.get(frame.stream_id)
            if (
                stream is not None
                and stream.state_machine.state is StreamState.OPEN
                and self.state_machine.state is ConnectionState.SERVER_OPEN
                and self.fast_paths
            ):
                end = "END_STREAM" in frame.flags
                n = frame.flow_controlled_length
                try:
                    return self._receive_request_data(frame.stream_id, frame.data, n, end, stream)
                except h2.exceptions.InvalidBodyLengthError:
                    return self._body_length_mismatch(frame.stream_id, n)
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
                check_priority_update(frame)
        elif kind is PingFrame or kind is SettingsFrame:
            self._count_control("PING/SETTINGS")
        try:
            return self._dispatch_frame(frame)
        except h2.exceptions.InvalidBodyLengthError:
            assert isinstance(frame, DataFrame)
            return self._body_length_mismatch(frame.stream_id, frame.flow_controlled_length)

    def _body_length_mismatch(self, sid: int, n: int) -> list[h2.events.Event]:
        # RFC 9113 section 8.1.1: content-length mismatch is malformed, a
        # stream error. h2 raises it after counting the DATA against both
        # windows and before ending the stream.
        self._count_reset()
        self.reset_stream(sid, ErrorCodes.PROTOCOL_ERROR)
        self.acknowledge_received_data(n, sid)
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
            if (
                stream is None
                and "PRIORITY" not in frame.flags
                and self.state_machine.state is ConnectionState.SERVER_OPEN
                and self.fast_paths
            ):
                end = "END_STREAM" in frame.flags
                return [], self._receive_request_headers(sid, frame.data, end)
            return super()._receive_headers_frame(frame)
        except h2.exceptions.DenialOfServiceError:
            raise
        except h2.exceptions.ProtocolError as exc:
            raise _block_error(exc) from exc.__cause__

    def _receive_request_headers(self, sid: int, block: bytes, end: bool) -> list[h2.events.Event]:
        """h2's ``_receive_headers_frame`` for a request opening a new stream,
        without its state-machine lookups and generator passes (validation
        and normalization are off: the adapter does them). The same checks in
        the same order, the same state after, the same events."""
        limit = _setting(self.local_settings, _MAX_STREAMS, _UNLIMITED_STREAMS)
        open_now = self.open_inbound_streams
        if open_now + 1 > limit:
            raise h2.exceptions.TooManyStreamsError(
                f"Max inbound streams is {limit}, {open_now} open"
            )
        headers = self._decode_request_block(block)
        # Checks the id (StreamIDTooLowError, odd) and makes the stream.
        stream = self._begin_new_stream(sid, AllowedStreamIDs.ODD)
        for name, value in headers:
            if name[:1] != b":":
                break
            if name == b":status" and value[:1] == b"1":
                # h2's is_informational_response: h2 refuses an informational
                # head on a new stream its own way.
                return stream.receive_headers(headers, end, None)[1]
        machine = stream.state_machine
        machine.client = False
        machine.headers_received = True
        event = h2.events.RequestReceived(stream_id=sid)
        events: list[h2.events.Event] = [event]
        if end:
            machine.state = StreamState.HALF_CLOSED_REMOTE
            ended = h2.events.StreamEnded(stream_id=sid)
            event.stream_ended = ended
            events.append(ended)
        else:
            machine.state = StreamState.OPEN
        stream._initialize_content_length(headers)
        # The list may be the memo's (the same object for every request that
        # sent this block): consumers only read it.
        event.headers = headers
        return events

    def _begin_new_stream(
        self, stream_id: int, allowed_ids: AllowedStreamIDs
    ) -> h2.stream.H2Stream:
        """h2's, for a stream the client opens with a new, higher id (every
        request): the same stream, without three trace lines and the walk
        over the open streams one of them formats."""
        if (
            allowed_ids is not AllowedStreamIDs.ODD
            or not stream_id & 1
            or stream_id <= self.highest_inbound_stream_id
            or not self.fast_paths
        ):
            return super()._begin_new_stream(stream_id, allowed_ids)
        stream = h2.stream.H2Stream(
            stream_id,
            config=self.config,
            inbound_window_size=_setting(self.local_settings, _INITIAL_WINDOW, 65535),
            outbound_window_size=_setting(self.remote_settings, _INITIAL_WINDOW, 65535),
        )
        stream.max_outbound_frame_size = self.max_outbound_frame_size
        self.streams[stream_id] = stream
        self.highest_inbound_stream_id = stream_id
        return stream

    def _decode_request_block(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """``_decode_headers``, remembering the blocks whose decoding left the
        dynamic table as it was. A repeated request is usually one such block
        (indexed fields, and literals a client does not index, such as
        ``:path`` and ``content-length`` from nghttp2): decoded once, it is
        the same list again while the table is unchanged. Errors are never
        remembered, so a bad block fails each time as h2 would fail it."""
        if type(block) is not bytes:
            block = bytes(block)
        table = self._table
        generation = table.generation
        memo = self._blocks
        hit = memo.get(block)
        if hit is not None and hit[0] == generation:
            return hit[1]
        headers = list(h2.connection._decode_headers(self.decoder, block))
        if table.generation == generation and len(block) <= BLOCK_MEMO_BYTES:
            if len(memo) >= BLOCK_MEMO_ENTRIES:
                memo.clear()
            memo[block] = (generation, headers)
        return headers

    def _receive_request_data(
        self, sid: int, data: bytes, n: int, end: bool, stream: h2.stream.H2Stream
    ) -> list[h2.events.Event]:
        """h2's ``_receive_data_frame`` on a stream in the OPEN state: the same
        window accounting and content-length tracking, in h2's order. ``n``
        is the frame's flow-controlled length (padding included)."""
        self._inbound_flow_control_window_manager.window_consumed(n)
        event = h2.events.DataReceived(stream_id=sid)
        stream._inbound_window_manager.window_consumed(n)
        stream._track_content_length(len(data), end)
        event.data = data
        event.flow_controlled_length = n
        if not end:
            return [event]
        stream.state_machine.state = StreamState.HALF_CLOSED_REMOTE
        ended = h2.events.StreamEnded(stream_id=sid)
        event.stream_ended = ended
        return [event, ended]

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
