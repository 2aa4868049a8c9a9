"""The built-in app's application object: a RawServe app that owns an Engine.

Models load at startup and warm up while the server already listens
(``/readyz`` says 503 until warm-up ends); on shutdown queued work either
finishes or gets a 503. A middleware counts and times every response.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from rawserve.applications import RawServe
from rawserve.core.config import InferenceSettings
from rawserve.core.errors import ConfigError
from rawserve.inference.app.decoding import DecodeSlots
from rawserve.inference.engine import Engine, EngineConfig
from rawserve.inference.metrics import CounterChild, HistogramChild, Registry
from rawserve.inference.model import Model, ModelSpec, load_bundled, model_repository
from rawserve.inference.results import CacheSettings, ResultCache
from rawserve.requests import Request
from rawserve.responses import Response

log = logging.getLogger("rawserve.inference")
T = TypeVar("T")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# How often a model that is still loading says so.
LOAD_PROGRESS_EVERY_S = 5.0


def _file_mb(path: str | os.PathLike[str]) -> float:
    try:
        return os.path.getsize(path) / 1e6
    except OSError:
        return 0.0


def _check_unique(specs: list[ModelSpec]) -> None:
    """Two models under one name would leave one unreachable: refuse it."""
    seen: dict[str, ModelSpec] = {}
    for spec in specs:
        first = seen.setdefault(spec.name, spec)
        if first is not spec:
            raise ConfigError(
                f"two models are named {spec.name!r}: {str(first.path)!r} and "
                f"{str(spec.path)!r} (--model NAME=PATH or a directory name in "
                "--model-dir picks another)"
            )


class InferenceApp(RawServe):
    """A RawServe app that owns an Engine: models load and warm up at startup,
    and on shutdown queued work either finishes or gets a 503."""

    def __init__(
        self,
        settings: InferenceSettings | None = None,
        *,
        models: Mapping[str, Model] | None = None,
        graceful_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(title="rawserve")
        self.settings = settings or InferenceSettings()
        self.metrics = Registry()
        s = self.settings
        self.engine = Engine(
            EngineConfig(
                max_batch_size=s.max_batch_size,
                max_batch_delay_s=s.max_batch_delay_ms / 1000,
                queue_limit=s.queue_limit,
                queue_timeout_s=s.queue_timeout_ms / 1000,
                priority_weights=s.priority_weights,
                priority_mode=s.priority_mode,
                model_workers=s.model_workers,
                worker_nice=s.worker_nice,
                urgent_lane=s.urgent_lane,
            ),
            self.metrics,
        )
        self.cache: ResultCache | None = None
        if s.cache_enabled:
            self.cache = ResultCache(
                CacheSettings(
                    url=s.cache_url,
                    max_bytes=s.cache_bytes,
                    ttl_s=s.cache_ttl_s,
                    backend_timeout_s=s.cache_timeout_ms / 1000,
                ),
                self.metrics,
            )
        self._connection_stats: Any = None
        # Work that outlives its request (a batch's items): owned here,
        # cancelled at shutdown.
        self._background: set[asyncio.Task[Any]] = set()
        self._given_models = dict(models) if models else None
        # Large request bodies are decoded in worker threads, a few at a time.
        self.decoding = DecodeSlots()
        self.graceful_timeout_s = graceful_timeout_s
        self.default_model: str | None = None
        self._warming: asyncio.Task[None] | None = None
        self.m_requests = self.metrics.counter(
            "rawserve_requests_total", "Requests answered", ["protocol", "route", "status"]
        )
        self.m_latency = self.metrics.histogram(
            "rawserve_request_seconds",
            "Time from request to response start",
            ["protocol", "route"],
            buckets=LATENCY_BUCKETS,
        )
        # (protocol, route, status) -> its children of m_requests and
        # m_latency: two label lookups (and a str of the status) fewer per
        # response. Nothing removes these children, so they stay the ones
        # /metrics reads. Bounded by routes x statuses x protocols.
        self._observed: dict[tuple[str, str, int], tuple[CounterChild, HistogramChild]] = {}
        self.m_validation = self.metrics.counter(
            "rawserve_validation_errors_total", "Requests refused before queueing", ["model"]
        )
        self.router.on_startup.append(self._load_models)
        self.middleware("http")(self._observe)

    async def _load_models(self) -> None:
        s = self.settings
        models = self._given_models
        if models is None:
            specs = [ModelSpec.parse(entry) for entry in s.models]
            if s.model_dir is not None:
                # A repository on a network volume can be slow to list.
                specs += await asyncio.to_thread(model_repository, s.model_dir)
            _check_unique(specs)
            specs = specs or [load_bundled()]
            loaded = await asyncio.gather(*(self._load_one(spec) for spec in specs))
            models = {m.name: m for m in loaded}
        for name, model in models.items():
            self.engine.add_model(name, model)
        self.default_model = next(iter(models))
        # Listen while warming up: /healthz answers, /readyz says 503 until the
        # warm-up (one run per batch size) is over.
        await self.engine.start(warm=False)
        self._warming = asyncio.get_running_loop().create_task(self._warm(list(models)))

    async def _load_one(self, spec: ModelSpec) -> Model:
        """Load a model in a worker thread, saying what is loading and, for a
        large model, that it still is, every LOAD_PROGRESS_EVERY_S."""
        s = self.settings
        size_mb = _file_mb(spec.path)
        log.info("loading model %s from %s (%.1f MB)", spec.name, spec.path, size_mb)
        started = time.perf_counter()
        loading = asyncio.ensure_future(
            asyncio.to_thread(
                Model, spec, intra_op_threads=s.intra_op_threads, allow_spinning=s.allow_spinning
            )
        )
        while True:
            done, _ = await asyncio.wait({loading}, timeout=LOAD_PROGRESS_EVERY_S)
            if done:
                break
            log.info(
                "still loading model %s (%.1f MB), %.0f s elapsed",
                spec.name,
                size_mb,
                time.perf_counter() - started,
            )
        model = loading.result()
        log.info("loaded model %s in %.2f s", spec.name, time.perf_counter() - started)
        return model

    async def _warm(self, names: list[str]) -> None:
        try:
            await self.engine.warm()
        except Exception:
            log.exception("warm-up failed; the server stays not ready")
            return
        log.info("models ready: %s", ", ".join(names))

    async def wait_warm(self) -> None:
        """Return once the models' warm-up has ended, well or not (``/readyz``
        says which); at once if none is running. A worker under the
        supervisor waits for this before it accepts connections."""
        warming = self._warming
        if warming is not None:
            # asyncio.wait: a waiter that gives up (its own timeout) must not
            # cancel the warm-up, and a failed warm-up is _warm's to log.
            await asyncio.wait({warming})

    def bind_connection_stats(self, stats: Any) -> None:
        """The server's connection counters (open, shed and why) on /metrics.
        Registered once; a later server serving this app takes over."""
        first = self._connection_stats is None
        self._connection_stats = stats
        if first:
            stats.register(self.metrics, lambda: self._connection_stats)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` in the background, owned by the app until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Its answer is refused or failed the same way a request's would be:
            # a GET of its result says 404. The log keeps the reason.
            log.info("background inference ended: %s", task.exception())

    async def drain(self, timeout_s: float) -> None:
        """Called by the server when shutdown begins: refuse new inferences,
        let queued ones finish within ``timeout_s``, then answer the rest 503."""
        await self.engine.stop(timeout_s)

    async def shutdown(self) -> None:
        warming = self._warming
        if warming is not None and not warming.done():
            warming.cancel()
            await asyncio.gather(warming, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.engine.stop(0)
        if self.cache is not None:
            await self.cache.close()
        await super().shutdown()

    async def _observe(self, request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        route = request.route.path if request.route is not None else "unmatched"
        proto = request.http_version
        key = (proto, route, response.status_code)
        children = self._observed.get(key)
        if children is None:
            children = self._observed[key] = (
                self.m_requests.labels(proto, route, str(response.status_code)),
                self.m_latency.labels(proto, route),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - started)
        return response
