"""The stream driver on its own: one request's life, the same for every version.

No sockets and no protocol: a fake connection handle records the events the
driver sends and lets a test hold ``drain`` (a slow reader) or close the
stream under it. HTTP/3 reuses this driver, so what it promises is pinned here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from rawserve.core.config import Config, Limits
from rawserve.core.errors import StreamClosedError
from rawserve.core.events import (
    InformationalResponse,
    OutgoingEvent,
    RequestReceived,
    ResetReason,
    ResetStream,
    ResponseBody,
    ResponseStart,
)
from rawserve.core.priority import Priority
from rawserve.requests import Request
from rawserve.responses import JSONResponse, Response, StreamingResponse
from rawserve.serving import stream as stream_module
from rawserve.serving.stream import TRANSITIONS, StreamDriver


class FakeConnection:
    """A ConnectionHandle that records what the driver does."""

    client = ("127.0.0.1", 50000)
    server_address = ("127.0.0.1", 8000)

    def __init__(self) -> None:
        self.sent: list[OutgoingEvent] = []
        self.acknowledged: list[int] = []
        self.drains = 0
        self.gate: asyncio.Event | None = None  # set: drain waits for it
        self.closed = False

    def send(self, event: OutgoingEvent) -> None:
        if self.closed:
            raise StreamClosedError(event.stream_id)
        self.sent.append(event)

    async def drain(self, stream_id: int) -> None:
        self.drains += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.closed:
            raise StreamClosedError(stream_id)

    def acknowledge(self, stream_id: int, n: int) -> None:
        self.acknowledged.append(n)


class FakeApp:
    def __init__(self, handler: Callable[[Request], Awaitable[Any]]) -> None:
        self.handler = handler
        self.requests: list[Request] = []

    async def handle(self, request: Request) -> Any:
        self.requests.append(request)
        return await self.handler(request)


def request(
    *,
    method: str = "GET",
    version: str = "2",
    end_stream: bool = True,
    headers: list[tuple[bytes, bytes]] | None = None,
    expect_continue: bool = False,
) -> RequestReceived:
    return RequestReceived(
        stream_id=1,
        method=method,
        target="/x",
        headers=headers or [],
        http_version=version,
        end_stream=end_stream,
        expect_continue=expect_continue,
    )


def driver_for(
    handler: Callable[[Request], Awaitable[Any]],
    event: RequestReceived | None = None,
    config: Config | None = None,
) -> tuple[StreamDriver, FakeConnection, FakeApp]:
    conn = FakeConnection()
    app = FakeApp(handler)
    driver = StreamDriver(conn, event or request(), app, config or Config())
    return driver, conn, app


def kinds(events: list[OutgoingEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


async def test_a_whole_body_is_one_start_and_one_last_body() -> None:
    async def handler(req: Request) -> Response:
        return Response(b"hello", media_type="text/plain")

    driver, conn, _ = driver_for(handler)
    assert driver.state == "idle"
    await driver.run()
    assert kinds(conn.sent) == ["ResponseStart", "ResponseBody"]
    start, body = conn.sent
    assert isinstance(start, ResponseStart) and start.status == 200 and not start.end_stream
    assert (b"content-length", b"5") in start.headers
    assert isinstance(body, ResponseBody) and body.data == b"hello" and body.end_stream
    assert driver.state == "done"


async def test_head_sends_the_headers_only() -> None:
    async def handler(req: Request) -> Response:
        return Response(b"hello")

    driver, conn, _ = driver_for(handler, request(method="HEAD"))
    await driver.run()
    assert kinds(conn.sent) == ["ResponseStart"]
    assert conn.sent[0].end_stream  # type: ignore[union-attr]
    assert (b"content-length", b"5") in conn.sent[0].headers  # type: ignore[union-attr]


async def test_a_streamed_body_waits_for_drain_after_every_chunk() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"a", b"", b"bb", b"ccc"):
            yield part

    async def handler(req: Request) -> Response:
        return StreamingResponse(chunks())

    driver, conn, _ = driver_for(handler)
    await driver.run()
    assert kinds(conn.sent) == [
        "ResponseStart",
        "ResponseBody",
        "ResponseBody",
        "ResponseBody",
        "ResponseEnd",
    ]
    assert [e.data for e in conn.sent if isinstance(e, ResponseBody)] == [b"a", b"bb", b"ccc"]
    assert conn.drains == 3  # one per non-empty chunk: backpressure per chunk


async def test_a_slow_reader_holds_the_producer() -> None:
    produced: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            produced.append(i)
            yield b"x" * 10

    async def handler(req: Request) -> Response:
        return StreamingResponse(chunks())

    driver, conn, _ = driver_for(handler)
    conn.gate = asyncio.Event()
    task = asyncio.ensure_future(driver.run())
    for _ in range(20):
        await asyncio.sleep(0)
    # The first chunk waits in drain: the generator is not run ahead.
    assert produced == [0]
    assert driver.state == "sending"
    conn.gate.set()
    await task
    assert produced == [0, 1, 2, 3, 4]


async def test_reset_while_the_handler_runs_cancels_it_and_sends_nothing() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(req: Request) -> Response:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Response(b"never")

    driver, conn, _ = driver_for(handler)
    driver.task = asyncio.ensure_future(driver.run())
    await started.wait()
    driver.reset(ResetReason.CANCELLED)
    await asyncio.wait_for(driver.task, 5)  # a bound that fails only on a hang
    assert cancelled.is_set()
    assert conn.sent == []
    assert driver.is_reset
    driver.reset()  # a second reset is harmless
    assert driver.state == "reset"


async def test_a_stream_closed_mid_body_ends_as_reset_without_a_last_frame() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"data"

    async def handler(req: Request) -> Response:
        return StreamingResponse(chunks())

    driver, conn, _ = driver_for(handler)

    original_drain = conn.drain

    async def drain_then_close(stream_id: int) -> None:
        conn.closed = True
        await original_drain(stream_id)

    conn.drain = drain_then_close  # type: ignore[method-assign]
    await driver.run()
    assert kinds(conn.sent) == ["ResponseStart", "ResponseBody"]
    assert driver.is_reset


async def test_a_body_iterator_that_fails_after_the_headers_resets_the_stream() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("model crashed mid-stream")

    async def handler(req: Request) -> Response:
        return StreamingResponse(chunks())

    driver, conn, _ = driver_for(handler)
    await driver.run()
    assert kinds(conn.sent) == ["ResponseStart", "ResponseBody", "ResetStream"]
    reset = conn.sent[-1]
    assert isinstance(reset, ResetStream) and reset.reason is ResetReason.INTERNAL_ERROR
    assert driver.is_reset


async def test_a_response_object_that_fails_before_sending_becomes_a_plain_500() -> None:
    class Broken(Response):
        def raw_headers(self) -> list[tuple[bytes, bytes]]:
            raise RuntimeError("bad header object")

    async def handler(req: Request) -> Response:
        return Broken(b"x")

    driver, conn, _ = driver_for(handler)
    await driver.run()
    assert kinds(conn.sent) == ["ResponseStart", "ResponseBody"]
    start = conn.sent[0]
    assert isinstance(start, ResponseStart) and start.status == 500
    assert b"Internal Server Error" in conn.sent[1].data  # type: ignore[union-attr]
    assert driver.state == "done"


async def test_100_continue_is_sent_only_when_the_handler_reads_the_body() -> None:
    async def ignores_body(req: Request) -> Response:
        return Response(b"no thanks", status_code=417)

    ev = request(method="POST", end_stream=False, expect_continue=True)
    driver, conn, _ = driver_for(ignores_body, ev)
    task = asyncio.ensure_future(driver.run())
    await asyncio.sleep(0)
    driver.body.end()
    await task
    assert not any(isinstance(e, InformationalResponse) for e in conn.sent)

    async def reads_body(req: Request) -> Response:
        return Response(await req.body())

    ev = request(method="POST", end_stream=False, expect_continue=True)
    driver, conn, _ = driver_for(reads_body, ev)
    task = asyncio.ensure_future(driver.run())
    for _ in range(5):
        await asyncio.sleep(0)
    assert kinds(conn.sent) == ["InformationalResponse"]
    assert conn.sent[0].status == 100  # type: ignore[union-attr]
    driver.body.feed(b"payload")
    driver.body.end()
    await task
    assert conn.sent[-1].data == b"payload"  # type: ignore[union-attr]


async def test_credit_is_returned_as_the_handler_reads_and_for_what_it_never_read() -> None:
    async def reads_one_chunk(req: Request) -> Response:
        stream = req.stream()
        first = await stream.__anext__()
        return Response(first)

    ev = request(method="POST", version="1.1", end_stream=False)
    driver, conn, _ = driver_for(reads_one_chunk, ev)
    driver.body.feed(b"1234")
    driver.body.feed(b"567")
    driver.body.end()
    await driver.run()
    # 4 bytes credited as the handler read them, 3 when the driver dropped the rest.
    assert conn.acknowledged == [4, 3]


async def test_h2_response_before_the_request_ended_holds_its_last_frame() -> None:
    async def handler(req: Request) -> Response:
        return Response(b"early")

    ev = request(method="POST", version="2", end_stream=False)
    driver, conn, _ = driver_for(handler, ev)
    task = asyncio.ensure_future(driver.run())
    for _ in range(5):
        await asyncio.sleep(0)
    # Everything but the end of the stream is out; the end waits for the body.
    assert kinds(conn.sent) == ["ResponseStart", "ResponseBody"]
    assert not conn.sent[1].end_stream  # type: ignore[union-attr]
    driver.body.feed(b"rest of the body")
    driver.body.end()
    await task
    assert kinds(conn.sent) == ["ResponseStart", "ResponseBody", "ResponseEnd"]


async def test_h2_rest_of_body_over_the_budget_ends_with_reset_no_error() -> None:
    async def handler(req: Request) -> Response:
        return Response(b"early")

    config = Config(limits=Limits(read_buffer_bytes=8))
    ev = request(method="POST", version="2", end_stream=False)
    driver, conn, _ = driver_for(handler, ev, config)
    task = asyncio.ensure_future(driver.run())
    for _ in range(5):
        await asyncio.sleep(0)
    driver.body.feed(b"more than eight bytes")
    await task
    assert kinds(conn.sent)[-2:] == ["ResponseEnd", "ResetStream"]
    assert conn.sent[-1].reason is ResetReason.NO_ERROR  # type: ignore[union-attr]


async def test_http1_does_not_hold_the_response_for_the_body() -> None:
    async def handler(req: Request) -> Response:
        return Response(b"early")

    ev = request(method="POST", version="1.1", end_stream=False)
    driver, conn, _ = driver_for(handler, ev)
    await driver.run()  # returns without the body: HTTP/1.1's adapter handles the rest
    assert conn.sent[-1].end_stream  # type: ignore[union-attr]


async def test_request_timeout_answers_504() -> None:
    async def handler(req: Request) -> Response:
        await asyncio.sleep(60)
        return Response(b"late")

    config = Config(limits=Limits(request_timeout_s=0.01))
    driver, conn, _ = driver_for(handler, config=config)
    await asyncio.wait_for(driver.run(), 5)
    start = conn.sent[0]
    assert isinstance(start, ResponseStart) and start.status == 504
    assert b"request timeout" in conn.sent[1].data  # type: ignore[union-attr]


async def test_a_priority_change_before_the_start_is_where_the_request_begins() -> None:
    seen: list[Priority] = []

    async def handler(req: Request) -> Response:
        seen.append(req.priority)
        return JSONResponse({})

    driver, _, _ = driver_for(handler)
    driver.reprioritize(Priority(0, True))
    await driver.run()
    assert seen == [Priority(0, True)]


async def test_a_priority_change_while_handling_reaches_the_request() -> None:
    release = asyncio.Event()
    seen: list[Priority] = []

    async def handler(req: Request) -> Response:
        req.on_priority_change(seen.append)
        await release.wait()
        return JSONResponse({})

    driver, _, app = driver_for(handler)
    task = asyncio.ensure_future(driver.run())
    for _ in range(5):
        await asyncio.sleep(0)
    driver.reprioritize(Priority(6, False))
    assert app.requests[0].priority == Priority(6, False)
    assert seen == [Priority(6, False)]
    release.set()
    await task


async def test_background_tasks_run_even_when_the_client_went_away() -> None:
    ran: list[str] = []

    async def handler(req: Request) -> Response:
        async def cleanup() -> None:
            ran.append("cleanup")

        from rawserve.background import BackgroundTask

        return Response(b"x", background=BackgroundTask(cleanup))

    driver, conn, _ = driver_for(handler)
    conn.closed = True  # the send fails: the stream is gone
    await driver.run()
    assert driver.is_reset
    assert ran == ["cleanup"]


def test_every_state_change_goes_through_the_table() -> None:
    async def handler(req: Request) -> Response:
        return Response()

    driver, _, _ = driver_for(handler)
    with pytest.raises(RuntimeError, match="idle -> done"):
        driver._move("done")
    driver._move("handling")
    driver._move("sending")
    driver._move("done")
    for target in TRANSITIONS:
        with pytest.raises(RuntimeError):
            driver._move(target)  # done is final


def test_the_table_has_final_states_only_at_the_end() -> None:
    assert TRANSITIONS[stream_module.DONE] == frozenset()
    assert TRANSITIONS[stream_module.RESET] == frozenset()
    reachable = {stream_module.IDLE}
    frontier = [stream_module.IDLE]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(TRANSITIONS)
