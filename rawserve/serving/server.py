"""The server: listeners, the development certificate, startup and graceful
shutdown, ``serve()`` and ``run()``.

Connections live in serving/tcp.py (HTTP/1.1 and HTTP/2 over TCP and TLS);
what they share with every multiplexed protocol is in serving/connection.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import ssl
import sys
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from rawserve.core.config import Config
from rawserve.core.errors import ConfigError
from rawserve.serving.connection import StartOrder, StreamConnection
from rawserve.serving.pressure import Pressure
from rawserve.serving.stream import App
from rawserve.serving.tcp import TCPConnection

if TYPE_CHECKING:
    from rawserve.serving.quic import QUICListener, Steering

log = logging.getLogger("rawserve.serving")


@dataclass
class Listeners:
    """Sockets bound elsewhere (the worker supervisor, serving/workers.py) for
    a Server to serve on instead of binding its own: cleartext and TLS
    listening TCP sockets (one per address of the host) and the QUIC socket."""

    http: list[socket.socket] = field(default_factory=list)
    https: list[socket.socket] = field(default_factory=list)
    quic: socket.socket | None = None


# Connections the kernel queues on a listener before one is accepted.
BACKLOG = 2048
# The longest a worker under the supervisor waits for its app to warm up
# before it takes connections anyway (then answering 503 until warm, as one
# process does): a bound, so that a warm-up that never ends cannot keep a
# worker's queued connections waiting forever.
WARM_WAIT_S = 300.0


def bind_quic(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The UDP socket for HTTP/3 on ``host:port``; ConfigError (one line) if
    the port is taken or cannot be had."""
    from rawserve.serving import quic

    try:
        return quic.bind_udp(host, port, reuse_port=reuse_port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"UDP port {port} on {host} (HTTP/3) is already in use; "
                "--quic-port 0 turns HTTP/3 off"
            ) from None
        raise ConfigError(
            f"cannot listen for HTTP/3 on UDP {host}:{port}: {exc.strerror}"
        ) from None


def resolve_certificate(cfg: Config) -> tuple[str, str]:
    """The certificate and key to serve TLS with: the configured pair, else
    the development certificate (generated on first use, with a warning)."""
    from rawserve.serving import tls

    if cfg.certfile and cfg.keyfile:
        return cfg.certfile, cfg.keyfile
    cert_path, key_path, generated = tls.ensure_dev_certificate(cfg.certs_dir)
    log.warning(
        "%s development certificate %s for localhost, 127.0.0.1 and ::1: "
        "for development only; pass --certfile/--keyfile in production",
        "generated" if generated else "using",
        cert_path,
    )
    return str(cert_path), str(key_path)


class _Clock:
    """The Date header, formatted once a second for every connection."""

    def __init__(self) -> None:
        self.value = formatdate(usegmt=True).encode()
        self.second = 0

    def refresh(self, loop_time: float) -> bytes:
        sec = int(loop_time)
        if sec != self.second:
            self.second = sec
            self.value = formatdate(usegmt=True).encode()
        return self.value


