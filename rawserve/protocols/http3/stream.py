"""One HTTP/3 request stream as the adapter tracks it."""

from __future__ import annotations

from collections import deque

from rawserve.core.priority import Priority


class Stream:
    """A request stream handed to the application and not yet finished."""

    __slots__ = (
        "body",
        "closing",
        "credited",
        "expected_length",
        "priority",
        "queue",
        "queued",
        "raw",
        "received",
        "request_ended",
        "response_done",
        "response_started",
        "rfc9218",
        "unacked",
    )

    def __init__(self, priority: Priority, rfc9218: bool, expected_length: int | None) -> None:
        self.priority = priority
        self.rfc9218 = rfc9218  # priority came from a header or PRIORITY_UPDATE
        # Response body bytes not yet handed to QUIC, and how many.
        self.queue: deque[bytes | memoryview] = deque()
        self.queued = 0
        self.closing = False  # the stream ends once the queue is empty
        self.response_started = False
        self.response_done = False
        self.request_ended = False
        self.expected_length = expected_length
        self.received = 0  # request body bytes
        self.unacked = 0  # body bytes delivered but not consumed
        self.raw = 0  # stream bytes QUIC delivered (frames and body)
        self.credited = 0  # framing bytes whose credit went back
