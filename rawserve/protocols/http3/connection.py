"""HTTP/3 server connection (RFC 9114) on aioquic: datagrams in, events out.

One QUIC connection: ``receive_datagram(data, addr, now)`` and
``handle_timer(now)`` return rawserve events; response events go in through
``send``; ``datagrams_to_send(now)`` drains, ``get_timer()`` says when to
call back. Request heads are checked by ``semantics`` as in HTTP/2; request
body credit goes back only as the application consumes (``acknowledge``);
response bodies wait in the adapter (``buffered``) and enter QUIC in RFC 9218
order as the peer's windows and the congestion window allow, so aioquic's
unbounded stream buffers hold at most a window's worth.
"""

from __future__ import annotations

from typing import Any

import aioquic.h3.events as h3e
import aioquic.quic.events as qe
from aioquic._buffer import Buffer, BufferReadError
from aioquic.h3.connection import ErrorCode, FrameType
from aioquic.h3.exceptions import H3Error
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, stream_is_unidirectional

from rawserve.core.config import Limits
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
from rawserve.core.priority import DEFAULT_PRIORITY, parse_priority_field
from rawserve.protocols.http3.h3 import (
    KNOWN_UNI_TYPES,
    PRIORITY_UPDATE_PUSH,
    PRIORITY_UPDATE_REQUEST,
    ControlReader,
    RequestHeaders,
    ServerH3,
    Trailers,
)
from rawserve.protocols.http3.quic import FlowControlledQuic
from rawserve.protocols.http3.sender import Sender
from rawserve.protocols.http3.stream import Stream
from rawserve.protocols.semantics import (
    CONNECTION_SPECIFIC,
    MalformedMessage,
    RateLimit,
    check_trailers,
    parse_request_head,
    response_head,
)

__all__ = ["H3_ALPN", "H3Connection", "reason_from_code"]

H3_ALPN = ["h3"]
# Methods a server may answer from 0-RTT data, which an attacker can replay
# (RFC 8470 section 3, RFC 9114 section 10.9): safe ones only.
EARLY_DATA_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Incremental streams share the congestion window this many bytes at a time.

# RFC 9114 section 8.1 codes for the protocol-neutral reasons, and back.
_CODE_FOR_REASON: dict[ResetReason, int] = {
    ResetReason.NO_ERROR: ErrorCode.H3_NO_ERROR,
    ResetReason.CANCELLED: ErrorCode.H3_REQUEST_CANCELLED,
    ResetReason.REFUSED: ErrorCode.H3_REQUEST_REJECTED,
    ResetReason.PROTOCOL_ERROR: ErrorCode.H3_MESSAGE_ERROR,
    ResetReason.INTERNAL_ERROR: ErrorCode.H3_INTERNAL_ERROR,
    ResetReason.FLOW_CONTROL_ERROR: ErrorCode.H3_GENERAL_PROTOCOL_ERROR,
    ResetReason.EXCESSIVE_LOAD: ErrorCode.H3_EXCESSIVE_LOAD,
    ResetReason.CONNECTION_CLOSED: ErrorCode.H3_REQUEST_CANCELLED,
}
_REASON_FOR_CODE: dict[int, ResetReason] = {
    int(ErrorCode.H3_NO_ERROR): ResetReason.NO_ERROR,
    int(ErrorCode.H3_REQUEST_CANCELLED): ResetReason.CANCELLED,
    int(ErrorCode.H3_REQUEST_REJECTED): ResetReason.REFUSED,
    int(ErrorCode.H3_MESSAGE_ERROR): ResetReason.PROTOCOL_ERROR,
    int(ErrorCode.H3_GENERAL_PROTOCOL_ERROR): ResetReason.PROTOCOL_ERROR,
    int(ErrorCode.H3_FRAME_ERROR): ResetReason.PROTOCOL_ERROR,
    int(ErrorCode.H3_FRAME_UNEXPECTED): ResetReason.PROTOCOL_ERROR,
    int(ErrorCode.H3_REQUEST_INCOMPLETE): ResetReason.PROTOCOL_ERROR,
    int(ErrorCode.H3_INTERNAL_ERROR): ResetReason.INTERNAL_ERROR,
    int(ErrorCode.H3_EXCESSIVE_LOAD): ResetReason.EXCESSIVE_LOAD,
}