class Server:
    """Run an app: ``async with Server(app, config) as server:`` binds, runs the
    app's startup, and on exit shuts down gracefully."""

    def __init__(
        self,
        app: App,
        config: Config | None = None,
        *,
        listeners: Listeners | None = None,
        steering: Steering | None = None,
    ) -> None:
        self.app = app
        self.config = config or Config()
        # Given sockets (a worker process): served as they are, never bound here.
        self._given = listeners
        # QUIC across worker processes: connection IDs naming this worker, and
        # datagrams for another worker's connections forwarded to it.
        self.steering = steering
        self.connections: set[StreamConnection] = set()
        # Urgent requests' handlers start first (connection.StartOrder).
        self.start_order = StartOrder()
        self.clock = _Clock()
        self.http_port: int | None = None
        self.https_port: int | None = None
        self.certfile: str | None = None
        self.keyfile: str | None = None
        self._listeners: list[asyncio.base_events.Server] = []
        # HTTP/3: the UDP listener, its port, and the Alt-Svc value TLS
        # responses carry while it is on.
        self._quic: Any = None
        self.quic_port: int | None = None
        self.alt_svc: bytes | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # The connection limit, shedding, the periodic checks; their counters.
        self.pressure = Pressure(self)
        self.stats = self.pressure.stats
        self._stop = asyncio.Event()
        self._started = False

    @property
    def quic_listener(self) -> QUICListener | None:
        """The HTTP/3 listener while it is on."""
        return self._quic  # type: ignore[no-any-return]

    def track(self, coro: Any) -> None:
        """Run a connection's main coroutine; the server owns and awaits it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("connection task failed", exc_info=task.exception())

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def start(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        ssl_context: ssl.SSLContext | None = None
        if cfg.port >= 0 or (cfg.quic_port or 0) > 0:
            ssl_context = self._ssl_context()
        startup = getattr(self.app, "startup", None)
        if startup is not None:
            await startup()
        self._started = True
        self._watch_loop_errors(loop)
        self.pressure.start()
        # An app that serves metrics may show the connection counters.
        bind = getattr(self.app, "bind_connection_stats", None)
        if bind is not None:
            bind(self.stats)
        try:
            given = self._given
            if given is not None:
                await self._serve_given(loop, given, ssl_context)
                return
            if cfg.http_port >= 0:
                srv = await self._listen(loop, cfg.http_port, None)
                self.http_port = srv.sockets[0].getsockname()[1]
            if ssl_context is not None:
                if cfg.port >= 0:
                    srv = await self._listen(loop, cfg.port, ssl_context)
                    self.https_port = srv.sockets[0].getsockname()[1]
                # HTTP/3 on the TLS port's number unless told otherwise; it
                # may also run alone (--port -1 --quic-port N).
                quic_port = self.https_port if cfg.quic_port is None else cfg.quic_port
                if quic_port:
                    self._listen_quic(quic_port)
        except BaseException:
            await self._close_listeners()
            raise

    async def _serve_given(
        self,
        loop: asyncio.AbstractEventLoop,
        given: Listeners,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        # A worker beside others takes connections only once its app is warm.
        # The supervisor made these sockets listen before the fork, so until
        # then the kernel queues what it hashes to them in their backlogs (and
        # QUIC datagrams in the UDP socket's buffer, steered there by the
        # supervisor's BPF program or forwarded to the inbox): a wait, not a
        # refusal, instead of a 503 from a cold worker while its siblings are
        # warm. One process keeps listening while it warms up, so that
        # /healthz answers.
        await self._wait_warm(loop)
        for sock in given.http:
            srv = await self._listen(loop, 0, None, sock)
            self.http_port = srv.sockets[0].getsockname()[1]
        if ssl_context is not None:
            for sock in given.https:
                srv = await self._listen(loop, 0, ssl_context, sock)
                self.https_port = srv.sockets[0].getsockname()[1]
            if given.quic is not None:
                self._listen_quic(0, given.quic)

    async def _wait_warm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Until the app says its warm-up has ended (its ``wait_warm``, if it
        has one; a failed warm-up ends it too), at most WARM_WAIT_S."""
        wait_warm = getattr(self.app, "wait_warm", None)
        if wait_warm is None:
            return
        started = loop.time()
        try:
            async with asyncio.timeout(WARM_WAIT_S):
                await wait_warm()
        except TimeoutError:
            log.warning(
                "the app is still warming up after %gs; taking connections anyway "
                "(its readiness check says when it is warm)",
                WARM_WAIT_S,
            )
            return
        log.debug("warm after %.2f s; taking connections", loop.time() - started)

    def _listen_quic(self, port: int, sock: socket.socket | None = None) -> None:
        from rawserve.serving import quic

        cfg = self.config
        assert self.certfile is not None
        if sock is None:
            sock = bind_quic(cfg.host, port)
        limits = cfg.limits
        configuration = quic.quic_configuration(
            self.certfile,
            self.keyfile,
            idle_timeout_s=limits.idle_timeout_s,
            limits_window=(limits.initial_window_bytes, limits.connection_window_bytes),
        )
        self._quic = quic.QUICListener(
            self, sock, configuration, retry=cfg.quic_retry, steering=self.steering
        )
        self.quic_port = self._quic.port
        self.alt_svc = b'h3=":%d"; ma=86400' % self.quic_port

    async def _listen(
        self,
        loop: asyncio.AbstractEventLoop,
        port: int,
        ctx: ssl.SSLContext | None,
        sock: socket.socket | None = None,
    ) -> asyncio.base_events.Server:
        tls = ctx is not None
        try:
            if sock is not None:
                srv = await loop.create_server(
                    lambda: TCPConnection(self, tls=tls),
                    sock=sock,
                    ssl=ctx,
                    backlog=BACKLOG,
                    ssl_handshake_timeout=self.config.limits.header_timeout_s if tls else None,
                )
            else:
                srv = await loop.create_server(
                    lambda: TCPConnection(self, tls=tls),
                    self.config.host,
                    port,
                    ssl=ctx,
                    reuse_address=True,
                    backlog=BACKLOG,
                    ssl_handshake_timeout=self.config.limits.header_timeout_s if tls else None,
                )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {self.config.host} is already in use") from None
            raise ConfigError(
                f"cannot listen on {self.config.host}:{port}: {exc.strerror}"
            ) from None
        self._listeners.append(srv)
        return srv

    def _ssl_context(self) -> ssl.SSLContext:
        from rawserve.serving import tls

        certfile, keyfile = resolve_certificate(self.config)
        self.certfile, self.keyfile = certfile, keyfile
        return tls.create_server_ssl_context(certfile, keyfile)

    def urls(self) -> list[str]:
        return listener_urls(self.config.host, self.http_port, self.https_port, self.quic_port)

    async def serve_forever(self) -> None:
        """Serve until ``stop()`` (or SIGINT/SIGTERM when installed)."""
        await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()

    async def _close_listeners(self) -> None:
        for srv in self._listeners:
            srv.close()
        self._listeners.clear()
        if self._quic is not None:
            # Stop taking new QUIC connections; open ones keep the socket.
            self._quic.close()

    def _watch_loop_errors(self, loop: asyncio.AbstractEventLoop) -> None:
        """Resource exhaustion reported by the loop (accept() out of file
        descriptors) goes to the pressure handling: shed, log rate-limited."""
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if self.pressure.on_loop_error(context, loop.time()):
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)

    async def shutdown(self) -> None:
        if not self._started:
            return
        self._started = False
        # The loop error handler stays: asyncio may still report an accept
        # retry on the listener just closed (pressure.py).
        await self.pressure.stop()
        await self._close_listeners()
        for conn in list(self.connections):
            conn.shutdown()
        deadline = self.config.graceful_timeout_s
        drain = getattr(self.app, "drain", None)
        draining: asyncio.Task[None] | None = None
        if drain is not None:
            # The app's own queues (the inference engine) get most of the grace
            # period, so that what is left answers 503 before connections close.
            draining = asyncio.get_running_loop().create_task(drain(deadline * 0.8))
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=deadline)
            if pending:
                log.warning(
                    "graceful timeout of %gs passed; closing %d connection(s)",
                    deadline,
                    len(pending),
                )
                for conn in list(self.connections):
                    conn.abort()
                await asyncio.wait(pending, timeout=2)
        if draining is not None:
            await draining
        if self._quic is not None:
            self._quic.release()
            self._quic = None
        shutdown = getattr(self.app, "shutdown", None)
        if shutdown is not None:
            await shutdown()


