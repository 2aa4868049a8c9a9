"""The inference engine with the real bundled digits model, no HTTP: batching,
priority, cancellation, admission, deadlines, validation, shutdown and model
failures. A "slow" model is the same real model sleeping after each run
(tests/test_model.py ``SlowModel``), so that a backlog can build up behind a
running batch."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from rawserve.core.priority import Priority
from rawserve.inference import engine as engine_module
from rawserve.inference import runcost
from rawserve.inference.engine import (
    DeadlineExceeded,
    Engine,
    EngineConfig,
    EngineStopped,
    InferenceFailed,
    InferenceResult,
    ModelNotFound,
    QueueFull,
)
from rawserve.inference.model import InputError, Model, bundled_metadata, load_bundled
from rawserve.inference.threads import thread_nice
from tests.test_model import SlowModel

Array = npt.NDArray[Any]
MakeEngine = Callable[..., Awaitable[Engine]]

SLOW_S = 0.02  # sleep per batch of the deliberately slow model


class Recording(SlowModel):
    """The real digits model, keeping a copy of every batch it runs, so a test
    can tell which rows reached ONNX Runtime; slow when given ``latency_s``."""

    def __init__(self, latency_s: float = 0.0) -> None:
        super().__init__(latency_s)
        self.batches: list[Array] = []
        self._lock = threading.Lock()

    def run(
        self, inputs: Mapping[str, Array], output_names: Sequence[str] | None = None
    ) -> dict[str, Array]:
        with self._lock:
            self.batches.append(np.array(inputs["input"], copy=True))
        return super().run(inputs, output_names)

    def ran_row(self, row: Array) -> bool:
        return any(bool((batch == row).all(axis=1).any()) for batch in self.batches)


@pytest.fixture(scope="module")
def samples() -> tuple[Array, Array]:
    info = bundled_metadata()
    x = np.array(info["samples"]["inputs"], dtype=np.float32)
    y = np.array(info["samples"]["labels"], dtype=np.int64)
    return x, y


@pytest.fixture
async def make_engine() -> AsyncIterator[MakeEngine]:
    engines: list[Engine] = []

    async def make(model: Model | None = None, **config: Any) -> Engine:
        engine = Engine(EngineConfig(**config))
        engine.add_model("digits", model if model is not None else Model(load_bundled()))
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.stop(timeout_s=2)


def row(value: float) -> dict[str, Array]:
    """One item whose 64 pixels all equal ``value``: easy to recognise later."""
    return {"input": np.full((1, 64), value, dtype=np.float32)}


async def until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not condition():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


class Gated(Recording):
    """Runs block until ``release`` is set; ``running`` and ``most_running``
    count the runs in progress, so tests assert on overlap, not on time."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.running = 0
        self.most_running = 0

    def run(
        self, inputs: Mapping[str, Array], output_names: Sequence[str] | None = None
    ) -> dict[str, Array]:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            # Bounded: a test that forgets to release fails instead of hanging.
            assert self.release.wait(30), "Gated model never released"
            return super().run(inputs, output_names)
        finally:
            with self._lock:
                self.running -= 1


def inline_bounds(monkeypatch: pytest.MonkeyPatch, **bounds: float) -> None:
    """Set runcost's bounds where they are read: the engine's warm-up reads
    its own imported names, RunCost the module's."""
    for name, value in bounds.items():
        for module in (engine_module, runcost):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, value)


def batch_histogram(engine: Engine) -> tuple[list[int], float]:
    return engine.m_batch_size.labels("digits").snapshot()


# -- batching ----------------------------------------------------------------------


