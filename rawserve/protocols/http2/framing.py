"""HTTP/2 frame splitting with the checks that must run on a frame's header.

h2's FrameBuffer would buffer a 16 MiB frame before refusing it, accepts any
first frame, answers a SETTINGS ACK with payload with the wrong code, and
lets a header block grow without bound. ``FrameBuffer`` adds those limits;
``check_priority_update`` validates the RFC 9218 frame h2 does not know.
"""

from __future__ import annotations

import h2.exceptions
import h2.frame_buffer
from h2.errors import ErrorCodes
from hyperframe.flags import Flags
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    ExtensionFrame,
    Frame,
    HeadersFrame,
    WindowUpdateFrame,
)

PRIORITY_UPDATE = 0x10  # RFC 9218 section 7.1
# Frames (HEADERS and its CONTINUATIONs) in one header block. h2 has a
# similar backlog limit but answers PROTOCOL_ERROR, not ENHANCE_YOUR_CALM.
MAX_CONTINUATIONS = 63


class FrameSizeError(h2.exceptions.ProtocolError):
    error_code = ErrorCodes.FRAME_SIZE_ERROR


# The flag names each flags byte means, per frame class: hyperframe's Flags
# builds its set of valid names from the class's Flag list on every frame.
_VALID_FLAGS: dict[type[Frame], set[str]] = {
    cls: {f.name for f in cls.defined_flags} for cls in (DataFrame, HeadersFrame)
}
_FLAG_NAMES: dict[tuple[type[Frame], int], frozenset[str]] = {}


def _flags(cls: type[Frame], byte: int) -> Flags:
    names = _FLAG_NAMES.get((cls, byte))
    if names is None:
        names = frozenset(f.name for f in cls.defined_flags if byte & f.bit)
        _FLAG_NAMES[(cls, byte)] = names
    flags = Flags.__new__(Flags)
    flags._valid_flags = _VALID_FLAGS[cls]  # read only, by Flags.add
    flags._flags = set(names)
    return flags


# (kind, flags byte, stream id, payload): see FrameBuffer.next_item.
LeanFrame = tuple[int, int, int, bytes]


def lean_frame(kind: int, byte: int, sid: int, payload: bytes) -> Frame:
    """A lean frame as the object hyperframe's ``parse_frame_header`` and
    ``parse_body`` would make, its attributes set directly (for the frames
    Core does not take from the tuple itself)."""
    frame: DataFrame | HeadersFrame
    if kind == 0x0:
        frame = DataFrame.__new__(DataFrame)
    else:
        frame = HeadersFrame.__new__(HeadersFrame)
        frame.depends_on = 0
        frame.stream_weight = 0
        frame.exclusive = False
    frame.stream_id = sid
    frame.flags = _flags(type(frame), byte)
    frame.body_len = len(payload)
    frame.pad_length = 0
    frame.data = payload
    return frame


class FrameBuffer(h2.frame_buffer.FrameBuffer):
    """h2's frame splitter, with checks that must run on the frame header:
    h2 would buffer a 16 MiB frame before refusing it, accepts any first
    frame, and answers a SETTINGS ACK with payload with the wrong code."""

    def __init__(self, max_header_block: int) -> None:
        super().__init__(server=True)
        self._max_block = max_header_block
        self._block = 0
        self._preface_settings = False

    def __next__(self) -> Frame:
        item = self.next_item()
        if item is None:
            raise StopIteration
        if isinstance(item, Frame):
            return item
        return lean_frame(*item)

    def next_item(self) -> Frame | LeanFrame | None:
        """The next whole frame, or None until more bytes come. A DATA, or a
        HEADERS carrying a whole block, without padding or priority comes as
        a ``LeanFrame`` tuple (kind, flags byte, stream id, payload): Core
        handles the common request frames from it without a frame object."""
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
                raise FrameSizeError("SETTINGS frame with ACK and a payload")
            if (
                kind <= 0x1
                and not flags & 0x28  # PADDED, PRIORITY
                and (kind == 0x0 or flags & 0x4)  # HEADERS: END_HEADERS
                and len(data) >= 9 + length
                and not self._headers_buffer
            ):
                sid = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
                if sid:
                    payload = bytes(data[9 : 9 + length])
                    del data[: 9 + length]
                    return (kind, flags, sid, payload)
            if kind == 0x8 and length == 4 and len(data) >= 13 and not self._headers_buffer:
                sid = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
                if sid and not int.from_bytes(data[9:13], "big") & 0x7FFFFFFF:
                    # A zero increment on a stream is a stream error (RFC 9113
                    # section 6.9); hyperframe refuses to parse it at all.
                    del data[:13]
                    return WindowUpdateFrame(sid, window_increment=0)
        try:
            return super().__next__()
        except StopIteration:
            return None

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


def check_priority_update(frame: ExtensionFrame) -> None:
    # RFC 9218 section 7.1
    if frame.stream_id != 0:
        raise h2.exceptions.ProtocolError("PRIORITY_UPDATE frame on a stream other than 0")
    if len(frame.body) < 4:
        raise FrameSizeError("PRIORITY_UPDATE frame shorter than 4 bytes")
    if int.from_bytes(frame.body[:4], "big") & 0x7FFFFFFF == 0:
        raise h2.exceptions.ProtocolError("PRIORITY_UPDATE for stream 0")
