"""``--workers N``: N server processes on one box, and their supervisor.

The supervisor (the process started) binds every listener once per worker
with SO_REUSEPORT, so the kernel spreads new TCP connections and UDP flows
over the workers' sockets, and a port that is taken is found once, here, as
the one-line error a single process gives. It then forks the workers; each
makes its own app (engine, models) and serves its own set of sockets with
its own event loop. The supervisor keeps every set open: a worker that dies
is replaced on the same sockets, and connections the kernel queued for it
meanwhile wait in its backlog instead of being refused. A worker takes
connections from its sockets only once its app is warm (``Server``,
``_serve_given``), so a cold worker never answers 503 while its siblings
could have answered; the banner, and "serving again" after a restart, mean
warm.

QUIC across workers is in serving/quic.py (``Steering``): connection IDs
name their worker and datagrams for another worker's connection are
forwarded to it over the Unix datagram sockets made here. ``/metrics``:
``MetricsBoard`` below.

The supervisor is synchronous (a selector on the workers' status pipes and
a signal wakeup pipe): it runs no event loop, so forking a replacement from
it never copies a running loop's state or a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import mmap
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rawserve.core.config import Config
from rawserve.core.errors import ConfigError
from rawserve.inference.metrics import Registry
from rawserve.serving.quic import Steering
from rawserve.serving.server import (
    BACKLOG,
    Listeners,
    Server,
    bind_quic,
    listener_urls,
    quiet_exception_handler,
    resolve_certificate,
)
from rawserve.serving.stream import App

log = logging.getLogger("rawserve.serving.workers")

# A worker that dies within this long of starting counts as failing again:
# its next restart waits twice as long, from RESTART_DELAY_S up to RESTART_MAX_S.
RESTART_DELAY_S = 0.1
RESTART_MAX_S = 10.0
HEALTHY_AFTER_S = 30.0
# After the graceful timeout, workers still draining get this long, then SIGKILL.
KILL_GRACE_S = 5.0
# Forwarded QUIC datagrams a worker may have queued for another (the kernel
# caps it at net.core.wmem_max); past it they are dropped, as a full UDP
# socket would.
FORWARD_BUFFER_BYTES = 4 * 1024 * 1024
# How often a worker publishes its metrics for the others to show.
PUBLISH_EVERY_S = 1.0
SIGNALS = (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM)
# How QUIC datagrams reach the worker owning their connection: "kernel" (a
# classic BPF program on the UDP sockets picks the socket by connection ID;
# the default where it attaches, Linux) or "forward" (the kernel hashes by
# address and workers forward what is not theirs; the fallback). Both
# forward whatever still lands on the wrong worker.
STEERING_ENV = "RAWSERVE_QUIC_STEERING"
# Linux, include/uapi/asm-generic/socket.h.
SO_ATTACH_REUSEPORT_CBPF = 51


def worker_count(requested: int) -> int:
    """``--workers``: 0 is one per core this process may run on."""
    if requested > 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# -- binding ---------------------------------------------------------------------


def _tcp_addresses(host: str, port: int) -> list[tuple[int, Any]]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    seen: list[tuple[int, Any]] = []
    for family, _, _, _, addr in infos:
        if (family, addr) not in seen:
            seen.append((family, addr))
    return seen


def _port_in_use(family: int, kind: int, addr: Any) -> bool:
    """Whether anyone holds ``addr`` already. Binding with SO_REUSEPORT would
    otherwise join another server's group (same user) and split its
    traffic instead of failing."""
    with socket.socket(family, kind) as probe:
        if kind == socket.SOCK_STREAM:
            # Not fooled by connections in TIME_WAIT; a listener still counts.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            probe.bind(addr)
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def bind_tcp(host: str, port: int) -> list[socket.socket]:
    """Listening TCP sockets with SO_REUSEPORT on every address of ``host``;
    port 0 picks one port for them all. ConfigError (one line) on failure."""
    socks: list[socket.socket] = []
    try:
        for family, addr in _tcp_addresses(host, port):
            if socks:
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        for sock in socks:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return socks


@dataclass
class WorkerSockets:
    """One worker's listeners and its QUIC steering; the supervisor keeps them."""

    listeners: Listeners
    steering: Steering | None = None

    def all(self) -> Iterator[socket.socket]:
        yield from self.listeners.http
        yield from self.listeners.https
        if self.listeners.quic is not None:
            yield self.listeners.quic
        if self.steering is not None:
            yield self.steering.inbox


