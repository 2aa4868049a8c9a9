"""The inference scheduler: weighted-fair service between urgencies, dynamic
batching by shape, deadlines, cancellation, admission. The clock is a number
the tests pass in."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rawserve.core.errors import ConfigError
from rawserve.inference.scheduler import (
    DEFAULT_WEIGHTS,
    Batch,
    ItemState,
    QueueFull,
    Scheduler,
    WorkItem,
    parse_weights,
)

# Shares between continuously backlogged urgencies, over 10,000 batches, must be
# within this relative distance of weight(u) / sum of the backlogged weights.
SHARE_TOLERANCE = 0.10
SHARE_BATCHES = 10_000


def item(
    urgency: int = 3,
    *,
    model: str = "m",
    shape: Hashable = (),
    deadline: float | None = None,
    size: int = 1,
    payload: object = None,
) -> WorkItem:
    return WorkItem(model, payload, urgency=urgency, shape_key=shape, deadline=deadline, size=size)


def scheduler(**options: Any) -> Scheduler:
    defaults: dict[str, Any] = {
        "max_batch_size": 1,
        "max_batch_delay_s": 0.0,
        "queue_limit": 100_000,
    }
    defaults.update(options)
    return Scheduler(**defaults)


def run_backlogged(
    sched: Scheduler,
    urgencies: Sequence[int],
    batches: int,
    *,
    joiners: dict[int, int] | None = None,
) -> list[list[int]]:
    """Keep every urgency in ``urgencies`` backlogged (a full batch each, topped
    up as they are served) and run ``batches`` batches; ``joiners`` maps an
    urgency to the batch number at which it becomes backlogged. Returns the
    urgencies of each batch's items."""
    now = 0.0
    backlog = max(2, sched.max_batch_size)
    for u in urgencies:
        for _ in range(backlog):
            sched.submit(item(u), now)
    served: list[list[int]] = []
    for n in range(batches):
        for u, start in (joiners or {}).items():
            if start == n:
                for _ in range(backlog):
                    sched.submit(item(u), now)
        batch = sched.next_batch(now)
        assert batch is not None, "backlogged queues must always yield a batch"
        served.append([i.urgency for i in batch])
        sched.complete(batch, now)
        for i in batch:
            sched.submit(item(i.urgency), now)
        now += 0.001
    return served


weights_strategy = st.one_of(
    st.just(list(DEFAULT_WEIGHTS)),
    st.lists(st.integers(1, 64).map(float), min_size=8, max_size=8),
)
subset_strategy = st.sets(st.integers(0, 7), min_size=2, max_size=8).map(sorted)


# -- weighted fairness ----------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(weights=weights_strategy, backlogged=subset_strategy)
def test_service_shares_track_weights(weights: list[float], backlogged: list[int]) -> None:
    total = sum(weights[u] for u in backlogged)
    expected = {u: SHARE_BATCHES * weights[u] / total for u in backlogged}
    # Below ~50 expected batches one batch more or less is already 2%+; keep the
    # tolerance meaningful rather than widen it.
    assume(min(expected.values()) >= 50)
    served = run_backlogged(scheduler(weights=weights), backlogged, SHARE_BATCHES)
    counts = Counter(u for batch in served for u in batch)
    assert set(counts) == set(backlogged)
    for u in backlogged:
        assert abs(counts[u] - expected[u]) <= SHARE_TOLERANCE * expected[u], (u, counts, expected)


def test_shares_count_rows_when_batches_mix_urgencies() -> None:
    # One shape, batches of 8: each batch is filled in the same weighted order,
    # so rows per urgency still track the weights.
    sched = scheduler(max_batch_size=8)
    served = run_backlogged(sched, [0, 3, 7], 2_000)
    rows = Counter(u for batch in served for u in batch)
    total_w = DEFAULT_WEIGHTS[0] + DEFAULT_WEIGHTS[3] + DEFAULT_WEIGHTS[7]
    assert sum(rows.values()) == 16_000
    for u in (0, 3, 7):
        expected = 16_000 * DEFAULT_WEIGHTS[u] / total_w
        assert abs(rows[u] - expected) <= SHARE_TOLERANCE * expected, (u, rows)
    assert any(len(set(batch)) > 1 for batch in served), "batches should mix urgencies"


