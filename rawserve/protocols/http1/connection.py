"""HTTP/1.1 server side, sans-IO, on httptools (llhttp).

Bytes in through ``receive_data``, events out; response events in through
``send``, bytes out through ``data_to_send``. Choices the L3 glue relies on:

- Parsing is eager: all bytes given are parsed at once, so the events of several
  pipelined requests may come out of one call. There is no ``resume()``; L3
  bounds read-ahead by pausing reads while ``pending_requests`` is high.
- Responses go out strictly in request order: ``send`` takes events only for
  the oldest unanswered stream (RuntimeError otherwise). Events for streams
  already answered, reset or abandoned are ignored, so a racing driver is harmless.
- Date is an input: L3 calls ``set_date_header(value)`` (about once a second);
  until then responses carry no Date. Server is added unless the app set one.
- Requests this module answers itself (400, 408, 414, 431, 501, 505: JSON
  ``{"detail": ...}``, ``connection: close``) produce ``ConnectionTerminated``:
  no more events will come, but earlier pipelined requests are still answered
  and the error response waits for them. L3 closes once ``should_close``.
- ``ResetStream``, or a response that has to close the connection, abandons
  the later pipelined streams: their events are ignored from then on and L3
  cancels their drivers when it closes.
- A body that stops arriving: L3 watches ``awaiting_body`` against its clock
  and calls ``time_out_body``, which resets the stream and answers 408.
- ``max_header_bytes`` is enforced while the head arrives; a header line still
  incomplete is bounded by the limit plus one ``receive_data`` chunk.
- Peer EOF (the client shut down its sending side, or closed): the request
  still arriving (a partial head or body) is reset and answered with nothing;
  complete requests, pipelined ones included, are still answered in full and
  ``should_close`` turns true after the last. L3 keeps the transport open for
  writing until then (a client may half-close after sending: ``nc -N``).
- A response that ends before its request body was read: the rest of the body
  is read and dropped when it is Content-Length framed, at most
  ``limits.read_buffer_bytes`` and not held back by ``Expect: 100-continue``;
  otherwise the response says ``connection: close`` and the connection closes.
- ``Upgrade: h2c`` is honoured only on an idle connection, for an HTTP/1.1
  request without body that lists Upgrade in Connection (RFC 7540 3.2) and has
  one valid HTTP2-Settings; any other upgrade is served as plain HTTP/1.1.
- HTTP/1.1 requests need exactly one Host; Transfer-Encoding must be exactly
  ``chunked`` and is refused in HTTP/1.0 requests (RFC 9112 6.1); trailers are
  counted against ``max_header_bytes`` and dropped.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import deque
from typing import NoReturn

import httptools

from rawserve.core.config import Limits
from rawserve.core.events import (
    BodyReceived,
    ConnectionTerminated,
    EndOfRequest,
    Headers,
    IncomingEvent,
    InformationalResponse,
    OutgoingEvent,
    RequestReceived,
    ResetReason,
    ResetStream,
    ResponseBody,
    ResponseEnd,
    ResponseStart,
    StreamReset,
    UpgradeRequested,
)
from rawserve.core.priority import DEFAULT_PRIORITY, parse_priority_field
from rawserve.protocols.http1.status import check_lines, status_line
from rawserve.protocols.http1.stream import CHUNKED, LENGTH, NO_BODY, UNTIL_CLOSE, Stream

__all__ = ["H1Connection"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_SWITCHING_H2C = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
_SYNTHETIC_CHUNKED = b"PUT / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
# Bytes of the request line besides method and target: " HTTP/1.1\r\n" and
# the blank line ending the head.
_REQUEST_LINE_OVERHEAD = 14
_REQUEST_SPECIAL = frozenset(
    (
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"priority",
        b"upgrade",
        b"http2-settings",
    )
)
_RESPONSE_SPECIAL = frozenset(
    (b"content-length", b"transfer-encoding", b"connection", b"date", b"server")
)
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


class _Abort(Exception):
    """Raised in a parser callback to stop llhttp; the reason is kept on the connection."""


class H1Connection:
    """One HTTP/1.1 server connection."""

    def __init__(
        self, limits: Limits, *, scheme: str = "http", server_header: bytes | None = b"rawserve"
    ) -> None:
        self._max_head = limits.max_header_bytes
        self._discard_limit = limits.read_buffer_bytes
        self._scheme = scheme
        self._server_line = b"server: " + server_header + b"\r\n" if server_header else b""
        self._date_line = b""
        self._parser = self._new_parser()
        self._events: list[IncomingEvent] = []
        self._out: list[bytes] = []
        self._queue: deque[Stream] = deque()  # unanswered, oldest first
        self._receiving: Stream | None = None  # request whose body is being parsed
        self._next_id = 1
        # The request head being parsed.
        self._in_head = False
        self._head_seq = 0
        self._head_bytes = 0
        self._head_carry = 0
        self._in_target = False  # the last chunk parsed carried target bytes
        self._url: list[bytes] = []
        self._headers: Headers = []
        # Parser control.
        self._abort: tuple[int, str] | None = None
        self._body_skipped = False
        self._synthetic = False
        self._upgrade: UpgradeRequested | None = None
        self._upgraded = False
        # Lifecycle.
        self._closing = False  # no new requests; close once the queue drains
        self._input_closed = False  # further bytes are ignored
        self._terminated = False  # ConnectionTerminated was emitted
        self._pending_error: tuple[int, str] | None = None

    # -- public API -------------------------------------------------------------

    @property
    def should_close(self) -> bool:
        """L3 must close the transport once ``data_to_send()`` is flushed."""
        return self._closing and not self._queue

    @property
    def awaiting_request(self) -> bool:
        """No request is waiting for its response: between requests, or while
        a request head is still arriving (the header timeout covers both)."""
        return not self._queue

    @property
    def pending_requests(self) -> int:
        return len(self._queue)

    @property
    def awaiting_body(self) -> bool:
        """A request body is still to come from the client, which is not held
        back by ``Expect: 100-continue``: if no bytes arrive (and reading is
        not paused), the client has stalled."""
        s = self._receiving
        return s is not None and not s.request_done and not s.awaiting_continue

    def time_out_body(self, timeout_s: float) -> list[IncomingEvent]:
        """The body being received stopped arriving: reset its stream, answer
        408 (after the responses it is pipelined behind) and close."""
        if not self.awaiting_body:
            return []
        self._fail(408, f"the request body stopped arriving for {timeout_s:g} s")
        events = self._events
        self._events = []
        return events

    def set_date_header(self, value: bytes) -> None:
        if b"\r" in value or b"\n" in value:
            raise ValueError("date header value contains CR or LF")
        self._date_line = b"date: " + value + b"\r\n"

    def buffered(self, stream_id: int) -> int:
        return 0  # no flow control: everything queued is handed to L3 at once

    def acknowledge(self, stream_id: int, n: int) -> None:
        pass  # L3 paces HTTP/1.1 request bodies by pausing reads

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def start_shutdown(self) -> None:
        """Answer what was received with ``connection: close``; take no new requests."""
        self._closing = True
        s = self._receiving
        if s is None or s.answered:
            # A head still arriving is dropped; a body still arriving for an
            # unanswered request is read to its end.
            self._input_closed = True

    def accept_upgrade(self) -> bytes:
        """The 101 response that switches to HTTP/2 after ``UpgradeRequested``."""
        if not self._upgraded:
            raise RuntimeError("no h2c upgrade was requested")
        return _SWITCHING_H2C

    def receive_data(self, data: bytes, now: float = 0.0) -> list[IncomingEvent]:
        """Parse ``data``; ``b""`` means the peer closed its side."""
        if self._upgraded:
            return []
        if not data:
            self._peer_closed()
        elif not self._input_closed:
            in_head = self._in_head
            seq = self._head_seq
            self._in_target = False
            self._feed(data)
            if in_head and self._in_head and seq == self._head_seq and not self._input_closed:
                # The whole chunk is inside one head. httptools buffers a header
                # line until it ends, so count here rather than wait for it.
                self._head_carry += len(data)
                if self._head_carry > self._max_head:
                    if self._in_target:  # the chunk was (partly) the target
                        self._fail(414, f"request target exceeds {self._max_head} bytes")
                    else:
                        self._fail(431, self._head_too_large())
        events = self._events
        self._events = []
        return events

    def send(self, event: OutgoingEvent) -> None:
        q = self._queue
        sid = event.stream_id
        if q and q[0].id == sid:
            s = q[0]
        elif isinstance(event, ResetStream):
            self._reset(sid)
            return
        elif isinstance(event, InformationalResponse) and event.status == 100:
            for s in q:
                if s.id == sid:
                    s.want_continue = True
            return
        elif sid < self._next_id and all(s.id != sid for s in q):
            return  # answered, reset or abandoned
        else:
            raise RuntimeError(f"HTTP/1.1 stream {sid} is not the oldest unanswered one")
        t = type(event)
        if t is ResponseBody:
            if not s.started:
                raise RuntimeError(f"stream {sid}: body before ResponseStart")
            self._write_body(s, event.data)  # type: ignore[union-attr]
            if event.end_stream:  # type: ignore[union-attr]
                self._finish(s)
        elif t is ResponseStart:
            if s.started:
                raise RuntimeError(f"stream {sid}: response already started")
            self._start(s, event)  # type: ignore[arg-type]
            if event.end_stream:  # type: ignore[union-attr]
                self._finish(s)
        elif t is ResponseEnd:
            if not s.started:
                raise RuntimeError(f"stream {sid}: ResponseEnd before ResponseStart")
            self._finish(s)
        elif t is InformationalResponse:
            self._informational(s, event)  # type: ignore[arg-type]
        elif t is ResetStream:
            self._reset(sid)
        # PushPromise: HTTP/1.1 has no push; the Link header still goes out.

    # -- parser callbacks (httptools calls these by name) ------------------------

    def on_message_begin(self) -> None:
        if self._synthetic:
            return
        if self._closing:
            self._input_closed = True
            raise _Abort
        self._in_head = True
        self._head_seq += 1
        self._head_bytes = 0
        self._head_carry = 0
        self._url = []
        self._headers = []

    def on_url(self, url: bytes) -> None:
        if self._synthetic:
            return
        self._url.append(url)
        self._in_target = True
        self._head_bytes += len(url)
        if self._head_bytes > self._max_head:
            # RFC 9112 3: a target longer than the server will parse is 414.
            self._reject(414, f"request target exceeds {self._max_head} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._synthetic:
            return
        n = self._head_bytes + len(name) + len(value) + 4
        self._head_bytes = n
        if n > self._max_head:
            self._reject(431, self._head_too_large())
        if self._in_head:
            self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self._synthetic:
            return
        self._in_head = False
        parser = self._parser
        version: str = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            self._reject(505, f"HTTP version {version} is not supported")
        method_bytes: bytes = parser.get_method()
        if self._head_bytes + len(method_bytes) + _REQUEST_LINE_OVERHEAD > self._max_head:
            self._reject(431, self._head_too_large())
        method = _METHODS.get(method_bytes) or method_bytes.decode("ascii")
        http11 = version == "1.1"
        headers = self._headers
        host = cl = te = expect = prio = upgrade = settings = None
        many_settings = False
        for name, value in headers:
            if name in _REQUEST_SPECIAL:
                if name == b"host":
                    if host is not None:
                        self._reject(400, "more than one Host header")
                    host = value
                elif name == b"content-length":
                    cl = value  # llhttp rejects duplicates and bad digits
                elif name == b"transfer-encoding":
                    te = value if te is None else te + b"," + value
                elif name == b"expect":
                    expect = value
                elif name == b"priority":
                    prio = value if prio is None else prio + b"," + value
                elif name == b"upgrade":
                    upgrade = value
                else:
                    many_settings = settings is not None
                    settings = value
        if host is None and http11:
            self._reject(400, "missing Host header")
        if te is not None:
            if not http11:
                self._reject(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request")
            codings = [c.strip().lower() for c in te.split(b",")]
            if codings[-1] != b"chunked" or b"chunked" in codings[:-1]:
                self._reject(400, "Transfer-Encoding must end with chunked, applied once")
            if len(codings) > 1:
                self._reject(501, "only the chunked transfer coding is supported")
            body_left = -1
        else:
            body_left = int(cl) if cl is not None else 0
        has_body = body_left != 0
        url = self._url
        target = url[0] if len(url) == 1 else b"".join(url)
        authority = host
        if target[:1] != b"/" and target != b"*" and method != "CONNECT":
            target, authority = self._absolute_form(target)
        expect_continue = (
            http11 and has_body and expect is not None and expect.lower() == b"100-continue"
        )
        request = RequestReceived(
            self._next_id,
            method,
            target.decode("latin-1"),
            headers,
            version,
            self._scheme,
            authority.decode("latin-1") if authority is not None else None,
            parse_priority_field(prio) if prio is not None else DEFAULT_PRIORITY,
            not has_body,
            expect_continue,
        )
        if parser.should_upgrade():
            # llhttp skips the body of any request it takes for an upgrade
            # (Connection: upgrade, or CONNECT) and stops after its head.
            if (
                upgrade is not None
                and settings is not None
                and not many_settings
                and not has_body
                and http11
                and method != "CONNECT"
                and not self._queue
                and not self._closing
                and b"h2c" in [t.strip().lower() for t in upgrade.split(b",")]
            ):
                payload = _decode_settings(settings)
                if payload is not None:
                    request.stream_id = 1
                    self._upgrade = UpgradeRequested(request, payload, b"")
                    return
            # Served as plain HTTP/1.1: ``_feed`` parses the skipped body.
            self._body_skipped = has_body
        s = Stream(
            self._next_id,
            method == "HEAD",
            http11,
            parser.should_keep_alive(),
            expect_continue,
            body_left,
        )
        self._next_id += 1
        self._queue.append(s)
        self._receiving = s
        self._events.append(request)

    def on_body(self, body: bytes) -> None:
        s = self._receiving
        if s is None:
            return
        if s.body_left > 0:
            s.body_left -= len(body)
        s.awaiting_continue = False
        if not s.answered:
            self._events.append(BodyReceived(s.id, body))

    def on_message_complete(self) -> None:
        if self._body_skipped:
            return
        self._synthetic = False
        s = self._receiving
        if s is None:
            return
        self._receiving = None
        s.request_done = True
        s.awaiting_continue = False
        if not s.answered:
            self._events.append(EndOfRequest(s.id))
        if not s.keep_alive:
            self._closing = True
            self._input_closed = True

    # -- parsing ------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        parser = self._parser
        while True:
            try:
                parser.feed_data(data)
                return
            except httptools.HttpParserUpgrade as exc:
                rest = data[exc.args[0] :]
            except httptools.HttpParserError as exc:
                self._parse_failed(exc)
                return
            if self._upgrade is not None:
                self._upgrade.data = rest
                self._events.append(self._upgrade)
                self._upgraded = True
                self._input_closed = True
                return
            # llhttp stops for good after an upgrade head; go on with a fresh
            # parser. If it skipped a body, a synthetic head framed like the
            # real one makes the new parser read that body for the same stream.
            parser = self._parser = self._new_parser()
            if self._body_skipped:
                self._body_skipped = False
                s = self._receiving
                assert s is not None
                self._synthetic = True
                parser.feed_data(
                    _SYNTHETIC_CHUNKED
                    if s.body_left < 0
                    else b"PUT / HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % s.body_left
                )
            if self._input_closed or not rest:
                return
            data = rest

    def _new_parser(self) -> httptools.HttpRequestParser:
        parser = httptools.HttpRequestParser(self)
        # Already llhttp's defaults; spelled out because each one reopens a
        # request-smuggling hole (CL with TE, bare LF, lenient chunk sizes...).
        parser.set_dangerous_leniencies(
            lenient_headers=False,
            lenient_chunked_length=False,
            lenient_keep_alive=False,
            lenient_transfer_encoding=False,
            lenient_version=False,
            lenient_data_after_close=False,
            lenient_optional_lf_after_cr=False,
            lenient_optional_cr_before_lf=False,
            lenient_optional_crlf_after_chunk=False,
            lenient_spaces_after_chunk_size=False,
        )
        return parser

    def _parse_failed(self, exc: Exception) -> None:
        if self._abort is not None:
            status, detail = self._abort
            self._abort = None
            self._fail(status, detail)
        elif self._input_closed:
            pass  # stopped on purpose, or bytes after a Connection: close request
        elif isinstance(exc, httptools.HttpParserCallbackError):
            raise RuntimeError("HTTP/1.1 parser callback failed") from exc
        elif "invalid http version" in str(exc).lower():
            self._fail(505, "HTTP version is not supported")
        elif "PRI" in str(exc):
            # llhttp stops at the HTTP/2 preface; L3 sniffs for it before us.
            self._fail(505, "HTTP/2 with prior knowledge is not served on this connection")
        else:
            self._fail(400, f"malformed request: {exc}")

    def _reject(self, status: int, detail: str) -> NoReturn:
        self._abort = (status, detail)
        raise _Abort

    def _head_too_large(self) -> str:
        return f"request line and headers exceed {self._max_head} bytes"

    def _absolute_form(self, target: bytes) -> tuple[bytes, bytes | None]:
        """RFC 9112 3.2.2: a server must accept absolute-form; its authority wins over Host."""
        try:
            url = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            self._reject(400, "invalid request target")
        if not url.schema or not url.host:
            self._reject(400, "invalid request target")
        authority: bytes = url.host if not url.port else b"%s:%d" % (url.host, url.port)
        path: bytes = url.path or b"/"
        return (path + b"?" + url.query if url.query else path), authority

    # -- connection-level outcomes ----------------------------------------------------

    def _fail(self, status: int, detail: str) -> None:
        """A request we cannot serve: answer it ourselves, after the responses
        it is pipelined behind, and take nothing more."""
        self._closing = self._input_closed = True
        self._in_head = False
        events = self._events
        q = self._queue
        respond = True
        last = self._next_id - 1
        s = self._receiving
        if s is not None and not s.request_done:
            self._receiving = None
            if s.answered:
                respond = False  # its response is out; the client reads no more
            else:
                events.append(StreamReset(s.id, ResetReason.PROTOCOL_ERROR))
                s.answered = True
                q.remove(s)
                last = s.id - 1
                respond = not s.started
        if respond:
            if q:
                self._pending_error = (status, detail)
            else:
                self._out.append(self._error_response(status, detail))
        if not self._terminated:
            self._terminated = True
            events.append(ConnectionTerminated(1, last or None, detail))

    def _peer_closed(self) -> None:
        self._closing = self._input_closed = True
        events = self._events
        last = self._next_id - 1
        s = self._receiving
        if s is not None and not s.request_done:
            self._receiving = None
            if not s.answered:
                events.append(StreamReset(s.id, ResetReason.CONNECTION_CLOSED))
                s.answered = True
                self._queue.remove(s)
                last = s.id - 1
        if not self._terminated:
            self._terminated = True
            events.append(ConnectionTerminated(0, last or None, "peer closed the connection"))

    def _reset(self, stream_id: int) -> None:
        """The server abandons ``stream_id``: HTTP/1.1 can only close. Later
        pipelined streams are dropped; earlier ones are still answered."""
        q = self._queue
        if all(s.id != stream_id for s in q):
            return
        while q:
            s = q.pop()
            s.answered = True
            if s.id == stream_id:
                break
        self._closing = self._input_closed = True
        self._pending_error = None

    def _error_response(self, status: int, detail: str) -> bytes:
        body = json.dumps({"detail": detail}).encode()
        return b"".join(
            (
                status_line(status),
                b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
                b"connection: close\r\n",
                self._date_line,
                self._server_line,
                b"\r\n",
                body,
            )
        )

    # -- responses ----------------------------------------------------------------

    def _can_discard(self, s: Stream) -> bool:
        return 0 <= s.body_left <= self._discard_limit and not s.awaiting_continue

    def _informational(self, s: Stream, event: InformationalResponse) -> None:
        status = event.status
        if not 100 <= status < 200 or status == 101:
            raise ValueError(f"{status} is not an informational status usable here")
        if s.started or not s.http11:
            return  # HTTP/1.0 clients do not expect 1xx
        if status == 100:
            if s.awaiting_continue:
                s.awaiting_continue = False
                self._out.append(_CONTINUE)
            return
        parts = [status_line(status)]
        for name, value in event.headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        head = b"".join(parts)
        check_lines(head, len(parts) - 3 * len(event.headers))
        self._out.append(head)

    def _start(self, s: Stream, event: ResponseStart) -> None:
        status = event.status
        if not 200 <= status <= 999:
            raise ValueError(f"invalid final status code {status}")
        parts = [status_line(status)]
        length = -1
        close = False
        has_date = has_server = False
        dropped = 0
        for name, value in event.headers:
            if name in _RESPONSE_SPECIAL:
                if name == b"content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        length = -1
                    if length < 0:
                        raise ValueError(f"invalid content-length {value!r} in response")
                elif name == b"connection":
                    close = b"close" in value.lower()
                    dropped += 1
                    continue  # ours is written below
                elif name == b"transfer-encoding":
                    dropped += 1
                    continue  # framing is ours to choose
                elif name == b"date":
                    has_date = True
                else:
                    has_server = True
            parts += (name, b": ", value, b"\r\n")
        if s.head_only or status == 204 or status == 304:
            mode = NO_BODY
        elif length >= 0:
            mode = LENGTH
        elif event.end_stream:
            mode = LENGTH
            length = 0
            parts.append(b"content-length: 0\r\n")
        elif s.http11:
            mode = CHUNKED
            parts.append(b"transfer-encoding: chunked\r\n")
        else:
            mode = UNTIL_CLOSE
            close = True
        if (
            close
            or not s.keep_alive
            or (not s.request_done and not self._can_discard(s))
            or (self._closing and s is self._queue[-1] and self._pending_error is None)
        ):
            close = True
            parts.append(b"connection: close\r\n")
        elif not s.http11:
            parts.append(b"connection: keep-alive\r\n")
        if not has_date and self._date_line:
            parts.append(self._date_line)
        if not has_server and self._server_line:
            parts.append(self._server_line)
        parts.append(b"\r\n")
        head = b"".join(parts)
        # Every app header is 4 parts and one line, every other part one line.
        check_lines(head, len(parts) - 3 * (len(event.headers) - dropped))
        s.started = True
        s.mode = mode
        s.length_left = length
        s.close = close
        self._out.append(head)

    def _write_body(self, s: Stream, data: bytes) -> None:
        if not data:
            return
        mode = s.mode
        if mode == CHUNKED:
            self._out += (b"%x\r\n" % len(data), data, b"\r\n")
        elif mode == LENGTH:
            left = s.length_left
            if len(data) > left:
                data = data[:left]  # beyond the declared length the client would misparse
            s.length_left = left - len(data)
            if data:
                self._out.append(data)
        elif mode == UNTIL_CLOSE:
            self._out.append(data)

    def _finish(self, s: Stream) -> None:
        if s.mode == CHUNKED:
            self._out.append(b"0\r\n\r\n")
        elif s.mode == LENGTH and s.length_left:
            s.close = True  # short of its content-length: only closing ends it
        s.answered = True
        q = self._queue
        q.popleft()
        if s.close or (not s.request_done and not self._can_discard(s)):
            self._closing = self._input_closed = True
            self._pending_error = None
            while q:
                q.pop().answered = True
        elif q:
            nxt = q[0]
            if nxt.want_continue and nxt.awaiting_continue and nxt.http11:
                nxt.awaiting_continue = False
                self._out.append(_CONTINUE)
        elif self._pending_error is not None:
            status, detail = self._pending_error
            self._pending_error = None
            self._out.append(self._error_response(status, detail))


def _decode_settings(value: bytes) -> bytes | None:
    """HTTP2-Settings is base64url without padding (RFC 7540 3.2.1)."""
    value = value.strip()
    try:
        payload = base64.b64decode(
            value.translate(_URLSAFE) + b"=" * (-len(value) % 4), validate=True
        )
    except (binascii.Error, ValueError):
        return None
    return payload if len(payload) % 6 == 0 else None


_URLSAFE = bytes.maketrans(b"-_", b"+/")