def steer_by_connection_id(sock: socket.socket) -> None:
    """Attach to ``sock``'s SO_REUSEPORT group a classic BPF program that
    returns, for a QUIC packet whose destination connection ID is one of
    ours (STEERED_CID_LENGTH bytes, worker index first), that index: the
    group's sockets are numbered in bind order, worker 0's first, so the
    kernel hands the datagram to its owner whatever the client's address.
    Anything else (a client's first Initial, junk) returns an index out of
    range, and the kernel falls back to its hash of the addresses. OSError
    where the kernel has no such option."""
    from rawserve.serving.quic import STEERED_CID_LENGTH

    ld_b, ld_h, jset, jeq, ret_a, ret_k = 0x30, 0x28, 0x45, 0x15, 0x16, 0x06
    program = [
        (ld_b, 0, 0, 0),  # A = first byte
        (jset, 2, 0, 0x80),  # long header: to 4
        (ld_h, 0, 0, 1),  # short: A = the two bytes after it (the worker)
        (ret_a, 0, 0, 0),
        (ld_b, 0, 0, 5),  # long: A = connection ID length
        (jeq, 0, 2, STEERED_CID_LENGTH),  # not ours: to 8
        (ld_h, 0, 0, 6),  # A = its first two bytes
        (ret_a, 0, 0, 0),
        (ret_k, 0, 0, 0xFFFFFFFF),  # out of range: hash
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def bind_workers(cfg: Config, count: int) -> tuple[list[WorkerSockets], dict[str, int]]:
    """Every worker's sockets, bound here; and the ports they ended up on."""
    host = cfg.host
    tls = cfg.port >= 0 or (cfg.quic_port or 0) > 0
    ports: dict[str, int] = {}
    # Checked once, before the first SO_REUSEPORT bind (see _port_in_use).
    for kind, port in (("http", cfg.http_port), ("https", cfg.port)):
        if port > 0 and (kind == "http" or tls):
            for family, addr in _tcp_addresses(host, port):
                if _port_in_use(family, socket.SOCK_STREAM, addr):
                    raise ConfigError(f"port {port} on {host} is already in use")
    sets: list[WorkerSockets] = []
    try:
        for _ in range(count):
            listeners = Listeners()
            sets.append(WorkerSockets(listeners))
            if cfg.http_port >= 0:
                listeners.http = bind_tcp(host, ports.get("http", cfg.http_port))
                ports["http"] = listeners.http[0].getsockname()[1]
            if tls and cfg.port >= 0:
                listeners.https = bind_tcp(host, ports.get("https", cfg.port))
                ports["https"] = listeners.https[0].getsockname()[1]
            quic_port = ports.get("https") if cfg.quic_port is None else cfg.quic_port
            if tls and quic_port:
                if "quic" not in ports:
                    family = socket.AF_INET6 if ":" in host else socket.AF_INET
                    if _port_in_use(family, socket.SOCK_DGRAM, (host, quic_port)):
                        raise ConfigError(
                            f"UDP port {quic_port} on {host} (HTTP/3) is already in use; "
                            "--quic-port 0 turns HTTP/3 off"
                        )
                listeners.quic = bind_quic(host, ports.get("quic", quic_port), reuse_port=True)
                ports["quic"] = listeners.quic.getsockname()[1]
        if "quic" in ports:
            _add_steering(sets, cfg)
    except BaseException:
        for ws in sets:
            for sock in ws.all():
                sock.close()
        raise
    return sets, ports


def steering_mode(sets: list[WorkerSockets]) -> str:
    """Steer QUIC datagrams in the kernel where it can (see STEERING_ENV)."""
    wanted = os.environ.get(STEERING_ENV, "kernel")
    if wanted not in ("kernel", "forward"):
        raise ConfigError(f"{STEERING_ENV}={wanted!r}: expected 'kernel' or 'forward'")
    quic = sets[0].listeners.quic if sets else None
    if wanted == "forward" or quic is None:
        return "forward"
    try:
        steer_by_connection_id(quic)
    except OSError as exc:
        log.info("QUIC steering in the kernel unavailable (%s); workers forward", exc)
        return "forward"
    return "kernel"


def _add_steering(sets: list[WorkerSockets], cfg: Config) -> None:
    from aioquic.quic.retry import QuicRetryTokenHandler

    # One key for every worker: a Retry token one issued validates on any.
    retry = QuicRetryTokenHandler() if cfg.quic_retry else None
    reset_key = os.urandom(32)
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in sets]
    for outbox, inbox in pairs:
        # A socketpair's peer is not bounded by net.unix.max_dgram_qlen, only
        # by the sender's buffer.
        outbox.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, FORWARD_BUFFER_BYTES)
        inbox.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, FORWARD_BUFFER_BYTES)
        outbox.setblocking(False)
        inbox.setblocking(False)
    for i, ws in enumerate(sets):
        ws.steering = Steering(
            index=i,
            count=len(sets),
            inbox=pairs[i][1],
            outboxes=[None if j == i else out for j, (out, _) in enumerate(pairs)],
            retry=retry,
            reset_key=reset_key,
        )