@settings(max_examples=25, deadline=None)
@given(
    weights=weights_strategy,
    backlogged=subset_strategy,
    joiner=st.integers(0, 7),
    join_at=st.integers(1, 1_500),
)
def test_no_urgency_starves(
    weights: list[float], backlogged: list[int], joiner: int, join_at: int
) -> None:
    """Each backlogged urgency is served at least once every
    ceil(sum of backlogged weights / its weight) + (number backlogged)
    batches, including one that joins late (idle time earns no credit, and
    costs none either)."""
    joiners = {} if joiner in backlogged else {joiner: join_at}
    active = sorted({*backlogged, *joiners})
    batches = 2_000
    served = run_backlogged(scheduler(weights=weights), backlogged, batches, joiners=joiners)
    total = sum(weights[u] for u in active)
    for u in active:
        bound = math.ceil(total / weights[u]) + len(active)
        start = joiners.get(u, 0)
        last = start - 1
        for n in range(start, batches):
            if u in served[n]:
                assert n - last <= bound, (u, n, last, bound)
                last = n
        assert batches - 1 - last <= bound, (u, last, bound)


@settings(max_examples=40, deadline=None)
@given(
    urgencies=st.lists(st.integers(0, 7), min_size=1, max_size=60),
    batch_size=st.integers(1, 4),
)
def test_strict_mode_always_serves_the_most_urgent_first(
    urgencies: list[int], batch_size: int
) -> None:
    sched = scheduler(mode="strict", max_batch_size=batch_size)
    for n, u in enumerate(urgencies):
        sched.submit(item(u), n * 0.001)
    remaining = sorted(urgencies)
    now = 1.0
    while (batch := sched.next_batch(now)) is not None:
        got = [i.urgency for i in batch]
        assert got == remaining[: len(got)], (got, remaining)
        # A batch led by an urgent item (below the default 3) holds urgent
        # items only; any other batch is as full as the queue allows.
        eligible = [u for u in remaining if u < 3] if remaining[0] < 3 else remaining
        assert len(got) == min(batch_size, len(eligible))
        remaining = remaining[len(got) :]
    assert remaining == []


def test_fair_mode_is_not_strict() -> None:
    # With a u=0 backlog, u=7 still gets its 1/129 share; strict gives it none.
    fair = Counter(u for b in run_backlogged(scheduler(), [0, 7], 1_290) for u in b)
    strict = Counter(u for b in run_backlogged(scheduler(mode="strict"), [0, 7], 1_290) for u in b)
    assert fair[7] == pytest.approx(10, abs=1)
    assert strict[7] == 0


def test_fifo_within_one_urgency() -> None:
    sched = scheduler()
    items = [item(5, payload=n) for n in range(5)]
    for n, i in enumerate(items):
        sched.submit(i, n * 0.01)
    got: list[object] = []
    while (batch := sched.next_batch(1.0)) is not None:
        got.extend(i.payload for i in batch)
    assert got == [0, 1, 2, 3, 4]


# -- a random workload against a shadow model -----------------------------------

MODELS = ("a", "b")
SHAPES = ((1,), (2,), (3,))


