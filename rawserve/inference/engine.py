"""The inference engine: asyncio glue around the pure scheduler and the models.

``await engine.infer(model, inputs, priority=..., timeout_s=...)`` validates the
inputs, queues one WorkItem in the model's Scheduler and waits. The engine
drives each scheduler the way aioquic's glue drives a QuicConnection: after
every change it asks ``next_batch(now)`` while a worker is free, answers
``expired(now)`` with 504s, and sets one loop timer from ``next_deadline()``.
Batches run in worker threads (``session.run`` releases the GIL), so the event
loop never blocks on a model. A worker that finishes a batch takes the next
ready one from the scheduler itself (under the model's lock) before posting
the answers back to the loop, so a busy model runs batch after batch without
waiting for the loop (see ``Engine._work``), and posts each batch's answers
to the loop in one call. While every worker is busy, urgent batches run on
the model's urgent lane beside them (inference/threads.py).

A model whose runs take less than ``INLINE_MAX_S`` (measured, per batch size)
is not worth a thread: handing a batch to a worker and its answers back costs
the loop more than the run itself. Its batches run on the loop, in the same
scheduler order, once per loop turn, so that every request that arrived in
that turn shares one run (see ``Engine._run_inline``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from rawserve.core.priority import DEFAULT_URGENCY, Priority
from rawserve.inference import model as _model
from rawserve.inference.errors import (
    DeadlineExceeded,
    EngineStopped,
    InferenceFailed,
    ModelNotFound,
)
from rawserve.inference.metrics import Registry
from rawserve.inference.runcost import (
    INLINE_GIVE_UP_S,
    INLINE_MAX_S,
    RunCost,
    log_where_batches_run,
    measurable,
    retime_candidate,
    retime_when_idle,
    settled_timing,
    time_runs,
)
from rawserve.inference.scheduler import (
    Batch,
    ItemState,
    QueueFull,
    Scheduler,
    WorkItem,
)
from rawserve.inference.threads import depth_reader, lower_thread_priority, run_batch, stack

log = logging.getLogger("rawserve.inference.engine")

# A warm-up that has run this long logs each batch size it finishes: progress
# where people wait, silence for the small models that warm up at once.
WARMUP_PROGRESS_AFTER_S = 1.0

# request.on_priority_change: subscribe a listener, get back its remover.
PriorityHook = Callable[[Callable[[Priority], None]], Callable[[], None]]

__all__ = [
    "DeadlineExceeded",
    "Engine",
    "EngineConfig",
    "EngineStopped",
    "InferenceFailed",
    "InferenceResult",
    "ModelNotFound",
    "QueueFull",
]


@dataclass(frozen=True)
class EngineConfig:
    max_batch_size: int = 32
    max_batch_delay_s: float = 0.0
    queue_limit: int = 2048
    queue_timeout_s: float = 30.0
    priority_weights: tuple[float, ...] | None = None
    priority_mode: str = "fair"
    model_workers: int = 1
    # The workers' nice value above the loop's (Linux; inference/threads.py).
    worker_nice: int = 10
    # A thread per model for urgent batches while every worker is busy.
    urgent_lane: bool = True


@dataclass(slots=True)
class InferenceResult:
    outputs: dict[str, np.ndarray]
    queue_s: float
    infer_s: float
    batch_size: int
    model: str
    version: str

    def server_timing(self) -> str:
        return f"queue;dur={self.queue_s * 1000:.3f}, infer;dur={self.infer_s * 1000:.3f}"


@dataclass(slots=True)
class _Payload:
    inputs: dict[str, np.ndarray]
    future: asyncio.Future[InferenceResult]
    outputs: Sequence[str] | None
    # Called with the result when the caller went away while its batch ran
    # (the result cache still keeps it).
    on_late_result: Callable[[InferenceResult], None] | None = None


@dataclass
class _ModelState:
    name: str
    model: Any
    scheduler: Scheduler
    busy: int = 0
    lane_busy: bool = False  # the urgent lane runs a batch (inference/threads.py)
    lane_runs: int = 0  # batches the lane ran (tests and /metrics)
    timer: asyncio.TimerHandle | None = None
    timer_at: float | None = None
    runs: int = 0  # batches run (tests assert on it)
    items_run: int = 0
    queue_wait: list[Any] = field(default_factory=list)  # histogram child per urgency
    # The scheduler is shared with the worker threads, which take their next
    # batch themselves (see Engine._work); every call into it holds this lock.
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Where batches run, by batch-size bucket (see RunCost).
    costs: list[RunCost] = field(default_factory=list)
    buckets: tuple[int, ...] = ()
    pump_soon: bool = False  # a pump is scheduled for the end of this loop turn
    inline_runs: int = 0  # batches run on the loop (tests and /metrics)
    # Finished batches whose answers wait for an urgent batch's (Engine._batch_done).
    held: list[tuple[Batch, list[WorkItem], Any, BaseException | None, float]] = field(
        default_factory=list
    )

    def cost_for(self, rows: int) -> RunCost | None:
        for size, cost in zip(self.buckets, self.costs, strict=True):
            if rows <= size:
                return cost
        return None

    @property
    def inline_ready(self) -> bool:
        """Whether single requests run on the loop: then submissions wait for
        the end of the loop turn, so the turn's requests share one run."""
        return bool(self.costs) and self.costs[0].inline