# -- metrics -----------------------------------------------------------------------


class MetricsBoard:
    """Every worker's latest metrics exposition, in memory shared by all (an
    anonymous shared mapping made before the fork): a scrape reaches one
    worker, chosen by the kernel, and that worker answers with its own
    series and the others' as last published (at most PUBLISH_EVERY_S old),
    each labelled ``worker``. A slot is a sequence number (odd while being
    written), a length and the text: readers copy and check the number did
    not move, so nobody waits on anybody."""

    SLOT_BYTES = 1 << 20
    HEADER = struct.Struct("=QQ")

    def __init__(self, count: int) -> None:
        self.count = count
        self._map = mmap.mmap(-1, count * self.SLOT_BYTES)
        self._too_large_logged = False

    def publish(self, index: int, text: bytes) -> None:
        limit = self.SLOT_BYTES - self.HEADER.size
        if len(text) > limit:
            if not self._too_large_logged:
                self._too_large_logged = True
                log.warning(
                    "worker %d metrics (%d bytes) exceed the %d shared for them; "
                    "the other workers show none of them",
                    index,
                    len(text),
                    limit,
                )
            text = b""
        base = index * self.SLOT_BYTES
        seq, _ = self.HEADER.unpack_from(self._map, base)
        seq += 1 if seq % 2 == 0 else 2  # a writer killed mid-write left it odd
        self.HEADER.pack_into(self._map, base, seq, 0)
        start = base + self.HEADER.size
        self._map[start : start + len(text)] = text
        self.HEADER.pack_into(self._map, base, seq + 1, len(text))

    def read(self, index: int) -> bytes:
        base = index * self.SLOT_BYTES
        start = base + self.HEADER.size
        for _ in range(8):
            seq, length = self.HEADER.unpack_from(self._map, base)
            if seq % 2:
                continue
            text = self._map[start : start + length]
            if self.HEADER.unpack_from(self._map, base)[0] == seq:
                return text
        return b""

    def others(self, index: int) -> list[bytes]:
        return [self.read(i) for i in range(self.count) if i != index]


def _share_metrics(app: Any, server: Server, board: MetricsBoard, index: int) -> Registry | None:
    """The app's metrics registry, if it has one (the built-in app), shows
    every worker's series, and this worker's QUIC forwarding counts."""
    registry = getattr(app, "metrics", None)
    if not isinstance(registry, Registry):
        return None
    registry.share(str(index), lambda: board.others(index))
    quic = server.quic_listener
    if quic is not None and registry.get("rawserve_quic_datagrams_forwarded") is None:
        registry.gauge(
            "rawserve_quic_datagrams_forwarded",
            "QUIC datagrams for another worker's connection (a client whose address "
            "changed), by direction: out to their owner, in from another worker.",
            ["direction"],
            callback=lambda: {("out",): quic.forwarded_out, ("in",): quic.forwarded_in},
        )
        registry.gauge(
            "rawserve_quic_stateless_resets",
            "Stateless resets sent for connections that died with a worker, since start.",
            callback=lambda: quic.stateless_resets,
        )
    return registry