@dataclass
class Shadow:
    """What the scheduler should hold: every submitted item ends up exactly
    once run, expired, cancelled, or is still queued."""

    sched: Scheduler
    now: float = 0.0
    queued: dict[int, WorkItem] = field(default_factory=dict)
    # Found past their deadline by next_batch, to be reported by expired().
    set_aside: dict[int, WorkItem] = field(default_factory=dict)
    running: list[Batch] = field(default_factory=list)
    all_items: list[WorkItem] = field(default_factory=list)
    ran: list[WorkItem] = field(default_factory=list)
    expired: list[WorkItem] = field(default_factory=list)
    cancelled: list[WorkItem] = field(default_factory=list)

    def live(self, now: float) -> list[WorkItem]:
        return [i for i in self.queued.values() if i.deadline is None or i.deadline > now]

    def must_release(self, now: float) -> bool:
        """A batch is due: an urgency-0 item, a full group, or an item that has
        waited out the batch delay."""
        live = self.live(now)
        rows: Counter[tuple[str, Hashable]] = Counter()
        for i in live:
            rows[i.model, i.shape_key] += i.size
        return (
            any(i.urgency == 0 for i in live)
            or any(r >= self.sched.max_batch_size for r in rows.values())
            or any(now >= i.enqueued_at + self.sched.max_batch_delay_s for i in live)
        )

    def next_batch(self, now: float) -> Batch | None:
        live_before = self.live(now)
        group_rows: Counter[tuple[str, Hashable]] = Counter()
        for i in live_before:
            group_rows[i.model, i.shape_key] += i.size
        due = self.must_release(now)
        batch = self.sched.next_batch(now)
        for i in list(self.queued.values()):
            if i.deadline is not None and i.deadline <= now:
                assert i.state is ItemState.EXPIRED
                self.set_aside[id(i)] = self.queued.pop(id(i))
        if batch is None:
            assert not due, "a due batch was held back"
            return None
        items = batch.items
        assert items, "a batch is never empty"
        assert {(i.model, i.shape_key) for i in items} == {(batch.model, batch.shape_key)}
        assert batch.rows == sum(i.size for i in items) <= self.sched.max_batch_size
        for i in items:
            assert id(i) in self.queued, "only queued items run, each once"
            assert i.deadline is None or i.deadline > now, "an expired item ran"
            assert i.state is ItemState.RUNNING and i.started_at == now
            del self.queued[id(i)]
        # Released early only for a reason: its group full, holding urgency 0,
        # or holding an item that waited out the delay. (The item that made the
        # group due may stay behind: an urgent-led batch takes urgent items only.)
        group = [i for i in live_before if (i.model, i.shape_key) == (batch.model, batch.shape_key)]
        oldest = min(i.enqueued_at for i in group)
        assert (
            group_rows[batch.model, batch.shape_key] >= self.sched.max_batch_size
            or any(i.urgency == 0 for i in group)
            or now >= oldest + self.sched.max_batch_delay_s
        ), "a partial batch left before its group's oldest item waited the batch delay"
        if items[0].urgency < 3:
            assert all(i.urgency < 3 for i in items), "an urgent-led batch took bulk items"
        self.ran.extend(items)
        self.running.append(batch)
        return batch

    def next_urgent_batch(self, now: float) -> Batch | None:
        """The urgent lane's call: items of the most urgent level only, and a
        batch whenever an urgent item is live (never held back to fill)."""
        urgent = [i for i in self.live(now) if i.urgency < 3]
        batch = self.sched.next_urgent_batch(now)
        for i in list(self.queued.values()):
            if i.deadline is not None and i.deadline <= now:
                self.set_aside[id(i)] = self.queued.pop(id(i))
        if batch is None:
            assert not urgent, "an urgent item was left for the lane to miss"
            return None
        items = batch.items
        assert items and all(i.urgency < 3 for i in items), "the lane took a bulk item"
        top = min(i.urgency for i in urgent)
        assert all(i.urgency == top for i in items), "not the most urgent level alone"
        assert {(i.model, i.shape_key) for i in items} == {(batch.model, batch.shape_key)}
        assert batch.rows == sum(i.size for i in items) <= self.sched.max_batch_size
        for i in items:
            assert id(i) in self.queued, "only queued items run, each once"
            assert i.state is ItemState.RUNNING and i.started_at == now
            del self.queued[id(i)]
        self.ran.extend(items)
        self.running.append(batch)
        return batch

    def expire(self, now: float) -> list[WorkItem]:
        found = self.sched.expired(now)
        assert {id(i) for i in found} >= set(self.set_aside), "an expired item went unreported"
        for i in found:
            assert id(i) in self.queued or id(i) in self.set_aside, "reported twice"
            assert i.deadline is not None and i.deadline <= now
            assert i.state is ItemState.EXPIRED
            self.queued.pop(id(i), None)
            self.set_aside.pop(id(i), None)
        assert all(i.deadline is None or i.deadline > now for i in self.queued.values()), (
            "expired() left a past-deadline item queued"
        )
        self.expired.extend(found)
        return found

    def check_counts(self) -> None:
        depth = [0] * 8
        for i in self.queued.values():
            depth[i.urgency] += 1
        assert self.sched.depth_by_urgency() == depth
        assert self.sched.depth() == len(self.queued)
        accounted = len(self.ran) + len(self.expired) + len(self.cancelled)
        accounted += len(self.queued) + len(self.set_aside)
        assert accounted == len(self.all_items)
        assert self.sched.expirations == len(self.expired) + len(self.set_aside)