async def test_concurrent_requests_are_batched_and_answered_per_row(
    make_engine: MakeEngine, samples: tuple[Array, Array]
) -> None:
    engine = await make_engine(max_batch_size=32, max_batch_delay_s=0.005)
    x, y = samples
    n = 64
    rows = [x[i % len(x)][None, :] for i in range(n)]
    # What each caller must get back: its own row's outputs, as one run of the
    # model over all rows computes them.
    expected = engine.model("digits").run({"input": np.concatenate(rows)})

    results = await asyncio.gather(*(engine.infer("digits", {"input": r}) for r in rows))

    for i, result in enumerate(results):
        assert isinstance(result, InferenceResult)
        assert result.model == "digits" and result.version == "1"
        assert result.outputs["label"].shape == (1,)
        assert int(result.outputs["label"][0]) == int(expected["label"][i])
        np.testing.assert_allclose(
            result.outputs["probabilities"][0], expected["probabilities"][i], rtol=1e-5, atol=1e-6
        )
    # The bundled model is right on at least 9 of the 10 sample digits.
    labels = np.array([int(r.outputs["label"][0]) for r in results])
    assert np.sum(labels == y[np.arange(n) % len(y)]) >= 0.85 * n

    stats = engine.stats("digits")
    assert stats["items_run"] == n
    assert stats["runs"] < n
    counts, total = batch_histogram(engine)
    assert counts[-1] == stats["runs"]  # one observation per run
    assert total == n  # the sizes add up to the items
    assert counts[0] < counts[-1]  # some batch held more than one item
    assert max(r.batch_size for r in results) > 1
    assert all(r.batch_size <= 32 for r in results)
    text = engine.metrics.render().decode()
    assert f'rawserve_batch_size_count{{model="digits"}} {stats["runs"]}' in text
    assert 'rawserve_batch_size_sum{model="digits"} 64' in text
    timing = results[0].server_timing()
    assert timing.startswith("queue;dur=") and ", infer;dur=" in timing


async def test_request_with_several_rows(
    make_engine: MakeEngine, samples: tuple[Array, Array]
) -> None:
    engine = await make_engine(max_batch_size=8)
    x, _ = samples
    # Bigger than a batch: it runs alone, all its rows at once.
    result = await engine.infer("digits", {"input": x}, outputs=["label"])
    assert list(result.outputs) == ["label"]
    expected = engine.model("digits").run({"input": x})["label"]
    np.testing.assert_array_equal(result.outputs["label"], expected)


