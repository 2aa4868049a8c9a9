"""Connections under pressure: the connection limit, shedding the connections
that make no progress, the periodic checks (header data rate, stalled request
bodies), their counters, and a log that resource exhaustion cannot flood.

Every TCP connection is admitted here (``admit``) and released when it goes
(``release``). At the limit, a new connection makes room by closing the
connections that cost a file descriptor and give nothing back, worst first:
one whose request head is still arriving (the slowest first, one that sent
nothing before all), then an idle HTTP/1.1 keep-alive, then an HTTP/2
connection without a stream, and only then a head that began less than a
second ago. A connection with a request in progress is never shed; when every
connection has one, the newcomer is refused (closed at once).
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rawserve.serving.server import Server

log = logging.getLogger("rawserve.serving")

# File descriptors kept back from RLIMIT_NOFILE for everything that is not a
# client connection: listeners, the loop's selector and self-pipe, stdio, log
# files, model files, thread pools, HTTP/3's UDP socket, cache backends.
HEADROOM_FRACTION = 0.1
HEADROOM_MIN_FDS = 64
# Shedding scans every connection; doing it for a batch at a time keeps the
# cost per accepted connection constant under a flood.
SHED_BATCH_FRACTION = 1 / 32
# A request head is held to the minimum rate only after this long: a client's
# first packet may be small, and a round trip may pass before the rest.
HEADER_RATE_GRACE_S = 1.0
RESOURCE_LOG_INTERVAL_S = 10.0
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# Why connections are closed here (the label of the shed counter).
SHED_HEAD = "head_incomplete"  # at the limit: request head still arriving
SHED_IDLE = "idle_keep_alive"  # at the limit: HTTP/1.1 between requests
SHED_H2_IDLE = "idle_http2"  # at the limit: HTTP/2 without a stream
SHED_HEADER_RATE = "header_rate"  # request head below the minimum rate
SHED_REASONS = (SHED_HEAD, SHED_IDLE, SHED_H2_IDLE, SHED_HEADER_RATE)


def default_connection_limit() -> int:
    """RLIMIT_NOFILE's soft limit less a tenth (at least 64) for the
    process's other files: 1024 -> 921, 65536 -> 58983."""
    try:
        import resource
    except ImportError:  # not Unix
        return 1024
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > 1 << 24:
        soft = 1 << 24
    headroom = max(HEADROOM_MIN_FDS, int(soft * HEADROOM_FRACTION))
    return max(1, soft - headroom)


class Shedable(Protocol):
    def shed_rank(self, now: float) -> tuple[int, float] | None:
        """(class, key) if the connection makes no progress, lowest shed first;
        None while it has a request in progress."""

    def shed(self, reason: str) -> None:
        """Close now, for ``reason``."""

    def check(self, now: float) -> None:
        """The periodic checks: header data rate, stalled request bodies."""


# Shedding order: (rank, key) ascending. A head younger than
# HEADER_RATE_GRACE_S has no rate yet; it goes last.
SHED_RANK_HEAD, SHED_RANK_IDLE, SHED_RANK_H2_IDLE, SHED_RANK_YOUNG = range(4)
_RANK_REASON = {
    SHED_RANK_HEAD: SHED_HEAD,
    SHED_RANK_IDLE: SHED_IDLE,
    SHED_RANK_H2_IDLE: SHED_H2_IDLE,
    SHED_RANK_YOUNG: SHED_HEAD,
}


@dataclass
class ConnectionStats:
    """Counters of the connection limit, readable on ``Server.stats``."""

    limit: int = 0
    accepted: int = 0
    # At the limit with nothing to shed: closed at once.
    refused: int = 0
    shed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SHED_REASONS, 0))
    # Requests cut because their body stopped arriving (408 / RST_STREAM).
    body_timeouts: int = 0
    # accept() failures for lack of file descriptors or memory.
    accept_errors: int = 0
    open_fn: Callable[[], int] = lambda: 0

    @property
    def open(self) -> int:
        return self.open_fn()

    def register(self, registry: Any, current: Callable[[], ConnectionStats] | None = None) -> None:
        """Show these counters on a metrics registry that takes callback
        gauges (``rawserve.inference.metrics.Registry``): what an app's
        ``bind_connection_stats(stats)`` hook calls. Counts since start are
        gauges read at scrape time, named without ``_total``. ``current``, if
        given, names the stats to read at each scrape (an app served by one
        server after another registers once)."""
        now: Callable[[], ConnectionStats] = current or (lambda: self)
        g = registry.gauge
        g("rawserve_connections_open", "Open TCP connections.", callback=lambda: now().open)
        g(
            "rawserve_connections_limit",
            "The connection limit in effect.",
            callback=lambda: now().limit,
        )
        g(
            "rawserve_connections_accepted",
            "TCP connections accepted since start.",
            callback=lambda: now().accepted,
        )
        g(
            "rawserve_connections_refused",
            "Connections closed on arrival: at the limit, every connection busy.",
            callback=lambda: now().refused,
        )
        g(
            "rawserve_connections_shed",
            "Connections closed for making no progress, by reason, since start.",
            ["reason"],
            callback=lambda: {(reason,): n for reason, n in now().shed.items()},
        )
        g(
            "rawserve_request_body_timeouts",
            "Requests cut because their body stopped arriving, since start.",
            callback=lambda: now().body_timeouts,
        )
        g(
            "rawserve_accept_errors",
            "accept() failures for lack of descriptors or memory, since start.",
            callback=lambda: now().accept_errors,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "limit": self.limit,
            "accepted": self.accepted,
            "refused": self.refused,
            "shed": dict(self.shed),
            "body_timeouts": self.body_timeouts,
            "accept_errors": self.accept_errors,
        }


