"""Weighted priority queues and dynamic batching for one model, sans-IO.

The engine owns one ``Scheduler`` per model and drives it the way aioquic's
asyncio glue drives a QuicConnection: it calls ``submit``/``cancel``/
``reprioritize`` as requests come and go, calls ``next_batch(now)`` while a
worker is free, answers ``expired(now)`` with 504, and sets its loop timer to
``next_deadline()`` (or ``next_expiry()`` while every worker is busy). Time is
always an argument; nothing here reads a clock.

Service between urgencies is stride scheduling: urgency ``u`` has a pass value
that advances by ``rows / weight(u)`` each time it is served, and the
backlogged urgency with the lowest pass goes next, so the rows each backlogged
urgency gets track the weights and none starves. An urgency that comes back
from idle restarts at the current virtual time, so idling earns no credit.

Items live in two sets of heaps keyed by age: one per urgency (to find the
head) and one per (group, urgency), a group being one model and shape key
(to fill a batch with items that can share it). Removal is lazy: an entry is
live while its item is queued and still carries the entry's sequence number,
and heaps are rebuilt when dead entries outnumber live ones.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from rawserve.core.errors import ConfigError, RawServeError
from rawserve.core.priority import DEFAULT_URGENCY

URGENCIES = 8
DEFAULT_WEIGHTS: tuple[float, ...] = tuple(float(2 ** (7 - u)) for u in range(URGENCIES))

Mode = Literal["fair", "strict"]

# Dead heap entries tolerated beyond the live ones before a rebuild.
_COMPACT_SLACK = 64


class ItemState(StrEnum):
    NEW = "new"  # created by the engine, not submitted yet
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class QueueFull(RawServeError):
    """The model's queue holds ``queue_limit`` items: answer 503 with
    ``Retry-After: retry_after_s`` (whole seconds, from the recent drain rate)."""

    status_code = 503

    def __init__(self, retry_after_s: int, queue_limit: int) -> None:
        super().__init__(f"queue is full ({queue_limit} items); retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s
        self.queue_limit = queue_limit


class WorkItem:
    """One request's inference, as the scheduler sees it. ``payload`` is the
    engine's own (inputs, future, ...); ``size`` is the rows it adds to a batch."""

    __slots__ = (
        "_group",
        "_seq",
        "deadline",
        "enqueued_at",
        "model",
        "payload",
        "shape_key",
        "size",
        "started_at",
        "state",
        "urgency",
    )

    def __init__(
        self,
        model: str,
        payload: Any = None,
        *,
        urgency: int = 3,
        shape_key: Hashable = (),
        deadline: float | None = None,
        size: int = 1,
    ) -> None:
        self.model = model
        self.payload = payload
        self.urgency = urgency
        self.shape_key = shape_key
        self.deadline = deadline
        self.size = size
        self.enqueued_at = math.nan  # set by submit
        self.started_at: float | None = None  # set when a batch takes it
        self.state = ItemState.NEW
        self._seq = -1
        self._group: _Group | None = None

    def __repr__(self) -> str:
        return (
            f"WorkItem(model={self.model!r}, urgency={self.urgency}, "
            f"shape_key={self.shape_key!r}, size={self.size}, state={self.state.value})"
        )


@dataclass(slots=True)
class Batch:
    """Items that run together: one model, one shape key, at most
    ``max_batch_size`` rows, possibly several urgencies."""

    items: list[WorkItem]
    model: str
    shape_key: Hashable
    rows: int
    started_at: float

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[WorkItem]:
        return iter(self.items)

    @property
    def urgent(self) -> bool:
        """Holds an item more urgent than the default."""
        return any(item.urgency < DEFAULT_URGENCY for item in self.items)


# (enqueued_at, seq, item): heaps order by age, seq breaks ties and marks liveness.
_Entry = tuple[float, int, WorkItem]


class _Group:
    __slots__ = ("counts", "key", "queues", "rows", "total")

    def __init__(self, key: tuple[str, Hashable]) -> None:
        self.key = key
        self.queues: list[list[_Entry]] = [[] for _ in range(URGENCIES)]
        self.counts = [0] * URGENCIES
        self.rows = 0
        self.total = 0


