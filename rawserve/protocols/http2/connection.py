"""HTTP/2 server connection (RFC 9113): bytes in, rawserve events out.

The adapter on top of the hardened h2 connection (``core``): it turns h2's
events into ours (validating request heads with ``semantics``), takes
response events (bodies go to the ``sender``), hands request-body window
back as the application consumes it, and takes over an HTTP/1.1
``Upgrade: h2c``.
"""

from __future__ import annotations

import base64
import logging

import h2.config
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.exceptions import InvalidDataError, InvalidFrameError
from hyperframe.frame import ExtensionFrame, Frame, GoAwayFrame, SettingsFrame

from rawserve.core.config import Limits
from rawserve.core.errors import ConfigError, ProtocolError
from rawserve.core.events import (
    BodyReceived,
    ConnectionTerminated,
    EndOfRequest,
    Headers,
    IncomingEvent,
    InformationalResponse,
    OutgoingEvent,
    PriorityChanged,
    PushPromise,
    RequestReceived,
    ResetReason,
    ResetStream,
    ResponseBody,
    ResponseEnd,
    ResponseStart,
    StreamReset,
)
from rawserve.core.logthrottle import LogThrottle
from rawserve.core.priority import (
    DEFAULT_PRIORITY,
    Priority,
    parse_priority_field,
    urgency_from_weight,
)
from rawserve.protocols.http2.core import BLOCK_MEMO_ENTRIES, Core, server_config
from rawserve.protocols.http2.framing import PRIORITY_UPDATE
from rawserve.protocols.http2.sender import Sender
from rawserve.protocols.http2.stream import Stream
from rawserve.protocols.semantics import (
    CONNECTION_SPECIFIC,
    MalformedMessage,
    RequestHead,
    check_trailers,
    parse_request_head,
    response_head,
)

__all__ = ["H2Connection"]

log = logging.getLogger("rawserve.http2")
# Bugs a peer's input triggers, logged with their traceback at most once per
# kind every 10 s across all connections (a client could otherwise repeat one
# on every connection it opens). Process-wide on purpose, bounded by its
# max_kinds; the time comes from receive_data's ``now``.
INTERNAL_ERRORS = LogThrottle(log, interval_s=10.0)

NO_RFC7540_PRIORITIES = 0x9  # RFC 9218 section 2.1
MIN_FRAME_SIZE = 16_384
MAX_FRAME_SIZE = 16_777_215
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535
# Validated request heads a connection keeps, by the header list Core gave
# (see Core._decode_request_block): as many as Core keeps blocks.
HEAD_MEMO_ENTRIES = BLOCK_MEMO_ENTRIES

# RFC 9113 section 7 codes for the protocol-neutral reset reasons, and back.
_CODE_FOR_REASON: dict[ResetReason, ErrorCodes] = {
    ResetReason.NO_ERROR: ErrorCodes.NO_ERROR,
    ResetReason.CANCELLED: ErrorCodes.CANCEL,
    ResetReason.REFUSED: ErrorCodes.REFUSED_STREAM,
    ResetReason.PROTOCOL_ERROR: ErrorCodes.PROTOCOL_ERROR,
    ResetReason.INTERNAL_ERROR: ErrorCodes.INTERNAL_ERROR,
    ResetReason.FLOW_CONTROL_ERROR: ErrorCodes.FLOW_CONTROL_ERROR,
    ResetReason.EXCESSIVE_LOAD: ErrorCodes.ENHANCE_YOUR_CALM,
    ResetReason.CONNECTION_CLOSED: ErrorCodes.CANCEL,
}
_REASON_FOR_CODE: dict[int, ResetReason] = {
    **{
        int(code): reason
        for reason, code in _CODE_FOR_REASON.items()
        if reason is not ResetReason.CONNECTION_CLOSED
    },
    # Frames on a closed stream, a bad frame size: the peer broke the protocol.
    int(ErrorCodes.STREAM_CLOSED): ResetReason.PROTOCOL_ERROR,
    int(ErrorCodes.FRAME_SIZE_ERROR): ResetReason.PROTOCOL_ERROR,
}


def _reason_from_code(code: int | None) -> ResetReason:
    """A peer's RST_STREAM code as a reason; codes we do not name are cancels."""
    return _REASON_FOR_CODE.get(int(code or 0), ResetReason.CANCELLED)


