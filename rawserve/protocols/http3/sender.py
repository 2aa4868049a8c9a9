"""The HTTP/3 send scheduler: response body bytes queued per stream are
handed to QUIC in RFC 9218 order (``semantics.write_order``), no more than the
congestion window can send now and the peer's windows accept, so that a more
urgent response is not interleaved with a less urgent one when not
everything can leave at once (aioquic itself packs the streams it holds
round-robin, packet by packet). The HTTP/2 counterpart is
``protocols.http2.sender``."""

from __future__ import annotations

from collections.abc import Callable

from aioquic.quic.connection import NetworkAddress

from rawserve.core.priority import Priority
from rawserve.protocols.http3.h3 import ServerH3
from rawserve.protocols.http3.quic import FlowControlledQuic
from rawserve.protocols.http3.stream import Stream
from rawserve.protocols.semantics import write_order

INCREMENTAL_QUANTUM = 16 * 1024
DATA_FRAME_OVERHEAD = 9  # type (1) + length (at most 8)

StreamCallback = Callable[[int, Stream], None]


class Sender:
    """Moves the queued response bodies of ``streams`` into ``quic``. ``done``
    is called when a stream's response is complete, ``drop`` when QUIC no
    longer has the stream; both remove it from ``streams``. ``h3`` is set once
    ALPN has chosen HTTP/3."""

    __slots__ = ("_done", "_drop", "_quic", "_streams", "draining", "h3")

    def __init__(
        self,
        quic: FlowControlledQuic,
        streams: dict[int, Stream],
        *,
        done: StreamCallback,
        drop: StreamCallback,
    ) -> None:
        self._quic = quic
        self._streams = streams
        self._done = done
        self._drop = drop
        self.h3: ServerH3 | None = None
        # Answered streams whose last bytes QUIC has not sent yet, with their
        # priority: less urgent responses wait behind them.
        self.draining: dict[int, Priority] = {}

    def pump(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        """Hand queued response bytes to QUIC in RFC 9218 order, no more than
        the congestion window can send now and the peer's windows accept.

        aioquic packs the streams it holds round-robin, packet by packet; so
        that a more urgent response is not interleaved with a less urgent one
        when not everything can leave at once, what one stream (or one
        incremental group) was given is packed into datagrams before the next
        one gets any."""
        ready = [
            (sid, s.priority)
            for sid, s in self._streams.items()
            if s.queue or (s.closing and not s.response_done)
        ]
        # Responses entirely handed over keep their place while QUIC still
        # holds unsent bytes of theirs.
        waiting = []
        for sid, priority in list(self.draining.items()):
            if self._unsent(sid):
                waiting.append((sid, priority))
            else:
                del self.draining[sid]
        if not ready:
            return []
        ready += waiting
        units: list[tuple[bool, tuple[int, ...]]] = []
        for group in write_order(ready):
            if group.incremental:
                units.append((True, group.stream_ids))
            else:
                units.extend((False, (sid,)) for sid in group.stream_ids)
        out: list[tuple[bytes, NetworkAddress]] = []
        budget = self._budget()
        # When everything waiting fits in what can leave now (the common case:
        # small responses), it all leaves in this flush whatever the packing,
        # and one packing of all streams together saves datagrams.
        fits = not waiting and budget >= sum(
            self._streams[sid].queued + DATA_FRAME_OVERHEAD for sid, _ in ready
        )
        for i, (incremental, ids) in enumerate(units):
            if budget <= 0:
                break
            before = budget
            if not incremental:
                budget = self._feed(ids[0], budget, -1)
            else:
                pending = list(ids)
                while pending:
                    start = budget
                    for sid in pending:
                        budget = self._feed(sid, budget, INCREMENTAL_QUANTUM)
                    pending = [s for s in pending if s in self._streams and self._streams[s].queue]
                    if budget == start:
                        break
            if i + 1 == len(units) or fits:
                continue
            if budget != before:
                out += self._quic.datagrams_to_send(now)
                budget = self._budget()
            if any(self._unsent(sid) for sid in ids):
                break  # paced or out of window: the rest waits its turn
        return out

    def _unsent(self, sid: int) -> int:
        """Bytes of the stream QUIC holds and has not sent yet."""
        qs = self._quic._streams.get(sid)
        return qs.sender._buffer_stop - qs.sender.highest_offset if qs is not None else 0

    def _budget(self) -> int:
        """Bytes QUIC could send now: the congestion window and the peer's
        connection window, less what it holds unsent."""
        quic = self._quic
        unsent = sum(self._unsent(sid) for sid in self._streams)
        loss = quic._loss
        return (
            min(
                loss.congestion_window - loss.bytes_in_flight,
                quic._remote_max_data - quic._remote_max_data_used,
            )
            - unsent
        )

    def _feed(self, sid: int, budget: int, quantum: int) -> int:
        """Move up to ``budget`` bytes (``quantum`` at most, if positive) of
        the stream's queue into QUIC; the budget left."""
        stream = self._streams.get(sid)
        qs = self._quic._streams.get(sid)
        h3 = self.h3
        assert h3 is not None
        if stream is None:
            return budget
        if qs is None:
            self._drop(sid, stream)
            return budget
        room = min(budget, qs.max_stream_data_remote - qs.sender._buffer_stop)
        if quantum > 0:
            room = min(room, quantum + DATA_FRAME_OVERHEAD)
        queue = stream.queue
        while queue and room > DATA_FRAME_OVERHEAD:
            chunk = queue[0]
            size = room - DATA_FRAME_OVERHEAD
            if len(chunk) <= size:
                queue.popleft()
                piece = chunk
            else:
                view = chunk if isinstance(chunk, memoryview) else memoryview(chunk)
                piece = view[:size]
                queue[0] = view[size:]
            stream.queued -= len(piece)
            last = stream.closing and not queue
            h3.send_data(sid, bytes(piece), end_stream=last)
            cost = len(piece) + DATA_FRAME_OVERHEAD
            room -= cost
            budget -= cost
            if last:
                self._done(sid, stream)
                return budget
        if stream.closing and not queue and not stream.response_done:
            h3.send_data(sid, b"", end_stream=True)
            self._done(sid, stream)
        return budget

    def responses_delivered(self) -> bool:
        """Every response stream's bytes are acknowledged (or reset). A request
        stream whose head is still on its way counts too: QUIC opened it with
        the later one (RFC 9000 3.2), and below the GOAWAY id it will be
        processed (RFC 9114 5.2); the graceful timeout bounds the wait."""
        for sid, qs in self._quic._streams.items():
            if sid % 4 == 0 and not qs.sender.is_finished:
                return False
        return True
