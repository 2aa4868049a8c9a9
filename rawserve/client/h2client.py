"""The client over HTTP/2: one TCP (or TLS) connection, a reader task, the h2
library underneath."""

from __future__ import annotations

import asyncio
import contextlib

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from rawserve.client.base import Client, ClientError, priority_field
from rawserve.core.priority import Priority

PRIORITY_UPDATE = 0x10  # RFC 9218 section 7.1


class H2Client(Client):
    """One HTTP/2 connection to a rawserve server."""

    http_version = "2"

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        authority: str,
        scheme: str,
        enable_push: bool = True,
    ) -> None:
        super().__init__(authority=authority, scheme=scheme)
        self._reader = reader
        self._writer = writer
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self._conn = h2.connection.H2Connection(config=config)
        self._conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={h2.settings.SettingCodes.ENABLE_PUSH: int(enable_push)},
        )
        self._window_open = asyncio.Event()
        self._reader_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn.initiate_connection()
        await self._flush()
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())

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

    # -- stream primitives ---------------------------------------------------------

    def _next_stream_id(self) -> int:
        return int(self._conn.get_next_available_stream_id())

    def _send_headers(self, sid: int, fields: list[tuple[str, str]], end: bool) -> None:
        self._conn.send_headers(sid, fields, end_stream=end)

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

    def _end_stream(self, sid: int) -> None:
        self._conn.end_stream(sid)

    def _credit(self, sid: int, n: int) -> None:
        if n > 0:
            with contextlib.suppress(h2.exceptions.H2Error):
                self._conn.acknowledge_received_data(n, sid)

    async def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def reprioritize(self, stream_id: int, priority: Priority | int) -> None:
        """Send PRIORITY_UPDATE for a request in flight (RFC 9218 section 7.1)."""
        self._check_open()
        payload = stream_id.to_bytes(4, "big") + priority_field(priority).encode()
        # h2 has no API for extension frames: write the frame header ourselves
        # (length, type 0x10, no flags, stream 0).
        frame = len(payload).to_bytes(3, "big") + bytes([PRIORITY_UPDATE, 0]) + bytes(4)
        await self._flush()
        self._writer.write(frame + payload)
        await self._writer.drain()

    # -- what arrives ----------------------------------------------------------------

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
            self._fail_all(exc)
            self._window_open.set()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            if event.headers and event.stream_id is not None:
                self._headers(event.stream_id, ((str(k), str(v)) for k, v in event.headers))
        elif isinstance(event, h2.events.DataReceived):
            sid = event.stream_id
            if sid is None:
                return
            queued = self._data(sid, event.data or b"")
            length = event.flow_controlled_length or 0
            # A streamed response gets its credit back as the caller reads;
            # everything else is in memory already (and padding is never read).
            self._credit(sid, length - len(event.data or b"") if queued else length)
        elif isinstance(event, h2.events.StreamEnded):
            if event.stream_id is not None:
                self._finish(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            if event.stream_id is not None:
                self._reset(event.stream_id, int(event.error_code or 0))
        elif isinstance(event, h2.events.PushedStreamReceived):
            fields = {str(k): str(v) for k, v in event.headers or ()}
            if event.pushed_stream_id is not None:
                self._promise(event.pushed_stream_id, fields.get(":path", ""))
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