class Engine:
    """Models, their schedulers, and the worker threads that run them."""

    def __init__(self, config: EngineConfig | None = None, metrics: Registry | None = None) -> None:
        self.config = config or EngineConfig()
        self.metrics = metrics if metrics is not None else Registry()
        self._models: dict[str, _ModelState] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._lane: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ready = False
        self._stopping = False
        self._retimers: set[asyncio.Task[None]] = set()  # runcost.retime_when_idle
        self._define_metrics()

    # -- setup -------------------------------------------------------------------

    def _define_metrics(self) -> None:
        m = self.metrics
        self.m_queue_depth = m.gauge(
            "rawserve_queue_depth", "Items waiting in the queue", ["model", "urgency"]
        )
        self.m_queue_wait = m.histogram(
            "rawserve_queue_wait_seconds",
            "Time items waited in the queue",
            ["model", "urgency"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 10),
        )
        self.m_batch_size = m.histogram(
            "rawserve_batch_size",
            "Items per model run",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.m_infer_time = m.histogram(
            "rawserve_inference_seconds",
            "Model run time per batch",
            ["model"],
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
        )
        self.m_rejections = m.counter(
            "rawserve_rejections_total", "Requests refused, by reason", ["model", "reason"]
        )
        self.m_cancellations = m.counter(
            "rawserve_cancellations_total",
            "Queued or running inferences whose client went away",
            ["model"],
        )

    def add_model(self, name: str, model: Any) -> None:
        cfg = self.config
        # A model without a dynamic batch dimension takes one item per run.
        batched = getattr(model, "batched", True)
        sched = Scheduler(
            max_batch_size=cfg.max_batch_size if batched else 1,
            max_batch_delay_s=cfg.max_batch_delay_s,
            queue_limit=cfg.queue_limit,
            weights=cfg.priority_weights,
            mode=cfg.priority_mode,  # type: ignore[arg-type]
            default_timeout_s=cfg.queue_timeout_s if cfg.queue_timeout_s > 0 else None,
        )
        state = self._models[name] = _ModelState(name, model, sched)
        state.buckets = _model.batch_buckets(sched.max_batch_size)
        state.costs = [RunCost() for _ in state.buckets]
        state.queue_wait = [self.m_queue_wait.labels(name, str(u)) for u in range(8)]
        for u in range(8):
            self.m_queue_depth.labels(name, str(u)).set_function(depth_reader(sched, u))

    def model(self, name: str) -> Any:
        state = self._models.get(name)
        if state is None:
            raise ModelNotFound(name)
        return state.model

    @property
    def model_names(self) -> list[str]:
        return list(self._models)

    def stats(self, name: str) -> dict[str, Any]:
        s = self._models[name]
        sch = s.scheduler
        return {
            "queued_by_urgency": sch.depth_by_urgency(),
            "busy": s.busy,
            "runs": s.runs,
            "inline_runs": s.inline_runs,
            "lane_runs": s.lane_runs,
            "items_run": s.items_run,
            "queued": sch.depth(),
            "rejections": sch.rejections,
            "expirations": sch.expirations,
            "cancellations": sch.cancellations,
            "dropped_results": sch.dropped_results,
        }

    async def start(self, *, warm: bool = True) -> None:
        """Start the workers and, unless ``warm`` is False (then call
        ``warm()`` yourself), warm every model up. ``ready`` only after."""
        self._loop = asyncio.get_running_loop()
        workers = max(1, self.config.model_workers) * max(1, len(self._models))
        self._pool = ThreadPoolExecutor(
            workers,
            thread_name_prefix="rawserve-model",
            initializer=lower_thread_priority,
            initargs=(self.config.worker_nice,),
        )
        if self.config.urgent_lane:
            self._lane = ThreadPoolExecutor(
                max(1, len(self._models)), thread_name_prefix="rawserve-urgent"
            )
        self._stopping = False
        if warm:
            await self.warm()

    async def warm(self) -> None:
        """One run per batch-size bucket for every model, in the workers, so the
        first requests do not pay for ONNX Runtime's lazy allocations."""
        loop = asyncio.get_running_loop()
        sizes = _model.batch_buckets(self.config.max_batch_size)
        for state in self._models.values():
            warmup = getattr(state.model, "warmup", None)
            if warmup is not None and self._pool is not None:
                started = time.perf_counter()
                # One batch size at a time, so that a large model's warm-up
                # says how far it is once it takes long enough to be waited on.
                measure = measurable(state.model)
                for i, size in enumerate(sizes, 1):
                    warm_started = time.perf_counter()
                    await loop.run_in_executor(self._pool, warmup, [size])
                    cost = state.cost_for(size) if size in state.buckets else None
                    # A model far dearer than the bound is not timed again (a
                    # large model's runs would add seconds to the start).
                    if time.perf_counter() - warm_started > 100 * INLINE_MAX_S:
                        measure = False
                    if measure and cost is not None:
                        timer = partial(self._run_timed, state.model)
                        cost.measured(await settled_timing(timer, size))
                        # Larger batches cost more: no need to time them.
                        measure = cost.inline
                    elapsed_s = time.perf_counter() - started
                    if elapsed_s >= WARMUP_PROGRESS_AFTER_S and i < len(sizes):
                        log.info(
                            "warming up model %s: batch size %d done (%d of %d), %.1f s elapsed",
                            state.name,
                            size,
                            i,
                            len(sizes),
                            elapsed_s,
                        )
                log.info(
                    "model %s warmed up (%d batch sizes) in %.0f ms",
                    state.name,
                    len(sizes),
                    (time.perf_counter() - started) * 1000,
                )
                log_where_batches_run(state.name, state.buckets, state.costs)
        if not self._stopping:
            self.ready = True
            for state in self._models.values():
                if measurable(state.model) and retime_candidate(state.costs) is not None:
                    idle = partial(self._idle, state)
                    timer = partial(self._run_timed, state.model)
                    retime = retime_when_idle(state.name, state.costs, state.buckets, idle, timer)
                    task = asyncio.create_task(retime)
                    self._retimers.add(task)
                    task.add_done_callback(self._retimers.discard)

    def _idle(self, state: _ModelState) -> bool:
        """Nothing of the model queued or running: a timing has a worker to itself."""
        busy = state.busy or state.lane_busy or state.pump_soon or state.scheduler.depth()
        return not busy and not self._stopping and self._pool is not None

    def _run_timed(self, model: Any, rows: int) -> asyncio.Future[float]:
        assert self._pool is not None and self._loop is not None
        return self._loop.run_in_executor(self._pool, time_runs, model, rows)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Refuse new work, let queued and running work finish within
        ``timeout_s``, then answer what is left with 503 (never drop silently)."""
        self._stopping = True
        self.ready = False
        for retimer in list(self._retimers):
            retimer.cancel()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(
            s.busy or s.lane_busy or s.scheduler.depth() for s in self._models.values()
        ):
            await asyncio.sleep(0.01)
        for state in self._models.values():
            with state.lock:
                cleared = state.scheduler.clear()
            for item in cleared:
                self._fail(item, EngineStopped("the server shut down before this request ran"))
            if state.timer is not None:
                state.timer.cancel()
        for pool in (self._pool, self._lane):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._lane = None

    # -- requests ----------------------------------------------------------------

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        priority: Priority | int | None = None,
        timeout_s: float | None = None,
        outputs: Sequence[str] | None = None,
        on_priority_change: PriorityHook | None = None,
        validated: bool = False,
        on_late_result: Callable[[InferenceResult], None] | None = None,
    ) -> InferenceResult:
        """Run one request's inference. Raises ModelNotFound (404), the model's
        InputError (422), QueueFull (503), DeadlineExceeded (504),
        EngineStopped (503) or InferenceFailed (500)."""
        state = self._models.get(model)
        if state is None:
            raise ModelNotFound(model)
        if self._stopping or not self.ready:
            raise EngineStopped(
                "the server is shutting down"
                if self._stopping
                else "models are still loading and warming up"
            )
        m = state.model
        try:
            arrays = dict(inputs) if validated else m.validate(inputs)
            if outputs:
                m.check_outputs(outputs)
        except _model.InputError:
            self.m_rejections.labels(model, "validation").inc()
            raise
        urgency = (
            priority.urgency
            if isinstance(priority, Priority)
            else (3 if priority is None else int(priority))
        )
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        fut: asyncio.Future[InferenceResult] = loop.create_future()
        rows = _model.rows(arrays)
        item = WorkItem(
            model,
            _Payload(arrays, fut, outputs, on_late_result),
            urgency=urgency,
            shape_key=_model.shape_key(arrays),
            deadline=None if timeout_s is None else now + timeout_s,
            size=max(1, rows),
        )
        sched = state.scheduler
        if rows > sched.max_batch_size:
            # Bigger than any batch: it runs alone, as one batch of its own rows.
            item.size = sched.max_batch_size
        try:
            with state.lock:
                sched.submit(item, now)
        except QueueFull:
            self.m_rejections.labels(model, "queue_full").inc()
            raise
        remove: Callable[[], None] | None = None
        if on_priority_change is not None:

            def moved(p: Priority) -> None:
                with state.lock:
                    changed = item.state is ItemState.QUEUED and sched.reprioritize(
                        item, p.urgency, loop.time()
                    )
                if changed:
                    self._pump(state)

            remove = on_priority_change(moved)
        # With every worker busy a new item changes nothing but, when its deadline
        # is the earliest, the expiry timer: skip the pump otherwise (it costs
        # about as much as the rest of a submission, once per item).
        if state.inline_ready and not state.busy:
            # Pump once at the end of this loop turn: the requests that arrive
            # in it share one run on the loop.
            if not state.pump_soon:
                state.pump_soon = True
                loop.call_soon(self._pump_soon, state)
        elif (
            state.busy < max(1, self.config.model_workers)
            or (urgency < DEFAULT_URGENCY and self._lane is not None and not state.lane_busy)
            or state.timer_at is None
            or (item.deadline is not None and item.deadline < state.timer_at)
        ):
            self._pump(state)
        try:
            return await fut
        except asyncio.CancelledError:
            with state.lock:
                cancelled = sched.cancel(item) or item.state is ItemState.CANCELLED
            if cancelled:
                self.m_cancellations.labels(model).inc()
            self._pump(state)
            raise
        finally:
            if remove is not None:
                remove()

    # -- the pump ------------------------------------------------------------------

    def _pump(self, state: _ModelState) -> None:
        """Answer expired items, start a worker on a batch while one is free (or
        run a cheap batch here), and set the timer for the next moment anything
        can change."""
        loop = self._loop
        if loop is None:
            return
        sched = state.scheduler
        now = loop.time()
        workers = max(1, self.config.model_workers)
        batches: list[Batch] = []
        inline: Batch | None = None
        with state.lock:
            expired = sched.expired(now)
            while state.busy < workers and self._pool is not None:
                batch = sched.next_batch(now)
                if batch is None:
                    break
                cost = state.cost_for(batch.rows)
                if not state.busy and cost is not None and cost.inline:
                    inline = batch
                    break
                state.busy += 1
                batches.append(batch)
            at = sched.next_deadline() if state.busy < workers else sched.next_expiry()
            # Every worker busy: the lane takes what is urgent (threads.py).
            lane: Batch | None = None
            if (
                inline is None
                and state.busy >= workers
                and not state.lane_busy
                and self._lane is not None
            ):
                lane = sched.next_urgent_batch(now)
                state.lane_busy = lane is not None
        for item in expired:
            self.m_rejections.labels(state.name, "deadline").inc()
            self._fail(item, DeadlineExceeded(now - item.enqueued_at))
        for batch in batches:
            assert self._pool is not None
            work = self._pool.submit(self._work, state, batch, loop)
            work.add_done_callback(partial(self._worker_cancelled, state, batch, loop))
        if lane is not None:
            assert self._lane is not None
            work = self._lane.submit(self._work, state, lane, loop, True)
            work.add_done_callback(partial(self._worker_cancelled, state, lane, loop, lane=True))
        if inline is not None:
            self._run_inline(state, inline)
            # One batch per pump: what is still ready runs after the loop has
            # served its other callbacks and sockets.
            if sched.depth():
                at = None
                if not state.pump_soon:
                    state.pump_soon = True
                    loop.call_soon(self._pump_soon, state)
        if at != state.timer_at:
            if state.timer is not None:
                state.timer.cancel()
            state.timer = None
            state.timer_at = at
            if at is not None:
                state.timer = loop.call_at(at, self._on_timer, state)

    def _pump_soon(self, state: _ModelState) -> None:
        state.pump_soon = False
        self._pump(state)

    def _run_inline(self, state: _ModelState, batch: Batch) -> None:
        """Run a batch whose measured cost is below INLINE_MAX_S here, on the
        loop: no worker to wake, no answers to post back. Runs go through the
        scheduler like any other (priorities, deadlines, cancellation,
        metrics, Server-Timing), only where the batch runs differs."""
        loop = self._loop
        assert loop is not None
        try:
            result: tuple[list[dict[str, np.ndarray]], float] | None = run_batch(
                state.model, batch, stack(batch)
            )
            error: BaseException | None = None
        except Exception as exc:  # the model's failure is the batch's answer
            result, error = None, exc
        now = loop.time()
        with state.lock:
            delivered = state.scheduler.complete(batch, now)
        if result is not None:
            cost = state.cost_for(batch.rows)
            if cost is not None:
                cost.inline_run(result[1])
                if not cost.inline:
                    log.info(
                        "model %s: batches of up to %d rows now take %.0f µs on average, "
                        "more than %.0f µs: they run in worker threads",
                        state.name,
                        batch.rows,
                        cost.seconds * 1e6 if cost.seconds is not None else 0.0,
                        INLINE_GIVE_UP_S * 1e6,
                    )
        state.inline_runs += 1
        self._deliver(state, batch, delivered, result, error, now)

    def _on_timer(self, state: _ModelState) -> None:
        state.timer = None
        state.timer_at = None
        self._pump(state)

    def _work(
        self,
        state: _ModelState,
        batch: Batch,
        loop: asyncio.AbstractEventLoop,
        lane: bool = False,
    ) -> None:
        """In a worker thread (or the urgent lane's, ``lane``: then the next
        batches are urgent ones only): run ``batch``, then take the next batch
        that is ready from the scheduler, until none is; each batch's results
        go back to the loop (``_batch_done``).

        The worker takes its next batch itself, at the moment it is free, as
        the scheduler intends. Handing that back to the loop cost most of a
        millisecond per batch on workload B: the loop had to wake up to pick
        the batch, the worker had to wake up to run it, and answering the
        finished batch woke every one of its callers, whose code held the GIL
        the worker needed to stack the next batch and enter the model. Here
        the worker already holds the GIL and the loop is idle when a run ends.
        For the same reason the next batch is stacked before the answers are
        posted: numpy lets go of the GIL while it copies a large batch (C's
        1.5 MB), and the woken loop would keep it for a millisecond.
        """
        stacked = stack(batch)
        try:
            self._work_on(state, batch, stacked, loop, lane)
        except BaseException:
            # Not a model failure (those are the batch's answer): still free
            # the worker, or the model would wait for it forever.
            log.exception("model %s worker failed", state.name)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._worker_stopped, state, lane)
            raise

    def _work_on(
        self,
        state: _ModelState,
        batch: Batch,
        stacked: dict[str, np.ndarray] | Exception,
        loop: asyncio.AbstractEventLoop,
        lane: bool,
    ) -> None:
        current: Batch | None = batch
        while current is not None:
            try:
                result: tuple[list[dict[str, np.ndarray]], float] | None = run_batch(
                    state.model, current, stacked
                )
                error: BaseException | None = None
            except Exception as exc:  # the model's failure is the batch's answer
                result, error = None, exc
            now = loop.time()
            with state.lock:
                delivered = state.scheduler.complete(current, now)
                sched = state.scheduler
                following = sched.next_urgent_batch(now) if lane else sched.next_batch(now)
            hold = False
            if following is not None:
                stacked = stack(following)
                hold = following.urgent and not current.urgent
            try:
                # One wake-up of the loop per batch, which also says whether
                # this worker is free now.
                loop.call_soon_threadsafe(
                    self._batch_done,
                    state,
                    current,
                    delivered,
                    result,
                    error,
                    now,
                    following is None,
                    hold,
                    lane,
                )
            except RuntimeError:  # the loop is closed: nobody is left to answer
                following = None
            current = following

    def _worker_cancelled(
        self,
        state: _ModelState,
        batch: Batch,
        loop: asyncio.AbstractEventLoop,
        work: concurrent.futures.Future[None],
        *,
        lane: bool = False,
    ) -> None:
        """The pool shut down before the worker started: the batch never ran.
        (Called in whichever thread finished ``work``; only a cancel matters.)"""
        if work.cancelled():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._never_ran, state, batch, lane)

    def _never_ran(self, state: _ModelState, batch: Batch, lane: bool = False) -> None:
        loop = self._loop
        assert loop is not None
        with state.lock:
            delivered = state.scheduler.complete(batch, loop.time())
        for item in delivered:
            self._fail(item, EngineStopped("the server shut down before this request ran"))
        self._worker_stopped(state, lane)

    def _worker_stopped(self, state: _ModelState, lane: bool = False) -> None:
        if lane:
            state.lane_busy = False
        else:
            state.busy -= 1
        self._deliver_held(state)
        self._pump(state)

    def _batch_done(
        self,
        state: _ModelState,
        batch: Batch,
        delivered: list[WorkItem],
        result: tuple[list[dict[str, np.ndarray]], float] | None,
        error: BaseException | None,
        now: float,
        worker_free: bool,
        hold: bool = False,
        lane: bool = False,
    ) -> None:
        """A worker's batch ran (one loop wake-up per batch).

        ``hold``: the worker went straight on to a batch with urgent items
        and this one has none. Its answers wait until that batch's are out.
        The model thread and the loop share a core when there is one core
        per process: answering a batch of 32 and reading the requests its
        clients send next kept the loop busy for the whole of the urgent
        run, which took 3x its time (model B, 1 row: 8.7 against 3.0 ms),
        and the urgent answers then queued behind those. The less urgent
        clients wait one urgent run more."""
        if hold:
            state.held.append((batch, delivered, result, error, now))
        else:
            self._deliver(state, batch, delivered, result, error, now)
            if not lane:  # held answers wait for the worker's own urgent batch
                self._deliver_held(state)
        if lane:
            state.lane_runs += 1
            state.lane_busy = not worker_free
        elif worker_free:
            state.busy -= 1
        # Expiries and the timer; a free worker (model_workers > 1) may start.
        self._pump(state)

    def _deliver_held(self, state: _ModelState) -> None:
        held, state.held = state.held, []
        for batch, delivered, result, error, now in held:
            self._deliver(state, batch, delivered, result, error, now)

    def _deliver(
        self,
        state: _ModelState,
        batch: Batch,
        delivered: list[WorkItem],
        result: tuple[list[dict[str, np.ndarray]], float] | None,
        error: BaseException | None,
        now: float,
    ) -> None:
        """Every delivered item's answer, and the batch's metrics."""
        name = state.name
        state.runs += 1
        state.items_run += len(batch.items)
        self.m_batch_size.labels(name).observe(len(batch.items))
        if result is None:
            log.error("model %s failed on a batch of %d", name, len(batch.items), exc_info=error)
            for item in delivered:
                self._fail(item, InferenceFailed(f"model '{name}' failed: {error}"))
        else:
            per_item, infer_s = result
            self.m_infer_time.labels(name).observe(infer_s)
            version = str(getattr(state.model, "version", "1"))
            index = {id(item): i for i, item in enumerate(batch.items)}
            if len(delivered) < len(batch.items):
                self._late_results(batch, delivered, per_item, index, infer_s, name, version)
            for item in delivered:
                payload: _Payload = item.payload
                if payload.future.done():
                    continue
                outs = per_item[index[id(item)]]
                if payload.outputs:
                    outs = {k: outs[k] for k in payload.outputs}
                started = item.started_at if item.started_at is not None else now
                queue_s = max(0.0, started - item.enqueued_at)
                state.queue_wait[item.urgency].observe(queue_s)
                payload.future.set_result(
                    InferenceResult(outs, queue_s, infer_s, len(batch.items), name, version)
                )

    def _late_results(
        self,
        batch: Batch,
        delivered: list[WorkItem],
        per_item: list[dict[str, np.ndarray]],
        index: dict[int, int],
        infer_s: float,
        name: str,
        version: str,
    ) -> None:
        """Results of items cancelled while their batch ran: nobody awaits
        them, but whoever asked for them late (the result cache) gets them."""
        kept = {id(item) for item in delivered}
        for item in batch.items:
            payload: _Payload = item.payload
            if id(item) in kept or payload.on_late_result is None:
                continue
            outs = per_item[index[id(item)]]
            if payload.outputs:
                outs = {k: outs[k] for k in payload.outputs}
            try:
                payload.on_late_result(
                    InferenceResult(outs, 0.0, infer_s, len(batch.items), name, version)
                )
            except Exception:
                log.exception("late result of model %s could not be kept", name)

    def _fail(self, item: WorkItem, exc: BaseException) -> None:
        payload: _Payload = item.payload
        if not payload.future.done():
            payload.future.set_exception(exc)
