"""The client over HTTP/3: aioquic's QUIC and H3 connections on its asyncio
glue (a client has no loop-turn economics to win, unlike the server)."""

from __future__ import annotations

import contextlib
from typing import Any

import aioquic.quic.events as qe
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3Connection, encode_frame
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived, PushPromiseReceived

from rawserve.client.base import Client, ClientError, priority_field
from rawserve.core.priority import Priority

PRIORITY_UPDATE_REQUEST = 0xF0700  # RFC 9218 section 7.2


class _H3(H3Connection):
    """aioquic's client H3Connection, with push offered or not."""

    def __init__(self, quic: Any, *, enable_push: bool) -> None:
        self._offer_push = enable_push
        super().__init__(quic)

    def _init_connection(self) -> None:
        if not self._offer_push:
            self._max_push_id = None  # no MAX_PUSH_ID: the server may not push
        super()._init_connection()


class _Protocol(QuicConnectionProtocol):
    """Owns the H3 connection from the start (the server's control streams
    may arrive with the handshake) and hands events to the client once one
    is attached, the earlier ones first."""

    def __init__(self, *args: Any, enable_push: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = _H3(self._quic, enable_push=enable_push)
        self.client: H3Client | None = None
        self.pending: list[qe.QuicEvent] = []

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if self.client is None:
            self.pending.append(event)
        else:
            self.client._on_quic_event(event)


def _push_key(push_id: int) -> int:
    # Pushed responses are kept by a key no request stream can have: a push's
    # QUIC stream is not known until its first frame arrives.
    return -(push_id + 1)


class H3Client(Client):
    """One HTTP/3 connection to a rawserve server."""

    http_version = "3"

    def __init__(self, protocol: _Protocol, *, authority: str) -> None:
        super().__init__(authority=authority, scheme="https")
        self._protocol = protocol
        self._quic = protocol._quic
        self._h3 = protocol.h3
        protocol.client = self
        pending, protocol.pending = protocol.pending, []
        for event in pending:
            self._on_quic_event(event)

    # -- stream primitives ---------------------------------------------------------

    def _next_stream_id(self) -> int:
        return int(self._quic.get_next_available_stream_id())

    def _send_headers(self, sid: int, fields: list[tuple[str, str]], end: bool) -> None:
        self._h3.send_headers(sid, [(k.encode(), v.encode()) for k, v in fields], end_stream=end)

    async def _send_body(self, sid: int, body: bytes, *, end: bool = True) -> None:
        self._check_open()
        self._h3.send_data(sid, body, end_stream=end)
        self._protocol.transmit()

    def _end_stream(self, sid: int) -> None:
        self._h3.send_data(sid, b"", end_stream=True)

    async def _flush(self) -> None:
        self._protocol.transmit()

    async def reprioritize(self, stream_id: int, priority: Priority | int) -> None:
        """Send PRIORITY_UPDATE on the control stream (RFC 9218 section 7.2)."""
        self._check_open()
        control = self._h3._local_control_stream_id
        assert control is not None
        payload = encode_uint_var(stream_id) + priority_field(priority).encode()
        self._quic.send_stream_data(control, encode_frame(PRIORITY_UPDATE_REQUEST, payload))
        self._protocol.transmit()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._protocol.close()
        with contextlib.suppress(Exception):
            await self._protocol.wait_closed()

    # -- what arrives ----------------------------------------------------------------

    def _on_quic_event(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.ConnectionTerminated):
            self._fail_all(ClientError(f"the server closed the connection ({event.error_code})"))
        elif isinstance(event, qe.StreamReset):
            self._reset(event.stream_id, event.error_code)
        for h3_event in self._h3.handle_event(event):
            self._on_h3_event(h3_event)

    def _on_h3_event(self, event: H3Event) -> None:
        if isinstance(event, PushPromiseReceived):
            path = dict(event.headers).get(b":path", b"").decode("latin-1")
            self._promise(_push_key(event.push_id), path)
            return
        if not isinstance(event, HeadersReceived | DataReceived):
            return
        sid = event.stream_id if event.push_id is None else _push_key(event.push_id)
        if isinstance(event, HeadersReceived):
            self._headers(sid, ((k.decode(), v.decode("latin-1")) for k, v in event.headers))
        else:
            self._data(sid, event.data)
        if event.stream_ended:
            self._finish(sid)