async def test_unknown_model(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    with pytest.raises(ModelNotFound) as caught:
        await engine.infer("nope", row(0))
    assert caught.value.status_code == 404 and "'nope'" in str(caught.value)


# -- priority ----------------------------------------------------------------------


async def finish_order(
    engine: Engine, backlog: int, submit_urgent: Callable[[], Awaitable[InferenceResult]]
) -> tuple[int, list[str]]:
    """Queue ``backlog`` urgency-7 items on a busy slow model, then the urgent
    one; return the urgent one's completion index and the order."""
    order: list[str] = []

    async def one(name: str, make: Callable[[], Awaitable[InferenceResult]]) -> None:
        await make()
        order.append(name)

    tasks = [
        asyncio.create_task(one(f"bulk{i}", lambda: engine.infer("digits", row(1), priority=7)))
        for i in range(backlog)
    ]
    # Every bulk item is queued (and the first batch is running) before the urgent one.
    await until(lambda: engine.stats("digits")["queued"] + 4 >= backlog)
    assert engine.stats("digits")["queued"] >= backlog - 4
    tasks.append(asyncio.create_task(one("urgent", submit_urgent)))
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    return order.index("urgent"), order


@pytest.mark.parametrize("mode", ["fair", "strict"])
async def test_urgent_request_overtakes_a_backlog(make_engine: MakeEngine, mode: str) -> None:
    engine = await make_engine(SlowModel(SLOW_S), max_batch_size=4, priority_mode=mode)
    index, order = await finish_order(
        engine, 40, lambda: engine.infer("digits", row(2), priority=Priority(0))
    )
    # At worst it waits for the batch already running: it is in the next one.
    assert index < 8, order
    assert len(order) == 41


async def test_an_urgent_batch_is_answered_before_the_bulk_batch_that_ran_first(
    make_engine: MakeEngine,
) -> None:
    # The worker goes from a bulk batch straight to an urgent one: the bulk
    # batch's answers wait for the urgent batch's, so the loop is not busy
    # answering (and reading) bulk work while the urgent run needs the core.
    model = Gated()
    # Without the lane, which would take the urgent item beside the bulk run.
    engine = await make_engine(model, max_batch_size=8, model_workers=1, urgent_lane=False)
    order: list[str] = []

    def start(name: str, value: float, urgency: int) -> asyncio.Task[InferenceResult]:
        task = asyncio.create_task(engine.infer("digits", row(value), priority=urgency))
        task.add_done_callback(lambda _: order.append(name))
        return task

    bulk = start("bulk", 1, 7)
    await until(lambda: model.running == 1)
    more_bulk = start("more bulk", 2, 7)
    urgent = start("urgent", 3, 0)
    await until(lambda: engine.stats("digits")["queued"] == 2)
    model.release.set()
    results = await asyncio.wait_for(asyncio.gather(bulk, urgent, more_bulk), 5)
    assert order[:2] == ["urgent", "bulk"], order
    # The urgent batch held the urgent item alone; the bulk ran in batches of its own.
    assert [r.batch_size for r in results] == [1, 1, 1]
    assert len(model.batches) == 3


class HoldsRow(Recording):
    """Runs holding the row ``held`` block until ``release`` is set; every run
    records its rows' first value and its thread's nice value."""

    def __init__(self, held: float) -> None:
        super().__init__()
        self.held = held
        self.release = threading.Event()
        self.running = 0
        self.runs: list[tuple[float, int | None]] = []

    def run(
        self, inputs: Mapping[str, Array], output_names: Sequence[str] | None = None
    ) -> dict[str, Array]:
        first = float(inputs["input"][0, 0])
        with self._lock:
            self.running += 1
            self.runs.append((first, thread_nice()))
        try:
            if bool((inputs["input"][:, 0] == self.held).any()):
                assert self.release.wait(30), "HoldsRow never released"
            return super().run(inputs, output_names)
        finally:
            with self._lock:
                self.running -= 1


@pytest.mark.parametrize("lane", [True, False])
async def test_an_urgent_item_runs_beside_the_bulk_batch_in_progress(
    make_engine: MakeEngine, lane: bool
) -> None:
    # The urgent lane (inference/threads.py): with the only worker held by a
    # bulk batch, an urgent item runs at once on the lane; a default one
    # waits for the worker. Without the lane the urgent one waits too.
    model = HoldsRow(1)
    engine = await make_engine(model, max_batch_size=8, model_workers=1, urgent_lane=lane)
    bulk = asyncio.create_task(engine.infer("digits", row(1), priority=7))
    await until(lambda: model.running == 1)
    urgent = asyncio.create_task(engine.infer("digits", row(3), priority=0))
    default = asyncio.create_task(engine.infer("digits", row(2), priority=3))
    if lane:
        result = await asyncio.wait_for(urgent, 5)
        assert result.batch_size == 1 and not bulk.done()
        await until(lambda: engine.stats("digits")["queued"] == 1)  # the default item
    else:
        await until(lambda: engine.stats("digits")["queued"] == 2)
        assert not urgent.done()
    model.release.set()
    await asyncio.wait_for(asyncio.gather(bulk, urgent, default), 5)
    assert engine.stats("digits")["lane_runs"] == (1 if lane else 0)
    # Held bulk first; the urgent one beside it (lane) or next (no lane); then the default.
    assert [first for first, _ in model.runs[-3:]] == [1, 3, 2]
    assert engine.stats("digits")["busy"] == 0 and engine.stats("digits")["queued"] == 0


async def test_workers_run_at_a_lower_os_priority_than_the_loop_and_the_lane(
    make_engine: MakeEngine,
) -> None:
    # Linux keeps a nice value per thread; elsewhere there is none to lower,
    # and the engine must leave the process's alone (thread_nice says None).
    loop_nice = thread_nice()
    assert (loop_nice is None) == (not sys.platform.startswith("linux"))
    model = HoldsRow(1)
    engine = await make_engine(model, max_batch_size=8, model_workers=1, worker_nice=5)
    bulk = asyncio.create_task(engine.infer("digits", row(1), priority=7))
    await until(lambda: model.running == 1)
    await asyncio.wait_for(engine.infer("digits", row(3), priority=0), 5)
    model.release.set()
    await asyncio.wait_for(bulk, 5)
    nice = dict(model.runs[-2:])
    if loop_nice is None:
        assert nice == {1.0: None, 3.0: None}, model.runs
    else:
        assert nice == {1.0: min(19, loop_nice + 5), 3.0: loop_nice}, model.runs
    assert thread_nice() == loop_nice  # the loop's own is left alone


async def test_priority_change_while_queued_moves_the_item(make_engine: MakeEngine) -> None:
    engine = await make_engine(SlowModel(SLOW_S), max_batch_size=4)

    class Request:
        """What the HTTP layer hands over: on_priority_change(listener) -> remover."""

        def __init__(self) -> None:
            self.listeners: list[Callable[[Priority], None]] = []

        def on_priority_change(self, listener: Callable[[Priority], None]) -> Callable[[], None]:
            self.listeners.append(listener)
            return lambda: self.listeners.remove(listener)

    request = Request()

    async def late_urgent() -> InferenceResult:
        task = asyncio.ensure_future(
            engine.infer(
                "digits", row(3), priority=7, on_priority_change=request.on_priority_change
            )
        )
        await until(lambda: bool(request.listeners))
        # Queued behind the whole backlog at urgency 7; a PRIORITY_UPDATE arrives.
        request.listeners[0](Priority(0))
        return await task

    index, order = await finish_order(engine, 40, late_urgent)
    assert index < 8, order
    assert request.listeners == []  # the engine unsubscribed when the request ended


# -- cancellation --------------------------------------------------------------------


async def test_cancel_removes_a_queued_item(make_engine: MakeEngine) -> None:
    model = Recording(latency_s=0.05)
    engine = await make_engine(model, max_batch_size=4)
    running = asyncio.create_task(engine.infer("digits", row(1)))
    await until(lambda: len(model.batches) == 1)  # the worker is busy with it
    queued = asyncio.create_task(engine.infer("digits", row(13)))
    await until(lambda: engine.stats("digits")["queued"] == 1)

    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert engine.stats("digits")["queued"] == 0
    assert engine.stats("digits")["cancellations"] == 1
    assert engine.m_cancellations.labels("digits").value == 1

    await running
    after = await engine.infer("digits", row(2))  # the engine still serves
    assert after.batch_size == 1
    stats = engine.stats("digits")
    assert stats["items_run"] == 2 and stats["runs"] == 2
    assert stats["dropped_results"] == 0
    assert not model.ran_row(row(13)["input"])
    assert model.ran_row(row(1)["input"]) and model.ran_row(row(2)["input"])


async def test_cancel_while_running_drops_the_result(make_engine: MakeEngine) -> None:
    model = Recording(latency_s=0.05)
    engine = await make_engine(model)
    task = asyncio.create_task(engine.infer("digits", row(5)))
    await until(lambda: len(model.batches) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: engine.stats("digits")["runs"] == 1)
    stats = engine.stats("digits")
    assert stats["cancellations"] == 1 and stats["dropped_results"] == 1
    assert stats["items_run"] == 1  # it did run; only its result was dropped
    assert engine.m_cancellations.labels("digits").value == 1
    result = await engine.infer("digits", row(6))
    assert result.outputs["label"].shape == (1,)


# -- admission and deadlines --------------------------------------------------------


async def test_full_queue_is_refused_at_once(make_engine: MakeEngine) -> None:
    model = Recording(latency_s=0.05)
    engine = await make_engine(model, max_batch_size=1, queue_limit=3)
    tasks = [asyncio.create_task(engine.infer("digits", row(i))) for i in range(4)]
    await until(lambda: engine.stats("digits")["queued"] == 3)  # one runs, three wait

    with pytest.raises(QueueFull) as caught:
        await engine.infer("digits", row(9))
    err = caught.value
    assert err.status_code == 503 and err.retry_after_s >= 1 and err.queue_limit == 3
    assert engine.stats("digits")["rejections"] == 1
    assert engine.m_rejections.labels("digits", "queue_full").value == 1
    assert 'rawserve_rejections_total{model="digits",reason="queue_full"} 1' in (
        engine.metrics.render().decode()
    )

    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert not model.ran_row(row(9)["input"])


async def test_expired_deadline_is_never_run(make_engine: MakeEngine) -> None:
    model = Gated()
    engine = await make_engine(model, max_batch_size=1)
    busy = asyncio.create_task(engine.infer("digits", row(1)))
    await until(lambda: model.running == 1, timeout_s=10)

    with pytest.raises(DeadlineExceeded) as caught:
        await asyncio.wait_for(engine.infer("digits", row(7), timeout_s=0.01), 10)
    # Answered when the deadline passed, while the only worker was still busy
    # (the model is held until released), not when it freed up.
    assert model.running == 1 and not busy.done()
    model.release.set()
    await asyncio.wait_for(busy, 10)
    assert caught.value.status_code == 504 and caught.value.waited_s >= 0.009
    assert "not run" in str(caught.value)
    assert engine.stats("digits")["expirations"] == 1
    assert engine.m_rejections.labels("digits", "deadline").value == 1

    await busy
    stats = engine.stats("digits")
    assert stats["items_run"] == 1 and stats["queued"] == 0
    assert not model.ran_row(row(7)["input"])


async def test_configured_queue_timeout_applies(make_engine: MakeEngine) -> None:
    model = Recording(latency_s=0.1)
    engine = await make_engine(model, max_batch_size=1, queue_timeout_s=0.01)
    busy = asyncio.create_task(engine.infer("digits", row(1), timeout_s=5))
    await until(lambda: len(model.batches) == 1)
    with pytest.raises(DeadlineExceeded):
        await engine.infer("digits", row(2))
    await busy


# -- validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ({}, None, "missing input 'input'"),
        ({"input": np.zeros((1, 63), np.float32)}, None, "shape [1, 63] does not match"),
        ({"input": np.zeros((64,), np.float32)}, None, "shape [64] does not match"),
        ({"input": np.full((1, 64), "a")}, None, "datatype BYTES cannot be converted to"),
        ({"input": np.zeros((1, 64), bool)}, None, "datatype BOOL cannot be converted to"),
        ({"input": np.full((1, 64), np.nan, np.float32)}, None, "are NaN or infinite"),
        ({"input": np.full((1, 64), np.inf)}, None, "are NaN or infinite"),
        ({"input": np.zeros((1, 64)), "extra": np.zeros(1)}, None, "unknown input 'extra'"),
        ({"input": np.zeros((1, 64))}, ["nope"], "unknown output 'nope'"),
    ],
)
async def test_bad_tensors_are_refused_before_queueing(
    make_engine: MakeEngine, inputs: dict[str, Any], outputs: list[str] | None, message: str
) -> None:
    model = Recording()
    engine = await make_engine(model)
    with pytest.raises(InputError) as caught:
        await engine.infer("digits", inputs, outputs=outputs)
    assert caught.value.status_code == 422
    assert message in str(caught.value)
    stats = engine.stats("digits")
    assert stats["queued"] == 0 and stats["runs"] == 0 and model.batches == []
    assert engine.m_rejections.labels("digits", "validation").value == 1


