"""HTTP/3 over UDP: the listener, and QUIC connections on the shared base.

The listener reads the socket itself: asyncio's datagram transport hands
over one datagram per loop turn, so a burst of N datagrams would cost N
turns and N transmissions. Here every datagram that is ready is read and
handed to its connection, and each connection touched transmits once, after
the burst (``_flush``, as StreamConnection batches stream writes). Stream
writes from handlers share that flush: one per connection per loop turn.
A flush's datagrams of one size go out in one sendmsg with UDP GSO on Linux.

Datagrams reach connections by destination connection ID, including the IDs
a connection issues later (migration); unknown Initial packets make new
connections, after a Retry round trip with ``--quic-retry``. Each connection
owns one timer, set from the adapter's ``get_timer()`` after every flush.

Several worker processes (``--workers``, serving/workers.py) share the UDP
port with SO_REUSEPORT, and the kernel picks a socket by the client's
address: a client whose address changes would land on another worker. So,
with a ``Steering``, every connection ID a worker issues starts with its
index; on Linux a BPF program on the sockets makes the kernel pick the
socket by that index (serving/workers.py), and a datagram that still
reaches the wrong worker (no such program, or a platform without it) is
forwarded to its owner over a Unix datagram socket, with the client's
address; the owner answers from its own socket on the same port.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aioquic._buffer import Buffer
from aioquic.asyncio.server import _encode_invalid_token_close
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import QuicConnectionId
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler
from aioquic.tls import SessionTicket

from rawserve.core.events import IncomingEvent
from rawserve.protocols.http3 import H3_ALPN, H3Connection
from rawserve.serving.connection import StreamConnection

if TYPE_CHECKING:
    from rawserve.serving.server import Server

log = logging.getLogger("rawserve.serving")

# Datagrams read per readiness callback before other work gets a turn.
MAX_BURST = 128
MAX_DATAGRAM = 65535
# UDP generic segmentation offload (Linux 4.18+): one sendmsg carries up to
# 64 datagrams of one size, the last possibly shorter.
UDP_SEGMENT = 103
MAX_GSO_SEGMENTS = 64
MAX_GSO_BYTES = 65_000
# Session tickets kept for resumption (each single-use: 0-RTT anti-replay).
MAX_TICKETS = 10_000
# Connection IDs across workers: the worker's index (2 bytes, up to 65535
# workers) and 8 random bytes, as unguessable as aioquic's own 8.
WORKER_ID_BYTES = 2
STEERED_CID_LENGTH = WORKER_ID_BYTES + 8
# Stateless resets (RFC 9000 section 10.3) sent per second at most, and the
# smallest packet answered with one (a reset is always shorter than what
# it answers, so two endpoints cannot loop; 21 bytes is the least a reset can be).
MAX_RESETS_PER_S = 100
MIN_RESET_BYTES = 21
STATELESS_RESET_TOKEN_BYTES = 16


@dataclass
class Steering:
    """What one worker of several needs for QUIC (made by the supervisor
    before the workers start, so that every worker has the same): its index,
    the Unix datagram sockets to each worker (``outboxes[i]`` reaches worker
    ``i``; None for itself), its own ``inbox``, and the Retry token handler
    whose key every worker shares, so that a token validates on any of them."""

    index: int
    count: int
    inbox: socket.socket
    outboxes: Sequence[socket.socket | None]
    retry: QuicRetryTokenHandler | None = None
    # Stateless reset tokens are derived from the connection ID with this key,
    # the same in every worker and its replacements: a worker restarted after
    # a crash can tell the clients of the connections that died with its
    # predecessor so at once, instead of leaving them to their idle timeout.
    reset_key: bytes = b""

    @property
    def prefix(self) -> bytes:
        return self.index.to_bytes(WORKER_ID_BYTES, "big")

    def reset_token(self, cid: bytes) -> bytes:
        digest = hmac.digest(self.reset_key, cid, hashlib.sha256)
        return digest[:STATELESS_RESET_TOKEN_BYTES]

    def owner(self, cid: bytes) -> int | None:
        """The worker whose connection ID this is, if it names one."""
        if len(cid) != STEERED_CID_LENGTH:
            return None
        worker = int.from_bytes(cid[:WORKER_ID_BYTES], "big")
        return worker if worker < self.count else None


def pack_forwarded(data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]) -> bytes:
    """A datagram and its client's address, as one Unix datagram."""
    host = addr[0].partition("%")[0]
    if len(addr) == 2:
        return b"\x04" + struct.pack("!H", addr[1]) + socket.inet_pton(socket.AF_INET, host) + data
    flowinfo, scope = addr[2], addr[3]
    return (
        b"\x06"
        + struct.pack("!H", addr[1])
        + socket.inet_pton(socket.AF_INET6, host)
        + struct.pack("!II", flowinfo, scope)
        + data
    )


