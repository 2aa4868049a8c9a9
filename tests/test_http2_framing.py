"""rawserve's HTTP/2 frame splitter (rawserve/protocols/http2/framing.py)
against h2's own.

``FrameBuffer`` makes DATA frames, and HEADERS frames carrying a whole block
without padding or priority, itself instead of through hyperframe's parsers.
The frames it hands on must be the ones hyperframe would make: same class,
stream, flags, data, lengths, priority fields, and the same frames must fall
to h2 (padding, priority, CONTINUATION, other types), whatever way the bytes
are split by the network.
"""

from __future__ import annotations

import random
from typing import Any

import h2.frame_buffer
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from rawserve.protocols.http2.framing import FrameBuffer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _random_frames(rng: random.Random) -> list[Frame]:
    frames: list[Frame] = [SettingsFrame(0, settings={3: 100})]
    for _ in range(rng.randrange(1, 40)):
        sid = rng.choice([1, 3, 5, 7, 2**31 - 1])
        # At most the frame size with padding and priority fields added.
        payload = rng.randbytes(rng.choice([0, 1, 5, 222, 1000, 16384 - 26]))
        roll = rng.random()
        frame: Any
        if roll < 0.4:
            frame = DataFrame(sid, data=payload)
            if rng.random() < 0.5:
                frame.flags.add("END_STREAM")
            if rng.random() < 0.2:
                frame.flags.add("PADDED")
                frame.pad_length = rng.randrange(0, 20)
        elif roll < 0.8:
            frame = HeadersFrame(sid, data=payload[:3000])
            for flag in ("END_STREAM", "END_HEADERS"):
                if rng.random() < 0.7:
                    frame.flags.add(flag)
            if rng.random() < 0.2:
                frame.flags.add("PADDED")
                frame.pad_length = rng.randrange(0, 20)
            if rng.random() < 0.2:
                frame.flags.add("PRIORITY")
                frame.depends_on = rng.randrange(0, 9)
                frame.stream_weight = rng.randrange(0, 256)
                frame.exclusive = rng.random() < 0.5
            if "END_HEADERS" not in frame.flags:
                frames.append(frame)
                cont = ContinuationFrame(sid, data=payload[:50])
                cont.flags.add("END_HEADERS")
                frame = cont
        elif roll < 0.9:
            frame = WindowUpdateFrame(sid, window_increment=rng.randrange(1, 1000))
        elif roll < 0.95:
            frame = RstStreamFrame(sid, error_code=8)
        else:
            frame = PingFrame(0, opaque_data=rng.randbytes(8))
        frames.append(frame)
    return frames


def _describe(frame: Frame) -> tuple[Any, ...]:
    fields = (type(frame).__name__, frame.stream_id, sorted(frame.flags), frame.body_len)
    if isinstance(frame, DataFrame):
        return (*fields, frame.data, frame.pad_length, frame.flow_controlled_length)
    if isinstance(frame, HeadersFrame):
        return (
            *fields,
            frame.data,
            frame.pad_length,
            frame.depends_on,
            frame.stream_weight,
            frame.exclusive,
        )
    return (*fields, frame.serialize_body())


def _split(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(0, 12))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _read(buffer: Any, pieces: list[bytes]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for piece in pieces:
        buffer.add_data(piece)
        try:
            out += [_describe(frame) for frame in buffer]
        except Exception as exc:  # a bad frame (padding too long): both refuse it
            return [*out, ("refused", type(exc).__name__)]
    return out


@pytest.mark.parametrize("seed", range(60))
def test_frames_are_the_ones_hyperframe_makes(seed: int) -> None:
    rng = random.Random(seed)
    frames = _random_frames(rng)
    wire = PREFACE + b"".join(f.serialize() for f in frames)
    pieces = _split(wire, rng)
    ours = FrameBuffer(max_header_block=1 << 20)
    theirs = h2.frame_buffer.FrameBuffer(server=True)
    theirs.max_frame_size = ours.max_frame_size = 16384
    assert _read(ours, pieces) == _read(theirs, pieces)


def test_lean_frames_take_the_flags_hyperframe_allows() -> None:
    # The frames made directly still refuse a flag their type does not define,
    # and their flags are their own (not shared between frames).
    buffer = FrameBuffer(max_header_block=1 << 20)
    buffer.max_frame_size = 16384
    first, second = DataFrame(1, data=b"a"), DataFrame(3, data=b"b")
    first.flags.add("END_STREAM")
    buffer.add_data(PREFACE + SettingsFrame(0).serialize() + first.serialize())
    buffer.add_data(second.serialize())
    got = list(buffer)[1:]
    assert [type(f) for f in got] == [DataFrame, DataFrame]
    got[0].flags.discard("END_STREAM")
    assert "END_STREAM" not in got[0].flags
    got[1].flags.add("END_STREAM")
    assert sorted(got[1].flags) == ["END_STREAM"]
    with pytest.raises(ValueError, match="Unexpected flag"):
        got[1].flags.add("PRIORITY")
