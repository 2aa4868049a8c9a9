"""What every connection does with its streams, whatever carries its bytes.

A connection owns one sans-IO adapter and the stream drivers of its requests:
it turns the adapter's events into drivers (run in the connection's
TaskGroup, so every task has an owner), implements the ConnectionHandle the
drivers write through, and batches output: ``send()`` only queues into the
adapter and schedules one flush per loop turn, so every stream answered in
one turn shares one write. What carries the bytes (a TCP transport, QUIC
datagrams) is the subclass's: ``_write``, ``_close``, ``abort`` and ``shutdown``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from rawserve.core.config import Config, Limits
from rawserve.core.errors import StreamClosedError
from rawserve.core.events import (
    BodyReceived,
    ConnectionTerminated,
    EndOfRequest,
    Headers,
    IncomingEvent,
    OutgoingEvent,
    PriorityChanged,
    RequestReceived,
    ResponseBody,
    ResponseEnd,
    ResponseStart,
    StreamReset,
)
from rawserve.core.priority import DEFAULT_URGENCY
from rawserve.serving.stream import App, StreamDriver

if TYPE_CHECKING:
    from rawserve.serving.server import Server

log = logging.getLogger("rawserve.serving")

# How long after an urgent request (urgency below the default 3) the others
# start a loop turn late (StartOrder).
URGENT_WINDOW_S = 1.0


class StartOrder:
    """Which requests' handlers start first when many arrive in one loop turn.

    A loop turn reads every connection that has data and queues each new
    request's task in that order; the tasks then run in it, each parsing its
    body and submitting its inference. Under a bulk load of 32 connections an
    urgent request read in the same turn waited behind up to 31 handlers
    (about 10 ms on model B's load here) and often missed the next batch. For
    a second after an urgent request, the others are started by one callback
    queued behind the turn's urgent tasks: they run a turn later, the urgent
    ones at once. Without urgent traffic nothing changes."""

    __slots__ = ("_deferred", "_scheduled", "urgent_until")

    def __init__(self) -> None:
        self.urgent_until = 0.0
        self._deferred: list[tuple[StreamConnection, StreamDriver]] = []
        self._scheduled = False

    def start(self, conn: StreamConnection, driver: StreamDriver) -> None:
        now = conn.loop.time()
        if driver.event.priority.urgency < DEFAULT_URGENCY:
            self.urgent_until = now + URGENT_WINDOW_S
        elif now < self.urgent_until:
            self._deferred.append((conn, driver))
            if not self._scheduled:
                self._scheduled = True
                conn.loop.call_soon(self._start_deferred)
            return
        conn._start(driver)

    def _start_deferred(self) -> None:
        self._scheduled = False
        deferred, self._deferred = self._deferred, []
        for conn, driver in deferred:
            conn._start(driver)


class StreamConnection:
    """The protocol-neutral half of a connection: streams, tasks, writes."""

    # Whether requests are answered one at a time, in order (HTTP/1.1); the
    # subclass then gets ``_response_queued`` for each finished response.
    pipelined = False

    def __init__(self, server: Server, *, tls: bool) -> None:
        self.server = server
        self.config: Config = server.config
        self.limits: Limits = server.config.limits
        self.app: App = server.app
        self.loop = asyncio.get_running_loop()
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.adapter: Any = None
        self.client: tuple[str, int] | None = None
        self.server_addr: tuple[str, int] | None = None
        self.streams: dict[int, StreamDriver] = {}
        self._closed = False
        self._closed_event = asyncio.Event()
        self._writable = True
        self._write_waiters: dict[int, asyncio.Future[None]] = {}
        self._flush_scheduled = False
        # Response body bytes queued in the adapter since the last write.
        self._unflushed = 0
        self._date = b""
        self._shutting_down = False
        self._tg: asyncio.TaskGroup | None = None
        self._pending_tasks: list[StreamDriver] = []
        # The Alt-Svc field every response on a TLS listener carries while
        # HTTP/3 is on (RFC 7838): how clients find the UDP port.
        self.alt_svc: bytes | None = getattr(server, "alt_svc", None) if tls else None

    # -- what carries the bytes (the subclass's) -------------------------------

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Close once what was written has gone out."""
        raise NotImplementedError

    def abort(self) -> None:
        """Close now, dropping what is unsent."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Graceful: take no new requests; close once the open ones are answered."""
        raise NotImplementedError

    # -- ConnectionHandle --------------------------------------------------------

    @property
    def server_address(self) -> tuple[str, int] | None:
        return self.server_addr

    def send(self, event: OutgoingEvent) -> None:
        if self._closed:
            raise StreamClosedError(event.stream_id)
        t = type(event)
        if t is ResponseStart:
            date = self.server.clock.refresh(self.loop.time())
            if date is not self._date:
                self._date = date
                self.adapter.set_date_header(date)
            if self.alt_svc is not None:
                e: ResponseStart = event  # type: ignore[assignment]
                event = ResponseStart(
                    e.stream_id, e.status, [*e.headers, (b"alt-svc", self.alt_svc)], e.end_stream
                )
        self.adapter.send(event)
        if t is ResponseBody:
            self._unflushed += len(event.data)  # type: ignore[union-attr]
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        if self.pipelined and (
            t is ResponseEnd or ((t is ResponseBody or t is ResponseStart) and event.end_stream)  # type: ignore[union-attr]
        ):
            self._response_queued(event.stream_id)

    def _response_queued(self, stream_id: int) -> None:
        """A pipelined stream's response is entirely in the adapter."""

    async def drain(self, stream_id: int) -> None:
        # Queued bytes normally go out in the flush scheduled by send(), once
        # per loop iteration, so that every stream answered in one iteration
        # shares a single write (a syscall each otherwise). A producer that
        # queues a lot without yielding to the loop is flushed here instead:
        # that bounds the adapter's buffer, and lets the transport say
        # pause_writing when the peer does not read.
        if self._flush_scheduled and self._unflushed >= self.limits.write_buffer_bytes:
            self._flush()
        if self._closed:
            raise StreamClosedError(stream_id)
        limit = self.limits.write_buffer_bytes
        while not self._closed and (not self._writable or self.adapter.buffered(stream_id) > limit):
            driver = self.streams.get(stream_id)
            if driver is None or driver.is_reset:
                raise StreamClosedError(stream_id)
            fut = self.loop.create_future()
            self._write_waiters[stream_id] = fut
            try:
                await fut
            finally:
                self._write_waiters.pop(stream_id, None)
        if self._closed:
            raise StreamClosedError(stream_id)

    def acknowledge(self, stream_id: int, n: int) -> None:
        """The handler consumed ``n`` body bytes: return their credit."""
        if self._closed:
            return
        self.adapter.acknowledge(stream_id, n)
        self._schedule_flush()

    def push_allowed(self, stream_id: int) -> bool:
        """Whether a push can be promised on ``stream_id`` (HTTP/2 with push on)."""
        allowed = getattr(self.adapter, "push_allowed", None)
        return not self._closed and allowed is not None and bool(allowed(stream_id))

    def push(self, stream_id: int, path: str, headers: Headers) -> bool:
        """Promise ``GET path`` on ``stream_id`` and answer it like a request
        (a driver of its own runs the app for it)."""
        push = getattr(self.adapter, "push", None)
        if self._closed or push is None:
            return False
        event: RequestReceived | None = push(stream_id, path, headers)
        if event is None:
            return False
        self._on_request(event)
        self._schedule_flush()
        return True

    # -- tasks ---------------------------------------------------------------------

    async def run(self) -> None:
        """The connection's own task: owns every stream's task until close."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for driver in self._pending_tasks:
                self._spawn(driver)
            self._pending_tasks.clear()
            await self._closed_event.wait()
            for driver in list(self.streams.values()):
                driver.reset()
        self._tg = None

    def _spawn(self, driver: StreamDriver) -> None:
        if self._tg is None:
            self._pending_tasks.append(driver)
            return
        order: StartOrder | None = getattr(self.server, "start_order", None)
        if order is None:
            self._start(driver)
        else:
            order.start(self, driver)

    def _start(self, driver: StreamDriver) -> None:
        if self._tg is None:  # closed meanwhile: the driver was reset
            return
        driver.task = self._tg.create_task(self._drive(driver))

    async def _drive(self, driver: StreamDriver) -> None:
        try:
            await driver.run()
        finally:
            sid = driver.stream_id
            if self.streams.get(sid) is driver:
                del self.streams[sid]
            # What the driver queued last goes out with the scheduled flush;
            # one is needed anyway to close a connection that should close.
            self._schedule_flush()
            self._stream_finished(driver)
            # The driver holds its task, whose coroutine holds the driver, and
            # its body, whose callbacks are the driver's methods: left so, the
            # ten or so objects of every request were freed only by the cyclic
            # collector, whose young collections then came about every 100
            # requests and found all of them (about 10 us per h2c request).
            driver.task = None
            driver.body.detach()

    def _stream_finished(self, driver: StreamDriver) -> None:
        """A driver's task ended (answered, failed or reset)."""

    def _connection_gone(self) -> None:
        """The carrier is closed: cancel every stream and wake every writer."""
        self._closed = True
        self.server.connections.discard(self)
        for driver in list(self.streams.values()):
            driver.reset()
        for fut in self._write_waiters.values():
            if not fut.done():
                fut.set_result(None)
        self._closed_event.set()

    # -- events ------------------------------------------------------------------

    def _handle_events(self, events: list[IncomingEvent]) -> None:
        for event in events:
            t = type(event)
            if t is BodyReceived:
                driver = self.streams.get(event.stream_id)  # type: ignore[union-attr]
                data = event.data  # type: ignore[union-attr]
                if driver is not None:
                    driver.body.feed(data)
                    self._body_buffered(len(data))
                else:
                    # Nobody will read it: its flow-control credit goes back now.
                    self.adapter.acknowledge(event.stream_id, len(data))  # type: ignore[union-attr]
            elif t is RequestReceived:
                self._on_request(event)  # type: ignore[arg-type]
            elif t is EndOfRequest:
                driver = self.streams.get(event.stream_id)  # type: ignore[union-attr]
                if driver is not None:
                    driver.body.end()
            elif t is StreamReset:
                driver = self.streams.pop(event.stream_id, None)  # type: ignore[union-attr]
                if driver is not None:
                    driver.reset(event.reason)  # type: ignore[union-attr,arg-type]
                    self._wake_writer(event.stream_id)  # type: ignore[union-attr]
            elif t is PriorityChanged:
                driver = self.streams.get(event.stream_id)  # type: ignore[union-attr]
                if driver is not None:
                    driver.reprioritize(event.priority)  # type: ignore[union-attr]
            elif t is ConnectionTerminated:
                self._shutting_down = True
            elif not self._other_event(event):
                return
        self._events_handled()

    def _other_event(self, event: IncomingEvent) -> bool:
        """An event only this carrier knows (an upgrade); False stops the batch."""
        raise RuntimeError(f"unexpected event {event!r}")

    def _body_buffered(self, n: int) -> None:
        """``n`` request body bytes wait for their handler."""

    def _events_handled(self) -> None:
        """A batch of events was handled (wake writers whose window opened)."""
        self._wake_writers()

    def _on_request(self, event: RequestReceived) -> None:
        driver = StreamDriver(self, event, self.app, self.config)
        self.streams[event.stream_id] = driver
        self._admit(driver)

    def _admit(self, driver: StreamDriver) -> None:
        """Start a new request's driver (at once, for a multiplexed protocol)."""
        self._spawn(driver)

    # -- output ------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._unflushed = 0
        if self._closed or self.adapter is None:
            return
        data = self.adapter.data_to_send()
        if data:
            self._write(data)
        if self.adapter.should_close:
            self._close()

    def _wake_writer(self, stream_id: int) -> None:
        fut = self._write_waiters.get(stream_id)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _wake_writers(self) -> None:
        if not self._write_waiters:
            return
        limit = self.limits.write_buffer_bytes
        for sid, fut in list(self._write_waiters.items()):
            if fut.done():
                continue
            driver = self.streams.get(sid)
            if (
                driver is None
                or driver.is_reset
                or (self._writable and self.adapter.buffered(sid) <= limit)
            ):
                fut.set_result(None)