def listener_urls(
    host: str, http_port: int | None, https_port: int | None, quic_port: int | None
) -> list[str]:
    """What the ready banner lists: one URL per listener."""
    shown = f"[{host}]" if ":" in host else host
    out = []
    if http_port is not None:
        out.append(f"http://{shown}:{http_port}  (HTTP/1.1, h2c)")
    if https_port is not None:
        out.append(f"https://{shown}:{https_port}  (HTTP/1.1, h2)")
    if quic_port is not None:
        out.append(f"https://{shown}:{quic_port}  (HTTP/3, UDP)")
    return out


def quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # A client that fails the TLS handshake or drops mid-write is not a server
    # error; keep the log for things that are.
    exc = context.get("exception")
    if isinstance(exc, ssl.SSLError | ConnectionError | TimeoutError):
        log.debug("connection error: %s", exc)
        return
    loop.default_exception_handler(context)


async def serve(app: App, config: Config, *, install_signals: bool = True) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(quiet_exception_handler)
    server = Server(app, config)
    async with server:
        banner = ["rawserve ready:"] + [f"  {url}" for url in server.urls()]
        print("\n".join(banner), file=sys.stderr, flush=True)
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, server.stop)
        await server.serve_forever()
        log.info("shutting down: draining connections (up to %gs)", config.graceful_timeout_s)


def resolve_loop(name: str) -> str:
    """'uvloop' or 'asyncio' for ``loop=name`` (auto: uvloop when installed);
    ConfigError if uvloop is asked for and missing."""
    if name == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if name == "uvloop":
            raise ConfigError(
                "--loop uvloop: uvloop is not installed (pip install 'rawserve[uvloop]')"
            ) from None
        return "asyncio"
    return "uvloop"


def run(app: App, config: Config | None = None, **options: Any) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, like ``uvicorn.run``."""
    cfg = (config or Config()).with_options(**options) if options else (config or Config())
    if resolve_loop(cfg.loop) == "uvloop":
        import uvloop

        uvloop.run(serve(app, cfg))
    else:
        asyncio.run(serve(app, cfg))