# -- shutdown -----------------------------------------------------------------------


async def test_stop_answers_every_queued_item(make_engine: MakeEngine) -> None:
    model = Recording(latency_s=0.05)
    # A short batch delay, so the first batch takes the first two submissions.
    engine = await make_engine(model, max_batch_size=2, max_batch_delay_s=0.002)
    tasks = [asyncio.create_task(engine.infer("digits", row(i))) for i in range(10)]
    await until(lambda: len(model.batches) == 1 and engine.stats("digits")["queued"] == 8)

    await engine.stop(timeout_s=0)
    assert not engine.ready
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    done = [o for o in outcomes if isinstance(o, InferenceResult)]
    stopped = [o for o in outcomes if isinstance(o, EngineStopped)]
    # The running batch finishes; everything queued is told, nothing is lost.
    assert len(done) == 2 and len(stopped) == 8, outcomes
    assert all(e.status_code == 503 for e in stopped)
    assert engine.stats("digits")["items_run"] == 2 and len(model.batches) == 1

    with pytest.raises(EngineStopped) as caught:
        await engine.infer("digits", row(1))
    assert caught.value.status_code == 503


async def test_stop_waits_for_queued_work_within_the_timeout(make_engine: MakeEngine) -> None:
    engine = await make_engine(SlowModel(0.01), max_batch_size=2, max_batch_delay_s=0.002)
    tasks = [asyncio.create_task(engine.infer("digits", row(i))) for i in range(6)]
    await until(lambda: engine.stats("digits")["queued"] == 4)
    await engine.stop(timeout_s=5)
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, InferenceResult) for o in outcomes), outcomes