def _describe(exc: Exception) -> str:
    text = str(exc)
    # Some h2 errors carry only numbers (StreamIDTooLowError: "3").
    return text if any(c.isalpha() for c in text) else f"{type(exc).__name__}({text})"


# A request head's method, target, scheme and authority as the application
# sees them (str), made once per remembered head.
_HeadText = tuple[str, str, str, str | None]


def _head_text(req: RequestHead, default_scheme: str) -> _HeadText:
    method = req.method.decode("ascii")
    target = (req.authority if method == "CONNECT" else req.path) or b""
    return (
        method,
        target.decode("latin-1"),
        req.scheme.decode("ascii") if req.scheme else default_scheme,
        req.authority.decode("latin-1") if req.authority is not None else None,
    )


class H2Connection:
    """A server-side HTTP/2 connection: ``receive_data`` -> events, ``send``
    events -> ``data_to_send``. Call ``initiate`` (or ``initiate_upgrade``) first."""

    def __init__(
        self, limits: Limits, *, scheme: str = "https", server_header: bytes | None = b"rawserve"
    ) -> None:
        if not MIN_FRAME_SIZE <= limits.max_frame_bytes <= MAX_FRAME_SIZE:
            raise ConfigError(f"max_frame_bytes must be within {MIN_FRAME_SIZE}..{MAX_FRAME_SIZE}")
        if not 0 <= limits.initial_window_bytes <= MAX_WINDOW:
            raise ConfigError(f"initial_window_bytes must be within 0..{MAX_WINDOW}")
        if not 0 < limits.connection_window_bytes <= MAX_WINDOW:
            raise ConfigError(f"connection_window_bytes must be within 1..{MAX_WINDOW}")
        self._limits = limits
        self._scheme = scheme
        self._server_header = server_header
        self._date: bytes | None = None
        self._conn = Core(server_config(), limits)
        self._conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window_bytes,
                SettingCodes.MAX_FRAME_SIZE: limits.max_frame_bytes,
                SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_bytes,
                SettingCodes.ENABLE_CONNECT_PROTOCOL: 0,
            },
        )
        self._conn.max_inbound_frame_size = limits.max_frame_bytes
        self._streams: dict[int, Stream] = {}
        self._sender = Sender(self._conn, self._streams, done=self._finish, failed=self._drop)
        # Streams answered before their request ended (bounded by h2, which
        # still counts them as open).
        self._answered: set[int] = set()
        self._last_stream_id = 0  # highest stream handed to the application
        # PRIORITY_UPDATE frames that arrived before their request (RFC 9218
        # section 7.1), at most max_concurrent_streams of them.
        self._early_priorities: dict[int, bytes] = {}
        self._heads: dict[int, tuple[list[tuple[bytes, bytes]], RequestHead, _HeadText]] = {}
        # Body bytes received for requests not yet complete, across streams
        # (capped by limits.connection_body_bytes).
        self.pending_body_bytes = 0
        self._rfc7540_priorities = True
        self._out = bytearray()  # frames we write ourselves, after h2's
        self._closed = False
        self._goaway_sent = False
        self._peer_goaway = False
        # Server push: promised stream -> its path, how many were promised, and
        # the paths a client refused (RST_STREAM on the promise): never again.
        self._pushed: dict[int, str] = {}
        self._authorities: dict[int, bytes] = {}
        self._pushes = 0
        self._refused_pushes: set[str] = set()

    # -- lifecycle ---------------------------------------------------------

    def initiate(self) -> None:
        """Queue the server preface: SETTINGS, then the connection window."""
        self._conn.initiate_connection()
        self._open_connection_window()

    def initiate_upgrade(self, settings: bytes, request: RequestReceived) -> list[IncomingEvent]:
        """Take over after ``101 Switching Protocols`` (RFC 7540 section 3.2):
        ``settings`` is the decoded HTTP2-Settings payload and ``request``
        becomes stream 1, already complete. Raises ProtocolError (400) for bad
        settings before queueing anything."""
        if len(settings) % 6:
            raise ProtocolError("HTTP2-Settings is not a whole number of settings")
        frame = SettingsFrame(0)
        try:
            frame.parse_body(memoryview(settings))
            for code, value in frame.settings.items():
                self._conn.remote_settings.validate_received_setting(code, value)
        except (InvalidDataError, InvalidFrameError, h2.exceptions.ProtocolError) as exc:
            raise ProtocolError(f"invalid HTTP2-Settings: {exc}") from exc
        self._conn.initiate_upgrade_connection(base64.urlsafe_b64encode(settings))
        self._open_connection_window()
        headers = [
            h
            for h in request.headers
            if h[0] not in CONNECTION_SPECIFIC and h[0] != b"http2-settings"
        ]
        req = RequestReceived(
            stream_id=1,
            method=request.method,
            target=request.target,
            headers=headers,
            http_version="2",
            scheme=request.scheme,
            authority=request.authority,
            priority=request.priority,
            end_stream=True,
        )
        stream = Stream(request.priority, False, None)
        stream.request_ended = True
        self._streams[1] = stream
        self._last_stream_id = 1
        return [req, EndOfRequest(1)]

    def _open_connection_window(self) -> None:
        extra = self._limits.connection_window_bytes - DEFAULT_WINDOW
        if extra > 0:
            self._conn.increment_flow_control_window(extra)

    def start_shutdown(self, error_code: int = 0) -> None:
        """Send GOAWAY: streams already accepted may finish, new ones are
        refused. A non-zero ``error_code`` closes at once."""
        if self._closed or self._goaway_sent:
            return
        self._goaway_sent = True
        self._conn.refuse_new = True
        self._write_frame(
            GoAwayFrame(0, last_stream_id=self._last_stream_id, error_code=error_code)
        )
        if error_code:
            self._close()

    def peer_closed(self) -> list[IncomingEvent]:
        """The client shut down its sending side: no frame will come. Streams
        whose request is complete are still answered; the others can never
        end and are reset (CANCEL); GOAWAY says no new stream is taken, and
        ``should_close`` turns true after the last answer."""
        out: list[IncomingEvent] = []
        if self._closed:
            return out
        for sid, stream in list(self._streams.items()):
            if not stream.request_ended:
                self._reset(sid, ErrorCodes.CANCEL)
                out.append(StreamReset(sid, ResetReason.CANCELLED))
        self.start_shutdown()
        return out

    def set_date_header(self, value: bytes) -> None:
        """The ``date`` value for responses; the I/O layer updates it once a second."""
        self._date = value

    @property
    def should_close(self) -> bool:
        return self._closed or ((self._goaway_sent or self._peer_goaway) and not self._streams)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    # -- server push (RFC 9113 section 8.4) ------------------------------------

    def push_allowed(self, parent: int) -> bool:
        """Whether a push can be promised on stream ``parent`` now: the client
        allows push, the connection is not closing, the parent's response is
        not finished, and the limits (pushes per connection, concurrent pushed
        streams within the client's SETTINGS_MAX_CONCURRENT_STREAMS) hold."""
        stream = self._streams.get(parent)
        limits = self._limits
        return (
            not self._closed
            and not self._goaway_sent
            and not self._peer_goaway
            and bool(self._conn.remote_settings.enable_push)
            and parent % 2 == 1
            and stream is not None
            and not stream.closing
            and not stream.response_done
            and self._pushes < limits.max_pushes_per_connection
            and len(self._pushed)
            < min(limits.max_concurrent_pushes, self._conn.remote_settings.max_concurrent_streams)
        )

    def push(self, parent: int, path: str, headers: Headers) -> RequestReceived | None:
        """Promise a ``GET path`` on stream ``parent``; the returned request is
        the pushed stream's, to be answered like any other. None when the push
        cannot be made (``push_allowed``, or a path the client refused)."""
        if path in self._refused_pushes or not self.push_allowed(parent):
            return None
        parent_stream = self._streams[parent]
        authority = self._authorities.get(parent, b"")
        promised = self._conn.get_next_available_stream_id()
        fields = [
            (b":method", b"GET"),
            (b":scheme", self._scheme.encode()),
            (b":authority", authority),
            (b":path", path.encode("latin-1")),
            *((k, v) for k, v in headers if k not in CONNECTION_SPECIFIC and k[:1] != b":"),
        ]
        try:
            self._conn.push_stream(parent, promised, fields)
        except h2.exceptions.H2Error:
            return None
        stream = Stream(parent_stream.priority, False, None)
        stream.request_ended = True
        self._streams[promised] = stream
        self._pushed[promised] = path
        self._pushes += 1
        return RequestReceived(
            stream_id=promised,
            method="GET",
            target=path,
            headers=[(k, v) for k, v in fields if k[:1] != b":"],
            http_version="2",
            scheme=self._scheme,
            authority=authority.decode("latin-1") or None,
            priority=parent_stream.priority,
            end_stream=True,
        )

    # -- bytes in ----------------------------------------------------------

    def receive_data(self, data: bytes, now: float = 0.0) -> list[IncomingEvent]:
        if self._closed:
            return []
        self._conn.now = now
        try:
            h2_events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued the GOAWAY with exc.error_code.
            return [self._terminated(int(exc.error_code), _describe(exc))]
        except Exception as exc:  # odd input must never escape as a crash
            return [self._internal_error(exc, now)]
        try:
            return self._translate(h2_events)
        except h2.exceptions.ProtocolError as exc:
            return [self._abort(int(exc.error_code), _describe(exc))]
        except Exception as exc:
            return [self._internal_error(exc, now)]

    def _internal_error(self, exc: Exception, now: float) -> ConnectionTerminated:
        """A bug, in rawserve or in h2: log it, then GOAWAY(INTERNAL_ERROR)."""
        INTERNAL_ERRORS.exception(
            "HTTP/2 adapter failed on a peer's input; closing the connection with "
            "GOAWAY(INTERNAL_ERROR)",
            exc,
            now,
        )
        return self._abort(ErrorCodes.INTERNAL_ERROR, f"internal error: {exc!r}")

    def _abort(self, error_code: int, reason: str) -> ConnectionTerminated:
        """A connection error found outside h2: write the GOAWAY ourselves."""
        self._write_frame(
            GoAwayFrame(
                0, last_stream_id=self._conn.highest_inbound_stream_id, error_code=error_code
            )
        )
        return self._terminated(error_code, reason)

    def _terminated(self, error_code: int, reason: str) -> ConnectionTerminated:
        self._close()
        return ConnectionTerminated(
            error_code=error_code,
            last_stream_id=self._conn.highest_inbound_stream_id,
            reason=reason,
        )

    def _close(self) -> None:
        self._closed = True
        self._streams.clear()
        self._answered.clear()
        self._early_priorities.clear()
        self.pending_body_bytes = 0

    def _translate(self, h2_events: list[h2.events.Event]) -> list[IncomingEvent]:
        out: list[IncomingEvent] = []
        attached: h2.events.PriorityUpdated | None = None
        flush_all = False
        for ev in h2_events:
            if isinstance(ev, h2.events.DataReceived):
                self._on_data(ev, out)
            elif isinstance(ev, h2.events.RequestReceived):
                attached = ev.priority_updated
                self._on_request(ev, out)
            elif isinstance(ev, h2.events.StreamEnded):
                self._on_stream_ended(ev.stream_id, out)
            elif isinstance(ev, h2.events.WindowUpdated):
                if ev.stream_id:
                    stream = self._streams.get(ev.stream_id)
                    if stream is not None:
                        self._sender.flush(ev.stream_id, stream)
                else:
                    flush_all = True
            elif isinstance(ev, h2.events.StreamReset):
                self._answered.discard(ev.stream_id)
                refused = self._pushed.pop(ev.stream_id, None)
                if refused is not None:
                    # The client does not want this push: costs nothing more,
                    # and the same path is never promised again here.
                    self._refused_pushes.add(refused)
                stream = self._streams.get(ev.stream_id)
                if stream is not None:
                    self._drop(ev.stream_id, stream)
                    out.append(StreamReset(ev.stream_id, _reason_from_code(ev.error_code)))
            elif isinstance(ev, h2.events.TrailersReceived):
                self._on_trailers(ev, out)
            elif isinstance(ev, h2.events.PriorityUpdated):
                if ev is not attached:
                    self._on_priority_frame(ev, out)
            elif isinstance(ev, h2.events.UnknownFrameReceived):
                frame = ev.frame
                if isinstance(frame, ExtensionFrame) and frame.type == PRIORITY_UPDATE:
                    self._on_priority_update(frame.body, out)
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                changed = ev.changed_settings
                if SettingCodes.INITIAL_WINDOW_SIZE in changed:
                    flush_all = True
                if NO_RFC7540_PRIORITIES in changed:
                    self._rfc7540_priorities = changed[NO_RFC7540_PRIORITIES].new_value != 1
            elif isinstance(ev, h2.events.ConnectionTerminated):
                out.append(self._on_goaway(ev))
                if self._closed:
                    return out
        if flush_all:
            self._sender.flush_all()
        return out

    def _on_request(self, ev: h2.events.RequestReceived, out: list[IncomingEvent]) -> None:
        sid = ev.stream_id
        ended = ev.stream_ended is not None
        fields = ev.headers
        try:
            # Core hands out the same list for a repeated header block (its
            # memo): the same list was validated the same way before.
            known = self._heads.get(id(fields))
            if known is not None and known[0] is fields:
                req, text = known[1], known[2]
            else:
                req = parse_request_head(fields)
                text = _head_text(req, self._scheme)
                if len(self._heads) >= HEAD_MEMO_ENTRIES:
                    self._heads.clear()
                # The entry holds the list, so its id is not reused meanwhile.
                self._heads[id(fields)] = (fields, req, text)
            if ended and req.content_length:
                raise MalformedMessage("content-length without a body")
        except MalformedMessage:
            self._reset(sid, ErrorCodes.PROTOCOL_ERROR)
            self._conn._count_reset()
            return
        if req.size > self._limits.max_header_bytes:
            self._refuse(sid, 431, ended)
            self._conn._count_reset()
            return
        priority = DEFAULT_PRIORITY
        rfc9218 = False
        signal = ev.priority_updated
        if (
            signal is not None
            and self._rfc7540_priorities
            and signal.weight is not None
            and not (signal.weight == 16 and not signal.depends_on and not signal.exclusive)
        ):
            priority = Priority(urgency_from_weight(signal.weight))
        early = self._early_priorities.pop(sid, None)
        if early is not None:
            priority = parse_priority_field(early)
            rfc9218 = True
        elif req.priority_field is not None:
            priority = parse_priority_field(req.priority_field, priority)
            rfc9218 = True
        stream = Stream(priority, rfc9218, req.content_length)
        stream.last_data = self._conn.now
        stream.awaiting_continue = req.expect_continue and not ended
        self._streams[sid] = stream
        # A push promised on this stream names the same authority.
        self._authorities[sid] = req.authority or b""
        self._last_stream_id = max(self._last_stream_id, sid)
        method, target, scheme, authority = text
        out.append(
            RequestReceived(
                stream_id=sid,
                method=method,
                target=target,
                # A copy: the memo's head is shared by the requests that sent it.
                headers=list(req.headers),
                http_version="2",
                scheme=scheme,
                authority=authority,
                priority=priority,
                end_stream=ended,
                expect_continue=req.expect_continue,
            )
        )

    def _on_data(self, ev: h2.events.DataReceived, out: list[IncomingEvent]) -> None:
        sid = ev.stream_id
        data = ev.data
        stream = self._streams.get(sid)
        if stream is None:
            # Nobody will consume it (a stream reset in this same batch, or
            # one whose response is complete): hand the window back now.
            self._conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            if sid in self._answered and ev.stream_ended is None:
                # RFC 9113 section 8.1: the response is complete, so the
                # client may stop sending the request.
                self._answered.discard(sid)
                self._reset(sid, ErrorCodes.NO_ERROR)
            return
        padding = ev.flow_controlled_length - len(data)
        if padding:
            self._conn.acknowledge_received_data(padding, sid)
        stream.last_data = self._conn.now
        if data:
            n = len(data)
            if self.pending_body_bytes + n > self._limits.connection_body_bytes:
                # Many streams each holding part of a body: the one that
                # crosses the connection's cap goes (it cannot be answered 413
                # in general: its handler may already be reading).
                self._conn.acknowledge_received_data(n, sid)
                self._reset(sid, ErrorCodes.ENHANCE_YOUR_CALM)
                out.append(StreamReset(sid, ResetReason.EXCESSIVE_LOAD))
                return
            stream.unacked += n
            stream.received += n
            if not stream.request_ended:
                stream.pending += n
                self.pending_body_bytes += n
            out.append(BodyReceived(sid, data))

    def _on_stream_ended(self, sid: int, out: list[IncomingEvent]) -> None:
        stream = self._streams.get(sid)
        if stream is None:
            self._answered.discard(sid)
            return
        if stream.expected_length is not None and stream.received != stream.expected_length:
            # Only trailers can end a stream short of content-length: h2
            # checks DATA frames itself.
            self._reset(sid, ErrorCodes.PROTOCOL_ERROR)
            out.append(StreamReset(sid, ResetReason.PROTOCOL_ERROR))
            return
        stream.request_ended = True
        self._release_pending(stream)
        out.append(EndOfRequest(sid))

    def _on_trailers(self, ev: h2.events.TrailersReceived, out: list[IncomingEvent]) -> None:
        sid = ev.stream_id
        if sid not in self._streams:
            return
        try:
            check_trailers(ev.headers)
        except MalformedMessage:
            self._reset(sid, ErrorCodes.PROTOCOL_ERROR)
            out.append(StreamReset(sid, ResetReason.PROTOCOL_ERROR))

    def _on_priority_frame(self, ev: h2.events.PriorityUpdated, out: list[IncomingEvent]) -> None:
        sid = ev.stream_id
        if sid is None or ev.weight is None or not self._rfc7540_priorities:
            return
        stream = self._streams.get(sid)
        if stream is None or stream.rfc9218:
            return
        priority = Priority(urgency_from_weight(ev.weight), stream.priority.incremental)
        if priority != stream.priority:
            stream.priority = priority
            out.append(PriorityChanged(sid, priority))

    def _on_priority_update(self, body: bytes, out: list[IncomingEvent]) -> None:
        sid = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
        value = body[4:]
        stream = self._streams.get(sid)
        if stream is not None:
            priority = parse_priority_field(value)
            stream.rfc9218 = True
            if priority != stream.priority:
                stream.priority = priority
                out.append(PriorityChanged(sid, priority))
        elif sid > self._conn.highest_inbound_stream_id and sid % 2 == 1:
            if len(self._early_priorities) < self._limits.max_concurrent_streams:
                self._early_priorities[sid] = value

    def _on_goaway(self, ev: h2.events.ConnectionTerminated) -> ConnectionTerminated:
        code = int(ev.error_code or 0)
        self._peer_goaway = True
        self._conn.refuse_new = True
        reason = (ev.additional_data or b"").decode("utf-8", "replace")
        if code:
            self._close()
        return ConnectionTerminated(code, ev.last_stream_id, reason or "GOAWAY from peer")

    # -- events out --------------------------------------------------------

    def send(self, event: OutgoingEvent) -> None:
        """Queue a response event. Events for streams that are gone (reset,
        connection closed) are dropped: the application learns of it from
        StreamReset / ConnectionTerminated."""
        if self._closed:
            return
        if isinstance(event, PushPromise):
            raise NotImplementedError("server push is not supported yet")
        sid = event.stream_id
        stream = self._streams.get(sid)
        if stream is None:
            return
        if isinstance(event, ResponseBody):
            if not stream.response_started:
                raise RuntimeError(f"ResponseBody before ResponseStart on stream {sid}")
            self._sender.write(sid, stream, event.data, event.end_stream)
        elif isinstance(event, ResponseStart):
            if stream.response_started:
                raise RuntimeError(f"second ResponseStart on stream {sid}")
            stream.response_started = True
            headers = self._response_headers(event.status, event.headers, final=True)
            if (
                self._send_headers(sid, stream, headers, event.end_stream, final=True)
                and event.end_stream
            ):
                stream.response_done = True
                self._finish(sid, stream)
        elif isinstance(event, ResponseEnd):
            if not stream.response_started:
                raise RuntimeError(f"ResponseEnd before ResponseStart on stream {sid}")
            self._sender.write(sid, stream, b"", True)
        elif isinstance(event, ResetStream):
            self._reset(sid, _CODE_FOR_REASON[event.reason])
        elif isinstance(event, InformationalResponse):
            if event.status == 100:
                stream.awaiting_continue = False
            if not stream.response_started:
                headers = self._response_headers(event.status, event.headers, final=False)
                self._send_headers(sid, stream, headers, False)

    def _response_headers(self, status: int, headers: Headers, *, final: bool) -> Headers:
        if final:
            return response_head(status, headers, server=self._server_header, date=self._date)
        return response_head(status, headers)

    def _send_headers(
        self, sid: int, stream: Stream, headers: Headers, end: bool, *, final: bool = False
    ) -> bool:
        try:
            if final:
                self._conn.send_final_headers(sid, headers, end)
            else:
                self._conn.send_headers(sid, headers, end_stream=end)
        except h2.exceptions.ProtocolError:
            self._drop(sid, stream)
            return False
        return True

    def data_to_send(self) -> bytes:
        if self._out:
            self._out += self._conn.data_to_send()
            data = bytes(self._out)
            self._out.clear()
            return data
        return self._conn.data_to_send()

    def _write_frame(self, frame: Frame) -> None:
        # Frames h2's state machine would refuse (a graceful GOAWAY must not
        # close it), written after whatever h2 has queued.
        self._out += self._conn.data_to_send()
        self._out += frame.serialize()

    # -- request body flow control ------------------------------------------------------

    def buffered(self, stream_id: int) -> int:
        """Response body bytes accepted by ``send`` but not yet framed."""
        stream = self._streams.get(stream_id)
        return stream.queued if stream is not None else 0

    def acknowledge(self, stream_id: int, n: int) -> None:
        """The application consumed ``n`` body bytes of ``stream_id``: give the
        client that much window back."""
        stream = self._streams.get(stream_id)
        if stream is None or self._closed or n <= 0:
            return
        n = min(n, stream.unacked)
        if n:
            stream.unacked -= n
            self._conn.acknowledge_received_data(n, stream_id)

    def expire_bodies(self, now: float, timeout_s: float) -> list[IncomingEvent]:
        """Reset (CANCEL) the streams whose request body has not advanced for
        ``timeout_s`` although the client had window to send it: HEADERS
        without the DATA, or a body that stops. A stream the server holds
        back (its window shut while the handler is not reading, or no 100
        Continue yet) is not stalled by the client; its time starts afresh."""
        out: list[IncomingEvent] = []
        if self._closed:
            return out
        for sid, stream in list(self._streams.items()):
            if stream.request_ended:
                continue
            try:
                window = self._conn.remote_flow_control_window(sid)
            except h2.exceptions.ProtocolError:  # h2 has closed it already
                continue
            if window <= 0 or stream.awaiting_continue:
                stream.last_data = now  # held back by the server, not the client
            elif now - stream.last_data >= timeout_s:
                self._reset(sid, ErrorCodes.CANCEL)
                out.append(StreamReset(sid, ResetReason.CANCELLED))
        return out

    # -- stream endings ----------------------------------------------------

    def _finish(self, sid: int, stream: Stream) -> None:
        """The response is complete."""
        if not stream.request_ended:
            # The rest of the request body is discarded as it arrives. The
            # stream is reset (NO_ERROR) only if more DATA comes: resetting at
            # once would race the client's own frames on the stream, and
            # h2's stream state keeps it within the concurrency limit.
            self._answered.add(sid)
        self._forget(sid, stream)

    def _reset(self, sid: int, error_code: int) -> None:
        try:
            self._conn.reset_stream(sid, error_code)
        except h2.exceptions.ProtocolError:
            pass
        stream = self._streams.get(sid)
        if stream is not None:
            self._drop(sid, stream)

    def _refuse(self, sid: int, status: int, request_ended: bool) -> None:
        """Answer a request the application never sees, e.g. 431."""
        headers = self._response_headers(status, [(b"content-length", b"0")], final=True)
        try:
            self._conn.send_headers(sid, headers, end_stream=True)
        except h2.exceptions.ProtocolError:
            return
        if not request_ended:
            self._answered.add(sid)

    def _drop(self, sid: int, stream: Stream) -> None:
        stream.queue.clear()
        stream.queued = 0
        self._forget(sid, stream)

    def _release_pending(self, stream: Stream) -> None:
        self.pending_body_bytes -= stream.pending
        stream.pending = 0

    def _forget(self, sid: int, stream: Stream) -> None:
        self._streams.pop(sid, None)
        self._pushed.pop(sid, None)
        self._authorities.pop(sid, None)
        self._release_pending(stream)
        if stream.unacked and not self._closed:
            # The application will not acknowledge bytes of a finished
            # stream; without this the connection window would leak.
            self._conn.acknowledge_received_data(stream.unacked, sid)
            stream.unacked = 0
