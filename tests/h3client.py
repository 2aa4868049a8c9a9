"""A small HTTP/3 client on aioquic's asyncio API, for tests against a real
rawserve over UDP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived, PushPromiseReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StreamReset,
)


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    reset: int | None = None
    chunks: list[bytes] = field(default_factory=list)

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.responses: dict[int, Response] = {}
        self.done: dict[int, asyncio.Future[Response]] = {}
        self.chunk_waiters: dict[int, asyncio.Event] = {}
        self.terminated = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.handshake: HandshakeCompleted | None = None
        # While set, incoming datagrams are dropped: a client that stops reading.
        self.deaf = False
        # Server pushes: push id -> promised path, and the pushed responses.
        self.promised: dict[int, str] = {}
        self.pushed: dict[int, Response] = {}
        self.push_done: dict[int, asyncio.Future[Response]] = {}

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if not self.deaf:
            super().datagram_received(data, addr)

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset) and event.stream_id in self.done:
            resp = self.responses[event.stream_id]
            resp.reset = event.error_code
            self._finish(event.stream_id)
        if isinstance(event, ConnectionTerminated):
            self.close_code = event.error_code
            self.close_reason = event.reason_phrase
            self.terminated.set()
        if isinstance(event, HandshakeCompleted):
            self.handshake = event
        for h3_event in self.h3.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if isinstance(event, PushPromiseReceived):
            self.promised[event.push_id] = dict(event.headers)[b":path"].decode()
            self.pushed[event.push_id] = Response()
            self.push_done[event.push_id] = asyncio.get_running_loop().create_future()
            return
        push_id = getattr(event, "push_id", None)
        if push_id is not None and push_id in self.pushed:
            pushed = self.pushed[push_id]
            if isinstance(event, HeadersReceived) and not pushed.status:
                pushed.headers = list(event.headers)
                pushed.status = int(dict(event.headers)[b":status"])
            elif isinstance(event, DataReceived):
                pushed.chunks.append(event.data)
            if getattr(event, "stream_ended", False):
                pushed.body = b"".join(pushed.chunks)
                fut = self.push_done[push_id]
                if not fut.done():
                    fut.set_result(pushed)
            return
        sid = getattr(event, "stream_id", None)
        if sid not in self.responses:
            return
        resp = self.responses[sid]
        if isinstance(event, HeadersReceived):
            if not resp.status:
                resp.headers = list(event.headers)
                resp.status = int(dict(event.headers)[b":status"])
        elif isinstance(event, DataReceived):
            resp.chunks.append(event.data)
            w = self.chunk_waiters.get(sid)
            if w is not None:
                w.set()
        if getattr(event, "stream_ended", False):
            self._finish(sid)

    def _finish(self, sid: int) -> None:
        fut = self.done.get(sid)
        if fut is not None and not fut.done():
            resp = self.responses[sid]
            resp.body = b"".join(resp.chunks)
            fut.set_result(resp)

    def start(
        self,
        method: str,
        path: str,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        end: bool = True,
        authority: bytes = b"localhost",
    ) -> int:
        sid = self._quic.get_next_available_stream_id()
        self.responses[sid] = Response()
        self.done[sid] = asyncio.get_running_loop().create_future()
        head = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority),
            (b":path", path.encode()),
            *(headers or []),
        ]
        self.h3.send_headers(sid, head, end_stream=body is None and end)
        if body is not None:
            self.h3.send_data(sid, body, end_stream=end)
        self.transmit()
        return sid

    async def request(self, method: str, path: str, **kwargs: Any) -> Response:
        sid = self.start(method, path, **kwargs)
        return await asyncio.wait_for(self.done[sid], 30)


def client_configuration(**options: Any) -> QuicConfiguration:
    return QuicConfiguration(
        is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE, **options
    )


@asynccontextmanager
async def h3_connect(
    port: int, configuration: QuicConfiguration | None = None, **kwargs: Any
) -> AsyncIterator[H3Client]:
    async with connect(
        "127.0.0.1",
        port,
        configuration=configuration or client_configuration(),
        create_protocol=H3Client,
        **kwargs,
    ) as client:
        yield client  # type: ignore[misc]
