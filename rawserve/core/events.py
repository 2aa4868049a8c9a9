"""One event vocabulary for HTTP/1.1, HTTP/2 and HTTP/3.

Protocol adapters (L1) turn bytes into the *incoming* events and accept the
*outgoing* ones; the stream driver (L2) speaks only these. Header names are
lowercase bytes; pseudo-headers never appear in ``headers``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from rawserve.core.priority import DEFAULT_PRIORITY, Priority

Headers = list[tuple[bytes, bytes]]


class ResetReason(enum.Enum):
    """Why a stream ended early, in no protocol's terms. Each adapter maps it
    to its own code (HTTP/2 RST_STREAM, HTTP/3 H3_* application errors) and
    back; HTTP/1.1 can only close the connection."""

    NO_ERROR = "no_error"  # the response is complete; stop sending the request
    CANCELLED = "cancelled"  # the peer (or we) no longer want the stream
    REFUSED = "refused"  # never processed: safe for the client to retry
    PROTOCOL_ERROR = "protocol_error"  # the peer broke the protocol on this stream
    INTERNAL_ERROR = "internal_error"  # the server failed mid-response
    FLOW_CONTROL_ERROR = "flow_control_error"
    EXCESSIVE_LOAD = "excessive_load"  # the peer asks for too much (ENHANCE_YOUR_CALM)
    CONNECTION_CLOSED = "connection_closed"  # the connection went away mid-request


# -- incoming: peer -> server ---------------------------------------------------


@dataclass(slots=True)
class RequestReceived:
    stream_id: int
    method: str
    target: str  # path and query exactly as sent ("/a/b?x=1")
    headers: Headers
    http_version: str  # "1.0", "1.1", "2", "3"
    scheme: str = "http"
    authority: str | None = None
    priority: Priority = DEFAULT_PRIORITY
    end_stream: bool = False  # no body follows (EndOfRequest is still emitted)
    expect_continue: bool = False  # client waits for 100 before sending the body


@dataclass(slots=True)
class BodyReceived:
    stream_id: int
    data: bytes


@dataclass(slots=True)
class EndOfRequest:
    stream_id: int


@dataclass(slots=True)
class StreamReset:
    """The peer cancelled the stream (RST_STREAM, STOP_SENDING, or the
    HTTP/1.1 connection closed mid-request)."""

    stream_id: int
    reason: ResetReason = ResetReason.CANCELLED


@dataclass(slots=True)
class PriorityChanged:
    stream_id: int
    priority: Priority


@dataclass(slots=True)
class ConnectionTerminated:
    """The connection is over: peer GOAWAY, a protocol error the adapter
    answered, or an HTTP/1.1 close. ``last_stream_id`` streams above it were
    never processed and may be retried by the client. ``error_code`` is the
    protocol's own code, for logs; the glue acts on the event, not the code."""

    error_code: int = 0
    last_stream_id: int | None = None
    reason: str = ""


# -- outgoing: server -> peer ---------------------------------------------------


@dataclass(slots=True)
class InformationalResponse:
    stream_id: int
    status: int  # 100, 103
    headers: Headers = field(default_factory=list)


@dataclass(slots=True)
class ResponseStart:
    stream_id: int
    status: int
    headers: Headers = field(default_factory=list)
    end_stream: bool = False


@dataclass(slots=True)
class ResponseBody:
    stream_id: int
    data: bytes
    end_stream: bool = False


@dataclass(slots=True)
class ResponseEnd:
    stream_id: int


@dataclass(slots=True)
class ResetStream:
    """The server abandons a stream (handler failed mid-body, body too large)."""

    stream_id: int
    reason: ResetReason = ResetReason.CANCELLED


@dataclass(slots=True)
class PushPromise:
    stream_id: int  # the request stream the push is associated with
    path: str
    headers: Headers = field(default_factory=list)


@dataclass(slots=True)
class UpgradeRequested:
    """HTTP/1.1 ``Upgrade: h2c`` (RFC 7540 section 3.2) on a request with no
    body. The server answers 101, hands ``data`` (bytes after the request) and
    ``settings`` (decoded HTTP2-Settings payload) to an HTTP/2 connection, and
    ``request`` becomes stream 1."""

    request: RequestReceived
    settings: bytes
    data: bytes


IncomingEvent = (
    RequestReceived
    | BodyReceived
    | EndOfRequest
    | StreamReset
    | PriorityChanged
    | ConnectionTerminated
    | UpgradeRequested
)
OutgoingEvent = (
    InformationalResponse | ResponseStart | ResponseBody | ResponseEnd | ResetStream | PushPromise
)
