"""The result cache, async: backends, single-flight, and outage handling.

``ResultCache.get_or_compute(key, compute)`` answers from the backend when it
can, else runs ``compute`` once for every identical request in flight
(single-flight) and stores what it returns. A backend that is down or slow
never fails or stalls a request: each call is bounded by a timeout, an error
is a miss, the outage is logged once (and counted), and calls are skipped for
a short back-off before the backend is tried again, so that a dead Redis costs
requests nothing; the first call that succeeds ends the outage.

Backends: memory (``inference/cache.MemoryStore``), Redis (redis-py's asyncio
client, the ``redis`` extra) and Memcached (aiomcache, the ``memcached``
extra), chosen by ``--cache-url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from rawserve.core.errors import ConfigError
from rawserve.inference.cache import CachedResult, MemoryStore
from rawserve.inference.metrics import Registry

log = logging.getLogger("rawserve.cache")

# Values are stored under this prefix in a shared backend, so that rawserve
# can share a Redis or Memcached with other programs without collisions.
REMOTE_PREFIX = "rawserve:result:"


class Backend(Protocol):
    name: str

    async def get(self, key: str) -> CachedResult | None: ...

    async def put(self, result: CachedResult, ttl_s: float) -> bool:
        """Store ``result``; False when the backend will not hold it (too big)."""

    def ttl_left(self, key: str) -> float | None:
        """Seconds ``key`` has left when the backend knows cheaply, else None."""

    async def close(self) -> None: ...


class MemoryBackend:
    name = "memory"

    def __init__(self, max_bytes: int, ttl_s: float) -> None:
        self.store = MemoryStore(max_bytes, ttl_s)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def get(self, key: str) -> CachedResult | None:
        return self.store.get(key, self._now())

    async def put(self, result: CachedResult, ttl_s: float) -> bool:
        return self.store.put(result, self._now())

    def ttl_left(self, key: str) -> float | None:
        return self.store.ttl_left(key, self._now())

    async def close(self) -> None:
        pass


class RedisBackend:
    name = "redis"

    def __init__(self, url: str, timeout_s: float) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise ConfigError(
                "--cache-url redis://... needs redis-py: pip install 'rawserve[redis]'"
            ) from None
        self.client: Any = aioredis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    async def get(self, key: str) -> CachedResult | None:
        data = await self.client.get(REMOTE_PREFIX + key)
        return None if data is None else CachedResult.decode(key, data)

    async def put(self, result: CachedResult, ttl_s: float) -> bool:
        await self.client.set(REMOTE_PREFIX + result.key, result.encode(), px=int(ttl_s * 1000))
        return True

    def ttl_left(self, key: str) -> float | None:
        return None

    async def close(self) -> None:
        await self.client.aclose()


class MemcachedBackend:
    name = "memcached"

    def __init__(self, host: str, port: int, max_item_bytes: int) -> None:
        try:
            import aiomcache
        except ImportError:
            raise ConfigError(
                "--cache-url memcached://... needs aiomcache: pip install 'rawserve[memcached]'"
            ) from None
        self.client: Any = aiomcache.Client(host, port)
        self.max_item_bytes = max_item_bytes
        self.too_large = 0

    async def get(self, key: str) -> CachedResult | None:
        data = await self.client.get((REMOTE_PREFIX + key).encode())
        return None if data is None else CachedResult.decode(key, data)

    async def put(self, result: CachedResult, ttl_s: float) -> bool:
        data = result.encode()
        # Memcached refuses items over its item size limit (1 MiB by default);
        # not sending them spares the round trip and the error.
        if len(data) + len(REMOTE_PREFIX) + 80 > self.max_item_bytes:
            return False
        await self.client.set(
            (REMOTE_PREFIX + result.key).encode(), data, exptime=max(1, int(ttl_s))
        )
        return True

    def ttl_left(self, key: str) -> float | None:
        return None

    async def close(self) -> None:
        await self.client.close()


@dataclass(frozen=True)
class CacheSettings:
    enabled: bool = True
    url: str = "memory://"
    max_bytes: int = 256 * 1024 * 1024
    ttl_s: float = 3600.0
    # Longest a request waits on a remote backend before treating it as a miss.
    backend_timeout_s: float = 0.1
    # After a backend error, calls are skipped this long before trying again.
    retry_after_s: float = 1.0
    memcached_max_item_bytes: int = 1024 * 1024


def make_backend(settings: CacheSettings) -> Backend:
    parts = urlsplit(settings.url)
    scheme = parts.scheme
    if scheme == "memory":
        return MemoryBackend(settings.max_bytes, settings.ttl_s)
    if scheme in ("redis", "rediss", "unix"):
        return RedisBackend(settings.url, settings.backend_timeout_s)
    if scheme == "memcached":
        return MemcachedBackend(
            parts.hostname or "127.0.0.1", parts.port or 11211, settings.memcached_max_item_bytes
        )
    raise ConfigError(
        f"--cache-url {settings.url!r}: use memory://, redis://HOST:PORT/DB or memcached://HOST:PORT"
    )


@dataclass
class _Flight:
    task: asyncio.Task[CachedResult]
    waiters: int = 0


@dataclass
class _Outage:
    since: float | None = None
    retry_at: float = 0.0
    errors: int = field(default=0)


class ResultCache:
    """Content-addressed results shared by identical requests."""

    def __init__(self, settings: CacheSettings, metrics: Registry | None = None) -> None:
        self.settings = settings
        self.backend = make_backend(settings)
        self._flights: dict[str, _Flight] = {}
        # Stores nobody awaits (see keep); held so that they are not collected.
        self._orphans: set[asyncio.Task[None]] = set()
        self._outage = _Outage()
        m = metrics if metrics is not None else Registry()
        self.m_lookups = m.counter(
            "rawserve_cache_lookups_total", "Result cache lookups by outcome", ["outcome"]
        )
        self.m_stores = m.counter(
            "rawserve_cache_stores_total", "Results offered to the cache by outcome", ["outcome"]
        )
        self.m_errors = m.counter(
            "rawserve_cache_backend_errors_total",
            "Backend calls that failed or timed out (each answered as a miss)",
            ["backend", "operation"],
        )
        self.m_collapsed = m.counter(
            "rawserve_cache_collapsed_total",
            "Requests that shared an identical request's inference (single-flight)",
        )
        m.gauge(
            "rawserve_cache_bytes", "Bytes held by the memory cache", callback=self._memory_bytes
        )
        m.gauge(
            "rawserve_cache_evictions",
            "Entries the memory cache evicted to stay within its byte limit",
            callback=self._memory_evictions,
        )

    def _memory_bytes(self) -> float:
        b = self.backend
        return float(b.store.bytes) if isinstance(b, MemoryBackend) else 0.0

    def _memory_evictions(self) -> float:
        b = self.backend
        return float(b.store.evictions) if isinstance(b, MemoryBackend) else 0.0

    # -- the backend, guarded ----------------------------------------------------

    async def _call(self, operation: str, call: Awaitable[Any]) -> tuple[bool, Any]:
        """(ok, value) of a backend call, bounded and never raising."""
        loop = asyncio.get_running_loop()
        if self._outage.since is not None and loop.time() < self._outage.retry_at:
            if asyncio.iscoroutine(call):
                call.close()
            return False, None
        try:
            async with asyncio.timeout(self.settings.backend_timeout_s):
                value = await call
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an unreachable or broken backend is a miss
            self._failed(operation, exc, loop.time())
            return False, None
        if self._outage.since is not None:
            log.warning(
                "result cache: %s backend is back after %.1f s (%d failed calls)",
                self.backend.name,
                loop.time() - self._outage.since,
                self._outage.errors,
            )
            self._outage = _Outage()
        return True, value

    def _failed(self, operation: str, exc: BaseException, now: float) -> None:
        self.m_errors.labels(self.backend.name, operation).inc()
        outage = self._outage
        if outage.since is None:
            outage.since = now
            log.warning(
                "result cache: %s backend failed (%s: %s); answering as misses until it recovers",
                self.backend.name,
                type(exc).__name__,
                exc or "timed out",
            )
        outage.errors += 1
        outage.retry_at = now + self.settings.retry_after_s

    async def lookup(self, key: str) -> CachedResult | None:
        ok, value = await self._call("get", self.backend.get(key))
        result: CachedResult | None = value if ok else None
        self.m_lookups.labels("hit" if result is not None else "miss").inc()
        return result

    async def store(self, result: CachedResult) -> None:
        ok, stored = await self._call("put", self.backend.put(result, self.settings.ttl_s))
        if not ok:
            outcome = "error"
        elif stored:
            outcome = "stored"
        else:
            outcome = "too_large"
        self.m_stores.labels(outcome).inc()

    def ttl_left(self, key: str) -> float:
        left = self.backend.ttl_left(key)
        return self.settings.ttl_s if left is None else left

    # -- single-flight -------------------------------------------------------------

    def in_flight(self, key: str) -> asyncio.Task[CachedResult] | None:
        flight = self._flights.get(key)
        return flight.task if flight is not None else None

    async def get_or_compute(
        self, key: str, compute: Callable[[], Awaitable[CachedResult]]
    ) -> tuple[CachedResult, str]:
        """The answer for ``key`` and how it came: "hit" (from the cache),
        "miss" (computed for this request) or "collapsed" (computed once for
        an identical request in flight). Exceptions of ``compute`` reach every
        waiter; nothing is stored then."""
        flight = self._flights.get(key)
        if flight is None:
            cached = await self.lookup(key)
            if cached is not None:
                return cached, "hit"
            flight = self._flights.get(key)  # another request started it meanwhile
        if flight is None:
            flight = _Flight(asyncio.get_running_loop().create_task(self._fly(key, compute)))
            self._flights[key] = flight
            how = "miss"
        else:
            self.m_collapsed.inc()
            how = "collapsed"
        flight.waiters += 1
        try:
            # shield: one waiter leaving (a reset stream) must not cancel the
            # inference the others wait for.
            return await asyncio.shield(flight.task), how
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # Nobody waits any more: the queued inference is withdrawn (a
                # batch already running still finishes and is cached, see _fly).
                flight.task.cancel()

    async def _fly(self, key: str, compute: Callable[[], Awaitable[CachedResult]]) -> CachedResult:
        try:
            result = await compute()
        finally:
            self._flights.pop(key, None)
        await self.store(result)
        return result

    def keep(self, result: CachedResult) -> None:
        """Store a result nobody waits for any more (a cancelled request whose
        batch was already running), in the background."""
        task = asyncio.get_running_loop().create_task(self.store(result))
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    async def close(self) -> None:
        for flight in list(self._flights.values()):
            flight.task.cancel()
        pending = [f.task for f in self._flights.values()] + list(self._orphans)
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
        await self.backend.close()
