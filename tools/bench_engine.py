"""Measure the inference engine alone, without HTTP (issue 8).

    taskset -c 1 python tools/bench_engine.py --models A,B,C
    python tools/bench_engine.py --models B --duration 3 --submitters 64

For each model it measures

(a) in-process ONNX Runtime: ``Model.run`` on random inputs at batch sizes
    1, 2, 4, ..., 64, one intra-op thread, each timed for ``--min-time``
    seconds;
(b) the engine: ``--submitters`` coroutines, each looping ``engine.infer``
    with one row, for ``--duration`` seconds after ``--warmup``; completed
    items per second, the mean batch size the engine formed (from its
    ``rawserve_batch_size`` histogram over the timed window) and the ratio to
    the in-process throughput at that batch size. A fractional batch size is
    interpolated: the time of one run is close to affine in the batch size
    between two measured sizes, so the time per run is interpolated, not the
    throughput.

Models: A is the bundled digits classifier; B (``build/models/mlp.onnx``) and
C (``build/models/cnn.onnx``) are the synthetic benchmark models, made with
tools/make_models.py when missing (that needs the ``onnx`` package).

Each of ``--repeat`` repetitions measures (a) and then (b), and each engine
run is compared with the curve measured just before it, so that a shared
machine's drifting speed cancels out; the tables give medians. Pin it with
``taskset -c 1`` to give the engine the one core the in-process runs use (the
event loop, the submitters and ONNX Runtime then share it); unpinned on a
two-core machine, the event loop has a core of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import onnxruntime  # type: ignore[import-untyped]  # noqa: E402

from rawserve.inference.engine import Engine, EngineConfig  # noqa: E402
from rawserve.inference.model import Model, ModelSpec, load_bundled  # noqa: E402

Array = npt.NDArray[Any]

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
BUILD_MODELS = ROOT / "build" / "models"
DESCRIPTIONS = {
    "A": "digits (bundled, 64 floats in)",
    "B": "MLP 256-2048-2048-2048-10 (synthetic, memory-bound)",
    "C": "CNN on 3x64x64 (synthetic, compute-bound)",
}


# -- models and inputs ------------------------------------------------------------


def _make_models_module() -> Any:
    spec = importlib.util.spec_from_file_location("make_models", ROOT / "tools" / "make_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_spec(letter: str) -> ModelSpec:
    """The spec of benchmark model A, B or C; B and C are made when missing."""
    if letter == "A":
        return load_bundled()
    name = {"B": "mlp", "C": "cnn"}[letter]
    path = BUILD_MODELS / f"{name}.onnx"
    if not path.is_file():
        print(f"making {path} (tools/make_models.py {name})", file=sys.stderr)
        make = _make_models_module()
        (make.make_mlp if name == "mlp" else make.make_cnn)(path)
    return ModelSpec(name, path)


def random_rows(model: Model, rows: int, seed: int = 0) -> Array:
    """``rows`` random rows for the model's only input, in its value range."""
    (spec,) = model.inputs
    assert spec.shape is not None
    shape = [rows, *(1 if d is None else d for d in spec.shape[1:])]
    rng = np.random.default_rng(seed)
    if model.name == "digits":
        return rng.integers(0, 17, size=shape).astype(spec.dtype)
    return rng.standard_normal(shape, dtype=np.float32).astype(spec.dtype)


# -- (a) in-process ---------------------------------------------------------------


def in_process(model: Model, sizes: Sequence[int], *, min_time_s: float) -> dict[int, float]:
    """Items/s of ``Model.run`` per batch size, each timed for ``min_time_s``."""
    name = model.inputs[0].name
    data = random_rows(model, max(sizes))
    curve: dict[int, float] = {}
    for size in sizes:
        feed = {name: np.ascontiguousarray(data[:size])}
        model.run(feed)  # allocations for this size happen outside the timing
        runs = 0
        started = time.perf_counter()
        elapsed = 0.0
        while elapsed < min_time_s:
            model.run(feed)
            runs += 1
            elapsed = time.perf_counter() - started
        curve[size] = runs * size / elapsed
    return curve


def interpolate(curve: dict[int, float], batch: float) -> float:
    """In-process items/s at a possibly fractional batch size, interpolating the
    time of one run linearly between the two nearest measured sizes."""
    sizes = sorted(curve)
    if batch <= sizes[0]:
        return curve[sizes[0]]
    if batch >= sizes[-1]:
        return curve[sizes[-1]]
    for low, high in itertools.pairwise(sizes):
        if low <= batch <= high:
            t_low, t_high = low / curve[low], high / curve[high]
            t = t_low + (t_high - t_low) * (batch - low) / (high - low)
            return batch / t
    raise AssertionError("unreachable")


# -- (b) the engine ----------------------------------------------------------------


@dataclass
class EngineRun:
    items_per_s: float
    mean_batch: float
    loop_cpu_us_per_item: float  # event loop thread CPU time per item