submit_op = st.tuples(
    st.just("submit"),
    st.integers(0, 7),  # urgency
    st.integers(0, len(MODELS) - 1),
    st.integers(0, len(SHAPES) - 1),
    st.integers(1, 3),  # size
    st.none() | st.integers(0, 40),  # deadline, ms from now
)
ops_strategy = st.lists(
    st.one_of(
        submit_op,
        submit_op,
        st.tuples(st.just("advance"), st.integers(0, 15)),
        st.tuples(st.just("batch")),
        st.tuples(st.just("urgent batch")),
        st.tuples(st.just("complete")),
        st.tuples(st.just("expire")),
        st.tuples(st.just("cancel"), st.integers(0, 10_000)),
        st.tuples(st.just("reprioritize"), st.integers(0, 10_000), st.integers(0, 7)),
        st.tuples(st.just("timer")),
    ),
    max_size=80,
)
config_strategy = st.fixed_dictionaries(
    {
        "max_batch_size": st.integers(3, 6),
        "max_batch_delay_s": st.integers(0, 10).map(lambda ms: ms / 1000),
        "queue_limit": st.integers(5, 40),
        "mode": st.sampled_from(["fair", "strict"]),
        "default_timeout_s": st.none() | st.integers(5, 60).map(lambda ms: ms / 1000),
    }
)


def drive(config: dict[str, Any], ops: list[tuple[Any, ...]]) -> Shadow:
    shadow = Shadow(scheduler(**config))
    sched = shadow.sched
    for op in ops:
        kind = op[0]
        now = shadow.now
        if kind == "submit":
            _, u, m, s, size, dl = op
            new = item(
                u,
                model=MODELS[m],
                shape=SHAPES[s],
                size=size,
                deadline=None if dl is None else now + dl / 1000,
            )
            shadow.expire(now)
            full = len(shadow.queued) >= sched.queue_limit
            try:
                sched.submit(new, now)
            except QueueFull as exc:
                assert full, "QueueFull below the queue limit"
                assert exc.retry_after_s >= 1
                assert new.state is ItemState.NEW
                continue
            assert not full, "accepted beyond the queue limit"
            shadow.queued[id(new)] = new
            shadow.all_items.append(new)
        elif kind == "advance":
            shadow.now = now + op[1] / 1000
        elif kind == "batch":
            shadow.next_batch(now)
        elif kind == "urgent batch":
            shadow.next_urgent_batch(now)
        elif kind == "complete" and shadow.running:
            batch = shadow.running.pop(0)
            cancelled = [i for i in batch if i.state is ItemState.CANCELLED]
            delivered = sched.complete(batch, now)
            assert delivered == [i for i in batch if i not in cancelled]
            assert all(i.state is ItemState.DONE for i in delivered)
        elif kind == "expire":
            shadow.expire(now)
        elif kind == "cancel" and shadow.all_items:
            victim = shadow.all_items[op[1] % len(shadow.all_items)]
            was_queued = id(victim) in shadow.queued
            was_running = victim.state is ItemState.RUNNING
            assert sched.cancel(victim) == was_queued
            if was_queued:
                del shadow.queued[id(victim)]
                shadow.cancelled.append(victim)
            if was_queued or was_running:
                assert victim.state is ItemState.CANCELLED
        elif kind == "reprioritize" and shadow.all_items:
            target = shadow.all_items[op[1] % len(shadow.all_items)]
            shadow.expire(now)
            was_queued = id(target) in shadow.queued
            enqueued_at = target.enqueued_at
            assert sched.reprioritize(target, op[2], now) == was_queued
            if was_queued:
                assert target.urgency == op[2] and target.enqueued_at == enqueued_at
        elif kind == "timer":
            check_timer(shadow)
        shadow.check_counts()
    # Drain: everything left either runs or expires, nothing is lost.
    for _ in range(10_000):
        if not shadow.queued:
            break
        deadline = sched.next_deadline()
        assert deadline is not None
        shadow.now = max(shadow.now, deadline)
        while shadow.next_batch(shadow.now) is not None:
            pass
        shadow.expire(shadow.now)
    assert not shadow.queued and sched.depth() == 0
    shadow.check_counts()
    return shadow


