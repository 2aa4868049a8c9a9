"""The HTTP/2 send scheduler: response body bytes queued per stream become
DATA frames as the stream and connection windows allow. When a window opens
for several streams, they are served in RFC 9218 order
(``semantics.write_order``): a non-incremental stream as far as the windows
allow, incremental ones round-robin, a frame each."""

from __future__ import annotations

from collections.abc import Callable

import h2.exceptions

from rawserve.protocols.http2.core import Core
from rawserve.protocols.http2.stream import Stream
from rawserve.protocols.semantics import write_order

StreamCallback = Callable[[int, Stream], None]


class Sender:
    """Frames the response bodies of ``streams`` on ``conn``. ``done`` is
    called when a stream's response is complete, ``failed`` when h2 refuses
    to send on it (the stream is gone); both must remove it from ``streams``."""

    __slots__ = ("_conn", "_done", "_failed", "_streams")

    def __init__(
        self,
        conn: Core,
        streams: dict[int, Stream],
        *,
        done: StreamCallback,
        failed: StreamCallback,
    ) -> None:
        self._conn = conn
        self._streams = streams
        self._done = done
        self._failed = failed

    def write(self, sid: int, stream: Stream, data: bytes, end_stream: bool) -> None:
        """Queue ``data`` (and END_STREAM after it) and send what the windows allow."""
        if end_stream and not stream.queue and self._conn.send_whole_body(sid, data):
            # The common response: its whole body in one frame, sent at once.
            self._conn.window_credit += 2
            stream.closing = stream.response_done = True
            self._done(sid, stream)
            return
        if data:
            stream.queue.append(data)
            stream.queued += len(data)
        if end_stream:
            stream.closing = True
        self.flush(sid, stream)

    def flush(self, sid: int, stream: Stream, max_frames: int = -1) -> bool:
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
                conn.send_body(sid, piece, last)
                conn.window_credit += 2
                max_frames -= 1
                if last:
                    stream.response_done = True
            if stream.closing and not queue and not stream.response_done:
                conn.send_body(sid, b"", True)
                stream.response_done = True
        except h2.exceptions.ProtocolError:
            self._failed(sid, stream)
            return False
        if stream.response_done:
            self._done(sid, stream)
            return False
        return bool(queue)

    def flush_all(self) -> None:
        """Serve every stream with something to send, in RFC 9218 order."""
        streams = self._streams
        ready = [
            (sid, s.priority)
            for sid, s in streams.items()
            if s.queue or (s.closing and not s.response_done)
        ]
        for group in write_order(ready):
            if not group.incremental:
                for sid in group.stream_ids:
                    stream = streams.get(sid)
                    if stream is not None:
                        self.flush(sid, stream)
                continue
            ids = list(group.stream_ids)
            while ids and self._conn.outbound_flow_control_window > 0:
                ids = [g for g in ids if g in streams and self.flush(g, streams[g], 1)]