# -- one worker --------------------------------------------------------------------


class _Tagged(logging.Formatter):
    """Each worker's log lines start with its index and pid."""

    def __init__(self, inner: logging.Formatter | None, tag: str) -> None:
        super().__init__()
        self._inner = inner or logging.Formatter()
        self._tag = tag

    def format(self, record: logging.LogRecord) -> str:
        return self._tag + self._inner.format(record)


async def _serve_worker(
    app: App,
    cfg: Config,
    sockets: WorkerSockets,
    board: MetricsBoard,
    index: int,
    ready: Callable[[], None],
    lifeline: int,
) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(quiet_exception_handler)
    server = Server(app, cfg, listeners=sockets.listeners, steering=sockets.steering)
    async with server:
        registry = _share_metrics(app, server, board, index)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)

        def orphaned() -> None:
            # The supervisor's end of the lifeline closed: it is gone (killed,
            # say), and nobody would restart or stop this worker. Drain.
            loop.remove_reader(lifeline)
            log.warning("the supervisor is gone; draining")
            server.stop()

        loop.add_reader(lifeline, orphaned)
        ready()

        async def publish() -> None:
            while True:
                if registry is not None:
                    board.publish(index, registry.render_own())
                await asyncio.sleep(PUBLISH_EVERY_S)

        publisher = loop.create_task(publish())
        try:
            await server.serve_forever()
        finally:
            # Told to stop. When the whole process group is signalled (a
            # terminal's Ctrl-C, `kill -- -PGID`) SIGTERM comes twice, once
            # from the supervisor: a second one landing while the loop closes
            # found its wakeup socket gone ("Exception ignored when trying to
            # write to the signal wakeup fd"). The drain needs no more signals;
            # the supervisor kills a worker that overstays.
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
                signal.signal(sig, signal.SIG_IGN)
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
        log.info("shutting down: draining connections (up to %gs)", cfg.graceful_timeout_s)


