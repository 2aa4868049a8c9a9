"""Errors that carry their remedy: the status or protocol error code to answer with."""

from __future__ import annotations


class RawServeError(Exception):
    """Base class of rawserve's own errors."""


class ProtocolError(RawServeError):
    """The peer broke the protocol. ``status_hint`` is the HTTP status to answer
    with where one can still be sent (HTTP/1.1); ``error_code`` the HTTP/2 or
    HTTP/3 error code otherwise."""

    def __init__(self, message: str, *, status_hint: int = 400, error_code: int = 1) -> None:
        super().__init__(message)
        self.status_hint = status_hint
        self.error_code = error_code


class StreamClosedError(RawServeError):
    """The stream was reset or its connection closed; nothing more can be sent."""

    def __init__(self, stream_id: int) -> None:
        super().__init__(f"stream {stream_id} is closed")
        self.stream_id = stream_id


class ConfigError(RawServeError):
    """The configuration cannot work (bad flag, unreadable certificate, ...)."""


class ClientDisconnected(RawServeError):
    """The client reset the stream or closed the connection while the handler ran."""


class BodyTooLarge(RawServeError):
    """The request body exceeds ``limits.max_body_bytes``; answer 413."""

    status_code = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes")
        self.limit = limit
