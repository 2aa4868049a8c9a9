"""Responses: headers the driver sends, bodies and streaming, cookies,
background tasks."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from rawserve.background import BackgroundTask, BackgroundTasks
from rawserve.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    ORJSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)


async def collect(response: Response) -> bytes:
    return b"".join([chunk async for chunk in response.body_chunks()])


def header_dict(response: Response) -> dict[bytes, bytes]:
    return dict(response.raw_headers())


# -- plain responses --------------------------------------------------------------


async def test_bytes_response_has_length_and_no_type() -> None:
    r = Response(b"abc")
    assert r.status_code == 200
    assert r.body == b"abc"
    assert r.raw_headers() == [(b"content-length", b"3")]
    assert r.is_streaming is False
    assert await collect(r) == b"abc"


async def test_empty_response() -> None:
    r = Response()
    assert r.body == b""
    assert r.raw_headers() == [(b"content-length", b"0")]
    assert await collect(r) == b""


@pytest.mark.parametrize("status", [204, 304, 101])
def test_no_content_length_for_bodiless_statuses(status: int) -> None:
    assert Response(status_code=status).raw_headers() == []


def test_text_types_get_charset_and_utf8_length() -> None:
    r = PlainTextResponse("héllo")
    assert r.body == "héllo".encode()
    assert header_dict(r) == {
        b"content-length": b"6",
        b"content-type": b"text/plain; charset=utf-8",
    }
    assert header_dict(HTMLResponse("<p>"))[b"content-type"] == b"text/html; charset=utf-8"
    csv = Response("x", media_type="text/csv; charset=latin-1")
    assert header_dict(csv)[b"content-type"] == b"text/csv; charset=latin-1"
    octets = Response(b"x", media_type="application/octet-stream")
    assert header_dict(octets)[b"content-type"] == b"application/octet-stream"


def test_user_headers_win_and_names_are_lowercased() -> None:
    r = PlainTextResponse(
        "abc", headers={"Content-Type": "text/x-custom", "X-Trace": "1", "Content-Length": "3"}
    )
    assert r.raw_headers() == [
        (b"content-type", b"text/x-custom"),
        (b"x-trace", b"1"),
        (b"content-length", b"3"),
    ]


def test_headers_view_writes_through_to_raw_headers() -> None:
    r = JSONResponse({"a": 1}, status_code=201)
    r.headers["X-Model"] = "digits"
    r.headers["content-type"] = "application/problem+json"
    assert r.headers["Content-Length"] == str(len(r.body))
    raw = r.raw_headers()
    assert (b"x-model", b"digits") in raw
    assert (b"content-type", b"application/problem+json") in raw
    assert r.status_code == 201


def test_a_response_from_ready_fields_is_a_whole_response() -> None:
    # Response.from_raw (the server's /predict answer) skips the constructor:
    # what the constructor would have set must still be there.
    raw = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    r = Response.from_raw(b"{}", 200, raw)
    assert r.raw_headers() is raw and r.body == b"{}" and r.status_code == 200
    assert r.background is None and not r.is_streaming
    assert r.headers["Content-Type"] == "application/json"
    r.headers["x-model"] = "digits"
    assert (b"x-model", b"digits") in r.raw_headers()
    assert asyncio.run(_chunks(r)) == [b"{}"]


async def _chunks(response: Response) -> list[bytes]:
    return [chunk async for chunk in response.body_chunks()]


def test_render_rejects_other_types_clearly() -> None:
    with pytest.raises(TypeError, match="JSONResponse"):
        Response({"a": 1})
    assert Response(bytearray(b"ab")).body == b"ab"
    assert Response(memoryview(b"ab")).body == b"ab"


# -- JSON -------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    label: int
    probs: np.ndarray[tuple[int], np.dtype[np.float64]]


def test_json_response_numpy_and_dataclasses() -> None:
    r = JSONResponse(
        {
            "batch": np.arange(4, dtype=np.float32).reshape(2, 2),
            "top": np.int64(1),
            "ok": np.bool_(True),
            "result": Result(3, np.array([0.25, 0.75])),
            "when": datetime.date(2024, 2, 3),
        }
    )
    assert r.body == (
        b'{"batch":[[0.0,1.0],[2.0,3.0]],"top":1,"ok":true,'
        b'"result":{"label":3,"probs":[0.25,0.75]},"when":"2024-02-03"}'
    )
    assert header_dict(r) == {
        b"content-length": str(len(r.body)).encode(),
        b"content-type": b"application/json",  # no charset: JSON is UTF-8 by definition
    }
    assert JSONResponse(None).body == b"null"
    assert ORJSONResponse is JSONResponse


# -- cookies ----------------------------------------------------------------------


def test_set_cookie_all_options() -> None:
    r = Response()
    r.set_cookie(
        "session",
        "abc 123",
        max_age=60,
        expires=datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        path="/api",
        domain="example.com",
        secure=True,
        httponly=True,
        samesite="strict",
        partitioned=True,
    )
    cookies = r.headers.getlist("set-cookie")
    assert len(cookies) == 1
    c = cookies[0]
    assert c.startswith('session="abc 123"')
    for part in (
        "Max-Age=60",
        "expires=Wed, 02 Jan 2030 03:04:05 GMT",
        "Path=/api",
        "Domain=example.com",
        "Secure",
        "HttpOnly",
        "SameSite=strict",
        "Partitioned",
    ):
        assert part in c


def test_set_cookie_defaults_multiple_and_delete() -> None:
    r = Response()
    r.set_cookie("a", "1")
    r.set_cookie("b", "2")
    r.delete_cookie("old")
    cookies = r.headers.getlist("set-cookie")
    assert cookies[0] == "a=1; Path=/; SameSite=lax"
    assert cookies[1] == "b=2; Path=/; SameSite=lax"
    assert "old=" in cookies[2] and "Max-Age=0" in cookies[2]
    with pytest.raises(ValueError):
        r.set_cookie("c", samesite="bogus")  # type: ignore[arg-type]


# -- redirects --------------------------------------------------------------------


def test_redirect_response() -> None:
    r = RedirectResponse("/to path?q=é")
    assert r.status_code == 307
    assert r.headers["location"] == "/to%20path?q=%C3%A9"
    assert r.headers["content-length"] == "0"
    assert RedirectResponse("https://x/", status_code=301).status_code == 301


# -- streaming --------------------------------------------------------------------


async def test_streaming_sync_generator_does_not_block_the_loop() -> None:
    loop_thread = threading.get_ident()
    gen_threads: set[int] = set()

    def slow() -> Iterator[bytes]:
        for i in range(3):
            gen_threads.add(threading.get_ident())
            time.sleep(0.05)  # a blocking call, e.g. a model step
            yield b"%d" % i

    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    t = asyncio.create_task(ticker())
    r = StreamingResponse(slow(), media_type="text/plain")
    body = await collect(r)
    stop.set()
    await t
    assert body == b"012"
    assert loop_thread not in gen_threads
    # The loop kept running while the generator slept ~150 ms.
    assert ticks >= 10
    assert r.is_streaming
    assert header_dict(r) == {b"content-type": b"text/plain; charset=utf-8"}


async def test_streaming_async_generator_and_mixed_chunk_types() -> None:
    async def gen() -> AsyncIterator[bytes | str | memoryview]:
        yield b"a"
        yield "é"
        yield memoryview(b"mv")
        yield bytearray(b"!")  # type: ignore[misc]

    r = StreamingResponse(gen())
    assert [c async for c in r.body_chunks()] == [b"a", "é".encode(), b"mv", b"!"]
    assert b"content-length" not in header_dict(r)


async def test_streaming_plain_iterables() -> None:
    assert await collect(StreamingResponse(["x", "y"])) == b"xy"
    assert await collect(StreamingResponse(iter([b"1", b"2"]))) == b"12"


async def test_streaming_bad_chunk_type() -> None:
    with pytest.raises(TypeError, match="int"):
        await collect(StreamingResponse([1, 2]))


async def test_streaming_generator_exception_propagates() -> None:
    def boom() -> Iterator[bytes]:
        yield b"ok"
        raise RuntimeError("model failed")

    chunks = StreamingResponse(boom()).body_chunks()
    assert await chunks.__anext__() == b"ok"
    with pytest.raises(RuntimeError, match="model failed"):
        await chunks.__anext__()


async def test_streaming_early_close_runs_generator_cleanup() -> None:
    cleaned = threading.Event()

    def gen() -> Iterator[bytes]:
        try:
            while True:
                yield b"x"
        finally:
            cleaned.set()

    chunks = StreamingResponse(gen()).body_chunks()
    assert await chunks.__anext__() == b"x"
    await chunks.aclose()  # the client went away
    assert cleaned.is_set()

    closed = asyncio.Event()

    async def agen() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"y"
                await asyncio.sleep(0)
        finally:
            closed.set()

    achunks = StreamingResponse(agen()).body_chunks()
    assert await achunks.__anext__() == b"y"
    await achunks.aclose()
    assert closed.is_set()


async def test_streaming_custom_status_and_headers() -> None:
    r = StreamingResponse([b""], status_code=206, headers={"X-A": "1"}, media_type="x/y")
    assert r.status_code == 206
    assert r.raw_headers() == [(b"x-a", b"1"), (b"content-type", b"x/y")]
    assert await collect(r) == b""


# -- files ------------------------------------------------------------------------


async def test_file_response_streams_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    r = FileResponse(path, filename="weights.bin")
    headers = header_dict(r)
    assert headers[b"content-length"] == b"200000"
    assert headers[b"content-type"] == b"application/octet-stream"
    assert headers[b"content-disposition"] == b'attachment; filename="weights.bin"'
    assert headers[b"etag"].startswith(b'"') and headers[b"etag"].endswith(b'"')
    assert headers[b"last-modified"].endswith(b"GMT")
    chunks = [c async for c in r.body_chunks()]
    assert len(chunks) == 4  # 64 KiB pieces
    assert b"".join(chunks) == data
    assert r.is_streaming


async def test_file_response_media_type_filename_encoding_and_head(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text("<h1>hi</h1>")
    r = FileResponse(path, filename="résumé.html", method="HEAD")
    headers = header_dict(r)
    assert headers[b"content-type"] == b"text/html; charset=utf-8"
    assert headers[b"content-disposition"] == b"attachment; filename*=utf-8''r%C3%A9sum%C3%A9.html"
    assert headers[b"content-length"] == b"11"
    assert await collect(r) == b""
    assert await collect(FileResponse(str(path))) == b"<h1>hi</h1>"


def test_file_response_missing_or_directory(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="does not exist"):
        FileResponse(tmp_path / "nope")
    with pytest.raises(RuntimeError, match="not a file"):
        FileResponse(tmp_path)


# -- background -------------------------------------------------------------------


async def test_background_task_sync_in_thread_async_on_loop() -> None:
    loop_thread = threading.get_ident()
    seen: list[tuple[str, int, bool]] = []

    def sync_task(name: str, *, n: int) -> None:
        seen.append((name, n, threading.get_ident() == loop_thread))

    async def async_task(name: str, n: int) -> None:
        seen.append((name, n, threading.get_ident() == loop_thread))

    tasks = BackgroundTasks()
    tasks.add_task(sync_task, "sync", n=1)
    tasks.add_task(async_task, "async", 2)
    r = JSONResponse({}, background=tasks)
    assert seen == []
    await r.run_background()
    assert seen == [("sync", 1, False), ("async", 2, True)]

    single = PlainTextResponse("x", background=BackgroundTask(async_task, "one", 3))
    await single.run_background()
    assert seen[-1] == ("one", 3, True)
    await Response().run_background()  # no background: a no-op


async def test_background_tasks_from_constructor_and_callable_objects() -> None:
    calls: list[str] = []

    class AsyncCallable:
        async def __call__(self) -> None:
            calls.append("obj")

    tasks = BackgroundTasks([BackgroundTask(AsyncCallable()), BackgroundTask(calls.append, "s")])
    await tasks()
    assert calls == ["obj", "s"]
