"""Prometheus metrics without prometheus-client: counters, gauges, histograms and
the text exposition format 0.0.4.

Children are updated from the event loop and from model worker threads, so each
child has its own lock (an uncontended ``threading.Lock`` costs well under a
microsecond); a family's lock guards only the creation of children.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar, cast

__all__ = [
    "CONTENT_TYPE_LATEST",
    "DEFAULT_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "Registry",
    "exponential_buckets",
    "linear_buckets",
    "merge_expositions",
]

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"

# prometheus-client's defaults, in seconds.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    math.inf,
)

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

_log = logging.getLogger("rawserve.inference.metrics")

# A gauge callback on an unlabelled gauge returns a number; on a labelled one,
# label values (a tuple, or a bare value for one label) -> number.
GaugeCallback = Callable[[], "float | Mapping[Any, float]"]


def linear_buckets(start: float, width: float, count: int) -> tuple[float, ...]:
    return tuple(start + i * width for i in range(count))


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    return tuple(start * factor**i for i in range(count))


def _format_value(value: float) -> str:
    # Go's ParseFloat spelling, as prometheus-client writes it.
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _label_text(
    names: Sequence[str], values: Sequence[str], extra: str = "", first: str = ""
) -> str:
    parts = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if first:
        parts.insert(0, first)
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


# -- children --------------------------------------------------------------------


class CounterChild:
    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: float = 0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up; use a gauge")
        with self._lock:
            self._value += amount

    @property
    def value(self) -> float:
        return self._value


class GaugeChild:
    __slots__ = ("_function", "_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: float = 0
        self._function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        with self._lock:
            self._value = value

    def inc(self, amount: float = 1) -> None:
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1) -> None:
        with self._lock:
            self._value -= amount

    def set_function(self, function: Callable[[], float]) -> None:
        """Read the value from ``function`` at scrape time instead."""
        self._function = function

    @property
    def value(self) -> float:
        function = self._function
        return function() if function is not None else self._value


class HistogramChild:
    __slots__ = ("_counts", "_lock", "_sum", "_upper")

    def __init__(self, upper: tuple[float, ...]) -> None:
        self._lock = threading.Lock()
        self._upper = upper
        self._counts = [0] * len(upper)  # per bucket, not cumulative
        self._sum: float = 0

    def observe(self, value: float) -> None:
        # le is inclusive: a value equal to a bound belongs to that bucket.
        if value != value:  # NaN compares false with every bound: count it under +Inf
            index = len(self._upper) - 1
        else:
            index = bisect.bisect_left(self._upper, value)
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[int], float]:
        """Cumulative bucket counts (the last is the total count) and the sum."""
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        running = 0
        for i, c in enumerate(counts):
            running += c
            counts[i] = running
        return counts, total


# -- families --------------------------------------------------------------------

C = TypeVar("C", CounterChild, GaugeChild, HistogramChild)


class _Family(Generic[C]):
    type_name = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} for {name}")
        if len(set(labelnames)) != len(labelnames):
            raise ValueError(f"duplicate label names for {name}: {list(labelnames)}")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], C] = {}
        if not self.labelnames:
            self._children[()] = self._new_child()

    def _new_child(self) -> C:
        raise NotImplementedError

    def labels(self, *values: object, **by_name: object) -> C:
        """The child for these label values (positional, or all by name);
        values are turned into strings."""
        # The common call: positional strings, a child made before. The keys
        # are tuples of str, which no tuple holding another type equals.
        child = self._children.get(cast("tuple[str, ...]", values))
        if child is not None:
            return child
        if by_name:
            if values:
                raise ValueError("give label values positionally or by name, not both")
            if set(by_name) != set(self.labelnames):
                raise ValueError(f"{self.name} takes labels {list(self.labelnames)}")
            values = tuple(by_name[n] for n in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ValueError(
                f"{self.name} takes {len(self.labelnames)} label values "
                f"({', '.join(self.labelnames)}), got {len(values)}"
            )
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = self._new_child()
        return child

    def remove(self, *values: object) -> None:
        with self._lock:
            self._children.pop(tuple(str(v) for v in values), None)

    def _unlabelled(self) -> C:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {list(self.labelnames)}; use .labels()")
        return self._children[()]

    def _items(self) -> list[tuple[tuple[str, ...], C]]:
        with self._lock:
            return list(self._children.items())

    def samples(self, first: str = "") -> Iterator[str]:
        """Sample lines; ``first`` (``name="value"``) leads every label set."""
        raise NotImplementedError

    def render(self, first: str = "") -> str:
        head = (
            f"# HELP {self.name} {_escape_help(self.help)}\n# TYPE {self.name} {self.type_name}\n"
        )
        return head + "".join(self.samples(first))


class Counter(_Family[CounterChild]):
    """A value that only goes up. Names end in ``_total`` (added if missing)."""

    type_name = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name if name.endswith("_total") else name + "_total", help, labelnames)

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1) -> None:
        self._unlabelled().inc(amount)

    @property
    def value(self) -> float:
        return self._unlabelled().value

    def samples(self, first: str = "") -> Iterator[str]:
        for key, child in self._items():
            labels = _label_text(self.labelnames, key, first=first)
            yield f"{self.name}{labels} {_format_value(child.value)}\n"


class Gauge(_Family[GaugeChild]):
    """A value that goes up and down, or is read from ``callback`` at scrape time."""

    type_name = "gauge"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        *,
        callback: GaugeCallback | None = None,
    ) -> None:
        super().__init__(name, help, labelnames)
        self._callback = callback

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def set(self, value: float) -> None:
        self._unlabelled().set(value)

    def inc(self, amount: float = 1) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._unlabelled().dec(amount)

    def set_function(self, function: Callable[[], float]) -> None:
        self._unlabelled().set_function(function)

    @property
    def value(self) -> float:
        return self._unlabelled().value

    def _values(self) -> Iterable[tuple[tuple[str, ...], float]]:
        if self._callback is None:
            for key, child in self._items():
                try:
                    yield key, child.value
                except Exception:
                    _log.exception("gauge function of %s%s failed", self.name, list(key))
            return
        try:
            result = self._callback()
        except Exception:
            _log.exception("gauge callback of %s failed", self.name)
            return
        if not isinstance(result, Mapping):
            if self.labelnames:
                _log.error("callback of labelled gauge %s must return a mapping", self.name)
                return
            yield (), result
            return
        for labels, value in result.items():
            key = labels if isinstance(labels, tuple) else (labels,)
            if len(key) != len(self.labelnames):
                _log.error("gauge callback of %s gave labels %r", self.name, labels)
                continue
            yield tuple(str(v) for v in key), value

    def samples(self, first: str = "") -> Iterator[str]:
        for key, value in self._values():
            labels = _label_text(self.labelnames, key, first=first)
            yield f"{self.name}{labels} {_format_value(value)}\n"


class Histogram(_Family[HistogramChild]):
    """Observations counted into cumulative ``le`` buckets, with sum and count."""

    type_name = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if "le" in labelnames:
            raise ValueError(f"histogram {name} may not use the label name 'le'")
        upper = [float(b) for b in buckets]
        if any(math.isnan(b) for b in upper) or upper != sorted(set(upper)):
            raise ValueError(f"buckets of {name} must be strictly increasing numbers")
        if not upper or upper[-1] != math.inf:
            upper.append(math.inf)
        self.buckets = tuple(upper)
        super().__init__(name, help, labelnames)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.buckets)

    def observe(self, value: float) -> None:
        self._unlabelled().observe(value)

    def samples(self, first: str = "") -> Iterator[str]:
        bounds = [_format_value(b) for b in self.buckets]
        for key, child in self._items():
            counts, total = child.snapshot()
            for bound, count in zip(bounds, counts, strict=True):
                labels = _label_text(self.labelnames, key, f'le="{bound}"', first)
                yield f"{self.name}_bucket{labels} {count}\n"
            labels = _label_text(self.labelnames, key, first=first)
            yield f"{self.name}_sum{labels} {_format_value(total)}\n"
            yield f"{self.name}_count{labels} {counts[-1]}\n"


class Registry:
    """The metric families one ``/metrics`` endpoint exposes, in registration order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, Counter | Gauge | Histogram] = {}
        # One of several worker processes (share()): its label value, and
        # where the other workers' latest expositions come from.
        self._worker: str | None = None
        self._peers: Callable[[], Iterable[bytes]] | None = None

    def _add(self, family: Counter | Gauge | Histogram) -> None:
        # The names each family writes, so a histogram "x" and a gauge "x_count"
        # cannot both claim the same series.
        def claimed(f: Counter | Gauge | Histogram) -> set[str]:
            if isinstance(f, Histogram):
                return {f.name, f.name + "_bucket", f.name + "_sum", f.name + "_count"}
            return {f.name}

        with self._lock:
            taken = set().union(*(claimed(f) for f in self._families.values()))
            if claimed(family) & taken:
                raise ValueError(f"metric {family.name} is already registered")
            self._families[family.name] = family

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        family = Counter(name, help, labelnames)
        self._add(family)
        return family

    def gauge(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        *,
        callback: GaugeCallback | None = None,
    ) -> Gauge:
        family = Gauge(name, help, labelnames, callback=callback)
        self._add(family)
        return family

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        family = Histogram(name, help, labelnames, buckets)
        self._add(family)
        return family

    def get(self, name: str) -> Counter | Gauge | Histogram | None:
        return self._families.get(name)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._families.pop(name, None)

    def render(self) -> bytes:
        """Every family in the text exposition format 0.0.4; for one worker
        of several (``share``), every worker's series, each labelled."""
        if self._worker is None or self._peers is None:
            return self.render_own()
        return merge_expositions([self.render_own(), *self._peers()])

    def render_own(self) -> bytes:
        """This process's families only (labelled with its worker, if shared)."""
        with self._lock:
            families = list(self._families.values())
        first = "" if self._worker is None else f'worker="{_escape_label(self._worker)}"'
        return "".join(f.render(first) for f in families).encode("utf-8")

    def share(self, worker: str, peers: Callable[[], Iterable[bytes]]) -> None:
        """Serve as one of several worker processes: every sample gets a
        ``worker`` label, and ``render`` adds the expositions ``peers()``
        returns (the other workers' ``render_own``), family by family, so
        that a scrape reaching any worker sees them all."""
        self._worker = worker
        self._peers = peers


def merge_expositions(texts: Iterable[bytes]) -> bytes:
    """Several expositions of the same families (one per worker) as one: each
    family's HELP and TYPE once, then its samples from every text in turn (the
    format wants a family's lines together)."""
    heads: dict[bytes, list[bytes]] = {}
    samples: dict[bytes, list[bytes]] = {}
    for text in texts:
        family: bytes | None = None
        for line in text.split(b"\n"):
            if not line:
                continue
            if line.startswith(b"# HELP ") or line.startswith(b"# TYPE "):
                family = line.split(b" ", 3)[2]
                head = heads.setdefault(family, [])
                samples.setdefault(family, [])
                if len(head) < 2 and line not in head:
                    head.append(line)
            elif family is not None and not line.startswith(b"#"):
                samples[family].append(line)
    out = bytearray()
    for family, head in heads.items():
        for line in (*head, *samples[family]):
            out += line + b"\n"
    return bytes(out)
