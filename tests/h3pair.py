"""An in-memory HTTP/3 client and server: aioquic's client QuicConnection and
H3Connection on one side, rawserve's adapter on the other, exchanging
datagrams through lists. No sockets, and time only moves when told."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from aioquic.h3.connection import H3Connection as ClientH3
from aioquic.h3.events import H3Event
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from rawserve.core.config import Limits
from rawserve.core.events import IncomingEvent
from rawserve.protocols.http3 import H3_ALPN, H3Connection

CERTS = Path(__file__).resolve().parent.parent / "certs"
CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 4433)


def server_configuration(limits: Limits) -> QuicConfiguration:
    cfg = QuicConfiguration(
        is_client=False,
        alpn_protocols=H3_ALPN,
        max_data=limits.connection_window_bytes,
        max_stream_data=limits.initial_window_bytes,
        idle_timeout=limits.idle_timeout_s,
    )
    cfg.load_cert_chain(CERTS / "dev-cert.pem", CERTS / "dev-key.pem")
    return cfg


class Pair:
    """Client and server, with ``exchange()`` moving datagrams both ways until
    neither has anything to send."""

    def __init__(self, limits: Limits | None = None, **client_options: Any) -> None:
        self.limits = limits or Limits()
        self.now = 0.0
        client_cfg = QuicConfiguration(
            is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE, **client_options
        )
        self.client = QuicConnection(configuration=client_cfg)
        self.client_h3: ClientH3 | None = None
        self.client_events: list[H3Event] = []
        self.server: H3Connection | None = None
        self.server_events: list[IncomingEvent] = []
        self.quic_events: list[Any] = []
        self.client.connect(SERVER_ADDR, now=self.now)
        self.exchange()
        assert self.server is not None and self.server.handshake_complete

    def exchange(self, rounds: int = 50, *, to_server: bool = True) -> None:
        for _ in range(rounds):
            moved = False
            for data, _addr in self.client.datagrams_to_send(self.now):
                moved = True
                if not to_server:
                    continue
                if self.server is None:
                    self.server = H3Connection(
                        self.limits,
                        server_configuration(self.limits),
                        original_destination_connection_id=self.client.original_destination_connection_id,
                    )
                self.server_events += self.server.receive_datagram(data, CLIENT_ADDR, self.now)
            if self.server is not None:
                for data, _addr in self.server.datagrams_to_send(self.now):
                    moved = True
                    self.client.receive_datagram(data, SERVER_ADDR, self.now)
            self._client_events()
            if not moved:
                return
            self.now += 0.001

    def _client_events(self) -> None:
        while (event := self.client.next_event()) is not None:
            if self.client_h3 is None:
                self.client_h3 = ClientH3(self.client)
            self.client_events += self.client_h3.handle_event(event)
            self.quic_events.append(event)

    @property
    def h3(self) -> ClientH3:
        if self.client_h3 is None:
            self.client_h3 = ClientH3(self.client)
        return self.client_h3

    def take(self) -> list[IncomingEvent]:
        events, self.server_events = self.server_events, []
        return events