def _worker_main(
    make_app: Callable[[], App],
    cfg: Config,
    sockets: WorkerSockets,
    board: MetricsBoard,
    index: int,
    status: int,
    lifeline: int,
) -> int:
    """A forked worker: make the app, serve until told to stop. Writes b"R"
    to ``status`` once serving (its app warm), or b"E" and the reason if it
    never gets there."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_Tagged(handler.formatter, f"[worker {index} pid {os.getpid()}] "))
    started = False

    def ready() -> None:
        nonlocal started
        started = True
        os.write(status, b"R")

    try:
        app = make_app()
        coro = _serve_worker(app, cfg, sockets, board, index, ready, lifeline)
        if cfg.loop == "uvloop":
            import uvloop

            uvloop.run(coro)
        else:
            asyncio.run(coro)
        return 0
    except ConfigError as exc:
        if started:
            raise
        os.write(status, b"E" + " ".join(str(exc).split()).encode())
        return 1
    except BaseException as exc:
        if not started:
            os.write(status, b"E" + f"worker {index} failed to start: {exc!r}".encode())
        raise


# -- the supervisor ----------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    pid: int = 0
    status: int = -1  # read end of its status pipe; -1 once closed
    started_at: float = 0.0
    ready: bool = False
    error: str = ""
    failures: int = 0  # consecutive early deaths: the backoff
    restart_at: float | None = None
    exits: list[int] = field(default_factory=list)


def _describe_exit(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    """Starts ``count`` workers, restarts any that dies (with backoff),
    forwards SIGTERM/SIGINT to all for a graceful drain and returns once
    every one has exited."""

    def __init__(self, make_app: Callable[[], App], cfg: Config, count: int) -> None:
        self.make_app = make_app
        self.count = count
        if cfg.port >= 0 or (cfg.quic_port or 0) > 0:
            # Once, here: workers generating the development certificate at
            # the same time would each write their own.
            certfile, keyfile = resolve_certificate(cfg)
            cfg = cfg.with_options(certfile=certfile, keyfile=keyfile)
        self.cfg = cfg
        self.sets, self.ports = bind_workers(cfg, count)
        self.board = MetricsBoard(count)
        self.steering = steering_mode(self.sets) if "quic" in self.ports else None
        self.workers = [_Worker(i) for i in range(count)]
        self.stopping = False
        self.failed: str | None = None
        self._selector = selectors.DefaultSelector()
        self._wakeup_r, self._wakeup_w = os.pipe()
        # Workers watch the read end: it reads EOF once this process is gone
        # however it went, so that no worker is left serving unsupervised.
        self._lifeline_r, self._lifeline_w = os.pipe()
        self._announced = False
        self._kill_at: float | None = None

    # -- running ---------------------------------------------------------------

    def run(self) -> int:
        os.set_blocking(self._wakeup_r, False)
        os.set_blocking(self._wakeup_w, False)
        previous = {sig: signal.signal(sig, _noop) for sig in SIGNALS}
        old_wakeup = signal.set_wakeup_fd(self._wakeup_w)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ)
        try:
            for worker in self.workers:
                self._start(worker)
            while any(w.pid for w in self.workers) or not self.stopping:
                self._step()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._close()
        if self.failed is not None:
            raise ConfigError(self.failed)
        drained = all(w.exits and w.exits[-1] == 0 for w in self.workers)
        return 0 if drained else 1

    def _step(self) -> None:
        now = time.monotonic()
        deadlines = [w.restart_at for w in self.workers if w.restart_at is not None]
        if self._kill_at is not None:
            deadlines.append(self._kill_at)
        timeout = max(0.0, min(deadlines) - now) if deadlines else None
        for key, _ in self._selector.select(timeout):
            if key.fd == self._wakeup_r:
                self._signals()
            else:
                self._status(key.data)
        self._reap()
        now = time.monotonic()
        for worker in self.workers:
            if worker.restart_at is not None and now >= worker.restart_at and not self.stopping:
                worker.restart_at = None
                self._start(worker)
        if self._kill_at is not None and now >= self._kill_at:
            self._kill_at = None
            for worker in self.workers:
                if worker.pid:
                    log.warning(
                        "worker %d (pid %d) still draining; killing it", worker.index, worker.pid
                    )
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGKILL)

    def _signals(self) -> None:
        try:
            received = os.read(self._wakeup_r, 512)
        except BlockingIOError:
            return
        for signum in received:
            if signum in (signal.SIGINT, signal.SIGTERM):
                self.stop(signal.Signals(signum).name)

    def stop(self, why: str) -> None:
        """Drain every worker: each does what one process does on SIGTERM."""
        if self.stopping:
            return
        self.stopping = True
        log.info(
            "%s: draining %d worker(s) (up to %gs)", why, self.count, self.cfg.graceful_timeout_s
        )
        # Our copies of the listeners close first, so that the kernel
        # refuses new connections once the workers close theirs.
        for ws in self.sets:
            for sock in ws.listeners.http + ws.listeners.https:
                sock.close()
        for worker in self.workers:
            worker.restart_at = None
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        self._kill_at = time.monotonic() + self.cfg.graceful_timeout_s + KILL_GRACE_S

    # -- workers ---------------------------------------------------------------

    def _start(self, worker: _Worker) -> None:
        read_end, write_end = os.pipe()
        # Signals stay blocked across the fork, so that none reaches the child
        # while it still has the supervisor's handlers and wakeup pipe.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                os.close(read_end)
                self._child(worker.index, write_end, mask)  # never returns
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(write_end)
        os.set_blocking(read_end, False)
        worker.pid = pid
        worker.status = read_end
        worker.ready = False
        worker.error = ""
        worker.started_at = time.monotonic()
        self._selector.register(read_end, selectors.EVENT_READ, worker)

    def _child(self, index: int, status: int, mask: Iterable[int]) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self._selector.close()
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)
            os.close(self._lifeline_w)
            for other in self.workers:
                if other.status >= 0:
                    os.close(other.status)
            for i, ws in enumerate(self.sets):
                if i != index:
                    for sock in ws.listeners.http + ws.listeners.https:
                        sock.close()
                    if ws.listeners.quic is not None:
                        ws.listeners.quic.close()
                    if ws.steering is not None:
                        ws.steering.inbox.close()
            code = _worker_main(
                self.make_app,
                self.cfg,
                self.sets[index],
                self.board,
                index,
                status,
                self._lifeline_r,
            )
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _status(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.status, 4096)
        except BlockingIOError:
            return
        if not data:
            self._selector.unregister(worker.status)
            os.close(worker.status)
            worker.status = -1
            return
        if data.startswith(b"R"):
            worker.ready = True
            if self._announced:
                log.info("worker %d (pid %d) is serving again", worker.index, worker.pid)
            self._announce()
        elif data.startswith(b"E"):
            worker.error = data[1:].decode(errors="replace")

    def _announce(self) -> None:
        if self._announced or not all(w.ready for w in self.workers):
            return
        self._announced = True
        p = self.ports
        urls = listener_urls(self.cfg.host, p.get("http"), p.get("https"), p.get("quic"))
        pids = ", ".join(str(w.pid) for w in self.workers)
        banner = ["rawserve ready:"] + [f"  {url}" for url in urls]
        if self.steering is not None:
            how = "the kernel" if self.steering == "kernel" else "forwarding between workers"
            banner.append(f"  HTTP/3 datagrams reach their connection's worker by {how}")
        banner.append(f"  {self.count} workers (pids {pids}), supervisor pid {os.getpid()}")
        print("\n".join(banner), file=sys.stderr, flush=True)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next((w for w in self.workers if w.pid == pid), None)
            if worker is not None:
                self._exited(worker, status)

    def _exited(self, worker: _Worker, status: int) -> None:
        if worker.status >= 0:
            # What it wrote before dying (its reason) is still in the pipe.
            with contextlib.suppress(BlockingIOError):
                while worker.status >= 0:
                    self._status(worker)
        pid, worker.pid = worker.pid, 0
        code = os.waitstatus_to_exitcode(status)
        if self.stopping and not worker.ready and code == -signal.SIGTERM:
            code = 0  # stopped before it served: not a failed drain
        worker.exits.append(code)
        self.board.publish(worker.index, b"")  # its series leave /metrics until it is back
        if self.stopping:
            return
        how = _describe_exit(status)
        if not self._announced:
            # The first start failed: an app that cannot be imported, a model
            # that cannot load. Restarting would only repeat it.
            self.failed = worker.error or f"worker {worker.index} {how} before it was ready"
            self.stop("a worker failed to start")
            return
        uptime = time.monotonic() - worker.started_at
        worker.failures = 0 if uptime >= HEALTHY_AFTER_S else worker.failures + 1
        delay = min(RESTART_MAX_S, RESTART_DELAY_S * 2 ** max(0, worker.failures - 1))
        log.warning(
            "worker %d (pid %d) %s after %.1f s; restarting it in %.1f s",
            worker.index,
            pid,
            how,
            uptime,
            delay,
        )
        worker.restart_at = time.monotonic() + delay

    def _close(self) -> None:
        self._selector.close()
        for fd in (self._wakeup_r, self._wakeup_w, self._lifeline_r, self._lifeline_w):
            os.close(fd)
        for ws in self.sets:
            for sock in ws.all():
                sock.close()
            if ws.steering is not None:
                for out in ws.steering.outboxes:
                    if out is not None:
                        out.close()


def _noop(signum: int, frame: object) -> None:
    """Signals reach the supervisor's loop through the wakeup pipe."""


def run(make_app: Callable[[], App], cfg: Config) -> int:
    """Serve with ``worker_count(cfg.workers)`` processes until SIGINT/SIGTERM;
    the exit status: 0 if every worker drained cleanly."""
    if sys.platform == "win32" or not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("--workers needs SO_REUSEPORT (Linux, BSD, macOS)")
    return Supervisor(make_app, cfg, worker_count(cfg.workers)).run()