async def engine_run(
    model: Model,
    *,
    submitters: int,
    duration_s: float,
    warmup_s: float,
    max_batch_size: int,
    max_batch_delay_ms: float,
    workers: int,
) -> EngineRun:
    name = model.name
    engine = Engine(
        EngineConfig(
            max_batch_size=max_batch_size,
            max_batch_delay_s=max_batch_delay_ms / 1000,
            queue_limit=max(2048, 2 * submitters),
            model_workers=workers,
        )
    )
    engine.add_model(name, model)
    await engine.start()
    rows = random_rows(model, submitters, seed=1)
    input_name = model.inputs[0].name
    completed = 0
    running = True

    async def submitter(i: int) -> None:
        nonlocal completed
        # A fresh dict per request, as a decoded request body would be.
        row = rows[i : i + 1]
        while running:
            await engine.infer(name, {input_name: row})
            completed += 1

    tasks = [asyncio.create_task(submitter(i)) for i in range(submitters)]
    histogram = engine.m_batch_size.labels(name)
    await asyncio.sleep(warmup_s)
    counts0, sum0 = histogram.snapshot()
    done0, cpu0, t0 = completed, time.thread_time(), time.perf_counter()
    await asyncio.sleep(duration_s)
    counts1, sum1 = histogram.snapshot()
    done1, cpu1, t1 = completed, time.thread_time(), time.perf_counter()
    running = False
    await asyncio.gather(*tasks)
    await engine.stop()
    items = done1 - done0
    batches = counts1[-1] - counts0[-1]
    return EngineRun(
        items_per_s=items / (t1 - t0),
        mean_batch=(sum1 - sum0) / batches if batches else 0.0,
        loop_cpu_us_per_item=(cpu1 - cpu0) / items * 1e6 if items else 0.0,
    )


# -- report --------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return (
        f"{os.cpu_count()} CPUs ({cpu}), this process pinned to CPUs {affinity}; "
        f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, "
        f"numpy {np.__version__}"
    )


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines[1] = "|---|" + "|".join("---:" for _ in header[1:]) + "|"
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="A,B,C", help="comma-separated: A, B, C")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds timed per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before timing")
    parser.add_argument("--submitters", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-batch-delay-ms", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=1, help="model worker threads")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument(
        "--min-time", type=float, default=0.25, help="seconds per in-process measurement"
    )
    parser.add_argument(
        "--batch-sizes", default=",".join(map(str, BATCH_SIZES)), help="in-process sizes"
    )
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument(
        "--curve-json",
        action="store_true",
        help="measure only (a), once, and print it as JSON {model: {batch size: items/s}} "
        "(tools/bench.py runs this on the server's CPU)",
    )
    args = parser.parse_args(argv)
    args.models = [m.strip().upper() for m in args.models.split(",") if m.strip()]
    unknown = set(args.models) - set(DESCRIPTIONS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose among A, B, C")
    args.batch_sizes = sorted({int(s) for s in args.batch_sizes.split(",")})
    for name in ("duration", "warmup", "min_time"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.submitters < 1 or args.max_batch_size < 1 or args.workers < 1 or args.repeat < 1:
        parser.error("--submitters, --max-batch-size, --workers and --repeat must be >= 1")
    return args


def runner(loop: str) -> Callable[[Any], Any]:
    if loop == "uvloop":
        import uvloop

        return uvloop.run
    return asyncio.run


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.curve_json:
        curves = {}
        for letter in args.models:
            model = Model(model_spec(letter), intra_op_threads=1)
            model.warmup(args.batch_sizes)
            curves[letter] = in_process(model, args.batch_sizes, min_time_s=args.min_time)
        print(json.dumps(curves))
        return 0
    run = runner(args.loop)
    print(f"Machine: {machine()}\n")
    print(
        f"Engine: {args.submitters} submitters, max batch {args.max_batch_size}, "
        f"max delay {args.max_batch_delay_ms:g} ms, {args.workers} worker(s), "
        f"{args.loop} loop; {args.duration:g} s timed after {args.warmup:g} s, "
        f"median of {args.repeat}\n"
    )
    # The machine is shared and its speed drifts: each repetition measures the
    # in-process curve and then the engine, and each engine run is compared
    # with the curve measured just before it.
    curves: dict[str, list[dict[int, float]]] = {}
    results: dict[str, list[EngineRun]] = {}
    for letter in args.models:
        model = Model(model_spec(letter), intra_op_threads=1)
        model.warmup(args.batch_sizes)
        curves[letter], results[letter] = [], []
        for _ in range(args.repeat):
            curves[letter].append(in_process(model, args.batch_sizes, min_time_s=args.min_time))
            results[letter].append(
                run(
                    engine_run(
                        model,
                        submitters=args.submitters,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                        max_batch_size=args.max_batch_size,
                        max_batch_delay_ms=args.max_batch_delay_ms,
                        workers=args.workers,
                    )
                )
            )
        print(f"model {letter} done", file=sys.stderr)
    medians = {
        letter: {s: statistics.median(c[s] for c in curves[letter]) for s in args.batch_sizes}
        for letter in args.models
    }

    print("In-process ONNX Runtime, items/s by batch size (1 intra-op thread):\n")
    print(
        table(
            ["model", *map(str, args.batch_sizes)],
            [
                [letter, *(f"{medians[letter][s]:,.0f}" for s in args.batch_sizes)]
                for letter in args.models
            ],
        )
    )
    print("\nEngine alone:\n")
    rows = []
    for letter in args.models:
        runs = results[letter]
        rate = statistics.median(r.items_per_s for r in runs)
        batch = statistics.median(r.mean_batch for r in runs)
        cpu = statistics.median(r.loop_cpu_us_per_item for r in runs)
        ratios = [
            r.items_per_s / interpolate(curve, r.mean_batch)
            for r, curve in zip(runs, curves[letter], strict=True)
        ]
        reference = interpolate(medians[letter], batch)
        rows.append(
            [
                f"{letter}: {DESCRIPTIONS[letter]}",
                f"{rate:,.0f}",
                f"{batch:.1f}",
                f"{reference:,.0f}",
                f"{statistics.median(ratios):.0%}",
                f"{min(ratios):.0%}..{max(ratios):.0%}",
                f"{cpu:.0f}",
            ]
        )
    print(
        table(
            [
                "model",
                "engine items/s",
                "mean batch",
                "in-process items/s at that batch",
                "ratio",
                "ratio range",
                "loop CPU µs/item",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
