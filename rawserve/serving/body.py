"""The request body as the handler sees it: an async stream of chunks fed by
the stream driver, with flow-control credit returned as the handler consumes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from rawserve.core.errors import BodyTooLarge, ClientDisconnected


class BodyStream:
    """Chunks arrive through ``feed``/``end``/``abort`` (driver side) and leave
    through ``async for`` (handler side). ``on_consume(n)`` is called once the
    handler has taken ``n`` bytes, which is when HTTP/2 and HTTP/3 return window
    credit and HTTP/1.1 resumes reading: a slow handler pushes back on its client.
    """

    __slots__ = (
        "_chunks",
        "_ended",
        "_error",
        "_limit",
        "_on_consume",
        "_on_first_read",
        "_received",
        "_started",
        "_waiter",
        "buffered",
    )

    def __init__(
        self,
        *,
        limit: int,
        on_consume: Callable[[int], None] | None = None,
        on_first_read: Callable[[], None] | None = None,
        declared_length: int | None = None,
    ) -> None:
        self._chunks: deque[bytes] = deque()
        self._ended = False
        self._error: BaseException | None = None
        self._limit = limit
        self._on_consume = on_consume
        self._on_first_read = on_first_read
        self._received = 0
        self._started = False
        self._waiter: asyncio.Future[None] | None = None
        self.buffered = 0
        if declared_length is not None and declared_length > limit:
            self._error = BodyTooLarge(limit)

    # -- driver side ---------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._ended or self._error is not None:
            # Still return the credit so the connection window does not leak.
            if self._on_consume is not None and data:
                self._on_consume(len(data))
            return
        self._received += len(data)
        if self._received > self._limit:
            self.abort(BodyTooLarge(self._limit))
            if self._on_consume is not None:
                self._on_consume(len(data))
            return
        if data:
            self._chunks.append(data)
            self.buffered += len(data)
        self._wake()

    def end(self) -> None:
        self._ended = True
        self._wake()

    def abort(self, exc: BaseException | None = None) -> None:
        if self._error is None:
            self._error = exc if exc is not None else ClientDisconnected()
        # Drop what was buffered and give its credit back.
        if self._chunks:
            n = self.buffered
            self._chunks.clear()
            self.buffered = 0
            if self._on_consume is not None:
                self._on_consume(n)
        self._wake()

    def detach(self) -> None:
        """The driver is done with the stream: drop its callbacks. They are the
        driver's own methods, and the driver holds this stream, so without
        this the two (and the task and coroutine around them) would form a
        reference cycle, left to the cyclic collector with every request."""
        self._on_consume = None
        self._on_first_read = None

    @property
    def complete(self) -> bool:
        """The whole body has arrived (whether or not it was read)."""
        return self._ended

    @property
    def disconnected(self) -> bool:
        return isinstance(self._error, ClientDisconnected)

    @property
    def started(self) -> bool:
        return self._started

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- handler side --------------------------------------------------------

    async def read_chunk(self) -> bytes | None:
        """The next chunk, or None at the end of the body."""
        if not self._started:
            self._started = True
            if self._on_first_read is not None:
                self._on_first_read()
        while True:
            if self._error is not None:
                raise self._error
            if self._chunks:
                chunk = self._chunks.popleft()
                self.buffered -= len(chunk)
                if self._on_consume is not None:
                    self._on_consume(len(chunk))
                return chunk
            if self._ended:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self.read_chunk()
            if chunk is None:
                return
            yield chunk
