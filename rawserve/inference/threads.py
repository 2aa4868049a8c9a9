"""Where batches run when they leave the loop: the worker threads, the urgent
lane beside them, and their OS priority.

One core often carries everything (an edge box, a container with a CPU limit,
the benchmark's pinned server): the event loop, a worker running a bulk
batch, and now and then an urgent request. The scheduler orders what is
queued, but cannot stop a batch once ONNX Runtime runs it, so an urgent
request used to wait for the batch in progress (model B: up to 17 ms for a
batch of 64) and then share the core with the loop answering that batch.

Two things change that, both measured with ``tools/priority_probe.py``
(docs/PERFORMANCE.md, "Priority isolation"):

- **The urgent lane**: one more thread per model that runs urgent batches
  (items more urgent than the default) while every worker is busy, beside the
  batch in progress; ONNX Runtime runs one session from several threads at
  once.
- **The workers' lower OS priority** (``worker_nice``, Linux): the worker
  threads run at a higher nice value than the loop and the lane, so that on
  a shared core the scheduler gives the loop and an urgent run the core
  first, and a bulk batch takes the rest. Alone, neither helped: the lane's
  run shared the core with the bulk run (its p99 rose), and the nice value
  alone changed nothing while urgent items still waited for the bulk batch.
  On a machine with free cores both cost nothing; in a process that is not
  alone on a busy core, the workers also yield to other processes' threads.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rawserve.inference import model as _model
from rawserve.inference.scheduler import Batch, Scheduler

log = logging.getLogger("rawserve.inference.engine")

# Nice values, as setpriority(2) takes them.
MIN_NICE, MAX_NICE = 0, 19


def thread_nice() -> int | None:
    """The calling thread's nice value, or None where threads have none of
    their own (only Linux gives each thread its own)."""
    if not sys.platform.startswith("linux"):
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def lower_thread_priority(increment: int) -> None:
    """Raise the calling thread's nice value by ``increment`` (Linux, where
    each thread has its own; elsewhere setpriority would move the whole
    process, so it is left alone). Raising it needs no privilege."""
    if increment <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, now + increment))
    except OSError as exc:  # a seccomp profile may refuse it: run as is
        log.warning("could not lower the model worker thread's priority: %s", exc)


def stack(batch: Batch) -> dict[str, np.ndarray] | Exception:
    """The batch's inputs stacked into one feed (or why they cannot be)."""
    inputs = [item.payload.inputs for item in batch.items]
    try:
        return inputs[0] if len(inputs) == 1 else _model.concat(inputs)
    except Exception as exc:  # reported as the batch's failure by run_batch
        return exc


def run_batch(
    model: Any, batch: Batch, stacked: dict[str, np.ndarray] | Exception
) -> tuple[list[dict[str, np.ndarray]], float]:
    """In a worker thread: run the stacked batch once, split the rows back."""
    if isinstance(stacked, Exception):
        raise stacked
    inputs = [item.payload.inputs for item in batch.items]
    started = time.perf_counter()
    outputs = model.run(stacked)
    infer_s = time.perf_counter() - started
    if len(inputs) == 1:
        return [outputs], infer_s
    sizes = [_model.rows(x) for x in inputs]
    return _model.split(outputs, sizes), infer_s


def depth_reader(sched: Scheduler, urgency: int) -> Callable[[], float]:
    """The queue-depth gauge's reader for one urgency."""
    return lambda: float(sched.depth(urgency))