def check_timer(shadow: Shadow) -> None:
    """Run what is due now, then: nothing new happens before next_deadline(),
    and something does at it."""
    sched = shadow.sched
    now = shadow.now
    while shadow.next_batch(now) is not None:
        pass
    shadow.expire(now)
    deadline = sched.next_deadline()
    if not shadow.queued:
        assert deadline is None
        return
    assert deadline is not None and deadline > now
    for t in (now + (deadline - now) / 2, math.nextafter(deadline, -math.inf)):
        if now < t < deadline:
            assert shadow.next_batch(t) is None
            assert shadow.expire(t) == []
    batch = shadow.next_batch(deadline)
    found = shadow.expire(deadline)
    assert batch is not None or found, "nothing happened at next_deadline()"
    shadow.now = deadline


# tools/fuzz.py runs it with more (RAWSERVE_FUZZ_EXAMPLES, as the fuzzers).
@settings(max_examples=int(os.environ.get("RAWSERVE_FUZZ_EXAMPLES", "150")), deadline=None)
@given(config=config_strategy, ops=ops_strategy)
def test_random_workload_keeps_every_invariant(
    config: dict[str, Any], ops: list[tuple[Any, ...]]
) -> None:
    """Batches never mix models or shapes and never exceed max_batch_size rows;
    no expired or cancelled item ever runs; every item is accounted for once;
    a partial batch waits for the batch delay but no longer; QueueFull exactly
    at the limit; reprioritize keeps the age; next_deadline is exact."""
    drive(config, ops)


# -- examples -------------------------------------------------------------------


def test_partial_batch_waits_for_the_oldest_item_then_leaves() -> None:
    sched = scheduler(max_batch_size=4, max_batch_delay_s=0.010)
    first, second = item(3), item(5)
    sched.submit(first, 1.000)
    sched.submit(second, 1.004)
    assert sched.next_deadline() == pytest.approx(1.010)
    assert sched.next_batch(1.009) is None
    batch = sched.next_batch(1.010)
    assert batch is not None and batch.items == [first, second]
    assert batch.rows == 2 and batch.started_at == 1.010


def test_full_batch_leaves_at_once() -> None:
    sched = scheduler(max_batch_size=3, max_batch_delay_s=1.0)
    for _ in range(4):
        sched.submit(item(6), 0.0)
    assert sched.next_deadline() == 0.0  # ready now
    batch = sched.next_batch(0.0)
    assert batch is not None and len(batch) == 3
    assert sched.next_batch(0.0) is None  # the fourth waits for its delay
    assert sched.next_deadline() == 1.0


