"""The HTTP/2 client connection: one socket, a reader task, a future per stream."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import orjson

from rawserve.core.priority import Priority

PRIORITY_UPDATE = 0x10  # RFC 9218 section 7.1


def _line(row: Sequence[float]) -> bytes:
    return orjson.dumps({"inputs": row}, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


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
    # Set for a streamed response: DATA goes here, and its window is given back
    # only as the caller takes it (the server then feels the caller's pace).
    chunks: asyncio.Queue[bytes | None] | None = None


def _priority_field(priority: Priority | int) -> str:
    p = priority if isinstance(priority, Priority) else Priority(int(priority))
    return f"u={p.urgency}, i" if p.incremental else f"u={p.urgency}"


class Client:
    """One HTTP/2 connection to a rawserve server."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        authority: str,
        scheme: str,
        enable_push: bool = True,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.authority = authority
        self.scheme = scheme
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self._conn = h2.connection.H2Connection(config=config)
        self._conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={h2.settings.SettingCodes.ENABLE_PUSH: int(enable_push)},
        )
        self._streams: dict[int, _Stream] = {}
        # Pushed responses by path: complete ones, and ones still arriving.
        self.pushed: dict[str, Response] = {}
        self._pushing: dict[str, asyncio.Future[Response]] = {}
        self._window_open = asyncio.Event()
        self._closed = False
        self._error: BaseException | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        self._conn.initiate_connection()
        await self._flush()
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._conn.close_connection()
            await self._flush()
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reader_task

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
        self._check_open()
        sid = self._conn.get_next_available_stream_id()
        fields = [
            (":method", method),
            (":scheme", self.scheme),
            (":authority", self.authority),
            (":path", path),
        ]
        for name, value in (headers or {}).items():
            fields.append((name.lower(), value))
        if priority is not None:
            fields.append(("priority", _priority_field(priority)))
        if body:
            fields.append(("content-length", str(len(body))))
        done: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._streams[sid] = _Stream(done, path=path)
        self._conn.send_headers(sid, fields, end_stream=not body)
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

    async def reprioritize(self, stream_id: int, priority: Priority | int) -> None:
        """Send PRIORITY_UPDATE for a request in flight (RFC 9218 section 7.1)."""
        self._check_open()
        payload = stream_id.to_bytes(4, "big") + _priority_field(priority).encode()
        # h2 has no API for extension frames: write the frame header ourselves
        # (length, type 0x10, no flags, stream 0).
        frame = len(payload).to_bytes(3, "big") + bytes([PRIORITY_UPDATE, 0]) + bytes(4)
        await self._flush()
        self._writer.write(frame + payload)
        await self._writer.drain()

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
        self._check_open()
        sid = self._conn.get_next_available_stream_id()
        fields = [
            (":method", "POST"),
            (":scheme", self.scheme),
            (":authority", self.authority),
            (":path", path if ordered else f"{path}?ordered=false"),
            ("content-type", "application/x-ndjson"),
        ]
        if priority is not None:
            fields.append(("priority", _priority_field(priority)))
        done: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._streams[sid] = _Stream(done, path=path, chunks=chunks)
        self._conn.send_headers(sid, fields)
        await self._flush()

        async def send() -> None:
            if isinstance(rows, AsyncIterable):
                async for row in rows:
                    await self._send_body(sid, _line(row), end=False)
            else:
                for row in rows:
                    await self._send_body(sid, _line(row), end=False)
            self._conn.end_stream(sid)
            await self._flush()

        sender = asyncio.get_running_loop().create_task(send())
        buf = b""
        try:
            stream = self._streams[sid]
            while (chunk := await chunks.get()) is not None:
                self._conn.acknowledge_received_data(len(chunk), sid)
                await self._flush()
                if dict(stream.headers).get(":status") != "200":
                    stream.body += chunk  # an error answer, raised whole below
                    continue
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield orjson.loads(line)
            response = await done
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

    # -- I/O ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._error is not None:
            raise ClientError(f"the connection failed: {self._error}")
        if self._closed:
            raise ClientError("the client is closed")

    async def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _send_body(self, sid: int, body: bytes, *, end: bool = True) -> None:
        view = memoryview(body)
        while view:
            window = min(
                self._conn.local_flow_control_window(sid), self._conn.max_outbound_frame_size
            )
            if window <= 0:
                self._window_open.clear()
                await self._window_open.wait()
                self._check_open()
                continue
            chunk, view = view[:window], view[window:]
            self._conn.send_data(sid, bytes(chunk), end_stream=end and not view)
            await self._flush()

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    raise ClientError("the server closed the connection")
                for event in self._conn.receive_data(data):
                    self._on_event(event)
                await self._flush()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._error = exc
            self._fail_all(exc)

    def _fail_all(self, exc: BaseException) -> None:
        for stream in self._streams.values():
            if not stream.done.done():
                stream.done.set_exception(ClientError(f"connection lost: {exc}"))
        for fut in self._pushing.values():
            if not fut.done():
                fut.set_exception(ClientError(f"connection lost: {exc}"))
        self._window_open.set()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None and event.headers:
                stream.headers.extend((str(k), str(v)) for k, v in event.headers)
        elif isinstance(event, h2.events.DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None and stream.chunks is not None:
                stream.chunks.put_nowait(event.data)
                if event.flow_controlled_length > len(event.data):  # padding
                    pad = event.flow_controlled_length - len(event.data)
                    self._conn.acknowledge_received_data(pad, event.stream_id)
                return
            if stream is not None:
                stream.body += event.data
            # Read at once into memory: give the window back.
            self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self._finish(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            stream = self._streams.get(event.stream_id)
            if stream is not None and not stream.done.done():
                stream.done.set_exception(
                    ClientError(f"stream {event.stream_id} reset (code {event.error_code})")
                )
            if stream is not None and stream.pushed:
                self._streams.pop(event.stream_id, None)
                self._pushing.pop(stream.path, None)
        elif isinstance(event, h2.events.PushedStreamReceived):
            self._on_push(event)
        elif isinstance(event, h2.events.WindowUpdated):
            self._window_open.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._error = ClientError(
                f"the server ended the connection (GOAWAY {event.error_code})"
            )
            # Streams above last_stream_id were never processed; the rest finish.
            last = event.last_stream_id or 0
            for sid, stream in list(self._streams.items()):
                if sid > last and sid % 2 == 1 and not stream.done.done():
                    stream.done.set_exception(self._error)

    def _on_push(self, event: h2.events.PushedStreamReceived) -> None:
        fields = {str(k): str(v) for k, v in event.headers or ()}
        path = fields.get(":path", "")
        sid = event.pushed_stream_id
        if sid is None:
            return
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


@contextlib.asynccontextmanager
async def connect(
    url: str,
    *,
    verify: bool | str = True,
    enable_push: bool = True,
) -> AsyncIterator[Client]:
    """Open an HTTP/2 connection to ``url``'s host (``https``: TLS with ALPN h2;
    ``http``: h2c by prior knowledge). ``verify``: False, True (system CAs) or
    a CA file (the development certificate, ``certs/dev-cert.pem``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    ctx: ssl.SSLContext | None = None
    if tls:
        ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
        if verify is False:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=ctx)
    if ctx is not None:
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            writer.close()
            raise ClientError(f"{url} did not agree to HTTP/2 (ALPN)")
    authority = parts.netloc
    client = Client(
        reader, writer, authority=authority, scheme=parts.scheme, enable_push=enable_push
    )
    await client._start()
    try:
        yield client
    finally:
        await client.close()