def _live(entry: _Entry) -> bool:
    item = entry[2]
    return item.state is ItemState.QUEUED and item._seq == entry[1]


def _head(heap: list[_Entry]) -> _Entry | None:
    while heap:
        if _live(heap[0]):
            return heap[0]
        heapq.heappop(heap)
    return None


def _push(heap: list[_Entry], entry: _Entry, live: int) -> None:
    heapq.heappush(heap, entry)
    if len(heap) > 2 * live + _COMPACT_SLACK:
        heap[:] = [e for e in heap if _live(e)]
        heapq.heapify(heap)


def parse_weights(spec: str) -> tuple[float, ...]:
    """Parse ``--priority-weights``: eight positive numbers, urgency 0 first,
    separated by commas (``"128,64,32,16,8,4,2,1"`` is the default)."""
    parts = [p.strip() for p in spec.split(",")]
    try:
        weights = tuple(float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"priority weights must be numbers, got {spec!r}") from None
    _check_weights(weights)
    return weights


def _check_weights(weights: Sequence[float]) -> None:
    if len(weights) != URGENCIES:
        raise ConfigError(f"priority weights need {URGENCIES} values (urgency 0..7)")
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise ConfigError(f"priority weights must be finite and > 0, got {list(weights)}")


class Scheduler:
    """Queues of one model: per urgency, weighted-fair (or strict) between
    urgencies, batched by shape. See the module docstring for the protocol."""

    def __init__(
        self,
        *,
        max_batch_size: int,
        max_batch_delay_s: float,
        queue_limit: int,
        weights: Sequence[float] | None = None,
        mode: Mode = "fair",
        default_timeout_s: float | None = None,
        drain_window_s: float = 10.0,
        retry_after_min_s: int = 1,
        retry_after_max_s: int = 60,
    ) -> None:
        if max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not (math.isfinite(max_batch_delay_s) and max_batch_delay_s >= 0):
            raise ConfigError(f"max_batch_delay_s must be >= 0, got {max_batch_delay_s}")
        if queue_limit < 1:
            raise ConfigError(f"queue_limit must be >= 1, got {queue_limit}")
        if mode not in ("fair", "strict"):
            raise ConfigError(f"priority mode must be 'fair' or 'strict', got {mode!r}")
        if default_timeout_s is not None and not default_timeout_s > 0:
            raise ConfigError(f"default_timeout_s must be > 0 or None, got {default_timeout_s}")
        if not drain_window_s > 0:
            raise ConfigError(f"drain_window_s must be > 0, got {drain_window_s}")
        if not 1 <= retry_after_min_s <= retry_after_max_s:
            raise ConfigError("need 1 <= retry_after_min_s <= retry_after_max_s")
        weights = DEFAULT_WEIGHTS if weights is None else tuple(float(w) for w in weights)
        _check_weights(weights)

        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_s
        self.queue_limit = queue_limit
        self.weights: tuple[float, ...] = tuple(weights)
        self.mode: Mode = mode
        self.default_timeout_s = default_timeout_s
        self.drain_window_s = drain_window_s
        self.retry_after_min_s = retry_after_min_s
        self.retry_after_max_s = retry_after_max_s

        self._stride = [1.0 / w for w in self.weights]
        self._pass = [0.0] * URGENCIES
        self._vtime = 0.0
        self._by_urgency: list[list[_Entry]] = [[] for _ in range(URGENCIES)]
        self._depth = [0] * URGENCIES
        self._queued = 0
        self._groups: dict[tuple[str, Hashable], _Group] = {}
        # Groups holding at least max_batch_size rows: ready whatever their age.
        self._full: dict[tuple[str, Hashable], _Group] = {}
        self._deadlines: list[tuple[float, int, WorkItem]] = []
        self._with_deadline = 0
        self._expired: list[WorkItem] = []
        self._seq = 0
        # Drain rate: (time, items completed) within the last drain_window_s.
        self._drained: deque[tuple[float, int]] = deque()
        self._drained_total = 0
        self._origin: float | None = None

        self.rejections = 0  # submits refused with QueueFull
        self.expirations = 0  # queued items whose deadline passed
        self.cancellations = 0  # cancel() of a queued or running item
        self.completions = 0  # items whose result was delivered by complete()
        self.dropped_results = 0  # results of running items cancelled meanwhile

    # -- requests come and go -------------------------------------------------

    def submit(self, item: WorkItem, now: float) -> None:
        """Queue ``item`` (its age counts from ``now``). Raises ``QueueFull`` at
        ``queue_limit`` queued items and ``ValueError`` for an item that cannot
        run here (bad urgency or size, already submitted)."""
        if item.state is not ItemState.NEW:
            raise ValueError(f"{item!r} was already submitted")
        if not (isinstance(item.urgency, int) and 0 <= item.urgency < URGENCIES):
            raise ValueError(f"urgency must be 0..7, got {item.urgency!r}")
        if not 1 <= item.size <= self.max_batch_size:
            raise ValueError(f"item size must be 1..{self.max_batch_size}, got {item.size}")
        if self._origin is None:
            self._origin = now
        self._expire(now)
        if self._queued >= self.queue_limit:
            self.rejections += 1
            raise QueueFull(self.retry_after(now), self.queue_limit)
        if item.deadline is None and self.default_timeout_s is not None:
            item.deadline = now + self.default_timeout_s
        item.enqueued_at = now
        item.state = ItemState.QUEUED
        self._attach(item)
        if item.deadline is not None:
            self._with_deadline += 1
            heapq.heappush(self._deadlines, (item.deadline, item._seq, item))
            if len(self._deadlines) > 2 * self._with_deadline + _COMPACT_SLACK:
                self._deadlines = [e for e in self._deadlines if e[2].state is ItemState.QUEUED]
                heapq.heapify(self._deadlines)

    def cancel(self, item: WorkItem) -> bool:
        """The client went away. A queued item is removed (True); a running one
        is marked so that ``complete`` drops its result (False)."""
        if item.state is ItemState.QUEUED:
            self._remove(item, ItemState.CANCELLED)
            self.cancellations += 1
            return True
        if item.state is ItemState.RUNNING:
            item.state = ItemState.CANCELLED
            self.cancellations += 1
        return False

    def reprioritize(self, item: WorkItem, urgency: int, now: float) -> bool:
        """Move a queued item to ``urgency`` (PRIORITY_UPDATE), keeping its age.
        False when the item is no longer queued (nothing to move)."""
        if not (isinstance(urgency, int) and 0 <= urgency < URGENCIES):
            raise ValueError(f"urgency must be 0..7, got {urgency!r}")
        self._expire(now)
        if item.state is not ItemState.QUEUED:
            return False
        if urgency != item.urgency:
            self._detach(item)
            item.urgency = urgency
            self._attach(item)
        return True

    # -- the worker's side ----------------------------------------------------

    def next_batch(self, now: float) -> Batch | None:
        """The batch to run now, or None (nothing queued, or the best batch is
        still filling). Items it returns are RUNNING; pass them to ``complete``."""
        self._expire(now)
        if not self._queued:
            return None
        head = self._head_group(self._choose())
        group = head if self._ready(head, now) else self._fallback_group(now)
        if group is None:
            return None
        if self.mode == "fair":
            self._vtime = max(
                self._vtime, min(self._pass[u] for u in range(URGENCIES) if self._depth[u])
            )
        return self._take(group, now)

    def next_urgent_batch(self, now: float) -> Batch | None:
        """A batch of the most urgent level queued, if it is more urgent than
        the default, else None: for a runner beside a busy worker (the
        engine's urgent lane), so that urgent items need not wait for the
        batch in progress. Taken at once, not held back to fill: a free lane
        exists to cut their wait. Items it returns are RUNNING."""
        self._expire(now)
        for u in range(DEFAULT_URGENCY):
            if self._depth[u]:
                if self.mode == "fair":
                    self._vtime = max(
                        self._vtime,
                        min(self._pass[v] for v in range(URGENCIES) if self._depth[v]),
                    )
                return self._take(self._head_group(u), now, u + 1)
        return None

    def complete(self, batch: Batch, now: float) -> list[WorkItem]:
        """The batch ran. Returns the items whose results should be delivered:
        those cancelled while running are left out (their results dropped)."""
        delivered: list[WorkItem] = []
        for item in batch.items:
            if item.state is ItemState.RUNNING:
                item.state = ItemState.DONE
                delivered.append(item)
            elif item.state is ItemState.CANCELLED:
                self.dropped_results += 1
        self.completions += len(delivered)
        self._drained.append((now, len(batch.items)))
        self._drained_total += len(batch.items)
        self._trim_drained(now)
        return delivered

    def expired(self, now: float) -> list[WorkItem]:
        """Remove and return the queued items whose deadline is at or before
        ``now`` (including those ``next_batch`` already set aside): answer 504."""
        self._expire(now)
        found, self._expired = self._expired, []
        return found

    def next_deadline(self) -> float | None:
        """When ``next_batch`` or ``expired`` may next answer differently with no
        call in between: the earliest item deadline or the moment the oldest
        partial batch has waited ``max_batch_delay_s``. None when nothing is
        queued. A value at or before now means a batch is ready now (a full
        group or an urgency-0 item); while every worker is busy, time the
        loop with ``next_expiry()`` instead."""
        times: list[float] = []
        expiry = self.next_expiry()
        if expiry is not None:
            times.append(expiry)
        # Set aside by next_batch, not yet collected: expired() has news now.
        times.extend(item.deadline for item in self._expired if item.deadline is not None)
        oldest = self._oldest()
        if oldest is not None:
            ready_now = self._full or self._depth[0]
            times.append(oldest[0] if ready_now else oldest[0] + self.max_batch_delay_s)
        return min(times) if times else None

    def next_expiry(self) -> float | None:
        """The earliest deadline among queued items, or None."""
        heap = self._deadlines
        while heap and heap[0][2].state is not ItemState.QUEUED:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def clear(self) -> list[WorkItem]:
        """Shutdown: remove every queued item and return them, oldest first,
        marked CANCELLED (not counted as cancellations); answer them 503."""
        items = sorted(
            (e for g in self._groups.values() for q in g.queues for e in q if _live(e)),
            key=lambda e: (e[0], e[1]),
        )
        for entry in items:
            self._remove(entry[2], ItemState.CANCELLED)
        return [e[2] for e in items]

    # -- introspection for metrics and Retry-After ----------------------------

    def depth(self, urgency: int | None = None) -> int:
        """Queued items, of one urgency or all."""
        return self._queued if urgency is None else self._depth[urgency]

    def depth_by_urgency(self) -> list[int]:
        return list(self._depth)

    def drain_rate(self, now: float) -> float | None:
        """Items per second completed over the recent window, None before any
        time has passed."""
        self._trim_drained(now)
        if self._origin is None:
            return None
        span = min(self.drain_window_s, now - self._origin)
        if span <= 0:
            return None
        # Below a second of history a burst would make the rate look huge.
        return self._drained_total / max(span, 1.0)

    def retry_after(self, now: float) -> int:
        """Seconds until the current backlog should have drained, rounded up and
        kept within [retry_after_min_s, retry_after_max_s]."""
        rate = self.drain_rate(now)
        if not rate:
            # Nothing drained: a young scheduler has no evidence yet, a stalled
            # one has been failing to drain for a whole window.
            stalled = self._origin is not None and now - self._origin >= self.drain_window_s
            return self.retry_after_max_s if stalled else self.retry_after_min_s
        estimate = math.ceil(self._queued / rate)
        return max(self.retry_after_min_s, min(self.retry_after_max_s, estimate))

    # -- internals ------------------------------------------------------------

    def _attach(self, item: WorkItem) -> None:
        u = item.urgency
        self._seq += 1
        item._seq = self._seq
        entry: _Entry = (item.enqueued_at, self._seq, item)
        if not self._depth[u]:
            # Back from idle: start at the virtual time, idling earns no credit.
            self._pass[u] = max(self._pass[u], self._vtime)
        self._depth[u] += 1
        self._queued += 1
        _push(self._by_urgency[u], entry, self._depth[u])
        key = (item.model, item.shape_key)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(key)
        item._group = group
        group.counts[u] += 1
        group.total += 1
        group.rows += item.size
        _push(group.queues[u], entry, group.counts[u])
        if group.rows >= self.max_batch_size:
            self._full[key] = group

    def _detach(self, item: WorkItem) -> None:
        # The item's heap entries stay behind and die lazily (state or seq).
        u = item.urgency
        group = item._group
        assert group is not None
        self._depth[u] -= 1
        self._queued -= 1
        if not self._depth[u]:
            self._by_urgency[u].clear()
        group.counts[u] -= 1
        group.total -= 1
        group.rows -= item.size
        if not group.counts[u]:
            group.queues[u].clear()
        if not group.total:
            del self._groups[group.key]
            self._full.pop(group.key, None)
        elif group.rows < self.max_batch_size:
            self._full.pop(group.key, None)

    def _remove(self, item: WorkItem, state: ItemState) -> None:
        self._detach(item)
        item.state = state
        if item.deadline is not None:
            self._with_deadline -= 1
            if not self._with_deadline:
                self._deadlines.clear()

    def _expire(self, now: float) -> None:
        heap = self._deadlines
        while heap:
            deadline, _, item = heap[0]
            if item.state is not ItemState.QUEUED:
                heapq.heappop(heap)
            elif deadline <= now:
                heapq.heappop(heap)
                self._remove(item, ItemState.EXPIRED)
                self.expirations += 1
                self._expired.append(item)
            else:
                break

    def _choose(self) -> int:
        """The urgency to serve next; only called with something queued."""
        if self.mode == "strict":
            return next(u for u in range(URGENCIES) if self._depth[u])
        return min((u for u in range(URGENCIES) if self._depth[u]), key=self._pass.__getitem__)

    def _choose_in(self, group: _Group, below: int = URGENCIES) -> int | None:
        counts = group.counts
        if self.mode == "strict":
            return next((u for u in range(below) if counts[u]), None)
        return min((u for u in range(below) if counts[u]), key=self._pass.__getitem__, default=None)

    def _head_group(self, urgency: int) -> _Group:
        entry = _head(self._by_urgency[urgency])
        assert entry is not None and entry[2]._group is not None
        return entry[2]._group

    def _oldest(self) -> _Entry | None:
        heads = [
            e for u in range(URGENCIES) if self._depth[u] and (e := _head(self._by_urgency[u]))
        ]
        return min(heads, key=lambda e: (e[0], e[1])) if heads else None

    def _ready(self, group: _Group, now: float) -> bool:
        if group.rows >= self.max_batch_size or group.counts[0]:
            return True
        oldest = min(
            e[0] for u in range(URGENCIES) if group.counts[u] and (e := _head(group.queues[u]))
        )
        return now >= oldest + self.max_batch_delay_s

    def _fallback_group(self, now: float) -> _Group | None:
        """The head's batch is still filling; run another that is ready rather
        than leave the worker idle: urgency 0 first, then the group of the
        oldest item once it has waited out the delay, then any full group."""
        if self._depth[0]:
            return self._head_group(0)
        oldest = self._oldest()
        if oldest is not None and now >= oldest[0] + self.max_batch_delay_s:
            return oldest[2]._group
        return next(iter(self._full.values()), None)

    def _take(self, group: _Group, now: float, below: int = URGENCIES) -> Batch:
        items: list[WorkItem] = []
        rows = 0
        fair = self.mode == "fair"
        # A batch led by an urgent item (more urgent than the default) takes
        # the urgent items only, not the rest: on a memory-bound model a run
        # of 1 row costs a third of a run of 32 (model B: 3 against 10 ms),
        # and the urgent items would wait for all of it. Under an urgent
        # backlog such batches are full anyway.
        while rows < self.max_batch_size:
            u = self._choose_in(group, below)
            if u is None:
                break
            if not items and u < DEFAULT_URGENCY:
                below = min(below, DEFAULT_URGENCY)
            entry = _head(group.queues[u])
            assert entry is not None
            item = entry[2]
            if rows + item.size > self.max_batch_size:
                break
            heapq.heappop(group.queues[u])
            self._remove(item, ItemState.RUNNING)
            item.started_at = now
            if fair:
                self._pass[u] += item.size * self._stride[u]
            items.append(item)
            rows += item.size
        model, shape_key = group.key
        return Batch(items, model, shape_key, rows, now)

    def _trim_drained(self, now: float) -> None:
        horizon = now - self.drain_window_s
        while self._drained and self._drained[0][0] < horizon:
            self._drained_total -= self._drained.popleft()[1]
