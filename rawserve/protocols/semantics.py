"""HTTP semantics that HTTP/2 and HTTP/3 share, in no protocol's terms.

Both carry a request head as a list of fields with pseudo-headers first, and
both call a request malformed on the same grounds (RFC 9113 section 8, RFC
9114 section 4): field names and values, pseudo-headers, connection-specific
fields, trailers. Both write several responses on one connection in the RFC
9218 order, and both count what a peer sends against rate limits. Fields are
``(bytes, bytes)`` pairs, names lowercase; a malformed message raises
``MalformedMessage`` and the adapter answers with its own stream error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from rawserve.core.errors import RawServeError
from rawserve.core.events import Headers
from rawserve.core.priority import Priority

__all__ = [
    "CONNECTION_SPECIFIC",
    "MAX_VALID_NAMES",
    "REQUEST_PSEUDO_HEADERS",
    "MalformedMessage",
    "RateLimit",
    "RequestHead",
    "WriteGroup",
    "check_field",
    "check_trailers",
    "parse_request_head",
    "response_head",
    "write_order",
]


class MalformedMessage(RawServeError):
    """The request or its trailers are malformed (RFC 9113 section 8.1.1, RFC
    9114 section 4.1.2). The remedy is a stream error: RST_STREAM with
    PROTOCOL_ERROR in HTTP/2, H3_MESSAGE_ERROR in HTTP/3, 400 in HTTP/1.1."""


# Fields that describe one hop of HTTP/1.1 and have no meaning in HTTP/2 or
# HTTP/3 (RFC 9113 section 8.2.2, RFC 9114 section 4.2).
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
REQUEST_PSEUDO_HEADERS = frozenset({b":method", b":scheme", b":path", b":authority"})
# RFC 9110 token characters, lowercase only (RFC 9113 section 8.2.1).
_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]")
_BAD_METHOD = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-zA-Z]")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_BAD_PATH = re.compile(rb"[\x00-\x20\x7f]")
_BAD_SCHEME = re.compile(rb"[^a-zA-Z0-9+\-.]")

# Header names already found valid: clients repeat the same few, and a set
# lookup is cheaper than the regular expression. Bounded, as the names come
# from peers.
_valid_names: set[bytes] = set()
MAX_VALID_NAMES = 4096
# Names parse_request_head looks at beyond validation.
_SPECIAL_REQUEST = CONNECTION_SPECIFIC | {
    b"te",
    b"cookie",
    b"host",
    b"content-length",
    b"priority",
    b"expect",
}


@dataclass(slots=True)
class RequestHead:
    """A request head that passed validation.

    ``headers`` are the regular fields in order, with every ``cookie`` field
    joined into one at the end (RFC 9113 section 8.2.3). ``authority`` is
    ``:authority``, else the ``host`` field. ``size`` counts each field as
    name + value + 32 bytes, as SETTINGS_MAX_HEADER_LIST_SIZE does.
    """

    method: bytes
    scheme: bytes | None = None
    path: bytes | None = None
    authority: bytes | None = None
    headers: Headers = field(default_factory=list)
    content_length: int | None = None
    priority_field: bytes | None = None  # the RFC 9218 ``priority`` field
    expect_continue: bool = False
    size: int = 0


def check_field(name: bytes, value: bytes) -> None:
    """Raise MalformedMessage unless ``name: value`` may appear in an HTTP/2
    or HTTP/3 message as a regular field."""
    if not name or _BAD_NAME.search(name) is not None:
        raise MalformedMessage(f"invalid header name {name!r}")
    if value and (
        _BAD_VALUE.search(value) is not None
        or value[0] in (0x20, 0x09)
        or value[-1] in (0x20, 0x09)
    ):
        raise MalformedMessage(f"invalid value for header {name!r}")
    if name in CONNECTION_SPECIFIC:
        raise MalformedMessage(f"connection-specific header {name!r}")
    if name == b"te" and value.lower() != b"trailers":
        raise MalformedMessage("TE header with a value other than 'trailers'")


def parse_request_head(headers: Iterable[tuple[bytes, bytes]]) -> RequestHead:
    """Validate a request's fields, pseudo-headers first (RFC 9113 sections 8.2
    and 8.3, RFC 9114 section 4.3.1), and pick out what the server acts on."""
    pseudo: dict[bytes, bytes] = {}
    regular: Headers = []
    cookies: list[bytes] = []
    host: bytes | None = None
    content_length: int | None = None
    priority_field: bytes | None = None
    expect_continue = False
    size = 0
    for fld in headers:
        name, value = fld[0], fld[1]
        size += len(name) + len(value) + 32
        if name[:1] == b":":
            if regular or cookies:
                raise MalformedMessage(f"pseudo-header {name!r} after a regular header")
            if name not in REQUEST_PSEUDO_HEADERS:
                raise MalformedMessage(f"unknown or response pseudo-header {name!r}")
            if name in pseudo:
                raise MalformedMessage(f"duplicate pseudo-header {name!r}")
            pseudo[name] = value
            continue
        # check_field, inline: this loop runs for every request field.
        if name not in _valid_names:
            if not name or _BAD_NAME.search(name) is not None:
                raise MalformedMessage(f"invalid header name {name!r}")
            if len(_valid_names) < MAX_VALID_NAMES:
                _valid_names.add(name)
        if value and (
            _BAD_VALUE.search(value) is not None
            or value[0] in (0x20, 0x09)
            or value[-1] in (0x20, 0x09)
        ):
            raise MalformedMessage(f"invalid value for header {name!r}")
        if name not in _SPECIAL_REQUEST:
            regular.append(fld)
            continue
        if name in CONNECTION_SPECIFIC:
            raise MalformedMessage(f"connection-specific header {name!r}")
        if name == b"te":
            if value.lower() != b"trailers":
                raise MalformedMessage("TE header with a value other than 'trailers'")
        elif name == b"cookie":
            cookies.append(value)
            continue
        elif name == b"host":
            host = value
        elif name == b"content-length":
            if (
                not value.isdigit()
                or len(value) > 18
                or (content_length is not None and int(value) != content_length)
            ):
                raise MalformedMessage("invalid content-length")
            content_length = int(value)
        elif name == b"priority":
            priority_field = value
        elif name == b"expect":
            expect_continue = value.lower() == b"100-continue"
        regular.append(fld)
    if cookies:
        # One field for HTTP/1.1-shaped consumers.
        regular.append((b"cookie", b"; ".join(cookies)))

    method = pseudo.get(b":method")
    if not method or _BAD_METHOD.search(method) is not None:
        raise MalformedMessage("missing or invalid :method")
    scheme = pseudo.get(b":scheme")
    path = pseudo.get(b":path")
    authority = pseudo.get(b":authority")
    if method == b"CONNECT":
        if scheme is not None or path is not None or not authority:
            raise MalformedMessage("CONNECT request needs :authority and no :scheme or :path")
    else:
        if not scheme or _BAD_SCHEME.search(scheme) is not None:
            raise MalformedMessage("missing or invalid :scheme")
        if not path:
            raise MalformedMessage("missing or empty :path")
        if _BAD_PATH.search(path) is not None:
            raise MalformedMessage("invalid :path")
        if (
            scheme in (b"http", b"https")
            and path[0] != 0x2F
            and not (path == b"*" and method == b"OPTIONS")
        ):
            raise MalformedMessage(":path is neither absolute nor '*'")
    if authority is not None:
        if b"@" in authority or _BAD_PATH.search(authority) is not None:
            raise MalformedMessage("invalid :authority")
        if host is not None and host != authority:
            raise MalformedMessage("host header differs from :authority")
    return RequestHead(
        method,
        scheme,
        path,
        authority if authority is not None else host,
        regular,
        content_length,
        priority_field,
        expect_continue,
        size,
    )


def check_trailers(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Raise MalformedMessage unless the trailer fields are all regular, valid
    fields (no pseudo-headers)."""
    for name, value in headers:
        if name[:1] == b":":
            raise MalformedMessage(f"pseudo-header {name!r} in trailers")
        check_field(name, value)