def test_urgency_zero_flushes_at_once_without_the_less_urgent() -> None:
    # The urgent batch does not wait for the model to run the bulk rows too:
    # they keep their own batch, due when their delay is over.
    sched = scheduler(max_batch_size=8, max_batch_delay_s=1.0)
    bulk = [item(7) for _ in range(3)]
    for i in bulk:
        sched.submit(i, 0.0)
    assert sched.next_batch(0.5) is None
    urgent, also_urgent = item(0), item(2)
    sched.submit(urgent, 0.5)
    sched.submit(also_urgent, 0.5)
    batch = sched.next_batch(0.5)
    assert batch is not None and batch.urgent
    assert batch.items == [urgent, also_urgent]
    sched.complete(batch, 0.5)
    assert sched.next_batch(0.6) is None
    rest = sched.next_batch(1.0)
    assert rest is not None and not rest.urgent
    assert set(rest.items) == set(bulk)


def test_a_batch_led_by_the_bulk_takes_urgent_items_along() -> None:
    # Only urgent-led batches are kept to urgent items; a batch the stride
    # order starts with a less urgent item fills with whatever is queued.
    sched = scheduler(max_batch_size=8)
    for _ in range(8):
        sched.submit(item(0), 0.0)
    first = sched.next_batch(0.0)
    assert first is not None and [i.urgency for i in first] == [0] * 8
    sched.complete(first, 0.0)
    sched.submit(item(7), 0.0)
    sched.submit(item(0), 0.0)
    second = sched.next_batch(0.0)
    assert second is not None
    assert sorted(i.urgency for i in second) == [0, 7], "u=7's turn: it leads, u=0 joins"


def test_urgency_zero_in_another_shape_is_not_held_behind_a_filling_batch() -> None:
    # Stride would pick u=7 next (u=0 was just served), but its batch is still
    # filling; the urgent item in another shape must not wait for it.
    sched = scheduler(max_batch_size=8, max_batch_delay_s=1.0)
    sched.submit(item(0, shape="x"), 0.0)
    assert sched.next_batch(0.0) is not None
    sched.submit(item(7, shape="y"), 0.0)
    urgent = item(0, shape="x")
    sched.submit(urgent, 0.1)
    batch = sched.next_batch(0.1)
    assert batch is not None and batch.items == [urgent]


def test_batches_never_mix_shapes_or_models() -> None:
    sched = scheduler(max_batch_size=10)
    for n in range(12):
        sched.submit(item(n % 8, model="ab"[n % 2], shape=n % 3), 0.0)
    seen: list[WorkItem] = []
    while (batch := sched.next_batch(5.0)) is not None:
        assert len({(i.model, i.shape_key) for i in batch}) == 1
        seen.extend(batch)
    assert len(seen) == 12


def test_item_sizes_count_as_rows() -> None:
    sched = scheduler(max_batch_size=4, max_batch_delay_s=1.0)
    big, small, other = item(3, size=3), item(3, size=2), item(3, size=1)
    for i in (big, small, other):
        sched.submit(i, 0.0)
    first = sched.next_batch(0.0)  # 6 rows queued: full, goes now
    assert first is not None and first.items == [big] and first.rows == 3
    with pytest.raises(ValueError, match="size"):
        sched.submit(item(size=5), 0.0)


def test_deadline_passed_is_never_run_and_is_reported_once() -> None:
    sched = scheduler(max_batch_size=2, max_batch_delay_s=0.0)
    late, fine = item(1, deadline=1.0), item(1, deadline=9.0)
    sched.submit(late, 0.0)
    sched.submit(fine, 0.0)
    batch = sched.next_batch(1.0)  # deadline == now counts as passed
    assert batch is not None and batch.items == [fine]
    assert sched.expired(1.0) == [late]
    assert late.state is ItemState.EXPIRED
    assert sched.expired(2.0) == []
    assert sched.expirations == 1


