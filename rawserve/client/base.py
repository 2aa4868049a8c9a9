"""What the client does the same over HTTP/2 and HTTP/3: requests and their
responses, pushed responses kept by path, /predict and /predict/stream.

A transport (``h2client``, ``h3client``) supplies the stream primitives:
open a request stream, send body bytes, end it, give receive credit back,
flush, send PRIORITY_UPDATE, close; and feeds what arrives into ``_headers``,
``_data``, ``_finish``, ``_reset``, ``_promise`` and ``_fail_all``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from rawserve.core.priority import Priority


class ClientError(Exception):
    """The server answered with an error status, or the stream was reset."""

    def __init__(self, message: str, response: Response | None = None) -> None:
        super().__init__(message)
        self.response = response


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stream_id: int
    pushed: bool = False

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class _Stream:
    done: asyncio.Future[Response]
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    path: str = ""
    pushed: bool = False
    # Set for a streamed response: DATA goes here, and its credit is given
    # back only as the caller takes it (the server then feels the caller's pace).
    chunks: asyncio.Queue[bytes | None] | None = None


def priority_field(priority: Priority | int) -> str:
    p = priority if isinstance(priority, Priority) else Priority(int(priority))
    return f"u={p.urgency}, i" if p.incremental else f"u={p.urgency}"


def _line(row: Sequence[float]) -> bytes:
    return orjson.dumps({"inputs": row}, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


class Client:
    """One connection to a rawserve server (HTTP/2 or HTTP/3)."""

    http_version = ""

    def __init__(self, *, authority: str, scheme: str) -> None:
        self.authority = authority
        self.scheme = scheme
        self._streams: dict[int, _Stream] = {}
        # Pushed responses by path: complete ones, and ones still arriving.
        self.pushed: dict[str, Response] = {}
        self._pushing: dict[str, asyncio.Future[Response]] = {}
        self._closed = False
        self._error: BaseException | None = None

    # -- the transport's part ------------------------------------------------------

    def _next_stream_id(self) -> int:
        raise NotImplementedError

    def _send_headers(self, sid: int, fields: list[tuple[str, str]], end: bool) -> None:
        raise NotImplementedError

    async def _send_body(self, sid: int, body: bytes, *, end: bool = True) -> None:
        raise NotImplementedError

    def _end_stream(self, sid: int) -> None:
        raise NotImplementedError

    def _credit(self, sid: int, n: int) -> None:
        """The caller took ``n`` bytes of a streamed response."""

    async def _flush(self) -> None:
        raise NotImplementedError

    async def reprioritize(self, stream_id: int, priority: Priority | int) -> None:
        """Send PRIORITY_UPDATE for a request in flight (RFC 9218 section 7)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- requests ----------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        priority: Priority | int | None = None,
    ) -> Response:
        """Send one request and wait for its whole response."""
        sid = await self.send_request(method, path, body=body, headers=headers, priority=priority)
        return await self.response(sid)

    def _open(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None,
        priority: Priority | int | None,
        *,
        body_length: int | None,
        streamed: bool = False,
    ) -> int:
        self._check_open()
        sid = self._next_stream_id()
        fields = [
            (":method", method),
            (":scheme", self.scheme),
            (":authority", self.authority),
            (":path", path),
        ]
        for name, value in (headers or {}).items():
            fields.append((name.lower(), value))
        if priority is not None:
            fields.append(("priority", priority_field(priority)))
        if body_length:
            fields.append(("content-length", str(body_length)))
        done: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        chunks: asyncio.Queue[bytes | None] | None = asyncio.Queue() if streamed else None
        self._streams[sid] = _Stream(done, path=path, chunks=chunks)
        self._send_headers(sid, fields, end=body_length == 0)
        return sid

    async def send_request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        priority: Priority | int | None = None,
    ) -> int:
        """Send a request and return its stream id (``response`` waits for it;
        ``reprioritize`` may move it meanwhile)."""
        sid = self._open(method, path, headers, priority, body_length=len(body))
        await self._flush()
        if body:
            await self._send_body(sid, body)
        return sid

    async def response(self, stream_id: int) -> Response:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise KeyError(f"no request on stream {stream_id}")
        try:
            return await stream.done
        finally:
            self._streams.pop(stream_id, None)

    async def get(self, path: str, *, priority: Priority | int | None = None) -> Response:
        """GET ``path``; a response the server pushed for it answers at once."""
        pushed = self.pushed.get(path)
        if pushed is not None:
            return pushed
        arriving = self._pushing.get(path)
        if arriving is not None:
            return await arriving
        return await self.request("GET", path, priority=priority)

    async def predict(
        self,
        inputs: Sequence[float] | Sequence[Sequence[float]],
        *,
        priority: Priority | int | None = None,
        path: str = "/predict",
    ) -> Any:
        """POST ``{"inputs": ...}`` to /predict; the decoded JSON answer."""
        body = orjson.dumps({"inputs": inputs}, option=orjson.OPT_SERIALIZE_NUMPY)
        r = await self.request(
            "POST",
            path,
            body=body,
            headers={"content-type": "application/json"},
            priority=priority,
        )
        if r.status != 200:
            raise ClientError(f"{path} answered {r.status}: {r.body[:200]!r}", r)
        return r.json()

    async def stream(
        self,
        rows: AsyncIterable[Sequence[float]] | Iterable[Sequence[float]],
        *,
        priority: Priority | int | None = None,
        ordered: bool = True,
        path: str = "/predict/stream",
    ) -> AsyncIterator[Any]:
        """Send ``rows`` as NDJSON to /predict/stream and yield each result as
        it arrives, while later rows are still being sent (full duplex).
        Results carry their input's ``index``; errors come as
        ``{"index", "error"}`` lines, not exceptions."""
        target = path if ordered else f"{path}?ordered=false"
        sid = self._open(
            "POST",
            target,
            {"content-type": "application/x-ndjson"},
            priority,
            body_length=None,
            streamed=True,
        )
        await self._flush()
        stream = self._streams[sid]
        assert stream.chunks is not None

        async def send() -> None:
            if isinstance(rows, AsyncIterable):
                async for row in rows:
                    await self._send_body(sid, _line(row), end=False)
            else:
                for row in rows:
                    await self._send_body(sid, _line(row), end=False)
            self._end_stream(sid)
            await self._flush()

        sender = asyncio.get_running_loop().create_task(send())
        buf = b""
        try:
            while (chunk := await stream.chunks.get()) is not None:
                self._credit(sid, len(chunk))
                await self._flush()
                if dict(stream.headers).get(":status") != "200":
                    stream.body += chunk  # an error answer, raised whole below
                    continue
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield orjson.loads(line)
            response = await stream.done
            if response.status != 200:
                body = bytes(stream.body)
                response.body = body
                raise ClientError(f"{path} answered {response.status}: {body[:200]!r}", response)
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            self._streams.pop(sid, None)

    async def wait_pushes(self) -> dict[str, Response]:
        """Every push promised so far, once each has arrived."""
        if self._pushing:
            await asyncio.gather(*self._pushing.values(), return_exceptions=True)
        return dict(self.pushed)

    # -- what arrives -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._error is not None:
            raise ClientError(f"the connection failed: {self._error}")
        if self._closed:
            raise ClientError("the client is closed")

    def _headers(self, sid: int, headers: Iterable[tuple[str, str]]) -> None:
        stream = self._streams.get(sid)
        if stream is not None:
            stream.headers.extend(headers)

    def _data(self, sid: int, data: bytes) -> bool:
        """Body bytes for ``sid``; True when they wait in a streamed response's
        queue (their credit goes back as the caller takes them)."""
        stream = self._streams.get(sid)
        if stream is None:
            return False
        if stream.chunks is not None:
            stream.chunks.put_nowait(data)
            return True
        stream.body += data
        return False

    def _reset(self, sid: int, code: int) -> None:
        stream = self._streams.get(sid)
        if stream is None:
            return
        if not stream.done.done():
            stream.done.set_exception(ClientError(f"stream {sid} reset (code {code})"))
        if stream.chunks is not None:
            stream.chunks.put_nowait(None)
        if stream.pushed:
            self._streams.pop(sid, None)
            self._pushing.pop(stream.path, None)

    def _promise(self, sid: int, path: str) -> None:
        """The server promised a push of ``path``, to arrive on ``sid``."""
        done: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._streams[sid] = _Stream(done, path=path, pushed=True)
        self._pushing[path] = done
        done.add_done_callback(functools.partial(self._pushed_done, path))

    def _pushed_done(self, path: str, fut: asyncio.Future[Response]) -> None:
        if self._pushing.get(path) is fut:
            del self._pushing[path]
        if not fut.cancelled() and fut.exception() is None:
            self.pushed[path] = fut.result()

    def _finish(self, sid: int) -> None:
        stream = self._streams.get(sid)
        if stream is None or stream.done.done():
            return
        if stream.chunks is not None:
            stream.chunks.put_nowait(None)
        status = 0
        headers: list[tuple[str, str]] = []
        for k, v in stream.headers:
            if k == ":status":
                status = int(v)
            elif not k.startswith(":"):
                headers.append((k, v))
        stream.done.set_result(Response(status, headers, bytes(stream.body), sid, stream.pushed))
        if stream.pushed:
            self._streams.pop(sid, None)

    def _fail_all(self, exc: BaseException) -> None:
        self._error = exc
        for stream in self._streams.values():
            if not stream.done.done():
                stream.done.set_exception(ClientError(f"connection lost: {exc}"))
            if stream.chunks is not None:
                stream.chunks.put_nowait(None)
        for fut in self._pushing.values():
            if not fut.done():
                fut.set_exception(ClientError(f"connection lost: {exc}"))
