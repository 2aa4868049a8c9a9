"""aioquic's QuicConnection with receive windows that mean something.

aioquic doubles a stream's MAX_STREAM_DATA and the connection's MAX_DATA as
data *arrives*, so a handler that never reads its body would still let the
client send without bound. Here a window only opens as the application
consumes (``credit``): the same back-pressure as HTTP/2's WINDOW_UPDATE.
Unidirectional streams (control, QPACK) are consumed as they arrive, so the
adapter credits them at once and aioquic keeps raising their stream windows.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.connection import (
    MAX_STREAM_DATA_FRAME_CAPACITY,
    QuicConnection,
    stream_is_unidirectional,
)
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.stream import QuicStream


class FlowControlledQuic(QuicConnection):
    """A server QuicConnection whose request-stream and connection receive
    windows are ``stream_window``/``connection_window`` beyond what the
    application has consumed, and which lets ``max_streams`` request streams
    be open at once."""

    def __init__(
        self, *, stream_window: int, connection_window: int, max_streams: int, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._stream_window = stream_window
        self._connection_window = connection_window
        self._consumed = 0  # connection-level bytes consumed
        # Request stream -> bytes of it credited to the connection so far.
        # Kept while QUIC still has the stream, so that nothing is credited
        # twice; pruned once QUIC has forgotten it.
        self._credited: dict[int, int] = {}
        self._max_streams = max_streams
        limit = self._local_max_streams_bidi
        limit.value = limit.sent = max_streams

    def credit(self, stream_id: int, n: int) -> None:
        """``n`` bytes received on ``stream_id`` were consumed: open the
        stream's window (request streams) and the connection's by ``n``."""
        if n <= 0:
            return
        self._credit_connection(n)
        if stream_is_unidirectional(stream_id):
            return
        credited = self._credited.get(stream_id, 0) + n
        self._credited[stream_id] = credited
        stream = self._streams.get(stream_id)
        if stream is not None and stream.receiver._final_size is None:
            # Once the FIN is in, the client sends nothing more on the stream
            # (its final size is within the limit already): a larger one
            # would be a packet of its own for nothing, once per request.
            stream.max_stream_data_local = max(
                stream.max_stream_data_local, credited + self._stream_window
            )

    def release(self, stream_id: int, received: int = 0) -> None:
        """Nobody will read the stream (any more): every byte it has taken
        of the connection window (``received``, or more if QUIC has seen
        more, up to a reset's final size) goes back, and its window slides
        so that the peer can finish it. Call again as more bytes arrive."""
        credited = self._credited.get(stream_id, 0)
        stream = self._streams.get(stream_id)
        if stream is not None:
            received = max(received, stream.receiver.highest_offset)
        if received > credited:
            self._credit_connection(received - credited)
            credited = received
            if stream is not None and stream.receiver._final_size is None:
                stream.max_stream_data_local = max(
                    stream.max_stream_data_local, received + self._stream_window
                )
        if stream is None:
            self._credited.pop(stream_id, None)
        else:
            self._credited[stream_id] = credited
        if len(self._credited) > 2 * self._max_streams:
            for sid in [sid for sid in self._credited if sid not in self._streams]:
                del self._credited[sid]

    def _credit_connection(self, n: int) -> None:
        if n > 0:
            self._consumed += n
            max_data = self._local_max_data
            target = self._consumed + self._connection_window
            # A new limit goes out once the client's credit beyond what was
            # consumed is down to half the window, as h2's WindowManager
            # waits for half: raised after every request body, MAX_DATA took
            # a packet of its own for each lone request (three server packets
            # per request instead of two). The client is never short: it
            # keeps at least half a window of credit.
            if target - max_data.value >= self._connection_window // 2:
                max_data.value = target

    # -- aioquic hooks: never open a window on arrival ---------------------------

    def _write_connection_limits(self, builder: QuicPacketBuilder, space: Any) -> None:
        # aioquic doubles MAX_DATA once half is used; hide the use from it.
        max_data = self._local_max_data
        used = max_data.used
        max_data.used = 0
        try:
            super()._write_connection_limits(builder, space)
        finally:
            max_data.used = used

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: Any, stream: QuicStream
    ) -> None:
        if stream.stream_id is None or stream_is_unidirectional(stream.stream_id):
            super()._write_stream_limits(builder, space, stream)
            return
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream.stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local
