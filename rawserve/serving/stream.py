"""The stream driver: one request's life, the same for every HTTP version.

The connection glue (L3) creates a driver per RequestReceived, feeds its body
through a BodyStream, and calls ``reset()`` when the peer cancels. The driver
builds the Request, calls the app, and writes the response through a
ConnectionHandle, waiting whenever the protocol says the stream has queued
enough (flow control, a slow reader).

States, as data (h11 keeps its transitions in one table; so do we):
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from rawserve.core.config import Config
from rawserve.core.errors import BodyTooLarge, ClientDisconnected, StreamClosedError
from rawserve.core.events import (
    InformationalResponse,
    OutgoingEvent,
    RequestReceived,
    ResetReason,
    ResetStream,
    ResponseBody,
    ResponseEnd,
    ResponseStart,
)
from rawserve.core.priority import Priority
from rawserve.exception_handlers import server_error_response
from rawserve.requests import Request
from rawserve.serving.body import BodyStream
from rawserve.serving.push import preload_links

log = logging.getLogger("rawserve.serving.stream")
access_log = logging.getLogger("rawserve.access")

# state -> the states it may move to. Anything else is a bug in the driver.
IDLE, HANDLING, SENDING, DONE, RESET = "idle", "handling", "sending", "done", "reset"
TRANSITIONS: dict[str, frozenset[str]] = {
    IDLE: frozenset({HANDLING, RESET}),
    HANDLING: frozenset({SENDING, DONE, RESET}),
    SENDING: frozenset({DONE, RESET}),
    DONE: frozenset(),
    RESET: frozenset(),
}


class ConnectionHandle(Protocol):
    """What a driver needs from its connection (implemented in server.py)."""

    client: tuple[str, int] | None

    @property
    def server_address(self) -> tuple[str, int] | None: ...

    def send(self, event: OutgoingEvent) -> None: ...

    async def drain(self, stream_id: int) -> None:
        """Wait until the stream may queue more response bytes; raise
        StreamClosedError if it was reset or the connection closed."""

    def acknowledge(self, stream_id: int, n: int) -> None: ...

    # Server push, where the protocol has it (a connection without these
    # methods cannot push: HTTP/1.1, a test's fake connection).
    #
    # def push_allowed(self, stream_id: int) -> bool
    # def push(self, stream_id: int, path: str, headers: Headers) -> bool


class App(Protocol):
    async def handle(self, request: Request) -> Any: ...


class StreamDriver:
    __slots__ = ("app", "body", "config", "conn", "event", "request", "state", "stream_id", "task")

    @property
    def is_reset(self) -> bool:
        """The peer cancelled the stream, or the connection went away."""
        return self.state == RESET

    def __init__(
        self,
        conn: ConnectionHandle,
        event: RequestReceived,
        app: App,
        config: Config,
    ) -> None:
        self.conn = conn
        self.event = event
        self.app = app
        self.config = config
        self.stream_id = event.stream_id
        self.state = IDLE
        self.task: asyncio.Task[None] | None = None
        declared: int | None = None
        for name, value in event.headers:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        self.body = BodyStream(
            limit=config.limits.max_body_bytes,
            on_consume=self._on_consume,
            on_first_read=self._on_first_read if event.expect_continue else None,
            declared_length=declared,
        )
        if event.end_stream:
            self.body.end()
        self.request: Request | None = None

    def _move(self, new: str) -> None:
        if new not in TRANSITIONS[self.state]:
            raise RuntimeError(f"stream {self.stream_id}: {self.state} -> {new} is not allowed")
        self.state = new

    def reprioritize(self, priority: Priority) -> None:
        """A PRIORITY_UPDATE: moves queued inference once the request exists."""
        if self.request is not None:
            self.request.update_priority(priority)
        else:  # not started yet: it will begin with the new value
            self.event.priority = priority

    def _on_consume(self, n: int) -> None:
        # Even for a reset stream: HTTP/2 must still return the connection-level
        # credit of bytes it received, or the connection window leaks shut.
        self.conn.acknowledge(self.stream_id, n)

    def _on_first_read(self) -> None:
        # RFC 9110 10.1.1: the client waits for 100 before sending the body; only
        # say it once the handler actually wants the body.
        if self.state == HANDLING and not self.body.complete:
            self.conn.send(InformationalResponse(self.stream_id, 100))

    def reset(self, reason: ResetReason = ResetReason.CANCELLED) -> None:
        """The peer cancelled the stream or the connection went away."""
        if self.state in (DONE, RESET):
            return
        self._move(RESET)
        self.body.abort()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def run(self) -> None:
        if self.state == RESET:
            return  # cancelled before its handler started (StartOrder defers some)
        started = time.perf_counter()
        status = 0
        sent = 0
        response: Any = None
        background_done = False
        try:
            self._move(HANDLING)
            request = Request(
                self.event,
                self.body,
                client=self.conn.client,
                server=self.conn.server_address,
                app=self.app,
            )
            self.request = request
            if getattr(self.conn, "push", None) is not None:
                request._pusher = self
            timeout = self.config.limits.request_timeout_s
            if timeout > 0:
                try:
                    async with asyncio.timeout(timeout):
                        response = await self.app.handle(request)
                except TimeoutError:
                    response = _timeout_response(timeout)
            else:
                response = await self.app.handle(request)
            if self.state == RESET:
                return
            status = response.status_code
            sent = await self._send_response(response)
            background_done = True
            await response.run_background()
        except asyncio.CancelledError:
            if self.state != RESET:
                raise
        except StreamClosedError:
            if self.state != RESET:
                self._move(RESET)
        except Exception:
            log.exception("stream %d failed", self.stream_id)
            self._abandon()
        finally:
            if self.state not in (DONE, RESET):
                self._move(DONE)
            if response is not None and not background_done:
                # Background tasks and yield-dependency cleanup run even when the
                # client went away (as FastAPI on uvicorn does).
                try:
                    await response.run_background()
                except Exception:
                    log.exception("background task of stream %d failed", self.stream_id)
            # Unread body: drop it and hand its flow-control credit back.
            self.body.abort()
            req = self.request
            if req is not None:
                try:
                    await req.close()
                except Exception:  # closing spooled upload files must not fail the stream
                    log.debug("closing request %d failed", self.stream_id, exc_info=True)
                # The request holds the body it read; the driver and its body
                # stream refer to each other, so without this the body would
                # stay until the cyclic GC ran, not go with the answer.
                self.request = None
            if self.config.access_log:
                e = self.event
                client = self.conn.client
                access_log.info(
                    '%s - "%s %s HTTP/%s" %d %d %.1fms',
                    f"{client[0]}:{client[1]}" if client else "-",
                    e.method,
                    e.target,
                    e.http_version,
                    status,
                    sent,
                    (time.perf_counter() - started) * 1000,
                )

    async def _send_response(self, response: Any) -> int:
        sid = self.stream_id
        conn = self.conn
        headers: list[tuple[bytes, bytes]] = response.raw_headers()
        head_only = self.event.method == "HEAD"
        # HTTP/2 and HTTP/3: a response may be complete before its request
        # (RFC 9113 8.1). Its last frame then waits until the rest of the request
        # body has been read (bounded), so the stream ends cleanly and a
        # malformed rest (content-length mismatch, a second HEADERS) still gets
        # its PROTOCOL_ERROR instead of vanishing into a closed stream.
        hold = not self.body.complete and self.event.http_version in ("2", "3")
        self._move(SENDING)
        if b"link" in {name for name, _ in headers}:
            self._preload(headers)
        body = getattr(response, "body", None)
        sent = 0
        if body is not None and not getattr(response, "is_streaming", False):
            # The common case: the whole body is known. One start, one body.
            if head_only or not body:
                conn.send(ResponseStart(sid, response.status_code, headers, end_stream=not hold))
            else:
                conn.send(ResponseStart(sid, response.status_code, headers))
                conn.send(ResponseBody(sid, body, end_stream=not hold))
                sent = len(body)
                await conn.drain(sid)
        else:
            conn.send(ResponseStart(sid, response.status_code, headers))
            if not head_only:
                chunks: AsyncIterator[bytes] = response.body_chunks()
                async for chunk in chunks:
                    if self.state == RESET:
                        break
                    if chunk:
                        conn.send(ResponseBody(sid, chunk))
                        sent += len(chunk)
                        await conn.drain(sid)
            hold = not self.body.complete and self.event.http_version in ("2", "3")
            if self.state != RESET and not hold:
                conn.send(ResponseEnd(sid))
        if self.state == RESET:
            return sent
        if hold:
            finished = await self._drain_request_body()
            if self.state == RESET:
                return sent
            conn.send(ResponseEnd(sid))
            if not finished:
                # Tell the client to stop sending the rest (RFC 9113 8.1).
                conn.send(ResetStream(sid, ResetReason.NO_ERROR))
        self._move(DONE)
        return sent

    # -- server push (Pusher, for Request.push) -----------------------------------

    def push_allowed(self) -> bool:
        if self.state not in (HANDLING, SENDING):
            return False  # a push is promised on its request's open stream
        allowed = getattr(self.conn, "push_allowed", None)
        return allowed is not None and bool(allowed(self.stream_id))

    def push(self, path: str, headers: list[tuple[bytes, bytes]]) -> bool:
        if not self.push_allowed():
            return False
        push = self.conn.push  # type: ignore[attr-defined]
        return bool(push(self.stream_id, path, headers))

    def _preload(self, headers: list[tuple[bytes, bytes]]) -> None:
        """``Link: <...>; rel=preload``: push what can be pushed; the rest goes
        out first in a 103 Early Hints (RFC 8297)."""
        hints = [
            link.value
            for link in preload_links(headers)
            if not (link.path and self.push(link.path, []))
        ]
        if hints:
            self.conn.send(
                InformationalResponse(self.stream_id, 103, [(b"link", v) for v in hints])
            )

    async def _drain_request_body(self) -> bool:
        """Read and drop what is left of the request body, within
        ``read_buffer_bytes`` and ``header_timeout_s``; True if it ended."""
        budget = self.config.limits.read_buffer_bytes
        try:
            async with asyncio.timeout(self.config.limits.header_timeout_s):
                while True:
                    chunk = await self.body.read_chunk()
                    if chunk is None:
                        return True
                    budget -= len(chunk)
                    if budget < 0:
                        return False
        except (TimeoutError, BodyTooLarge, ClientDisconnected):
            return False

    def _abandon(self) -> None:
        """The handler or its body iterator failed."""
        if self.state == HANDLING:
            # Nothing was sent yet: the app turns exceptions into 500s itself, so
            # this is a failure of the response object; answer 500 plainly.
            try:
                response = server_error_response()
                self.conn.send(ResponseStart(self.stream_id, 500, response.raw_headers()))
                self.conn.send(ResponseBody(self.stream_id, response.body, end_stream=True))
                self._move(DONE)
                return
            except Exception:
                log.debug("could not send 500 on stream %d", self.stream_id, exc_info=True)
        if self.state == SENDING:
            # Headers are out: the only honest signal left is to cut the stream
            # (HTTP/1.1 closes the connection).
            try:
                self.conn.send(ResetStream(self.stream_id, ResetReason.INTERNAL_ERROR))
            except Exception:
                log.debug("could not reset stream %d", self.stream_id, exc_info=True)
        if self.state not in (DONE, RESET):
            self._move(RESET)


def _timeout_response(timeout: float) -> Any:
    from rawserve.responses import JSONResponse

    return JSONResponse(
        {"detail": f"the handler did not answer within the request timeout of {timeout:g} s"},
        status_code=504,
    )
