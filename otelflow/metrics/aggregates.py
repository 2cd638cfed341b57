"""Running aggregates kept by the dispatcher: counters, gauges and histograms.

The dispatcher is their only writer; OTel metric readers (on their own threads) and
``summary()`` read them. Updating one costs a few list/dict operations instead of the
~6 µs per reader that an SDK ``histogram.record()`` costs, which is what keeps the
per-task budget. Readers take a consistent copy under a short lock.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from typing import Any

from otelflow.metrics import instruments

_math_log = math.log
_ceil = math.ceil
_INV_LOG_GAMMA = 1.0 / math.log(1.02)


class TaskCounts:
    """Per (task name, workflow name, backend) counts; a plain list for speed.

    Slots 0..7 are the cumulative transitions (``instruments.TRANSITIONS``); slot 8 is
    tasks running now, slot 9 tasks queued now.
    """

    RUNNING = 8
    QUEUED = 9
    SIZE = 10


class HistogramAgg:
    """Cumulative explicit-bucket histograms keyed by an attribute tuple."""

    __slots__ = ("bounds", "data", "keys", "lock", "start_ns")

    def __init__(self, bounds: tuple[float, ...], keys: tuple[str, ...], start_ns: int) -> None:
        self.bounds = bounds
        self.keys = keys
        self.data: dict[tuple[Any, ...], list[Any]] = {}
        self.lock = threading.Lock()
        self.start_ns = start_ns

    def record(self, key: tuple[Any, ...], value: float) -> None:
        """Add one observation (dispatcher thread). Series are capped at ``MAX_SERIES``;
        further attribute combinations fold into one ``_other`` series."""
        entry = self.data.get(key)
        if entry is None:
            entry = self._new_series(key)
        i = bisect_left(self.bounds, value)
        with self.lock:  # one short critical section: readers snapshot under the same lock
            entry[0][i] += 1
            entry[1] += 1
            entry[2] += value
            if value < entry[3]:  # noqa: PLR1730 - a comparison is cheaper than min() here
                entry[3] = value
            if value > entry[4]:  # noqa: PLR1730
                entry[4] = value

    def _new_series(self, key: tuple[Any, ...]) -> list[Any]:
        if len(self.data) >= instruments.MAX_SERIES:
            key = (instruments.OVERFLOW,) * len(self.keys)
            entry = self.data.get(key)
            if entry is not None:
                return entry
        # [bucket counts, count, sum, min, max]
        entry = [[0] * (len(self.bounds) + 1), 0, 0.0, math.inf, -math.inf]
        with self.lock:
            self.data[key] = entry
        return entry

    def snapshot(self) -> list[tuple[dict[str, Any], list[int], int, float, float, float]]:
        """Return ``(attributes, bucket_counts, count, sum, min, max)`` per series."""
        with self.lock:
            items = [(k, list(e[0]), e[1], e[2], e[3], e[4]) for k, e in self.data.items()]
        # None (a task outside any workflow, no backend) is no attribute value: leave it out,
        # as the counters do; OTLP encoders before SDK 1.45 refuse it.
        return [
            ({a: v for a, v in zip(self.keys, k, strict=True) if v is not None}, *rest) for k, *rest in items
        ]


class Sketch:
    """Streaming quantiles with ~1 % relative error in bounded memory (log buckets).

    Used by ``summary()`` for p50/p95 without keeping every value.
    """

    __slots__ = ("buckets", "count", "max", "min", "sum", "zeros")
    _GAMMA = 1.02

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.zeros = 0

    def add(self, value: float) -> None:
        self.count += 1
        self.sum += value
        if value < self.min:  # noqa: PLR1730 - comparisons, not min()/max(): several per task
            self.min = value
        if value > self.max:  # noqa: PLR1730
            self.max = value
        if value <= 1e-9:
            self.zeros += 1
            return
        idx = _ceil(_math_log(value) * _INV_LOG_GAMMA)
        b = self.buckets
        b[idx] = b.get(idx, 0) + 1

    def quantile(self, q: float) -> float | None:
        if self.count == 0:
            return None
        rank = q * (self.count - 1)
        if rank < self.zeros:
            return 0.0
        seen = self.zeros
        for idx in sorted(self.buckets):
            seen += self.buckets[idx]
            if seen > rank:
                # Bucket midpoint in log space, clamped to the observed range.
                value = 2 * self._GAMMA**idx / (self._GAMMA + 1)
                return min(max(value, self.min), self.max)
        return self.max

    def stats(self) -> dict[str, float | int | None]:
        if self.count == 0:
            return {"count": 0, "mean": None, "min": None, "max": None, "p50": None, "p95": None}
        return {
            "count": self.count,
            "mean": self.sum / self.count,
            "min": self.min,
            "max": self.max,
            "p50": self.quantile(0.5),
            "p95": self.quantile(0.95),
        }