def reason_from_code(code: int) -> ResetReason:
    """A peer's HTTP/3 error code as a reason; codes we do not name are cancels."""
    return _REASON_FOR_CODE.get(code, ResetReason.CANCELLED)


class H3Connection:
    """A server-side HTTP/3 connection over one QUIC connection."""

    def __init__(
        self,
        limits: Limits,
        configuration: QuicConfiguration,
        *,
        original_destination_connection_id: bytes | None = None,
        retry_source_connection_id: bytes | None = None,
        session_ticket_fetcher: Any = None,
        session_ticket_handler: Any = None,
        server_header: bytes | None = b"rawserve",
    ) -> None:
        self._limits = limits
        self._server_header = server_header
        self._date: bytes | None = None
        self._quic = FlowControlledQuic(
            configuration=configuration,
            stream_window=limits.initial_window_bytes,
            connection_window=limits.connection_window_bytes,
            max_streams=limits.max_concurrent_streams,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
            session_ticket_fetcher=session_ticket_fetcher,
            session_ticket_handler=session_ticket_handler,
        )
        self._h3: ServerH3 | None = None
        self._control = ControlReader()
        self._streams: dict[int, Stream] = {}
        self._sender = Sender(self._quic, self._streams, done=self._response_done, drop=self._drop)
        # PRIORITY_UPDATE frames that arrived before their request (RFC 9218
        # section 7.1), at most max_concurrent_streams of them.
        self._early_priorities: dict[int, bytes] = {}
        self._highest_request = -1  # highest request stream whose head arrived
        # Request streams below it whose head has not arrived yet: under loss,
        # stream 8's HEADERS can come after stream 12's. Bounded by the QUIC
        # stream limit (each is an open stream the client was given credit for).
        self._gaps: set[int] = set()
        self._resets = RateLimit(limits.max_resets_per_s)
        self._control_frames = RateLimit(limits.max_control_frames_per_s)
        self._goaway_id: int | None = None
        self._closing = False
        # QUIC's idle timeout counts silence, not open requests: while one is
        # open, a PING every half timeout keeps a slow handler's connection.
        self._keepalive_s = limits.idle_timeout_s / 2
        # Bytes of request streams whose head has not been decoded yet
        # (bounded by QUIC's stream limit).
        self._head_bytes: dict[int, int] = {}
        # Unidirectional streams of unknown or reserved types we stopped
        # reading (bounded by QUIC's unidirectional stream limit: each stays
        # open in QUIC until the client ends or resets it).
        self._stopped_uni: set[int] = set()
        self._last_heard = 0.0
        # Server push: push stream -> (push id, path), promises made, the paths
        # a client refused (CANCEL_PUSH, STOP_SENDING): never again here.
        self._pushed: dict[int, tuple[int, str]] = {}
        self._pushes = 0
        self._refused_pushes: set[str] = set()
        self._authorities: dict[int, bytes] = {}
        self.terminated = False
        # Connection IDs issued and retired since the glue last looked.
        self.issued_cids: list[bytes] = []
        self.retired_cids: list[bytes] = []
        self.handshake_complete = False
        self.session_resumed = False
        self.early_data_accepted = False

    # -- identity and state ------------------------------------------------------

    @property
    def host_cid(self) -> bytes:
        return self._quic.host_cid

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def should_close(self) -> bool:
        """The connection is over: the glue may forget it."""
        return self.terminated

    def set_date_header(self, value: bytes) -> None:
        self._date = value

    # -- datagrams in ----------------------------------------------------------------

    def receive_datagram(
        self, data: bytes, addr: NetworkAddress, now: float
    ) -> list[IncomingEvent]:
        self._last_heard = now
        self._quic.receive_datagram(data, addr, now)
        return self._process(now)

    def get_timer(self) -> float | None:
        at = self._quic.get_timer()
        if self._streams and self._keepalive_s > 0 and not self._closing:
            ping_at = self._last_heard + self._keepalive_s
            if at is None or ping_at < at:
                return ping_at
        return at

    def handle_timer(self, now: float) -> list[IncomingEvent]:
        if (
            self._streams
            and self._keepalive_s > 0
            and not self._closing
            and now >= self._last_heard + self._keepalive_s
        ):
            self._quic.send_ping(0)
            self._last_heard = now  # the next one half a timeout later
        self._quic.handle_timer(now)
        return self._process(now)

    def _process(self, now: float) -> list[IncomingEvent]:
        out: list[IncomingEvent] = []
        quic = self._quic
        event = quic.next_event()
        while event is not None:
            t = type(event)
            if t is qe.StreamDataReceived:
                self._on_stream_data(event, now, out)  # type: ignore[arg-type]
            elif t is qe.StreamReset or t is qe.StopSendingReceived:
                self._on_peer_reset(event, now, out)  # type: ignore[arg-type]
            elif t is qe.ProtocolNegotiated:
                self._h3 = ServerH3(quic, max_field_section_size=self._limits.max_header_bytes)
                self._sender.h3 = self._h3
            elif t is qe.HandshakeCompleted:
                self.handshake_complete = True
                self.session_resumed = event.session_resumed  # type: ignore[attr-defined]
                self.early_data_accepted = event.early_data_accepted  # type: ignore[attr-defined]
            elif t is qe.ConnectionIdIssued:
                self.issued_cids.append(event.connection_id)  # type: ignore[attr-defined]
            elif t is qe.ConnectionIdRetired:
                self.retired_cids.append(event.connection_id)  # type: ignore[attr-defined]
            elif t is qe.ConnectionTerminated:
                self.terminated = True
                self._streams.clear()
                out.append(
                    ConnectionTerminated(
                        error_code=event.error_code,  # type: ignore[attr-defined]
                        reason=event.reason_phrase,  # type: ignore[attr-defined]
                    )
                )
                return out
            event = quic.next_event()
        return out

    def _on_stream_data(
        self, ev: qe.StreamDataReceived, now: float, out: list[IncomingEvent]
    ) -> None:
        sid = ev.stream_id
        h3 = self._h3
        if h3 is None:
            return
        if stream_is_unidirectional(sid):
            # Control and QPACK streams are consumed as they arrive.
            self._quic.credit(sid, len(ev.data))
            if sid in self._stopped_uni:
                if ev.end_stream:
                    self._stopped_uni.discard(sid)
                return
            for frame_type, payload in self._control.feed(sid, ev.data):
                self._on_control_frame(frame_type, payload, now, out)
            self._translate(h3.handle_event(ev), now, out)
            if h3.stream_type(sid) not in KNOWN_UNI_TYPES:
                self._drop_uni(sid, ev.end_stream)
            return
        stream = self._streams.get(sid)
        if stream is not None:
            stream.raw += len(ev.data)
        elif self._finished(sid):
            # A stream we are done with (answered, reset): nobody reads it.
            self._quic.release(sid)
            if ev.end_stream:
                h3.forget(sid)
            return
        else:
            # Its request head is still arriving: the stream takes the count
            # over when it becomes a request.
            self._head_bytes[sid] = self._head_bytes.get(sid, 0) + len(ev.data)
        self._translate(h3.handle_event(ev), now, out)
        stream = self._streams.get(sid)
        if stream is not None:
            self._settle(sid, stream)
        elif self._finished(sid):
            self._head_bytes.pop(sid, None)  # refused or rejected: released

    def _finished(self, sid: int) -> bool:
        """A request stream whose head came and which is no longer open here."""
        return sid <= self._highest_request and sid not in self._gaps and sid not in self._streams

    def _head_arrived(self, sid: int) -> None:
        if sid in self._gaps:
            self._gaps.discard(sid)
        elif sid > self._highest_request:
            self._gaps.update(
                range(self._highest_request + 4 if self._highest_request >= 0 else 0, sid, 4)
            )
            self._highest_request = sid

    def _drop_uni(self, sid: int, ended: bool) -> None:
        """Forget a unidirectional stream of a type we do not use (RFC 9114
        section 6.2.3): stop reading it unless it has ended, so a client
        opening many of them holds no state here."""
        assert self._h3 is not None
        if self._h3.stream_type(sid) is None and not ended:
            return  # its type has not arrived yet
        self._h3.forget(sid)
        self._control.forget(sid)
        if not ended:
            self._stopped_uni.add(sid)
            self._quic.stop_stream(sid, ErrorCode.H3_STREAM_CREATION_ERROR)

    def _settle(self, sid: int, stream: Stream) -> None:
        """Give back the credit of framing bytes (frame headers, HEADERS
        blocks): only body bytes wait for the application."""
        assert self._h3 is not None
        framing = stream.raw - stream.received - self._h3.buffered_bytes(sid)
        if framing > stream.credited:
            self._quic.credit(sid, framing - stream.credited)
            stream.credited = framing

    def _translate(self, events: list[h3e.H3Event], now: float, out: list[IncomingEvent]) -> None:
        for ev in events:
            t = type(ev)
            if t is h3e.DataReceived:
                self._on_data(ev, out)  # type: ignore[arg-type]
            elif t is RequestHeaders:
                self._on_request(ev, now, out)  # type: ignore[arg-type]
            elif t is Trailers:
                self._on_trailers(ev, out)  # type: ignore[arg-type]

    def _on_request(self, ev: RequestHeaders, now: float, out: list[IncomingEvent]) -> None:
        sid = ev.stream_id
        ended = ev.stream_ended
        self._head_arrived(sid)
        if self._goaway_id is not None and sid >= self._goaway_id:
            self._reject(sid, ErrorCode.H3_REQUEST_REJECTED, ended, now)
            return
        try:
            req = parse_request_head(ev.headers)
            if ended and req.content_length:
                raise MalformedMessage("content-length without a body")
            if req.authority is None and req.method != b"CONNECT":
                # RFC 9114 section 4.3.1: https requests carry :authority or host.
                raise MalformedMessage("missing :authority")
        except MalformedMessage:
            self._reject(sid, ErrorCode.H3_MESSAGE_ERROR, ended, now)
            return
        if req.size > self._limits.max_header_bytes:
            self._refuse(sid, 431, ended)
            return
        method = req.method.decode("ascii")
        if not self.handshake_complete and method not in EARLY_DATA_METHODS:
            # 0-RTT data may be replayed: only safe methods are answered.
            self._refuse(sid, 425, ended)
            return
        priority = DEFAULT_PRIORITY
        rfc9218 = False
        early = self._early_priorities.pop(sid, None)
        if early is not None:
            priority = parse_priority_field(early)
            rfc9218 = True
        elif req.priority_field is not None:
            priority = parse_priority_field(req.priority_field)
            rfc9218 = True
        stream = Stream(priority, rfc9218, req.content_length)
        stream.request_ended = ended
        stream.raw = self._head_bytes.pop(sid, 0)
        self._streams[sid] = stream
        self._authorities[sid] = req.authority or b""
        target = (req.authority if method == "CONNECT" else req.path) or b""
        out.append(
            RequestReceived(
                stream_id=sid,
                method=method,
                target=target.decode("latin-1"),
                headers=req.headers,
                http_version="3",
                scheme=req.scheme.decode("ascii") if req.scheme else "https",
                authority=req.authority.decode("latin-1") if req.authority is not None else None,
                priority=priority,
                end_stream=ended,
                expect_continue=req.expect_continue,
            )
        )
        if ended:
            out.append(EndOfRequest(sid))

    def _on_data(self, ev: h3e.DataReceived, out: list[IncomingEvent]) -> None:
        sid = ev.stream_id
        data = ev.data
        stream = self._streams.get(sid)
        if stream is None or stream.request_ended:
            # Refused or reset in this same batch: released already.
            self._quic.release(sid)
            return
        stream.received += len(data)
        if stream.expected_length is not None and stream.received > stream.expected_length:
            self._stream_error(sid, stream, ErrorCode.H3_MESSAGE_ERROR, out)
            return
        if data:
            stream.unacked += len(data)
            out.append(BodyReceived(sid, data))
        if ev.stream_ended:
            self._on_request_end(sid, stream, out)

    def _on_trailers(self, ev: Trailers, out: list[IncomingEvent]) -> None:
        sid = ev.stream_id
        stream = self._streams.get(sid)
        if stream is None or stream.request_ended:
            return
        try:
            check_trailers(ev.headers)
        except MalformedMessage:
            self._stream_error(sid, stream, ErrorCode.H3_MESSAGE_ERROR, out)
            return
        if ev.stream_ended:
            self._on_request_end(sid, stream, out)

    def _on_request_end(self, sid: int, stream: Stream, out: list[IncomingEvent]) -> None:
        if stream.expected_length is not None and stream.received != stream.expected_length:
            self._stream_error(sid, stream, ErrorCode.H3_MESSAGE_ERROR, out)
            return
        stream.request_ended = True
        out.append(EndOfRequest(sid))
        if stream.response_done:
            self._forget(sid, stream)

    def _stream_error(self, sid: int, stream: Stream, code: int, out: list[IncomingEvent]) -> None:
        """A malformed request the application already has: reset both ways."""
        self._abort_stream(sid, code, stop=not stream.request_ended)
        self._drop(sid, stream)
        out.append(StreamReset(sid, reason_from_code(code)))

    def _on_peer_reset(
        self, ev: qe.StreamReset | qe.StopSendingReceived, now: float, out: list[IncomingEvent]
    ) -> None:
        sid = ev.stream_id
        if self._h3 is not None:
            self._h3.handle_event(ev)
        stream = self._streams.get(sid)
        refused = self._pushed.get(sid)
        if refused is not None:
            self._refused_pushes.add(refused[1])
        if type(ev) is qe.StreamReset and stream_is_unidirectional(sid):
            self._stopped_uni.discard(sid)
            self._control.forget(sid)
            if self._h3 is not None:
                self._h3.forget(sid)
            return
        if type(ev) is qe.StreamReset:
            if stream is None:
                self._head_bytes.pop(sid, None)
                self._gaps.discard(sid)  # reset before its head came: never a request
                self._quic.release(sid, 0)
                if self._h3 is not None:
                    self._h3.forget(sid)
                return
            stream.request_ended = True
        if stream is None:
            return
        if stream.response_done and type(ev) is qe.StreamReset:
            self._forget(sid, stream)
            return
        # The client no longer wants the response (STOP_SENDING) or cancelled
        # the request (RESET_STREAM): either way the application stops.
        if not stream.request_ended:
            self._stop(sid, ErrorCode.H3_REQUEST_CANCELLED)
        self._quic.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
        self._drop(sid, stream)
        out.append(StreamReset(sid, reason_from_code(ev.error_code)))
        if self._resets.exceeded(now):
            self._close_connection(ErrorCode.H3_EXCESSIVE_LOAD, "too many stream resets")

    def _on_control_frame(
        self, frame_type: int, payload: bytes, now: float, out: list[IncomingEvent]
    ) -> None:
        if frame_type == FrameType.GOAWAY:
            # The client will open no more requests; those open finish.
            return
        if self._control_frames.exceeded(now):
            self._close_connection(ErrorCode.H3_EXCESSIVE_LOAD, "too many control frames")
            return
        buf = Buffer(data=payload)
        try:
            sid = buf.pull_uint_var()
        except BufferReadError:
            self._close_connection(ErrorCode.H3_FRAME_ERROR, "malformed control frame")
            return
        if frame_type == FrameType.CANCEL_PUSH:
            self._cancel_push(sid, out)
            return
        if frame_type == PRIORITY_UPDATE_PUSH:
            pushed = self._push_stream(sid)
            stream = self._streams.get(pushed) if pushed is not None else None
            if stream is not None:
                priority = parse_priority_field(payload[buf.tell() :])
                if priority != stream.priority:
                    stream.priority = priority
                    out.append(PriorityChanged(pushed, priority))  # type: ignore[arg-type]
            return
        if frame_type != PRIORITY_UPDATE_REQUEST:
            return
        if sid % 4 != 0:
            # RFC 9218 section 7.2: only client-initiated request streams.
            self._close_connection(ErrorCode.H3_ID_ERROR, "PRIORITY_UPDATE for no request")
            return
        value = payload[buf.tell() :]
        stream = self._streams.get(sid)
        if stream is not None:
            priority = parse_priority_field(value)
            stream.rfc9218 = True
            if priority != stream.priority:
                stream.priority = priority
                out.append(PriorityChanged(sid, priority))
        elif sid > self._highest_request or sid in self._gaps:
            if len(self._early_priorities) < self._limits.max_concurrent_streams:
                self._early_priorities[sid] = value

    # -- server push (RFC 9114 section 4.6) ----------------------------------------

    def push_allowed(self, parent: int) -> bool:
        """Whether a push can be promised on request stream ``parent``: the
        client sent MAX_PUSH_ID with room left, the connection is not closing,
        the parent's answer is not finished, and the limits hold."""
        h3 = self._h3
        stream = self._streams.get(parent)
        limits = self._limits
        if h3 is None or stream is None or self._closing or self._goaway_id is not None:
            return False
        max_push_id = h3._max_push_id
        return (
            parent % 4 == 0
            and not stream.closing
            and not stream.response_done
            and max_push_id is not None
            and h3._next_push_id <= max_push_id
            and self._pushes < limits.max_pushes_per_connection
            and len(self._pushed) < limits.max_concurrent_pushes
        )

    def push(self, parent: int, path: str, headers: Headers) -> RequestReceived | None:
        """Promise a ``GET path`` on ``parent``; the pushed request, to be
        answered like any other on its push stream, or None."""
        if path in self._refused_pushes or not self.push_allowed(parent):
            return None
        assert self._h3 is not None
        parent_stream = self._streams[parent]
        authority = self._authorities.get(parent, b"")
        fields = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", authority),
            (b":path", path.encode("latin-1")),
            *((k, v) for k, v in headers if k not in CONNECTION_SPECIFIC and k[:1] != b":"),
        ]
        push_id = self._h3._next_push_id
        try:
            push_sid = self._h3.send_push_promise(parent, fields)
        except H3Error:
            return None
        stream = Stream(parent_stream.priority, False, None)
        stream.request_ended = True
        self._streams[push_sid] = stream
        self._pushed[push_sid] = (push_id, path)
        self._pushes += 1
        return RequestReceived(
            stream_id=push_sid,
            method="GET",
            target=path,
            headers=[(k, v) for k, v in fields if k[:1] != b":"],
            http_version="3",
            scheme="https",
            authority=authority.decode("latin-1") or None,
            priority=parent_stream.priority,
            end_stream=True,
        )

    def _push_stream(self, push_id: int) -> int | None:
        return next((sid for sid, (pid, _) in self._pushed.items() if pid == push_id), None)

    def _cancel_push(self, push_id: int, out: list[IncomingEvent]) -> None:
        """CANCEL_PUSH: the client does not want it. It costs nothing more,
        and the path is never promised again on this connection."""
        sid = self._push_stream(push_id)
        if sid is None:
            return
        _, path = self._pushed.pop(sid)
        self._refused_pushes.add(path)
        stream = self._streams.get(sid)
        if stream is not None:
            self._quic.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
            self._drop(sid, stream)
            out.append(StreamReset(sid, ResetReason.CANCELLED))

    # -- events out --------------------------------------------------------------

    def send(self, event: OutgoingEvent) -> None:
        """Queue a response event; events for streams that are gone are dropped."""
        if self.terminated or self._h3 is None:
            return
        if isinstance(event, PushPromise):
            return  # pushes are promised through push(), which returns the request
        sid = event.stream_id
        stream = self._streams.get(sid)
        if stream is None:
            return
        if isinstance(event, ResponseBody):
            if not stream.response_started:
                raise RuntimeError(f"ResponseBody before ResponseStart on stream {sid}")
            if event.data:
                stream.queue.append(event.data)
                stream.queued += len(event.data)
            if event.end_stream:
                stream.closing = True
        elif isinstance(event, ResponseStart):
            if stream.response_started:
                raise RuntimeError(f"second ResponseStart on stream {sid}")
            stream.response_started = True
            headers = response_head(
                event.status, event.headers, server=self._server_header, date=self._date
            )
            self._h3.send_headers(sid, headers, end_stream=event.end_stream)
            if event.end_stream:
                self._response_done(sid, stream)
        elif isinstance(event, ResponseEnd):
            if not stream.response_started:
                raise RuntimeError(f"ResponseEnd before ResponseStart on stream {sid}")
            stream.closing = True
        elif isinstance(event, ResetStream):
            if event.reason is ResetReason.NO_ERROR:
                # The response is complete; only the rest of the request is unwanted.
                if not stream.request_ended:
                    self._stop(sid, ErrorCode.H3_NO_ERROR)
                    stream.request_ended = True
                if stream.response_done:
                    self._forget(sid, stream)
                return
            self._abort_stream(sid, _CODE_FOR_REASON[event.reason], stop=not stream.request_ended)
            self._drop(sid, stream)
        elif isinstance(event, InformationalResponse):
            if not stream.response_started:
                self._h3.send_headers(sid, response_head(event.status, event.headers))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        out: list[tuple[bytes, NetworkAddress]] = []
        if self._h3 is not None and not self.terminated:
            out = self._sender.pump(now)
            if (
                self._goaway_id is not None
                and not self._closing
                and not self._streams
                and self._sender.responses_delivered()
                and self._h3.control_acknowledged()
            ):
                self._close_connection(ErrorCode.H3_NO_ERROR, "")
        out += self._quic.datagrams_to_send(now)
        return out

    # -- credit ----------------------------------------------------------------

    def buffered(self, stream_id: int) -> int:
        """Response body bytes accepted by ``send`` and not yet given to QUIC."""
        stream = self._streams.get(stream_id)
        return stream.queued if stream is not None else 0

    def acknowledge(self, stream_id: int, n: int) -> None:
        """The application consumed ``n`` body bytes: give the client that much
        stream and connection window back."""
        stream = self._streams.get(stream_id)
        if stream is None or self.terminated or n <= 0:
            return
        n = min(n, stream.unacked)
        if n:
            stream.unacked -= n
            self._quic.credit(stream_id, n)

    # -- lifecycle -----------------------------------------------------------------

    def start_shutdown(self) -> None:
        """GOAWAY: requests already received finish, later ones are
        rejected; the connection closes with H3_NO_ERROR once they are done."""
        if self._goaway_id is not None or self.terminated:
            return
        if self._h3 is None:
            self._close_connection(ErrorCode.H3_NO_ERROR, "")
            return
        self._goaway_id = self._highest_request + 1 if self._highest_request >= 0 else 0
        # Request stream IDs are multiples of 4: the first one not processed.
        self._goaway_id += -self._goaway_id % 4
        self._h3.send_goaway(self._goaway_id)

    def close(self, reason: str = "") -> None:
        """Close now (H3_NO_ERROR), dropping what is unsent."""
        self._close_connection(ErrorCode.H3_NO_ERROR, reason)

    def _close_connection(self, code: int, reason: str) -> None:
        if self._closing or self.terminated:
            return
        self._closing = True
        self._quic.close(error_code=code, reason_phrase=reason)

    # -- stream endings --------------------------------------------------------------

    def _response_done(self, sid: int, stream: Stream) -> None:
        stream.response_done = True
        if len(self._sender.draining) < self._limits.max_concurrent_streams:
            self._sender.draining[sid] = stream.priority
        if stream.request_ended:
            self._forget(sid, stream)
        else:
            # Answered before the request ended: the rest is not needed.
            self._stop(sid, ErrorCode.H3_NO_ERROR)
            stream.request_ended = True
            self._forget(sid, stream)

    def _reject(self, sid: int, code: int, ended: bool, now: float) -> None:
        """A request the application never sees."""
        self._head_bytes.pop(sid, None)
        self._abort_stream(sid, code, stop=not ended)
        self._quic.release(sid, 0)
        if ended and self._h3 is not None:
            self._h3.forget(sid)  # nothing more will come for aioquic to end it
        if self._resets.exceeded(now):
            self._close_connection(ErrorCode.H3_EXCESSIVE_LOAD, "too many rejected requests")

    def _refuse(self, sid: int, status: int, ended: bool) -> None:
        """Answer a request the application never sees (431, 425)."""
        self._head_bytes.pop(sid, None)
        assert self._h3 is not None
        headers = response_head(
            status, [(b"content-length", b"0")], server=self._server_header, date=self._date
        )
        self._h3.send_headers(sid, headers, end_stream=True)
        if not ended:
            self._stop(sid, ErrorCode.H3_NO_ERROR)
        self._quic.release(sid, 0)

    def _abort_stream(self, sid: int, code: int, *, stop: bool) -> None:
        try:
            self._quic.reset_stream(sid, code)
        except Exception:  # the stream is already gone from QUIC
            pass
        if stop:
            self._stop(sid, code)

    def _stop(self, sid: int, code: int) -> None:
        try:
            self._quic.stop_stream(sid, code)
        except ValueError:  # already finished receiving
            pass

    def _drop(self, sid: int, stream: Stream) -> None:
        self._sender.draining.pop(sid, None)
        stream.queue.clear()
        stream.queued = 0
        self._forget(sid, stream)

    def _forget(self, sid: int, stream: Stream) -> None:
        self._streams.pop(sid, None)
        self._authorities.pop(sid, None)
        pushed = self._pushed.pop(sid, None)
        if pushed is not None:
            self._quic.release(sid, 0)
            return
        self._quic.release(sid, stream.raw)
        if self._h3 is not None and stream.request_ended:
            self._h3.forget(sid)
