"""The asyncio glue: listeners, TLS and ALPN, one connection object per socket.

Everything here reads the clock and touches sockets; everything below it is
sans-IO. A connection picks its protocol (ALPN, or the HTTP/2 preface on the
cleartext port, or ``Upgrade: h2c``), feeds bytes to the adapter, turns its
events into stream drivers and writes what the adapter wants written.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import ssl
import sys
from collections import deque
from email.utils import formatdate
from typing import Any, Protocol, cast

import orjson

from rawserve.core.config import Config
from rawserve.core.errors import ConfigError, ProtocolError, StreamClosedError
from rawserve.core.events import (
    BodyReceived,
    ConnectionTerminated,
    EndOfRequest,
    IncomingEvent,
    OutgoingEvent,
    PriorityChanged,
    RequestReceived,
    ResponseBody,
    ResponseEnd,
    ResponseStart,
    StreamReset,
    UpgradeRequested,
)
from rawserve.protocols.http1 import H1Connection
from rawserve.protocols.http2 import H2Connection
from rawserve.serving.stream import App, StreamDriver

log = logging.getLogger("rawserve.serving.server")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Adapter(Protocol):
    """The part of the sans-IO adapters the glue uses."""

    def receive_data(self, data: bytes, now: float = 0.0) -> list[IncomingEvent]: ...
    def send(self, event: OutgoingEvent) -> None: ...
    def data_to_send(self) -> bytes: ...
    def buffered(self, stream_id: int) -> int: ...
    def acknowledge(self, stream_id: int, n: int) -> None: ...
    def set_date_header(self, value: bytes) -> None: ...

    @property
    def should_close(self) -> bool: ...


class _Clock:
    """The Date header, formatted once a second for every connection."""

    def __init__(self) -> None:
        self.value = formatdate(usegmt=True).encode()
        self.second = 0

    def refresh(self, loop_time: float) -> bytes:
        sec = int(loop_time)
        if sec != self.second:
            self.second = sec
            self.value = formatdate(usegmt=True).encode()
        return self.value


class HTTPConnection(asyncio.Protocol):
    """One TCP (or TLS) connection, speaking HTTP/1.1 or HTTP/2."""

    def __init__(self, server: Server, *, tls: bool) -> None:
        self.server = server
        self.config = server.config
        self.limits = server.config.limits
        self.app = server.app
        self.loop = asyncio.get_running_loop()
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.transport: asyncio.Transport | None = None
        self.adapter: Any = None
        self.http2 = False
        self.client: tuple[str, int] | None = None
        self.server_addr: tuple[str, int] | None = None
        self.streams: dict[int, StreamDriver] = {}
        self._sniff = b""
        self._sniffing = False
        self._closed = False
        self._closed_event = asyncio.Event()
        self._writable = True
        self._write_waiters: dict[int, asyncio.Future[None]] = {}
        self._flush_scheduled = False
        # Response body bytes queued in the adapter since the last write.
        self._unflushed = 0
        self._date = b""
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # when the connection times out
        self._idle_timer = False
        self._shutting_down = False
        # HTTP/1.1: requests parsed ahead of the one being answered.
        self._h1_queue: deque[StreamDriver] = deque()
        self._h1_active: StreamDriver | None = None
        self._unacked = 0
        self._reading_paused = False
        self._tg: asyncio.TaskGroup | None = None
        self._pending_tasks: list[StreamDriver] = []

    # -- ConnectionHandle ------------------------------------------------------

    @property
    def server_address(self) -> tuple[str, int] | None:
        return self.server_addr

    def send(self, event: OutgoingEvent) -> None:
        if self._closed:
            raise StreamClosedError(getattr(event, "stream_id", 0))
        t = type(event)
        if t is ResponseStart:
            date = self.server.clock.refresh(self.loop.time())
            if date is not self._date:
                self._date = date
                self.adapter.set_date_header(date)
        self.adapter.send(event)
        if t is ResponseBody:
            self._unflushed += len(event.data)  # type: ignore[union-attr]
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        if not self.http2 and (
            t is ResponseEnd or ((t is ResponseBody or t is ResponseStart) and event.end_stream)  # type: ignore[union-attr]
        ):
            self._h1_response_done(event.stream_id)

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
            if driver is None or driver.state == "reset":
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
        if self._closed:
            return
        if self.http2:
            self.adapter.acknowledge(stream_id, n)
            self._schedule_flush()
        else:
            self._unacked -= n
            self._maybe_resume_reading()

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=self.limits.write_buffer_bytes)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self.server_addr = (sock[0], sock[1]) if isinstance(sock, tuple) else None
        self.server.connections.add(self)
        alpn = None
        if self.tls:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                alpn = ssl_object.selected_alpn_protocol()
        if alpn == "h2":
            self._start_h2()
        elif self.tls:
            self._start_h1()
        else:
            self._sniffing = True
        self._arm_timer(self.limits.header_timeout_s)
        self.server.track(self._run())

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for driver in self._pending_tasks:
                self._spawn(driver)
            self._pending_tasks.clear()
            await self._closed_event.wait()
            for driver in list(self.streams.values()):
                driver.reset()
        self._tg = None

    def data_received(self, data: bytes) -> None:
        if self._idle_timer:
            # The keep-alive wait is over: a request has begun, and its headers
            # now have header_timeout_s to arrive (slowloris).
            self._arm_timer(self.limits.header_timeout_s)
        if self._sniffing:
            self._sniff += data
            n = min(len(self._sniff), len(H2_PREFACE))
            if self._sniff[:n] != H2_PREFACE[:n]:
                line_end = self._sniff.find(b"\n")
                if line_end < 0 and len(self._sniff) < self.limits.max_header_bytes:
                    return  # wait for the whole request line
                if not _looks_like_http1(self._sniff[: line_end if line_end >= 0 else None]):
                    # No HTTP/1.x version on the request line: HTTP/0.9, a broken
                    # HTTP/2 preface, or not HTTP at all. A status line would be
                    # misread by every one of them; closing is the only answer
                    # all understand (RFC 9113 3.4: invalid preface -> close).
                    self._sniffing = False
                    self._close()
                    return
                self._sniffing = False
                data, self._sniff = self._sniff, b""
                self._start_h1()
            elif n == len(H2_PREFACE):
                self._sniffing = False
                data, self._sniff = self._sniff, b""
                self._start_h2()
            else:
                return
        try:
            events = self.adapter.receive_data(data, self.loop.time())
        except Exception:
            log.exception("protocol adapter failed; closing the connection")
            self._abort()
            return
        self._handle_events(events)
        self._flush()

    def eof_received(self) -> bool | None:
        if self.adapter is not None and not self._closed:
            try:
                events = self.adapter.receive_data(b"", self.loop.time())
            except Exception:
                events = []
            self._handle_events(events)
            self._flush()
        # EOF means the client is gone (as uvicorn and most servers read it):
        # close, and connection_lost cancels whatever is still queued or running
        # for it, so inference is never spent on an answer nobody will read.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._stop_timer()
        self.server.connections.discard(self)
        for driver in list(self.streams.values()):
            driver.reset()
        for driver in self._h1_queue:
            driver.reset()
        self._h1_queue.clear()
        for fut in self._write_waiters.values():
            if not fut.done():
                fut.set_result(None)
        self._closed_event.set()

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._wake_writers()

    # -- protocol selection --------------------------------------------------

    def _start_h1(self) -> None:
        self.adapter = H1Connection(
            self.limits, scheme=self.scheme, server_header=self._server_header()
        )
        self.http2 = False

    def _start_h2(self) -> None:
        self.adapter = H2Connection(
            self.limits, scheme=self.scheme, server_header=self._server_header()
        )
        self.http2 = True
        self.adapter.initiate()
        self._arm_timer(self.limits.idle_timeout_s)
        self._flush()

    def _server_header(self) -> bytes | None:
        return self.config.server_header.encode() if self.config.server_header else None

    # -- events ------------------------------------------------------------------

    def _handle_events(self, events: list[IncomingEvent]) -> None:
        for event in events:
            t = type(event)
            if t is BodyReceived:
                driver = self.streams.get(event.stream_id)  # type: ignore[union-attr]
                if driver is not None:
                    data = event.data  # type: ignore[union-attr]
                    driver.body.feed(data)
                    if not self.http2:
                        self._unacked += len(data)
                        if self._unacked > self.limits.read_buffer_bytes:
                            self._pause_reading()
                elif self.http2:
                    self.adapter.acknowledge(event.stream_id, len(event.data))  # type: ignore[union-attr]
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
                    if driver.request is not None:
                        driver.request.update_priority(event.priority)  # type: ignore[union-attr]
                    else:  # not started yet: it will begin with the new value
                        driver.event.priority = event.priority  # type: ignore[union-attr]
            elif t is ConnectionTerminated:
                self._shutting_down = True
            elif t is UpgradeRequested:
                self._upgrade(event)  # type: ignore[arg-type]
                return
        if self.http2:
            self._wake_writers()
            if self.adapter.open_streams == 0 and not self.streams:
                self._arm_timer(self.limits.idle_timeout_s)

    def _on_request(self, event: RequestReceived) -> None:
        self._cancel_timer()
        driver = StreamDriver(self, event, self.app, self.config)
        self.streams[event.stream_id] = driver
        if self.http2:
            self._spawn(driver)
            return
        if self._h1_active is None:
            self._h1_active = driver
            self._spawn(driver)
        else:
            self._h1_queue.append(driver)
            if len(self._h1_queue) >= self.limits.max_pipelined_requests:
                self._pause_reading()

    def _spawn(self, driver: StreamDriver) -> None:
        if self._tg is None:
            self._pending_tasks.append(driver)
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
            if self.http2:
                if not self.streams and not self._closed:
                    self._arm_timer(self.limits.idle_timeout_s)
            elif driver.state == "reset":
                # HTTP/1.1 has no way to cancel one response but closing.
                self._h1_response_done(sid)

    def _h1_response_done(self, stream_id: int) -> None:
        """The response of the active HTTP/1.1 request is fully queued. The
        driver may still run background tasks, but the next pipelined request
        can start: its response is ordered after bytes already in the adapter."""
        active = self._h1_active
        if active is None or self.http2 or active.stream_id != stream_id:
            return
        self._h1_active = None
        # Pipelined responses share the scheduled write, which also closes
        # the connection if the adapter says so.
        self._schedule_flush()
        if self._closed:
            return
        if self.adapter.should_close:
            return
        if self._h1_active is None and self._h1_queue:
            nxt = self._h1_queue.popleft()
            self._h1_active = nxt
            if nxt.state == "reset":
                self.loop.call_soon(self._h1_response_done, nxt.stream_id)
            else:
                self._spawn(nxt)
            self._maybe_resume_reading()
        elif self._h1_active is None:
            self._arm_timer(self.limits.keep_alive_timeout_s, idle=True)

    def _upgrade(self, event: UpgradeRequested) -> None:
        """HTTP/1.1 ``Upgrade: h2c``: answer 101 and continue as HTTP/2."""
        assert self.transport is not None
        h2conn = H2Connection(self.limits, scheme=self.scheme, server_header=self._server_header())
        try:
            events = h2conn.initiate_upgrade(event.settings, event.request)
        except ProtocolError as exc:
            # The HTTP2-Settings payload is unusable: refuse the upgrade in
            # HTTP/1.1 terms and close, as for any other malformed request.
            body = orjson.dumps({"detail": str(exc)})
            self.transport.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            self._close()
            return
        self.transport.write(self.adapter.accept_upgrade())
        self.adapter = h2conn
        self.http2 = True
        self._h1_active = None
        self._handle_events(events)
        if event.data:
            self._handle_events(self.adapter.receive_data(event.data, self.loop.time()))
        self._flush()

    # -- output ----------------------------------------------------------------

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
        transport = self.transport
        assert transport is not None
        if data:
            transport.write(data)
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
                or driver.state == "reset"
                or (self._writable and self.adapter.buffered(sid) <= limit)
            ):
                fut.set_result(None)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self._closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            self._reading_paused
            and self._unacked <= self.limits.read_buffer_bytes
            and len(self._h1_queue) < self.limits.max_pipelined_requests
            and self.transport is not None
            and not self._closed
        ):
            self._reading_paused = False
            self.transport.resume_reading()

    # -- timers and shutdown -------------------------------------------------

    # Deadlines move on every request, timers seldom fire: moving a deadline
    # only records it, and the one armed timer, when it fires early, re-arms
    # itself for the current deadline. That spares a timer (heap or libuv
    # handle) created and cancelled per request.

    def _arm_timer(self, delay: float, *, idle: bool = False) -> None:
        self._idle_timer = idle and not self.http2
        if delay <= 0 or self._closed:
            self._deadline = None
            return
        deadline = self.loop.time() + delay
        self._deadline = deadline
        timer = self._timer
        if timer is not None:
            if timer.when() <= deadline:
                return
            timer.cancel()
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        self._idle_timer = False
        self._deadline = None

    def _stop_timer(self) -> None:
        self._cancel_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self._closed:
            return
        # A timer may fire a clock tick early (uvloop counts milliseconds);
        # a millisecond early is on time, and spares re-arming in a loop.
        if self.loop.time() < deadline - 0.001:
            self._timer = self.loop.call_at(deadline, self._on_timer)
            return
        self._deadline = None
        self._on_timeout()

    def _on_timeout(self) -> None:
        if self._closed:
            return
        if self.streams:
            return  # a request is in progress; the request timeout governs it
        if self.http2:
            self.adapter.start_shutdown()
            self._flush()
        self._close()

    def shutdown(self) -> None:
        """Graceful: no new requests; close once the open ones are answered."""
        if self._closed or self._shutting_down:
            return
        self._shutting_down = True
        if self.adapter is None or self._sniffing:
            self._close()
            return
        self.adapter.start_shutdown()
        self._flush()
        if not self.streams:
            self._close()

    def _close(self) -> None:
        if self.transport is not None and not self._closed:
            self._closed = True
            self._stop_timer()
            self.transport.close()

    def _abort(self) -> None:
        if self.transport is not None:
            self._closed = True
            self.transport.abort()


class Server:
    """Run an app: ``async with Server(app, config) as server:`` binds, runs the
    app's startup, and on exit shuts down gracefully."""

    def __init__(self, app: App, config: Config | None = None) -> None:
        self.app = app
        self.config = config or Config()
        self.connections: set[HTTPConnection] = set()
        self.clock = _Clock()
        self.http_port: int | None = None
        self.https_port: int | None = None
        self.certfile: str | None = None
        self.keyfile: str | None = None
        self._listeners: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._started = False

    def track(self, coro: Any) -> None:
        """Run a connection's main coroutine; the server owns and awaits it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("connection task failed", exc_info=task.exception())

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def start(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        ssl_context: ssl.SSLContext | None = None
        if cfg.port >= 0:
            ssl_context = self._ssl_context()
        startup = getattr(self.app, "startup", None)
        if startup is not None:
            await startup()
        self._started = True
        try:
            if cfg.http_port >= 0:
                srv = await self._listen(loop, cfg.http_port, None)
                self.http_port = srv.sockets[0].getsockname()[1]
            if ssl_context is not None:
                srv = await self._listen(loop, cfg.port, ssl_context)
                self.https_port = srv.sockets[0].getsockname()[1]
        except BaseException:
            await self._close_listeners()
            raise

    async def _listen(
        self, loop: asyncio.AbstractEventLoop, port: int, ctx: ssl.SSLContext | None
    ) -> asyncio.base_events.Server:
        tls = ctx is not None
        try:
            srv = await loop.create_server(
                lambda: HTTPConnection(self, tls=tls),
                self.config.host,
                port,
                ssl=ctx,
                reuse_address=True,
                backlog=2048,
                ssl_handshake_timeout=self.config.limits.header_timeout_s if tls else None,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {self.config.host} is already in use") from None
            raise ConfigError(
                f"cannot listen on {self.config.host}:{port}: {exc.strerror}"
            ) from None
        self._listeners.append(srv)
        return srv

    def _ssl_context(self) -> ssl.SSLContext:
        from rawserve.serving import tls

        cfg = self.config
        if cfg.certfile and cfg.keyfile:
            certfile, keyfile = cfg.certfile, cfg.keyfile
        elif cfg.certfile or cfg.keyfile:
            raise ConfigError("--certfile and --keyfile must be given together")
        else:
            cert_path, key_path, generated = tls.ensure_dev_certificate(cfg.certs_dir)
            certfile, keyfile = str(cert_path), str(key_path)
            log.warning(
                "%s development certificate %s for localhost, 127.0.0.1 and ::1: "
                "for development only; pass --certfile/--keyfile in production",
                "generated" if generated else "using",
                cert_path,
            )
        self.certfile, self.keyfile = certfile, keyfile
        return tls.create_server_ssl_context(certfile, keyfile)

    def urls(self) -> list[str]:
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        out = []
        if self.http_port is not None:
            out.append(f"http://{shown}:{self.http_port}  (HTTP/1.1, h2c)")
        if self.https_port is not None:
            out.append(f"https://{shown}:{self.https_port}  (HTTP/1.1, h2)")
        return out

    async def serve_forever(self) -> None:
        """Serve until ``stop()`` (or SIGINT/SIGTERM when installed)."""
        await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()

    async def _close_listeners(self) -> None:
        for srv in self._listeners:
            srv.close()
        self._listeners.clear()

    async def shutdown(self) -> None:
        if not self._started:
            return
        self._started = False
        await self._close_listeners()
        for conn in list(self.connections):
            conn.shutdown()
        deadline = self.config.graceful_timeout_s
        drain = getattr(self.app, "drain", None)
        draining: asyncio.Task[None] | None = None
        if drain is not None:
            # The app's own queues (the inference engine) get most of the grace
            # period, so that what is left answers 503 before connections close.
            draining = asyncio.get_running_loop().create_task(drain(deadline * 0.8))
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=deadline)
            if pending:
                log.warning(
                    "graceful timeout of %gs passed; closing %d connection(s)",
                    deadline,
                    len(pending),
                )
                for conn in list(self.connections):
                    conn._abort()
                await asyncio.wait(pending, timeout=2)
        if draining is not None:
            await draining
        shutdown = getattr(self.app, "shutdown", None)
        if shutdown is not None:
            await shutdown()


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # A client that fails the TLS handshake or drops mid-write is not a server
    # error; keep the log for things that are.
    exc = context.get("exception")
    if isinstance(exc, ssl.SSLError | ConnectionError | TimeoutError):
        log.debug("connection error: %s", exc)
        return
    loop.default_exception_handler(context)


async def serve(app: App, config: Config, *, install_signals: bool = True) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_exception_handler)
    server = Server(app, config)
    async with server:
        banner = ["rawserve ready:"] + [f"  {url}" for url in server.urls()]
        print("\n".join(banner), file=sys.stderr, flush=True)
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, server.stop)
        await server.serve_forever()
        log.info("shutting down: draining connections (up to %gs)", config.graceful_timeout_s)


def run(app: App, config: Config | None = None, **options: Any) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, like ``uvicorn.run``."""
    cfg = (config or Config()).with_options(**options) if options else (config or Config())
    loop_name = cfg.loop
    if loop_name in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop_name == "uvloop":
                raise ConfigError("--loop uvloop needs uvloop: pip install uvloop") from None
        else:
            uvloop.run(serve(app, cfg))
            return
    asyncio.run(serve(app, cfg))


def _looks_like_http1(request_line: bytes) -> bool:
    """Whether a first request line ends in an HTTP version ("HTTP/d.d").

    Any version is let through to the HTTP/1.1 adapter, which answers 505 to
    versions it does not speak; only a line with no version at all is refused.
    """
    line = request_line.rstrip(b"\r")
    return (
        len(line) >= 10
        and line[-9:-3] == b" HTTP/"
        and line[-3:-2].isdigit()
        and line[-2:-1] == b"."
        and line[-1:].isdigit()
    )
