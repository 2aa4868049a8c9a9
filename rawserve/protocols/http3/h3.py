"""aioquic's H3Connection, adjusted for a server that checks requests itself.

aioquic validates request heads its own way and answers a malformed one by
closing the whole connection; rawserve checks them with ``semantics`` (the
rules HTTP/2 uses) and answers with a stream error, so request HEADERS reach
the adapter undecided, as ``RequestHeaders`` and ``Trailers``. aioquic also
has no way to send GOAWAY and drops the control-stream frames it does not
know (PRIORITY_UPDATE): ``send_goaway`` writes the frame, and
``ControlReader`` picks the frames aioquic ignores out of the peer's control
stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aioquic._buffer import Buffer, BufferReadError
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import (
    FrameType,
    FrameUnexpected,
    H3Connection,
    H3Stream,
    HeadersState,
    Setting,
    StreamType,
    encode_frame,
)
from aioquic.h3.events import H3Event

# The unidirectional stream types a server reads (RFC 9114 section 6.2, RFC
# 9204 section 4.2); any other is dropped as it arrives.
KNOWN_UNI_TYPES = frozenset(
    (StreamType.CONTROL, StreamType.QPACK_ENCODER, StreamType.QPACK_DECODER)
)
PRIORITY_UPDATE_REQUEST = 0xF0700  # RFC 9218 section 7.2
PRIORITY_UPDATE_PUSH = 0xF0701
# A priority field value is a few bytes ("u=1, i"); anything much longer is
# not worth buffering.
MAX_PRIORITY_UPDATE_BYTES = 1024


@dataclass
class RequestHeaders(H3Event):
    """A request's first HEADERS frame, decoded but not validated."""

    headers: list[tuple[bytes, bytes]]
    stream_id: int
    stream_ended: bool


@dataclass
class Trailers(H3Event):
    headers: list[tuple[bytes, bytes]]
    stream_id: int
    stream_ended: bool


class ServerH3(H3Connection):
    """The server side of aioquic's HTTP/3 with request heads left to us."""

    def __init__(self, quic: Any, *, max_field_section_size: int) -> None:
        self._max_field_section_size = max_field_section_size
        super().__init__(quic)

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        settings[Setting.MAX_FIELD_SECTION_SIZE] = self._max_field_section_size
        settings.pop(Setting.ENABLE_CONNECT_PROTOCOL, None)  # no extended CONNECT
        return settings

    def _handle_request_or_push_frame(
        self,
        frame_type: int,
        frame_data: bytes | None,
        stream: H3Stream,
        stream_ended: bool,
    ) -> list[H3Event]:
        if frame_type != FrameType.HEADERS or stream.push_id is not None:
            return super()._handle_request_or_push_frame(
                frame_type, frame_data, stream, stream_ended
            )
        if stream.headers_recv_state == HeadersState.AFTER_TRAILERS:
            raise FrameUnexpected("HEADERS frame is not allowed in this state")
        # May raise pylsqpack.StreamBlocked: aioquic resumes the frame later.
        headers = self._decode_headers(stream.stream_id, frame_data)
        if stream.headers_recv_state == HeadersState.INITIAL:
            stream.headers_recv_state = HeadersState.AFTER_HEADERS
            return [RequestHeaders(headers, stream.stream_id, stream_ended)]
        stream.headers_recv_state = HeadersState.AFTER_TRAILERS
        return [Trailers(headers, stream.stream_id, stream_ended)]

    def send_goaway(self, identifier: int) -> None:
        """GOAWAY on our control stream (RFC 9114 section 5.2): request
        streams from ``identifier`` on will not be processed."""
        control = self._local_control_stream_id
        assert control is not None
        self._quic.send_stream_data(
            control, encode_frame(FrameType.GOAWAY, encode_uint_var(identifier))
        )

    def control_acknowledged(self) -> bool:
        """Everything sent on our control stream (a GOAWAY) was acknowledged.
        Closing before then could lose the GOAWAY with its packet, and a
        client that never saw it must assume every request may have been
        processed (RFC 9114 section 5.2)."""
        control = self._local_control_stream_id
        stream = self._quic._streams.get(control) if control is not None else None
        if stream is None:
            return True
        sender = stream.sender
        return bool(sender._buffer_start >= sender._buffer_stop)

    def buffered_bytes(self, stream_id: int) -> int:
        """Bytes of a request stream aioquic holds while it waits for the
        rest of a frame (or for QPACK to unblock it)."""
        stream = self._stream.get(stream_id)
        return len(stream.buffer) if stream is not None else 0

    def stream_type(self, stream_id: int) -> int | None:
        """The type of a peer's unidirectional stream, once it has arrived."""
        stream = self._stream.get(stream_id)
        return stream.stream_type if stream is not None else None

    def forget(self, stream_id: int) -> None:
        """Drop aioquic's record of a request stream we are done with."""
        self._stream.pop(stream_id, None)


class ControlReader:
    """Reads the frames aioquic ignores out of the peer's unidirectional
    streams: PRIORITY_UPDATE, GOAWAY and CANCEL_PUSH on its control stream. Fed the same
    bytes as aioquic; holds at most one small frame."""

    __slots__ = ("_buffer", "_control", "_frame_size", "_frame_type", "_types")

    def __init__(self) -> None:
        self._types: dict[int, int] = {}  # uni stream -> stream type
        self._control: int | None = None
        self._buffer = b""
        self._frame_type: int | None = None
        self._frame_size = 0

    def forget(self, stream_id: int) -> None:
        if stream_id != self._control:
            self._types.pop(stream_id, None)

    def feed(self, stream_id: int, data: bytes) -> list[tuple[int, bytes]]:
        """(frame type, payload) for each complete frame of interest."""
        if stream_id not in self._types:
            # The stream type is the first varint (at most 8 bytes); a type
            # split across packets is rare enough to only look at the first.
            buf = Buffer(data=data)
            try:
                stream_type = buf.pull_uint_var()
            except BufferReadError:
                return []
            self._types[stream_id] = stream_type
            if stream_type != StreamType.CONTROL or self._control is not None:
                return []
            self._control = stream_id
            data = data[buf.tell() :]
        if stream_id != self._control:
            return []
        out: list[tuple[int, bytes]] = []
        self._buffer += data
        while True:
            if self._frame_type is None:
                if not self._buffer:
                    break
                buf = Buffer(data=self._buffer)
                try:
                    self._frame_type = buf.pull_uint_var()
                    self._frame_size = buf.pull_uint_var()
                except BufferReadError:
                    self._frame_type = None
                    break
                self._buffer = self._buffer[buf.tell() :]
            wanted = (
                self._frame_type
                in (
                    PRIORITY_UPDATE_REQUEST,
                    PRIORITY_UPDATE_PUSH,
                    FrameType.GOAWAY,
                    FrameType.CANCEL_PUSH,
                )
                and self._frame_size <= MAX_PRIORITY_UPDATE_BYTES
            )
            if wanted:
                if len(self._buffer) < self._frame_size:
                    break
                out.append((self._frame_type, self._buffer[: self._frame_size]))
                self._buffer = self._buffer[self._frame_size :]
                self._frame_type = None
                continue
            skip = min(self._frame_size, len(self._buffer))
            self._buffer = self._buffer[skip:]
            self._frame_size -= skip
            if self._frame_size:
                break
            self._frame_type = None
        return out
