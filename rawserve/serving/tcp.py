"""TCP (and TLS) connections: pick HTTP/1.1 or HTTP/2, pace reads, time out.

A connection picks its protocol once: ALPN on TLS; on the cleartext port the
HTTP/2 preface, else an HTTP/1.x request line; an HTTP/1.1 request with
``Upgrade: h2c`` switches it to HTTP/2 with that request as stream 1. HTTP/1.1
requests are parsed ahead (up to ``limits.max_pipelined_requests``) but
driven one at a time, so responses leave in request order with no
reordering buffer; reading pauses when too much is unread. Every connection
is admitted by the server's ``Pressure`` (serving/pressure.py), which calls
``check`` periodically (header data rate, request bodies that stopped) and
``shed`` when it needs the descriptor back.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, cast

import orjson

from rawserve.core.errors import ProtocolError
from rawserve.core.events import IncomingEvent, RequestReceived, StreamReset, UpgradeRequested
from rawserve.protocols.http1 import H1Connection
from rawserve.protocols.http2 import H2Connection
from rawserve.serving.connection import StreamConnection
from rawserve.serving.pressure import (
    HEADER_RATE_GRACE_S,
    SHED_HEADER_RATE,
    SHED_RANK_H2_IDLE,
    SHED_RANK_HEAD,
    SHED_RANK_IDLE,
    SHED_RANK_YOUNG,
)
from rawserve.serving.stream import StreamDriver

if TYPE_CHECKING:
    from rawserve.serving.server import Server

log = logging.getLogger("rawserve.serving")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class TCPConnection(StreamConnection, asyncio.Protocol):
    """One TCP (or TLS) connection, speaking HTTP/1.1 or HTTP/2."""

    def __init__(self, server: Server, *, tls: bool) -> None:
        super().__init__(server, tls=tls)
        self.transport: asyncio.Transport | None = None
        self.http2 = False
        self._sniff = b""
        self._sniffing = False
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # when the connection times out
        self._idle_timer = False
        # HTTP/1.1: the request being answered; later ones wait in self.streams.
        self._h1_active: StreamDriver | None = None
        self._unacked = 0
        self._reading_paused = False
        self._eof = False  # the client shut down its sending side
        # Progress, for the periodic checks and for shedding (loop time).
        self._opened_at = 0.0
        self._last_write = 0.0
        self._last_read = 0.0  # when bytes last arrived
        # Since when an HTTP/1.1 request body is the client's to send: bytes
        # arrived, or the server stopped holding it back (reading paused, no
        # 100 Continue yet) at the latest periodic check.
        self._body_since = 0.0
        self._head_started: float | None = None  # a request head is arriving
        self._head_bytes = 0  # bytes received since it began

    # -- the carrier -------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        self._last_write = self.loop.time()
        self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None and not self._closed:
            self._closed = True
            self._stop_timer()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self._closed = True
            self.transport.abort()

    def acknowledge(self, stream_id: int, n: int) -> None:
        if self.http2:
            super().acknowledge(stream_id, n)
        elif not self._closed:
            # HTTP/1.1 has no window: reading resumes once the handler has read.
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
        now = self.loop.time()
        self._last_read = self._opened_at = self._last_write = now
        if not self.server.pressure.admit(self, now):
            # At the connection limit with nothing to shed.
            self._closed = True
            transport.abort()
            return
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
        self.server.track(self.run())

    def data_received(self, data: bytes) -> None:
        now = self.loop.time()
        self._last_read = self._body_since = now
        if self._idle_timer:
            # The keep-alive wait is over: a request has begun, and its headers
            # now have header_timeout_s to arrive (slowloris).
            self._arm_timer(self.limits.header_timeout_s)
        if not self.http2:
            if self._head_started is None and (self._sniffing or self.adapter.awaiting_request):
                self._head_started = now
                self._head_bytes = 0
            self._head_bytes += len(data)
        if self._sniffing:
            self._sniff += data
            n = min(len(self._sniff), len(H2_PREFACE))
            if self._sniff[:n] != H2_PREFACE[:n]:
                line_end = self._sniff.find(b"\n")
                if line_end < 0 and len(self._sniff) < self.limits.max_header_bytes:
                    return  # wait for the whole request line
                if not (
                    _looks_like_http1(self._sniff[:line_end])
                    if line_end >= 0
                    # A request line over the limit: if it starts as one, the
                    # HTTP/1.1 adapter answers 414 as it does on the TLS port.
                    else _starts_like_http1(self._sniff)
                ):
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
            events = self.adapter.receive_data(data, now)
        except Exception:
            log.exception("protocol adapter failed; closing the connection")
            self.abort()
            return
        self._handle_events(events)
        self._flush()

    def eof_received(self) -> bool | None:
        if self.adapter is not None and not self._closed:
            try:
                events = self.adapter.receive_data(b"", self.loop.time())
            except Exception:
                # A bug, not the client's doing: log it as data_received does,
                # and close once what is written has gone out (left half-open,
                # the connection lingered until the idle timeout).
                log.exception("protocol adapter failed at end of input; closing the connection")
                self._flush()
                self._close()
                return None
            self._handle_events(events)
            self._flush()
        return self._half_closed()

    def _half_closed(self) -> bool | None:
        """The client shut down its sending side. Complete requests are still
        answered in full (nc -N, scripts and proxies half-close after
        sending): the adapter resets the requests still arriving (HTTP/2 also
        says GOAWAY), and the transport closes once the adapter says
        ``should_close``. On TLS (asyncio's TLS transport cannot half-close)
        or with nothing left to answer it closes now, and connection_lost
        cancels what is queued or running, so no inference is spent on an
        answer nobody will read. An HTTP/2 answer waiting for window the
        client can no longer give is cut after ``body_timeout_s`` (``check``)."""
        self._eof = True
        if self.tls or self._closed or self.adapter is None:
            return None
        if self.http2:
            self._handle_events(self.adapter.peer_closed())
            self._flush()
        return None if self._closed or self.adapter.should_close else True

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self.server.pressure.release(self)
        self._connection_gone()

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
        self.pipelined = True

    def _start_h2(self) -> None:
        self.adapter = H2Connection(
            self.limits, scheme=self.scheme, server_header=self._server_header()
        )
        self.http2 = True
        self.pipelined = False
        self._head_started = None
        self.adapter.initiate()
        self._arm_timer(self.limits.idle_timeout_s)
        self._flush()

    def _server_header(self) -> bytes | None:
        return self.config.server_header.encode() if self.config.server_header else None

    # -- events ------------------------------------------------------------------

    def _other_event(self, event: IncomingEvent) -> bool:
        if isinstance(event, UpgradeRequested):
            self._upgrade(event)
            return False  # the rest of the batch is the new adapter's
        return super()._other_event(event)

    def _body_buffered(self, n: int) -> None:
        if not self.http2:
            self._unacked += n
            if self._unacked > self.limits.read_buffer_bytes:
                self._pause_reading()

    def _events_handled(self) -> None:
        if self.http2:
            self._wake_writers()
            if self.adapter.open_streams == 0 and not self.streams:
                self._arm_timer(self.limits.idle_timeout_s)

    def _on_request(self, event: RequestReceived) -> None:
        self._cancel_timer()
        self._head_started = None
        super()._on_request(event)

    def _admit(self, driver: StreamDriver) -> None:
        if self.http2:
            self._spawn(driver)
        elif self._h1_active is None:
            self._h1_active = driver
            self._spawn(driver)
        elif self.adapter.pending_requests > self.limits.max_pipelined_requests:
            self._pause_reading()

    def _stream_finished(self, driver: StreamDriver) -> None:
        if self.http2:
            if not self.streams and not self._closed:
                self._arm_timer(self.limits.idle_timeout_s)
        elif driver.is_reset:
            # HTTP/1.1 has no way to cancel one response but closing.
            self._response_queued(driver.stream_id)

    def _response_queued(self, stream_id: int) -> None:
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
        if self._closed or self.adapter.should_close:
            return
        nxt = next((d for d in self.streams.values() if d is not active and d.task is None), None)
        if nxt is not None:
            self._h1_active = nxt
            self._spawn(nxt)
            self._maybe_resume_reading()
        else:
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
        self.pipelined = False
        self._head_started = None
        self._h1_active = None
        self._handle_events(events)
        if event.data:
            self._handle_events(self.adapter.receive_data(event.data, self.loop.time()))
        self._flush()

    # -- reading -------------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self._closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            self._reading_paused
            and not self._eof
            and self._unacked <= self.limits.read_buffer_bytes
            and self.adapter.pending_requests <= self.limits.max_pipelined_requests
            and self.transport is not None
            and not self._closed
        ):
            self._reading_paused = False
            self._body_since = self.loop.time()  # the body timeout starts afresh
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

    # -- pressure (serving/pressure.py) -------------------------------------------

    def shed_rank(self, now: float) -> tuple[int, float] | None:
        """Worst first: a request head arriving slowest (bytes per second, or
        nothing sent at all), an idle keep-alive, a stream-less HTTP/2
        connection; a head younger than a second last (no rate is known yet,
        and the newest connection must not be the first to go)."""
        if self._closed or self.streams:
            return None
        if self.http2:
            if self.adapter.open_streams:
                return None
            return (SHED_RANK_H2_IDLE, self._last_read)  # idle longest first
        since = self._head_started
        if since is None and self._sniffing:
            since = self._opened_at  # connected, and sent nothing yet
        if since is not None:
            age = now - since
            if age < HEADER_RATE_GRACE_S:
                return (SHED_RANK_YOUNG, since)  # the oldest of them first
            return (SHED_RANK_HEAD, self._head_bytes / age if self._head_started else 0.0)
        if self.adapter.awaiting_request:
            return (SHED_RANK_IDLE, self._last_read)
        return None

    def shed(self, reason: str) -> None:
        if self._closed or self.transport is None:
            return
        if self.http2 and self.adapter is not None:
            self.adapter.start_shutdown()  # GOAWAY: nothing was in progress
            self._flush()
        if self.transport.get_write_buffer_size():
            self.abort()  # a peer that does not read must not hold the descriptor
        else:
            self._close()

    def check(self, now: float) -> None:
        """The periodic checks: the request head's data rate, and a request
        body that stopped arriving while the server waits for it."""
        if self._closed:
            return
        started = self._head_started
        if started is not None and now - started > HEADER_RATE_GRACE_S:
            if self._head_bytes < self.limits.min_header_rate_bytes_per_s * (now - started):
                self.server.pressure.shed(self, SHED_HEADER_RATE)
                return
        timeout = self.limits.body_timeout_s
        if timeout <= 0 or self.adapter is None:
            return
        if self._eof and now - self._last_write >= timeout and self._window_stalled():
            # Half-closed, and its answer waits for window the client can no
            # longer give (a WINDOW_UPDATE is a frame it cannot send).
            self.abort()
            return
        if self.http2:
            events = self.adapter.expire_bodies(now, timeout)
        elif self._reading_paused or not self.adapter.awaiting_body:
            self._body_since = now  # not the client's turn (or no body)
            return
        elif now - self._body_since >= timeout:
            events = self.adapter.time_out_body(timeout)
        else:
            return
        if events:
            self.server.stats.body_timeouts += sum(isinstance(e, StreamReset) for e in events)
            self._handle_events(events)
            self._flush()

    def _window_stalled(self) -> bool:
        """HTTP/2 response bytes wait for flow-control window while the
        socket keeps up (nothing unsent): streams whose handler is done, or
        whose handler waits to queue more. A slow reader is not stalled."""
        if not self.http2 or not self._writable or self.transport is None:
            return False
        if self.transport.get_write_buffer_size():
            return False
        if not self.streams:
            return bool(self.adapter.open_streams)
        return any(self.adapter.buffered(sid) for sid in self.streams)

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


_METHOD_SP = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32} [^ \r\n]")


def _starts_like_http1(data: bytes) -> bool:
    """Whether ``data`` begins as a request line would: a method token, one
    space and a target."""
    return _METHOD_SP.match(data) is not None


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
