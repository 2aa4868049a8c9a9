"""BodyStream: the request body as a handler reads it, credit returned as it reads.

No sockets: the driver side (feed/end/abort) is called directly, and the credit
callback records what a connection would hand back to its client.
"""

from __future__ import annotations

import asyncio

import pytest

from rawserve.core.errors import BodyTooLarge, ClientDisconnected
from rawserve.serving.body import BodyStream


class Credit:
    """What ``on_consume`` returned, in order: the window a client gets back."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, n: int) -> None:
        self.calls.append(n)

    @property
    def total(self) -> int:
        return sum(self.calls)


def make(limit: int = 1 << 20, **kwargs: object) -> tuple[BodyStream, Credit]:
    credit = Credit()
    return BodyStream(limit=limit, on_consume=credit, **kwargs), credit  # type: ignore[arg-type]


async def test_chunks_leave_in_order_and_credit_follows_reading_not_arrival() -> None:
    body, credit = make()
    body.feed(b"abc")
    body.feed(b"de")
    assert credit.calls == []  # nothing read yet: no window goes back
    assert body.buffered == 5
    assert await body.read_chunk() == b"abc"
    assert credit.calls == [3]
    assert body.buffered == 2
    body.end()
    assert await body.read_chunk() == b"de"
    assert await body.read_chunk() is None
    assert credit.calls == [3, 2]
    assert body.complete


async def test_async_iteration_yields_every_chunk_then_stops() -> None:
    body, _ = make()
    for part in (b"x", b"yy", b"zzz"):
        body.feed(part)
    body.end()
    assert [chunk async for chunk in body] == [b"x", b"yy", b"zzz"]


async def test_a_waiting_reader_is_woken_by_feed_end_and_abort() -> None:
    body, _ = make()
    reader = asyncio.ensure_future(body.read_chunk())
    await asyncio.sleep(0)
    assert not reader.done()
    body.feed(b"late")
    assert await reader == b"late"

    reader = asyncio.ensure_future(body.read_chunk())
    await asyncio.sleep(0)
    body.end()
    assert await reader is None

    other, _ = make()
    reader = asyncio.ensure_future(other.read_chunk())
    await asyncio.sleep(0)
    other.abort()
    with pytest.raises(ClientDisconnected):
        await reader


async def test_a_body_over_the_limit_fails_the_reader_and_returns_all_credit() -> None:
    body, credit = make(limit=10)
    body.feed(b"123456")
    body.feed(b"7890AB")  # 12 bytes > 10
    with pytest.raises(BodyTooLarge) as info:
        await body.read_chunk()
    assert info.value.status_code == 413
    # Both chunks were dropped unread; their credit went back so the HTTP/2
    # connection window does not leak shut.
    assert credit.total == 12
    assert body.buffered == 0


async def test_a_declared_length_over_the_limit_fails_before_any_byte_arrives() -> None:
    body, credit = make(limit=10, declared_length=11)
    with pytest.raises(BodyTooLarge):
        await body.read_chunk()
    body.feed(b"abc")  # what still arrives is dropped, its credit returned at once
    assert credit.calls == [3]


async def test_abort_drops_buffered_chunks_and_returns_their_credit() -> None:
    body, credit = make()
    body.feed(b"abcd")
    body.feed(b"ef")
    body.abort()
    assert credit.calls == [6]
    assert body.disconnected
    with pytest.raises(ClientDisconnected):
        await body.read_chunk()


async def test_bytes_after_the_end_or_an_abort_are_credited_at_once() -> None:
    body, credit = make()
    body.end()
    body.feed(b"junk")
    assert credit.calls == [4]
    assert await body.read_chunk() is None

    aborted, credit2 = make()
    aborted.abort(BodyTooLarge(1))
    aborted.feed(b"xy")
    assert credit2.calls == [2]
    assert not aborted.disconnected  # too large is not a disconnect


async def test_first_read_callback_fires_once_when_the_handler_first_reads() -> None:
    # The driver's hook for 100-continue: the client is told to send only
    # once the handler actually wants the body.
    fired: list[int] = []
    body = BodyStream(limit=100, on_first_read=lambda: fired.append(1))
    assert not body.started
    body.feed(b"a")
    body.end()
    assert fired == []
    assert await body.read_chunk() == b"a"
    assert await body.read_chunk() is None
    assert fired == [1]
    assert body.started


async def test_empty_feeds_are_not_chunks() -> None:
    body, credit = make()
    body.feed(b"")
    body.end()
    assert await body.read_chunk() is None
    assert credit.calls == []