class Pressure:
    """The connection limit and the periodic checks of one Server."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.limits = server.config.limits
        self.connections: set[Shedable] = set()
        self.stats = ConnectionStats(open_fn=lambda: len(self.connections))
        self.max_connections = 0
        self._task: asyncio.Task[None] | None = None
        self._resource_logged_at = -RESOURCE_LOG_INTERVAL_S
        self._resource_held_back = 0

    def start(self) -> None:
        self.max_connections = self.limits.connections or default_connection_limit()
        self.stats.limit = self.max_connections
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    # -- admission -------------------------------------------------------------

    def admit(self, conn: Shedable, now: float) -> bool:
        """Whether a new connection may stay; makes room at the limit."""
        self.stats.accepted += 1
        if len(self.connections) >= self.max_connections:
            self.make_room(now)
            if len(self.connections) >= self.max_connections:
                self.stats.refused += 1
                return False
        self.connections.add(conn)
        return True

    def release(self, conn: Shedable) -> None:
        self.connections.discard(conn)

    def make_room(self, now: float) -> int:
        """Shed a batch of the connections making least progress; how many."""
        batch = max(
            1,
            len(self.connections) - self.max_connections + 1,
            int(self.max_connections * SHED_BATCH_FRACTION),
        )
        ranked = []
        for conn in self.connections:
            rank = conn.shed_rank(now)
            if rank is not None:
                ranked.append((rank, id(conn), conn))
        victims = heapq.nsmallest(batch, ranked)
        for (cls, _), _, conn in victims:
            self.shed(conn, _RANK_REASON[cls])
        return len(victims)

    def shed(self, conn: Shedable, reason: str) -> None:
        self.stats.shed[reason] += 1
        self.connections.discard(conn)  # its descriptor is as good as free
        conn.shed(reason)

    # -- the periodic checks ---------------------------------------------------

    def interval(self) -> float:
        interval = 0.5
        if self.limits.body_timeout_s > 0:
            interval = min(interval, self.limits.body_timeout_s / 4)
        return max(0.05, interval)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.interval()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for conn in list(self.connections):
                try:
                    conn.check(now)
                except Exception:
                    log.exception("connection check failed")

    # -- resource exhaustion ------------------------------------------------------

    def on_loop_error(self, context: dict[str, Any], now: float) -> bool:
        """Handle asyncio's "accept() out of system resource" (EMFILE, ENFILE,
        ENOBUFS, ENOMEM): shed to free descriptors, and log at most once per
        RESOURCE_LOG_INTERVAL_S with the count held back. True if handled."""
        exc = context.get("exception")
        callback = getattr(context.get("handle"), "_callback", None)
        if getattr(callback, "__name__", "") == "_start_serving" and isinstance(exc, ValueError):
            # asyncio retries accepting a second after EMFILE, even on a
            # listener closed meanwhile (shutdown): nothing is wrong.
            log.debug("accept retry on a closed listener: %s", exc)
            return True
        if not isinstance(exc, OSError) or exc.errno not in _RESOURCE_ERRNOS:
            return False
        self.stats.accept_errors += 1
        open_before = len(self.connections)
        shed = self.make_room(now) if self.connections else 0
        if now - self._resource_logged_at < RESOURCE_LOG_INTERVAL_S:
            self._resource_held_back += 1
            return True
        held, self._resource_held_back = self._resource_held_back, 0
        self._resource_logged_at = now
        log.warning(
            "cannot accept connections: %s with %d open (limit %d: --limit-connections, "
            "ulimit -n); closed %d making no progress%s",
            exc.strerror or exc,
            open_before,
            self.max_connections,
            shed,
            f"; {held} more like it not logged" if held else "",
        )
        return True