def test_default_timeout_sets_the_deadline() -> None:
    sched = scheduler(default_timeout_s=2.0, max_batch_size=4, max_batch_delay_s=5.0)
    own = item(3, deadline=1.5)
    implicit = item(3)
    sched.submit(own, 1.0)
    sched.submit(implicit, 1.0)
    assert own.deadline == 1.5 and implicit.deadline == 3.0
    assert sched.next_deadline() == 1.5
    assert sched.expired(1.5) == [own]
    assert sched.next_deadline() == 3.0
    assert sched.expired(3.0) == [implicit]
    assert sched.next_deadline() is None


def test_cancel_removes_a_queued_item() -> None:
    sched = scheduler(max_batch_size=4)
    keep, drop = item(2), item(2)
    sched.submit(keep, 0.0)
    sched.submit(drop, 0.0)
    assert sched.cancel(drop) is True
    assert drop.state is ItemState.CANCELLED
    assert sched.depth() == 1 and sched.depth(2) == 1
    batch = sched.next_batch(0.0)
    assert batch is not None and batch.items == [keep]
    assert sched.cancel(drop) is False  # already gone
    assert sched.cancellations == 1


def test_cancel_of_a_running_item_drops_its_result() -> None:
    sched = scheduler(max_batch_size=2)
    a, b = item(3), item(3)
    sched.submit(a, 0.0)
    sched.submit(b, 0.0)
    batch = sched.next_batch(0.0)
    assert batch is not None
    assert sched.cancel(b) is False
    assert sched.complete(batch, 0.1) == [a]
    assert a.state is ItemState.DONE and b.state is ItemState.CANCELLED
    assert sched.dropped_results == 1 and sched.completions == 1


def test_cancelled_items_do_not_hold_queue_slots_or_heap_space() -> None:
    sched = scheduler(queue_limit=2, max_batch_size=1)
    for _ in range(10_000):
        victim = item(4)
        sched.submit(victim, 0.0)
        sched.cancel(victim)
    survivor = item(4)
    sched.submit(survivor, 0.0)
    # Lazy deletion must not let dead entries pile up without bound.
    assert len(sched._by_urgency[4]) < 200
    batch = sched.next_batch(0.0)
    assert batch is not None and batch.items == [survivor]


def test_queue_full_answers_with_retry_after_from_the_drain_rate() -> None:
    sched = scheduler(queue_limit=50, max_batch_size=10)
    now = 0.0
    # Ten seconds at 10 items per second.
    for _ in range(10):
        for _ in range(10):
            sched.submit(item(3), now)
        batch = sched.next_batch(now)
        assert batch is not None
        now += 1.0
        sched.complete(batch, now)
    assert sched.drain_rate(now) == pytest.approx(10.0)
    for _ in range(50):
        sched.submit(item(3), now)
    with pytest.raises(QueueFull) as info:
        sched.submit(item(3), now)
    assert info.value.retry_after_s == 5  # 50 queued / 10 per second
    assert info.value.status_code == 503
    assert sched.rejections == 1 and sched.depth() == 50


def test_retry_after_is_bounded() -> None:
    sched = scheduler(queue_limit=1, retry_after_min_s=1, retry_after_max_s=30)
    sched.submit(item(), 0.0)
    with pytest.raises(QueueFull) as young:
        sched.submit(item(), 0.5)
    assert young.value.retry_after_s == 1  # no evidence yet: be hopeful
    with pytest.raises(QueueFull) as stalled:
        sched.submit(item(), 20.0)
    assert stalled.value.retry_after_s == 30  # nothing drained for a window
    batch = sched.next_batch(20.0)
    assert batch is not None
    sched.complete(batch, 20.0)
    sched.submit(item(), 20.0)
    with pytest.raises(QueueFull) as fast:
        sched.submit(item(), 20.0)
    assert 1 <= fast.value.retry_after_s <= 30