def response_head(
    status: int, headers: Headers, *, server: bytes | None = None, date: bytes | None = None
) -> Headers:
    """The fields to send for a response head: ``:status``, then the
    application's fields lowercased, minus those HTTP/2 and HTTP/3 forbid
    (connection-specific, pseudo-headers, values that would split the field).
    ``server`` and ``date`` are added unless the application set them; pass
    neither for an informational response."""
    out: Headers = [(b":status", b"%d" % status)]
    has_server = has_date = False
    for name, value in headers:
        name = name.lower()
        if (
            name in CONNECTION_SPECIFIC
            or not name
            or name[0] == 0x3A
            or _BAD_VALUE.search(value) is not None
        ):
            continue
        if name == b"server":
            has_server = True
        elif name == b"date":
            has_date = True
        out.append((name, value))
    if not has_server and server:
        out.append((b"server", server))
    if not has_date and date:
        out.append((b"date", date))
    return out


@dataclass(frozen=True, slots=True)
class WriteGroup:
    """Streams whose response bytes go out together: one after another in
    stream order (``incremental`` False), or interleaved a frame each."""

    urgency: int
    incremental: bool
    stream_ids: tuple[int, ...]


def write_order(ready: Iterable[tuple[int, Priority]]) -> list[WriteGroup]:
    """The RFC 9218 order for streams with response bytes waiting: urgency
    first (0 most urgent); within an urgency, the non-incremental streams one
    after another in stream order, then the incremental ones interleaved."""
    keyed = sorted((p.urgency, p.incremental, sid) for sid, p in ready)
    groups: list[WriteGroup] = []
    i = 0
    while i < len(keyed):
        urgency, incremental, _ = keyed[i]
        j = i
        while j < len(keyed) and keyed[j][0] == urgency and keyed[j][1] == incremental:
            j += 1
        groups.append(WriteGroup(urgency, incremental, tuple(k[2] for k in keyed[i:j])))
        i = j
    return groups


class RateLimit:
    """Token bucket: ``rate`` events per second, bursts up to ``rate``; 0
    disables. Time is an argument: ``exceeded(now)`` counts one event at
    ``now`` (seconds, any monotonic origin)."""

    __slots__ = ("_last", "_rate", "_tokens")

    def __init__(self, rate: int) -> None:
        self._rate = float(rate)
        self._tokens = float(rate)
        self._last: float | None = None

    def exceeded(self, now: float) -> bool:
        """Count one event; True if it is over the limit."""
        if self._rate <= 0:
            return False
        if self._last is None or now > self._last:
            if self._last is not None:
                self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
            self._last = now
        self._tokens -= 1.0
        return self._tokens < 0