def unpack_forwarded(msg: bytes) -> tuple[bytes, tuple[str, int] | tuple[str, int, int, int]]:
    (port,) = struct.unpack_from("!H", msg, 1)
    if msg[:1] == b"\x04":
        return msg[7:], (socket.inet_ntop(socket.AF_INET, msg[3:7]), port)
    if msg[:1] == b"\x06":
        flowinfo, scope = struct.unpack_from("!II", msg, 19)
        return msg[27:], (socket.inet_ntop(socket.AF_INET6, msg[3:19]), port, flowinfo, scope)
    raise ValueError("not a forwarded datagram")


def claim_connection_ids(adapter: H3Connection, steering: Steering) -> None:
    """Make every connection ID the connection issues start with the worker's
    prefix, with a stateless reset token any worker can derive again. aioquic
    draws both from os.urandom with no hook, so the first ID (made in its
    constructor, before any packet) is replaced and the refill that issues
    the later ones is wrapped (private parts; aioquic is pinned)."""
    quic = adapter._quic
    prefix = steering.prefix

    def claim(issued: QuicConnectionId) -> None:
        issued.cid = prefix + os.urandom(STEERED_CID_LENGTH - len(prefix))
        issued.stateless_reset_token = steering.reset_token(issued.cid)

    first = quic._host_cids[0]
    claim(first)
    quic.host_cid = first.cid
    quic._local_initial_source_connection_id = first.cid
    refill = quic._replenish_connection_ids

    def replenish() -> None:
        known = len(quic._host_cids)
        refill()
        for issued in quic._host_cids[known:]:
            claim(issued)

    quic._replenish_connection_ids = replenish  # type: ignore[method-assign]


class SessionTickets:
    """Issued TLS session tickets, for resumption and 0-RTT. A ticket is
    taken out when used, so early data cannot be replayed with it."""

    def __init__(self) -> None:
        self._tickets: dict[bytes, SessionTicket] = {}

    def add(self, ticket: SessionTicket) -> None:
        if len(self._tickets) >= MAX_TICKETS:
            self._tickets.pop(next(iter(self._tickets)))
        self._tickets[ticket.ticket] = ticket

    def pop(self, label: bytes) -> SessionTicket | None:
        return self._tickets.pop(label, None)


