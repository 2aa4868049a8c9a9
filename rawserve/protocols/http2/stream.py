"""One HTTP/2 request stream as the adapter tracks it: its priority, the
response body queued for the sender, and the request body's flow-control
bookkeeping."""

from __future__ import annotations

from collections import deque

from rawserve.core.priority import Priority


class Stream:
    """A stream handed to the application and not yet finished."""

    __slots__ = (
        "awaiting_continue",
        "closing",
        "expected_length",
        "last_data",
        "pending",
        "priority",
        "queue",
        "queued",
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
        self.queue: deque[bytes | memoryview] = deque()
        self.queued = 0
        self.closing = False  # END_STREAM goes out once the queue is empty
        self.response_started = False
        self.response_done = False
        self.request_ended = False
        self.unacked = 0  # body bytes delivered but not acknowledged
        self.expected_length = expected_length
        self.received = 0
        # Body bytes counted against the connection's cap until the request
        # ends or the stream goes, and when the client last made progress.
        self.pending = 0
        self.last_data = 0.0
        # Expect: 100-continue, and no 100 sent yet: the client holds its body.
        self.awaiting_continue = False