async def test_infer_before_start_is_refused() -> None:
    engine = Engine()
    engine.add_model("digits", Model(load_bundled()))
    with pytest.raises(EngineStopped, match="still loading"):
        await engine.infer("digits", row(0))


# -- model failures -----------------------------------------------------------------


async def test_model_failure_fails_the_batch_and_the_engine_keeps_serving(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine()
    # Skipping validation lets a tensor through that ONNX Runtime itself refuses:
    # a real failure of session.run, not a simulated one.
    bad = {"input": np.zeros((1, 63), np.float32)}
    with pytest.raises(InferenceFailed) as caught:
        await engine.infer("digits", bad, validated=True)
    assert caught.value.status_code == 500
    assert "model 'digits' failed" in str(caught.value)

    good = await engine.infer("digits", row(0))
    assert good.outputs["label"].shape == (1,)
    assert engine.stats("digits")["runs"] == 2 and engine.ready


async def test_a_failed_batch_does_not_stop_the_worker(make_engine: MakeEngine) -> None:
    model = Recording(latency_s=0.03)
    engine = await make_engine(model, max_batch_size=4)
    first = asyncio.create_task(engine.infer("digits", row(1)))
    await until(lambda: len(model.batches) == 1)
    # Queued behind the running batch: one the model refuses (its own shape, so
    # its own batch), then good ones the same worker takes after the failure.
    bad = asyncio.create_task(
        engine.infer("digits", {"input": np.zeros((1, 63), np.float32)}, validated=True)
    )
    good = [asyncio.create_task(engine.infer("digits", row(i))) for i in (2, 3)]
    outcomes = await asyncio.wait_for(asyncio.gather(first, bad, *good, return_exceptions=True), 5)
    assert isinstance(outcomes[1], InferenceFailed)
    assert all(isinstance(o, InferenceResult) for i, o in enumerate(outcomes) if i != 1)
    assert engine.stats("digits")["runs"] == 3


async def test_several_workers_run_batches_at_once(make_engine: MakeEngine) -> None:
    model = Gated()
    engine = await make_engine(model, max_batch_size=1, model_workers=2)
    tasks = [asyncio.create_task(engine.infer("digits", row(i))) for i in range(2)]
    # Both runs in progress at once: side by side, not in a row.
    await until(lambda: model.running == 2, timeout_s=10)
    model.release.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert model.most_running == 2
    assert [r.batch_size for r in results] == [1, 1]
    assert engine.stats("digits")["runs"] == 2


async def test_a_busy_worker_takes_its_next_batch_without_the_loop(
    make_engine: MakeEngine,
) -> None:
    model = Recording(latency_s=0.01)
    engine = await make_engine(model, max_batch_size=1)
    tasks = [asyncio.create_task(engine.infer("digits", row(i))) for i in range(20)]
    await until(lambda: len(model.batches) >= 1)
    before = len(model.batches)
    # The loop is stuck (a handler's blocking call): the model keeps going.
    time.sleep(0.15)
    assert len(model.batches) - before >= 5
    results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert len(results) == 20 and engine.stats("digits")["runs"] == 20


async def test_a_long_warm_up_logs_each_batch_size(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every warm-up counts as long here: the progress lines are what is checked.
    monkeypatch.setattr(engine_module, "WARMUP_PROGRESS_AFTER_S", 0.0)
    with caplog.at_level(logging.INFO, logger="rawserve"):
        await make_engine(max_batch_size=8)
    progress = [r.getMessage() for r in caplog.records if "warming up model" in r.getMessage()]
    assert [m.split(":")[1].split(",")[0] for m in progress] == [
        " batch size 1 done (1 of 4)",
        " batch size 2 done (2 of 4)",
        " batch size 4 done (3 of 4)",
    ]
    assert all(m.startswith("warming up model digits:") and "s elapsed" in m for m in progress)
    assert any("model digits warmed up (4 batch sizes)" in r.getMessage() for r in caplog.records)


async def test_a_short_warm_up_logs_one_line(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "WARMUP_PROGRESS_AFTER_S", float("inf"))
    with caplog.at_level(logging.INFO, logger="rawserve"):
        await make_engine(max_batch_size=8)
    assert not [r for r in caplog.records if "warming up model" in r.getMessage()]
    assert [r for r in caplog.records if "warmed up" in r.getMessage()]


# -- cheap models run on the loop ------------------------------------------------------


class RunLog:
    """``Model.run`` itself, wrapped: the thread and first rows of every run,
    and an optional sleep after it (a plain ``Model``, not a subclass: only
    ONNX Runtime's own runs are timed and moved to the loop)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.threads: list[int] = []
        self.first_values: list[float] = []
        self.sleep_s = 0.0
        self.slow_runs = 0  # the first this many runs sleep sleep_s; 0: every run does
        original = Model.run

        def run(
            model: Model, inputs: Mapping[str, Array], output_names: Sequence[str] | None = None
        ) -> dict[str, Array]:
            self.threads.append(threading.get_ident())
            self.first_values.append(float(inputs["input"][0][0]))
            out = original(model, inputs, output_names)
            if self.sleep_s and (not self.slow_runs or len(self.threads) <= self.slow_runs):
                time.sleep(self.sleep_s)
            return out

        monkeypatch.setattr(Model, "run", run)

    def clear(self) -> None:
        self.threads.clear()
        self.first_values.clear()


async def test_a_cheap_model_runs_on_the_loop(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch, samples: tuple[Array, Array]
) -> None:
    # Any run counts as cheap here: where batches run is what is checked.
    inline_bounds(monkeypatch, INLINE_MAX_S=1.0)
    runs = RunLog(monkeypatch)
    engine = await make_engine(max_batch_size=32)
    x, _ = samples
    expected = engine.model("digits").run({"input": x})
    runs.clear()
    results = await asyncio.gather(*(engine.infer("digits", {"input": r[None, :]}) for r in x))
    # Every request of the loop turn shares one run, on the loop's thread.
    assert runs.threads == [threading.get_ident()]
    assert all(r.batch_size == len(x) for r in results)
    assert [int(r.outputs["label"][0]) for r in results] == list(expected["label"])
    stats = engine.stats("digits")
    assert stats["inline_runs"] == 1 and stats["runs"] == 1 and stats["items_run"] == len(x)
    counts, total = batch_histogram(engine)
    assert counts[-1] == 1 and total == len(x)
    assert results[0].server_timing().startswith("queue;dur=")


async def test_on_the_loop_urgent_items_still_go_first(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline_bounds(monkeypatch, INLINE_MAX_S=1.0)
    runs = RunLog(monkeypatch)
    engine = await make_engine(max_batch_size=1)
    runs.clear()
    order: list[str] = []

    async def one(name: str, value: float, urgency: int) -> None:
        await engine.infer("digits", row(value), priority=urgency)
        order.append(name)

    # Submitted in one loop turn, the urgent one last: it runs first, and the
    # others one batch per pump, each after the loop's other callbacks.
    await asyncio.gather(*(one(f"bulk{i}", 100 + i, 7) for i in range(5)), one("urgent", 9, 0))
    assert order[0] == "urgent"
    assert runs.first_values == [9, 100, 101, 102, 103, 104]
    assert set(runs.threads) == {threading.get_ident()}
    assert engine.stats("digits")["inline_runs"] == 6


async def test_a_model_with_its_own_run_never_runs_on_the_loop(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # However cheap: its run may block or sleep, which the loop must not.
    inline_bounds(monkeypatch, INLINE_MAX_S=1.0)
    model = Recording()
    engine = await make_engine(model, max_batch_size=4)
    await asyncio.gather(*(engine.infer("digits", row(i)) for i in range(8)))
    await engine.infer("digits", row(1))
    assert engine.stats("digits")["inline_runs"] == 0


async def test_a_model_dearer_than_the_bound_runs_in_the_workers(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = RunLog(monkeypatch)
    runs.sleep_s = 0.002  # every run, warm-up timing included, takes 2 ms or more
    inline_bounds(monkeypatch, INLINE_MAX_S=0.001)
    engine = await make_engine(max_batch_size=4)
    runs.clear()
    await asyncio.gather(*(engine.infer("digits", row(i)) for i in range(8)))
    assert engine.stats("digits")["inline_runs"] == 0
    assert threading.get_ident() not in runs.threads


async def test_a_bucket_timed_in_a_busy_moment_is_timed_again(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first timing of batches of one (MEASURE_RUNS runs) comes out just
    # above the bound, as when other processes held the core; the second,
    # after a pause, does not: the model runs on the loop.
    inline_bounds(monkeypatch, INLINE_MAX_S=0.002)
    monkeypatch.setattr(runcost, "RETIME_PAUSE_S", 0.0)
    runs = RunLog(monkeypatch)
    runs.sleep_s, runs.slow_runs = 0.003, runcost.MEASURE_RUNS
    engine = await make_engine(max_batch_size=1)
    runs.clear()
    runs.sleep_s = 0.0
    await engine.infer("digits", row(1))
    assert runs.threads == [threading.get_ident()]
    assert engine.stats("digits")["inline_runs"] == 1


async def test_a_bucket_slow_through_warm_up_is_timed_again_when_idle(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Every warm-up timing of batches of one comes out above the bound (but
    # within RETIME_RANGE of it), as when the server starts on a busy
    # machine: batches go to the workers. Once the runs are fast and the
    # model idle, the bucket is timed again and moves to the loop.
    inline_bounds(monkeypatch, INLINE_MAX_S=0.002)
    monkeypatch.setattr(runcost, "RETIME_PAUSE_S", 0.0)
    monkeypatch.setattr(runcost, "RETIME_IDLE_FIRST_S", 0.05)
    runs = RunLog(monkeypatch)
    # Warm-up's three timings of MEASURE_RUNS runs each.
    runs.sleep_s, runs.slow_runs = 0.003, 3 * runcost.MEASURE_RUNS
    with caplog.at_level(logging.INFO, logger="rawserve"):
        engine = await make_engine(max_batch_size=1)
        assert len(runs.threads) == runs.slow_runs  # warm-up did all its timings
        runs.clear()
        await engine.infer("digits", row(1))
        assert engine.stats("digits")["inline_runs"] == 0
        assert runs.threads[0] != threading.get_ident()
        for _ in range(200):  # bounded: the first attempt comes after 0.05 s
            if engine._models["digits"].costs[0].inline:
                break
            await asyncio.sleep(0.02)
    assert any("measured while idle" in r.getMessage() for r in caplog.records)
    runs.clear()
    await engine.infer("digits", row(2))
    assert runs.threads == [threading.get_ident()]
    assert engine.stats("digits")["inline_runs"] == 1
    # Nothing left to time: the re-timing task has ended.
    await asyncio.sleep(0)
    assert not engine._retimers


async def test_the_idle_retiming_stops_with_the_engine(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every run stays slow: the bucket never qualifies, and stop() cancels
    # the attempts still to come instead of leaving a task behind.
    inline_bounds(monkeypatch, INLINE_MAX_S=0.002)
    monkeypatch.setattr(runcost, "RETIME_PAUSE_S", 0.0)
    monkeypatch.setattr(runcost, "RETIME_IDLE_FIRST_S", 0.01)
    runs = RunLog(monkeypatch)
    runs.sleep_s = 0.003
    engine = await make_engine(max_batch_size=1)
    assert len(engine._retimers) == 1
    await asyncio.sleep(0.1)  # a few attempts, each one slow again
    assert not engine._models["digits"].costs[0].inline
    tasks = list(engine._retimers)
    await engine.stop(timeout_s=1)
    await asyncio.gather(*tasks, return_exceptions=True)
    assert all(t.cancelled() for t in tasks) and not engine._retimers


async def test_a_model_that_slows_down_goes_back_to_the_workers(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    inline_bounds(monkeypatch, INLINE_MAX_S=1.0, INLINE_GIVE_UP_S=0.005, INLINE_SAMPLE_CAP_S=0.02)
    runs = RunLog(monkeypatch)
    engine = await make_engine(max_batch_size=1)
    await engine.infer("digits", row(1))
    assert engine.stats("digits")["inline_runs"] == 1
    # Now every run takes at least 10 ms: the moving average crosses 5 ms
    # within a bounded number of runs, and later runs go to a worker.
    runs.sleep_s = 0.01
    with caplog.at_level(logging.INFO, logger="rawserve"):
        for i in range(40):
            await engine.infer("digits", row(i))
    inline = engine.stats("digits")["inline_runs"]
    assert 1 < inline < 40
    assert any("run in worker threads" in r.getMessage() for r in caplog.records)
    runs.clear()
    await engine.infer("digits", row(2))
    assert runs.threads and runs.threads[0] != threading.get_ident()