def test_expired_items_free_their_queue_slots() -> None:
    sched = scheduler(queue_limit=1)
    sched.submit(item(deadline=1.0), 0.0)
    sched.submit(item(), 1.0)  # the first expired at 1.0: room again
    assert sched.depth() == 1 and len(sched.expired(1.0)) == 1


def test_reprioritize_moves_a_queued_item_and_keeps_its_age() -> None:
    sched = scheduler(mode="strict", max_batch_size=1, max_batch_delay_s=0.0)
    a, b = item(5), item(4)
    sched.submit(a, 0.0)
    sched.submit(b, 1.0)
    assert sched.reprioritize(a, 1, 2.0) is True
    assert sched.depth_by_urgency() == [0, 1, 0, 0, 1, 0, 0, 0]
    assert a.enqueued_at == 0.0
    batch = sched.next_batch(2.0)
    assert batch is not None and batch.items == [a]
    assert sched.reprioritize(a, 0, 2.0) is False  # running: nothing to move


def test_reprioritize_keeps_age_for_the_batch_delay() -> None:
    sched = scheduler(max_batch_size=4, max_batch_delay_s=1.0)
    old = item(6)
    sched.submit(old, 0.0)
    sched.reprioritize(old, 2, 0.5)
    assert sched.next_batch(0.9) is None
    assert sched.next_deadline() == 1.0
    batch = sched.next_batch(1.0)
    assert batch is not None and batch.items == [old]


def test_reprioritize_to_zero_flushes() -> None:
    sched = scheduler(max_batch_size=4, max_batch_delay_s=1.0)
    i = item(6)
    sched.submit(i, 0.0)
    assert sched.next_batch(0.1) is None
    sched.reprioritize(i, 0, 0.1)
    batch = sched.next_batch(0.1)
    assert batch is not None and batch.items == [i]


def test_next_expiry_ignores_batching() -> None:
    sched = scheduler(max_batch_size=4, max_batch_delay_s=0.5, default_timeout_s=3.0)
    sched.submit(item(0), 1.0)
    assert sched.next_deadline() == 1.0  # urgency 0: ready now
    assert sched.next_expiry() == 4.0


def test_clear_returns_everything_queued() -> None:
    sched = scheduler(max_batch_size=4, max_batch_delay_s=1.0)
    items = [item(u % 8) for u in range(10)]
    for n, i in enumerate(items):
        sched.submit(i, n * 0.1)
    sched.cancel(items[3])
    left = sched.clear()
    assert left == [i for n, i in enumerate(items) if n != 3]
    assert sched.depth() == 0 and sched.next_deadline() is None
    assert all(i.state is ItemState.CANCELLED for i in left)


def test_bad_input_gets_a_clear_error() -> None:
    sched = scheduler()
    with pytest.raises(ValueError, match="urgency"):
        sched.submit(item(8), 0.0)
    queued = item()
    sched.submit(queued, 0.0)
    with pytest.raises(ValueError, match="already submitted"):
        sched.submit(queued, 0.0)
    with pytest.raises(ValueError, match="urgency"):
        sched.reprioritize(queued, -1, 0.0)
    for bad in (
        {"max_batch_size": 0},
        {"max_batch_delay_s": -1.0},
        {"queue_limit": 0},
        {"mode": "lifo"},
        {"weights": [1.0] * 7},
        {"weights": [1.0] * 7 + [0.0]},
        {"default_timeout_s": 0.0},
    ):
        with pytest.raises(ConfigError):
            scheduler(**bad)


def test_parse_weights() -> None:
    assert parse_weights("128,64,32,16,8,4,2,1") == DEFAULT_WEIGHTS
    assert parse_weights("1, 1, 1, 1, 1, 1, 1, 1") == (1.0,) * 8
    for bad in ("1,2,3", "a,b,c,d,e,f,g,h", "1,1,1,1,1,1,1,-1", "1,1,1,1,1,1,1,inf"):
        with pytest.raises(ConfigError):
            parse_weights(bad)