class QUICListener:
    """One UDP socket serving HTTP/3."""

    def __init__(
        self,
        server: Server,
        sock: socket.socket,
        configuration: QuicConfiguration,
        *,
        retry: bool = False,
        steering: Steering | None = None,
    ) -> None:
        self.server = server
        self.sock = sock
        self.configuration = configuration
        self.loop = asyncio.get_running_loop()
        self.connections: dict[bytes, QUICConnection] = {}
        # Per process: a ticket is single-use (0-RTT anti-replay), which one
        # store shared by workers could only promise with a lock across them.
        self.tickets = SessionTickets()
        self.steering = steering
        # Datagrams handed to their owner worker, and taken from the others.
        self.forwarded_out = 0
        self.forwarded_in = 0
        self.stateless_resets = 0
        self._resets = 0
        self._reset_second = 0
        if steering is not None:
            configuration.connection_id_length = STEERED_CID_LENGTH
            self._retry = steering.retry if retry else None
        else:
            self._retry = QuicRetryTokenHandler() if retry else None
        self._touched: list[QUICConnection] = []
        self._closed = False
        self._gso = sys.platform == "linux"
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._read_ready)
        if steering is not None:
            steering.inbox.setblocking(False)
            self.loop.add_reader(steering.inbox.fileno(), self._inbox_ready)
        # aioquic logs every connection's ALPN and close at INFO (and every
        # packet at DEBUG): one server's worth of that is noise. A level set
        # for "quic" by the embedding application is kept.
        quic_log = logging.getLogger("quic")
        if quic_log.level == logging.NOTSET:
            quic_log.setLevel(logging.WARNING)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        """Take no new connections; open ones keep reading and writing (a
        graceful shutdown needs their acknowledgements) until ``release``."""
        self._closed = True

    def release(self) -> None:
        """Stop reading and close the socket."""
        self._closed = True
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
        if self.steering is not None and self.steering.inbox.fileno() >= 0:
            self.loop.remove_reader(self.steering.inbox.fileno())

    # -- reading -------------------------------------------------------------------

    def _read_ready(self) -> None:
        recv = self.sock.recvfrom
        for _ in range(MAX_BURST):
            try:
                data, addr = recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # ICMP errors surface here; not ours to act on
                log.debug("UDP receive error: %s", exc)
                break
            try:
                self._datagram(data, addr)
            except Exception:
                log.exception("HTTP/3 datagram handling failed")
        self._flush_touched()

    def _inbox_ready(self) -> None:
        """Datagrams another worker received for connections of this one."""
        assert self.steering is not None
        recv = self.steering.inbox.recv
        for _ in range(MAX_BURST):
            try:
                msg = recv(MAX_DATAGRAM + 32)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.debug("forwarded datagram receive error: %s", exc)
                break
            try:
                data, addr = unpack_forwarded(msg)
                self.forwarded_in += 1
                self._datagram(data, addr, forwarded=True)  # type: ignore[arg-type]
            except Exception:
                log.exception("forwarded HTTP/3 datagram handling failed")
        self._flush_touched()

    def _flush_touched(self) -> None:
        touched, self._touched = self._touched, []
        for conn in touched:
            conn.pending = False
            conn._flush()

    def _datagram(self, data: bytes, addr: tuple[str, int], *, forwarded: bool = False) -> None:
        buf = Buffer(data=data)
        try:
            header = pull_quic_header(buf, host_cid_length=self.configuration.connection_id_length)
        except ValueError:
            return
        conn = self.connections.get(header.destination_cid)
        if conn is None:
            steering = self.steering
            if steering is not None and not forwarded:
                # Another worker's connection (the client's address changed,
                # so the kernel picked this socket): hand it over. An Initial
                # whose random ID happens to read as a worker's goes there
                # too, which keeps every datagram with one ID on one worker.
                owner = steering.owner(header.destination_cid)
                if owner is not None and owner != steering.index:
                    self._forward(owner, data, addr)
                    return
            if steering is not None and header.packet_type == QuicPacketType.ONE_RTT:
                self._reset(data, addr, header.destination_cid)
                return
            conn = self._accept(data, addr, header)
            if conn is None:
                return
        try:
            conn.receive(data, addr)
        except Exception:
            # Odd input must cost one connection, never the listener.
            log.exception("HTTP/3 connection failed; closing it")
            conn.abort()
            return
        if not conn.pending:
            conn.pending = True
            self._touched.append(conn)

    def _accept(self, data: bytes, addr: tuple[str, int], header: object) -> QUICConnection | None:
        h = header  # aioquic's QuicHeader
        version = getattr(h, "version", None)
        packet_type = getattr(h, "packet_type", None)
        if (
            packet_type != QuicPacketType.VERSION_NEGOTIATION
            and version is not None
            and version not in self.configuration.supported_versions
        ):
            self.sock.sendto(
                encode_quic_version_negotiation(
                    source_cid=h.destination_cid,  # type: ignore[attr-defined]
                    destination_cid=h.source_cid,  # type: ignore[attr-defined]
                    supported_versions=self.configuration.supported_versions,
                ),
                addr,
            )
            return None
        if (
            self._closed
            or packet_type != QuicPacketType.INITIAL
            or len(data) < SMALLEST_MAX_DATAGRAM_SIZE
        ):
            return None
        dcid: bytes = h.destination_cid  # type: ignore[attr-defined]
        scid: bytes = h.source_cid  # type: ignore[attr-defined]
        token: bytes = h.token  # type: ignore[attr-defined]
        original_dcid: bytes | None = dcid
        retry_scid: bytes | None = None
        if self._retry is not None:
            now = self.loop.time()
            if not token:
                assert version is not None
                source_cid = os.urandom(8)
                self.sock.sendto(
                    encode_quic_retry(
                        version=version,
                        source_cid=source_cid,
                        destination_cid=scid,
                        original_destination_cid=dcid,
                        retry_token=self._retry.create_token(
                            address=addr,
                            original_destination_connection_id=dcid,
                            retry_source_connection_id=source_cid,
                            now=now,
                        ),
                    ),
                    addr,
                )
                return None
            try:
                original_dcid = self._retry.validate_token(
                    address=addr, destination_cid=dcid, token=token, now=now
                )
            except ValueError:
                # RFC 9000 section 8.1.3: close with INVALID_TOKEN, so that
                # the client starts over instead of waiting for a timeout.
                assert version is not None
                self.sock.sendto(
                    _encode_invalid_token_close(
                        version=version, source_cid=dcid, destination_cid=scid
                    ),
                    addr,
                )
                return None
            retry_scid = dcid
        conn = QUICConnection(self, addr, original_dcid, retry_scid)
        self.connections[dcid] = conn
        self.connections[conn.adapter.host_cid] = conn
        conn.cids.update((dcid, conn.adapter.host_cid))
        self.server.track(conn.run())
        return conn

    def _reset(self, data: bytes, addr: tuple[str, int], cid: bytes) -> None:
        """A short-header packet for a connection this worker does not have:
        if the ID is this worker's, its connection died with a predecessor
        (a crash, a restart), so answer with a stateless reset and the
        client closes now instead of at its idle timeout."""
        steering = self.steering
        if steering is None or steering.owner(cid) != steering.index:
            return
        if len(data) <= MIN_RESET_BYTES:
            return
        second = int(self.loop.time())
        if second != self._reset_second:
            self._reset_second, self._resets = second, 0
        if self._resets >= MAX_RESETS_PER_S:
            return
        self._resets += 1
        # Shorter than what it answers (no loops), and looks like any
        # short-header packet: 0b01 then unpredictable bits, the token last.
        size = min(len(data) - 1, 43)
        body = bytearray(os.urandom(size - STATELESS_RESET_TOKEN_BYTES))
        body[0] = 0x40 | (body[0] & 0x3F)
        try:
            self.sock.sendto(bytes(body) + steering.reset_token(cid), addr)
        except OSError as exc:
            log.debug("cannot send a stateless reset: %s", exc)
            return
        self.stateless_resets += 1

    def _forward(self, owner: int, data: bytes, addr: tuple[str, int]) -> None:
        assert self.steering is not None
        outbox = self.steering.outboxes[owner]
        if outbox is None:
            return
        try:
            outbox.send(pack_forwarded(data, addr))
        except (BlockingIOError, InterruptedError):
            # The owner is behind (or restarting): a lost datagram, which
            # QUIC's loss recovery sends again.
            return
        except OSError as exc:
            log.debug("cannot forward a datagram to worker %d: %s", owner, exc)
            return
        self.forwarded_out += 1

    # -- writing -------------------------------------------------------------------

    def send(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
        """Send a connection's datagrams: runs of equal size to one address
        go out in one sendmsg with UDP GSO where the kernel has it (Linux),
        else one sendto each. A full socket buffer drops the rest: QUIC's
        loss recovery sends them again."""
        sock = self.sock
        n = len(datagrams)
        i = 0
        try:
            while i < n:
                data, addr = datagrams[i]
                j = i + 1
                if self._gso and n > 1:
                    size = len(data)
                    total = size
                    while (
                        j < n
                        and j - i < MAX_GSO_SEGMENTS
                        and datagrams[j][1] == addr
                        and len(datagrams[j][0]) <= size
                        and total + len(datagrams[j][0]) <= MAX_GSO_BYTES
                    ):
                        total += len(datagrams[j][0])
                        j += 1
                        if len(datagrams[j - 1][0]) < size:
                            break  # only the last segment may be shorter
                if j - i == 1:
                    sock.sendto(data, addr)
                else:
                    try:
                        sock.sendmsg(
                            [b"".join(d for d, _ in datagrams[i:j])],
                            [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("@H", len(data)))],
                            0,
                            addr,
                        )
                    except (BlockingIOError, InterruptedError):
                        raise
                    except OSError as exc:
                        # No GSO on this kernel or device: one datagram at a time.
                        log.debug("UDP GSO unavailable (%s); sending datagrams one by one", exc)
                        self._gso = False
                        continue
                i = j
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            log.debug("UDP send error: %s", exc)

    def forget(self, conn: QUICConnection) -> None:
        for cid in conn.cids:
            if self.connections.get(cid) is conn:
                del self.connections[cid]
        conn.cids.clear()


