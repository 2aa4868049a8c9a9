"""The result cache, async: single-flight, and every backend against a real server.

Redis and Memcached run as real processes (tests/services.py); each is killed
in the middle of a test to show that requests keep being answered during the
outage and that hits resume after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from rawserve.core.errors import ConfigError
from rawserve.inference.cache import CachedResult
from rawserve.inference.metrics import Registry
from rawserve.inference.results import CacheSettings, ResultCache
from tests.services import Service, free_port, memcached_service, redis_service

KEY = "a" * 64
OTHER = "b" * 64


class Computer:
    """A compute function that counts its calls and can be held."""

    def __init__(self, body: bytes = b'{"prediction":7}') -> None:
        self.calls = 0
        self.body = body
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()
        self.cancelled = 0

    def for_key(self, key: str):  # type: ignore[no-untyped-def]
        async def compute() -> CachedResult:
            self.calls += 1
            self.started.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            return CachedResult(self.body, "application/json", key)

        return compute


def metric(registry: Registry, text: str) -> float:
    for line in registry.render().decode().splitlines():
        if line.startswith(text + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_identical_requests_in_flight_share_one_computation() -> None:
    reg = Registry()
    cache = ResultCache(CacheSettings(), reg)
    comp = Computer()
    comp.release.clear()
    waiters = [
        asyncio.ensure_future(cache.get_or_compute(KEY, comp.for_key(KEY))) for _ in range(10)
    ]
    await comp.started.wait()
    comp.release.set()
    answers = await asyncio.gather(*waiters)
    assert comp.calls == 1
    assert {r.body for r, _ in answers} == {comp.body}
    assert sorted(how for _, how in answers) == ["collapsed"] * 9 + ["miss"]
    # Afterwards it is a hit, and the model is not asked again.
    _, how = await cache.get_or_compute(KEY, comp.for_key(KEY))
    assert (how, comp.calls) == ("hit", 1)
    assert metric(reg, "rawserve_cache_collapsed_total") == 9
    assert metric(reg, 'rawserve_cache_lookups_total{outcome="hit"}') == 1
    await cache.close()


async def test_one_waiter_leaving_does_not_cancel_the_others() -> None:
    cache = ResultCache(CacheSettings())
    comp = Computer()
    comp.release.clear()
    first = asyncio.ensure_future(cache.get_or_compute(KEY, comp.for_key(KEY)))
    second = asyncio.ensure_future(cache.get_or_compute(KEY, comp.for_key(KEY)))
    await comp.started.wait()
    first.cancel()  # its client reset the stream
    await asyncio.sleep(0)
    comp.release.set()
    result, how = await second
    assert result.body == comp.body and how == "collapsed"
    assert comp.cancelled == 0 and comp.calls == 1
    assert first.cancelled()
    await cache.close()


async def test_when_every_waiter_leaves_the_computation_is_withdrawn() -> None:
    cache = ResultCache(CacheSettings())
    comp = Computer()
    comp.release.clear()
    waiters = [
        asyncio.ensure_future(cache.get_or_compute(KEY, comp.for_key(KEY))) for _ in range(3)
    ]
    await comp.started.wait()
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    await asyncio.sleep(0)
    assert comp.cancelled == 1
    assert cache.in_flight(KEY) is None
    # Nothing was stored: the next request computes afresh.
    comp.release.set()
    _, how = await cache.get_or_compute(KEY, comp.for_key(KEY))
    assert how == "miss" and comp.calls == 2
    await cache.close()


async def test_a_failed_computation_reaches_every_waiter_and_stores_nothing() -> None:
    cache = ResultCache(CacheSettings())
    calls = 0
    gate = asyncio.Event()

    async def failing() -> CachedResult:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise RuntimeError("model failed")

    waiters = [asyncio.ensure_future(cache.get_or_compute(KEY, failing)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes) and calls == 1
    assert await cache.lookup(KEY) is None
    await cache.close()


async def test_a_result_nobody_waits_for_can_still_be_kept() -> None:
    cache = ResultCache(CacheSettings())
    cache.keep(CachedResult(b"late", "text/plain", OTHER))
    for _ in range(5):
        await asyncio.sleep(0)
    hit = await cache.lookup(OTHER)
    assert hit is not None and hit.body == b"late"
    await cache.close()


def test_an_unknown_cache_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--cache-url"):
        ResultCache(CacheSettings(url="ftp://example"))


# -- remote backends, real servers -------------------------------------------------


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Service]:
    service = redis_service(tmp_path)
    service.start()
    yield service
    service.kill()


@pytest.fixture
def memcached() -> Iterator[Service]:
    service = memcached_service(max_item_bytes=1024 * 1024)
    service.start()
    yield service
    service.kill()


def remote_settings(url: str) -> CacheSettings:
    # A short back-off so the test sees recovery quickly; the timeout bounds
    # each call to a dead backend.
    return CacheSettings(url=url, backend_timeout_s=0.5, retry_after_s=0.05)


async def outage_and_recovery(
    url: str, service: Service, caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    reg = Registry()
    cache = ResultCache(remote_settings(url), reg)
    replica = ResultCache(remote_settings(url))  # another process sharing the backend
    comp = Computer()
    _, how = await cache.get_or_compute(KEY, comp.for_key(KEY))
    assert how == "miss"
    r2, how2 = await replica.get_or_compute(KEY, comp.for_key(KEY))
    assert (how2, r2.body, comp.calls) == ("hit", comp.body, 1)  # the model ran once

    service.kill()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rawserve.cache"):
        for _ in range(5):
            # Requests keep being answered (computed) while the backend is gone.
            result, how = await cache.get_or_compute(OTHER, comp.for_key(OTHER))
            assert result.body == comp.body and how == "miss"
            await asyncio.sleep(0.06)  # past the back-off: the backend is tried again
        failed = [rec for rec in caplog.records if "failed" in rec.getMessage()]
        assert len(failed) == 1  # one warning per outage, not one per request
    name = f'rawserve_cache_backend_errors_total{{backend="{backend}",operation="get"}}'
    errors = metric(reg, name)
    assert errors >= 1

    service.start()
    await asyncio.sleep(0.06)
    with caplog.at_level(logging.WARNING, logger="rawserve.cache"):
        _, how = await cache.get_or_compute(OTHER, comp.for_key(OTHER))
        assert how == "miss"  # the restarted server is empty; this stores it again
        _, how = await cache.get_or_compute(OTHER, comp.for_key(OTHER))
        assert how == "hit"
        assert any("is back" in rec.getMessage() for rec in caplog.records)
    await cache.close()
    await replica.close()


async def test_redis_shares_results_and_survives_an_outage(
    redis: Service, caplog: pytest.LogCaptureFixture
) -> None:
    await outage_and_recovery(f"redis://127.0.0.1:{redis.port}/0", redis, caplog, "redis")


async def test_memcached_shares_results_and_survives_an_outage(
    memcached: Service, caplog: pytest.LogCaptureFixture
) -> None:
    await outage_and_recovery(
        f"memcached://127.0.0.1:{memcached.port}", memcached, caplog, "memcached"
    )


async def test_memcached_does_not_store_items_over_its_size_limit(memcached: Service) -> None:
    reg = Registry()
    settings = CacheSettings(
        url=f"memcached://127.0.0.1:{memcached.port}", memcached_max_item_bytes=1024 * 1024
    )
    cache = ResultCache(settings, reg)
    big = Computer(body=b"x" * (2 * 1024 * 1024))
    result, how = await cache.get_or_compute(KEY, big.for_key(KEY))
    assert how == "miss" and len(result.body) == 2 * 1024 * 1024  # still answered
    assert metric(reg, 'rawserve_cache_stores_total{outcome="too_large"}') == 1
    _, how = await cache.get_or_compute(KEY, big.for_key(KEY))
    assert how == "miss" and big.calls == 2
    await cache.close()


async def test_an_unreachable_backend_is_a_miss_not_an_error() -> None:
    reg = Registry()
    cache = ResultCache(remote_settings(f"redis://127.0.0.1:{free_port()}/0"), reg)
    comp = Computer()
    for _ in range(3):
        result, how = await cache.get_or_compute(KEY, comp.for_key(KEY))
        assert result.body == comp.body and how == "miss"
    assert comp.calls == 3
    assert metric(reg, 'rawserve_cache_stores_total{outcome="error"}') >= 1
    await cache.close()
