"""One HTTP/1.1 request as the connection tracks it: how its response is
framed, what is left of its body, and whether it has been answered."""

from __future__ import annotations

# Response framing modes.
NO_BODY = 0  # HEAD, 204, 304: body events are dropped
LENGTH = 1
CHUNKED = 2
UNTIL_CLOSE = 3  # HTTP/1.0 peer and no content-length


class Stream:
    """One request of the connection, from its head to the end of its response."""

    __slots__ = (
        "answered",
        "awaiting_continue",
        "body_left",
        "close",
        "head_only",
        "http11",
        "id",
        "keep_alive",
        "length_left",
        "mode",
        "request_done",
        "started",
        "want_continue",
    )

    def __init__(
        self,
        stream_id: int,
        head_only: bool,
        http11: bool,
        keep_alive: bool,
        expect_continue: bool,
        body_left: int,
    ) -> None:
        self.id = stream_id
        self.head_only = head_only
        self.http11 = http11
        self.keep_alive = keep_alive
        # The client holds its body back until it sees 100 Continue.
        self.awaiting_continue = expect_continue
        self.want_continue = False  # 100 asked for before this stream's turn
        self.body_left = body_left  # Content-Length bytes still to come; -1: chunked
        self.request_done = False
        # Answered: the response ended or the stream was dropped; events about
        # it are no longer emitted nor accepted.
        self.answered = False
        self.started = False
        self.mode = NO_BODY
        self.length_left = 0
        self.close = False
