"""Where a model's batches run: on the event loop, or in the worker threads.

At warm-up the engine times every batch-size bucket of a plain ONNX Runtime
model (``time_runs``, in a worker while the loop waits); the buckets measured
under ``INLINE_MAX_S`` run on the loop, the rest in the workers. Runs on the
loop keep a moving average, and a bucket that grows too dear goes back to the
workers for good (``RunCost``). docs/ARCHITECTURE.md says why the engine
departs from "model runs happen in worker threads" for such models.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rawserve.inference import model as _model

# Batches whose measured run time is below this run on the event loop itself.
# A worker trip (wake a thread, post the answers back, wake the loop) cost the
# loop about 60 µs of CPU per batch for the digits model, whose runs take
# 20-30 µs; the bound keeps what any other client can wait on the model to a
# tenth of a millisecond.
INLINE_MAX_S = 100e-6
# Timed runs per batch size at warm-up, the least of them taken: measured in a
# worker while the loop waits for it, so no other thread holds the GIL. (Under
# load a worker's timings include its waits for the GIL, up to the 5 ms switch
# interval: 170 µs for a 20 µs run was common, so they cannot decide.)
MEASURE_RUNS = 10
RETIME_PAUSE_S = 0.02
# Inline run times feed a moving average (weight 1/16); a batch size whose
# average passes INLINE_GIVE_UP_S goes back to the workers for good. Not
# INLINE_MAX_S itself: after the loop has idled a few milliseconds, a 20 µs
# digits run takes 150-250 µs (cold caches), which sparse traffic would
# average to; the guard is for a model grown ten times dearer than its bound.
# Each sample is capped so one run stretched by preemption cannot trip it.
# A bucket measured at warm-up above the bound, but at most this many times
# it, is timed again when the model is idle: a start on a busy machine would
# otherwise send it to the workers for the server's life. The first attempt
# comes RETIME_IDLE_FIRST_S after warm-up, each next one twice as late; a
# model busy at that moment skips the attempt.
RETIME_RANGE = 4
RETIME_IDLE_FIRST_S = 2.0
RETIME_IDLE_ATTEMPTS = 6
INLINE_EWMA = 1 / 16
INLINE_GIVE_UP_S = 10 * INLINE_MAX_S
INLINE_SAMPLE_CAP_S = 4 * INLINE_GIVE_UP_S


@dataclass(slots=True)
class RunCost:
    """What runs of one batch-size bucket cost, and so where they run."""

    seconds: float | None = None  # None: not measured, runs in the workers
    inline: bool = False

    def measured(self, seconds: float) -> None:
        self.seconds = seconds
        self.inline = seconds <= INLINE_MAX_S

    def inline_run(self, seconds: float) -> None:
        assert self.seconds is not None
        sample = min(seconds, INLINE_SAMPLE_CAP_S)
        self.seconds += (sample - self.seconds) * INLINE_EWMA
        if self.seconds > INLINE_GIVE_UP_S:
            self.inline = False


def measurable(model: Any) -> bool:
    """Whether the model's runs are ONNX Runtime's and nothing else, so that
    timing a few tells what every run costs. A subclass's own ``run`` may
    block or sleep on any input: it always runs in the workers."""
    return isinstance(model, _model.Model) and type(model).run is _model.Model.run


def time_runs(model: _model.Model, rows: int) -> float:
    """In a worker thread at warm-up: the least wall time of MEASURE_RUNS runs
    of ``rows`` rows of zeros."""
    feed = {spec.name: model.zeros(spec, rows) for spec in model.inputs}
    best = float("inf")
    for _ in range(MEASURE_RUNS):
        started = time.perf_counter()
        model.run(feed)
        best = min(best, time.perf_counter() - started)
    return best


log = logging.getLogger("rawserve.inference.engine")


def retime_candidate(costs: Sequence[RunCost]) -> int | None:
    """The smallest bucket that runs in the workers although its warm-up
    timing was within RETIME_RANGE of the bound (every smaller one runs on
    the loop): the one worth timing again. None when there is none."""
    for i, cost in enumerate(costs):
        if cost.inline:
            continue
        if cost.seconds is not None and cost.seconds <= RETIME_RANGE * INLINE_MAX_S:
            return i
        return None
    return None


async def retime_when_idle(
    name: str,
    costs: Sequence[RunCost],
    buckets: Sequence[int],
    idle: Callable[[], bool],
    time_bucket: Callable[[int], Awaitable[float]],
) -> None:
    """Time ``retime_candidate(costs)`` again while ``idle()``, up to
    RETIME_IDLE_ATTEMPTS times, farther apart each time; a bucket that comes
    out within the bound runs on the loop from then on, and the next one is
    timed at once. ``time_bucket(rows)`` is ``time_runs`` in a worker. Only
    a lower figure is believed: a busy moment can only make a run slower."""
    delay = RETIME_IDLE_FIRST_S
    attempts = 0
    while attempts < RETIME_IDLE_ATTEMPTS:
        await asyncio.sleep(delay)
        delay *= 2
        attempts += 1
        while (i := retime_candidate(costs)) is not None and idle():
            cost = costs[i]
            seconds = await time_bucket(buckets[i])
            assert cost.seconds is not None
            cost.measured(min(cost.seconds, seconds))
            if not cost.inline:
                break
            log.info(
                "model %s: batches of up to %d rows now run on the event loop "
                "(%.0f µs measured while idle, bound %.0f µs)",
                name,
                buckets[i],
                seconds * 1e6,
                INLINE_MAX_S * 1e6,
            )
        if retime_candidate(costs) is None:
            return


async def settled_timing(time_bucket: Callable[[int], Awaitable[float]], rows: int) -> float:
    """The least time of a run of ``rows`` rows at warm-up (``time_bucket`` is
    ``time_runs`` in a worker). A result just above the bound is timed again
    after a pause, up to twice: one busy moment of other processes on the
    core would otherwise send the bucket to the workers."""
    best = float("inf")
    for attempt in range(3):
        if attempt:
            await asyncio.sleep(RETIME_PAUSE_S)
        best = min(best, await time_bucket(rows))
        if not INLINE_MAX_S < best <= RETIME_RANGE * INLINE_MAX_S:
            break
    return best


def log_where_batches_run(name: str, buckets: Sequence[int], costs: Sequence[RunCost]) -> None:
    inline = [b for b, c in zip(buckets, costs, strict=True) if c.inline]
    if inline:
        log.info(
            "model %s: batches of up to %d rows run on the event loop "
            "(%.0f µs measured, bound %.0f µs)",
            name,
            inline[-1],
            (costs[len(inline) - 1].seconds or 0.0) * 1e6,
            INLINE_MAX_S * 1e6,
        )
