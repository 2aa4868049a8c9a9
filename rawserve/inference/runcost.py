"""Where a model's batches run: on the event loop, or in the worker threads.

At warm-up the engine times every batch-size bucket of a plain ONNX Runtime
model (``time_runs``, in a worker while the loop waits); the buckets measured
under ``INLINE_MAX_S`` run on the loop, the rest in the workers. Runs on the
loop keep a moving average, and a bucket that grows too dear goes back to the
workers for good (``RunCost``). docs/ARCHITECTURE.md says why the engine
departs from "model runs happen in worker threads" for such models.
"""

from __future__ import annotations

import time
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