class QUICConnection(StreamConnection):
    """One QUIC connection speaking HTTP/3."""

    def __init__(
        self,
        listener: QUICListener,
        addr: tuple[str, int],
        original_dcid: bytes | None,
        retry_scid: bytes | None,
    ) -> None:
        super().__init__(listener.server, tls=True)
        self.alt_svc = None  # the client already speaks HTTP/3 here
        self.listener = listener
        self.addr = addr
        self.client = (addr[0], addr[1])
        sockname = listener.sock.getsockname()
        self.server_addr = (sockname[0], sockname[1])
        self.cids: set[bytes] = set()
        self.pending = False  # in the listener's list of connections to flush
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        server_header = self.config.server_header.encode() if self.config.server_header else None
        self.adapter: H3Connection = H3Connection(
            self.limits,
            listener.configuration,
            original_destination_connection_id=original_dcid,
            retry_source_connection_id=retry_scid,
            session_ticket_fetcher=listener.tickets.pop,
            session_ticket_handler=listener.tickets.add,
            server_header=server_header,
        )
        if listener.steering is not None:
            claim_connection_ids(self.adapter, listener.steering)
        self.server.connections.add(self)

    # -- datagrams in ----------------------------------------------------------------

    def receive(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._closed:
            return
        self.addr = addr
        events = self.adapter.receive_datagram(data, addr, self.loop.time())
        self._dispatch(events)

    def _dispatch(self, events: list[IncomingEvent]) -> None:
        adapter = self.adapter
        if adapter.issued_cids:
            for cid in adapter.issued_cids:
                self.listener.connections[cid] = self
                self.cids.add(cid)
            adapter.issued_cids.clear()
        if adapter.retired_cids:
            for cid in adapter.retired_cids:
                if self.listener.connections.get(cid) is self:
                    del self.listener.connections[cid]
                self.cids.discard(cid)
            adapter.retired_cids.clear()
        if events:
            self._handle_events(events)
        if adapter.terminated:
            self._gone()

    # -- datagrams out ----------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._unflushed = 0
        if self._closed:
            return
        datagrams = self.adapter.datagrams_to_send(self.loop.time())
        if datagrams:
            self.listener.send(datagrams)
        self._arm_timer()
        self._wake_writers()

    def _write(self, data: bytes) -> None:  # pragma: no cover - datagrams only
        raise RuntimeError("QUIC connections send datagrams")

    def _arm_timer(self) -> None:
        at = self.adapter.get_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._closed:
            return
        try:
            events = self.adapter.handle_timer(self.loop.time())
            self._dispatch(events)
        except Exception:
            log.exception("HTTP/3 connection failed; closing it")
            self.abort()
            return
        if not self._closed:
            self._flush()

    # -- lifecycle -----------------------------------------------------------------

    def _close(self) -> None:
        self.adapter.close()
        self._flush()

    def abort(self) -> None:
        if self._closed:
            return
        self.adapter.close("server stopping")
        self._flush()
        self._gone()

    def shutdown(self) -> None:
        """Graceful: GOAWAY; the adapter closes with H3_NO_ERROR once the
        requests it took are answered and acknowledged."""
        if self._closed or self._shutting_down:
            return
        self._shutting_down = True
        self.adapter.start_shutdown()
        self._flush()

    def _gone(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.listener.forget(self)
        if not self._closed:
            self._connection_gone()


def quic_configuration(
    certfile: str, keyfile: str | None, *, idle_timeout_s: float, limits_window: tuple[int, int]
) -> QuicConfiguration:
    """The server's QUIC configuration: h3 ALPN, the certificate, our windows."""
    stream_window, connection_window = limits_window
    cfg = QuicConfiguration(
        is_client=False,
        alpn_protocols=H3_ALPN,
        max_data=connection_window,
        max_stream_data=stream_window,
        idle_timeout=idle_timeout_s,
    )
    cfg.load_cert_chain(certfile, keyfile)
    return cfg


def bind_udp(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A non-blocking UDP socket on ``host:port`` (OSError if it cannot bind);
    with ``reuse_port``, one of several sharing the port (worker processes)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
