"""Running aggregates kept by the dispatcher: counters, gauges and histograms.

The dispatcher is their only writer; OTel metric readers (on their own threads) and
``summary()`` read them.

Recording a value on the dispatcher thread is one ``list.append`` to a :class:`Stream`'s
pending list: no lock, no arithmetic. A stream feeds a fixed set of aggregates (one
histogram series and the sketches that see the same values), so a task duration is
appended once, not once per aggregate. Pending values are *folded* into the aggregates in
bulk — sorted once, then counted into buckets with a few ``bisect`` calls per bucket
boundary instead of one per value — by the writer every so many tasks (which bounds the
memory they hold) and by every reader before it reads, so a reader always sees every
value recorded before its read.

Folding is done under the aggregates' lock (one lock shared by a recorder's aggregates),
by the writer or a reader. The writer appends without it: a fold takes
``vals = pending[:]`` then ``del pending[:len(vals)]``, each one atomic, so a value
appended between the two stays pending for the next fold.
"""

from __future__ import annotations

import math
import struct
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add, sub
from typing import Any

from otelflow.metrics import instruments

_math_log = math.log
_ceil = math.ceil
_INV_LOG_GAMMA = 1.0 / math.log(1.02)
_INF = math.inf

#: Values a sketch keeps pending from ``Sketch.add()`` before folding them itself.
SKETCH_PENDING = 1024


class TaskCounts:
    """Per (task name, workflow name, backend) counts; a plain list for speed.

    Slots 0..7 are the cumulative transitions (``instruments.TRANSITIONS``); slot 8 is
    tasks running now, slot 9 tasks queued now.
    """

    RUNNING = 8
    QUEUED = 9
    SIZE = 10


class Stream:
    """Values pending for one histogram series and/or some sketches (see the module docstring).

    The writer appends to ``values``; :meth:`fold` (under the aggregates' lock) moves them
    into the aggregates. The histogram series is looked up at the first fold that has
    values, so a stream that never gets one creates no (zero-count) series.
    """

    __slots__ = ("entry", "hist", "key", "sketches", "values")

    def __init__(self, hist: HistogramAgg | None, key: tuple[Any, ...], sketches: Sequence[Sketch]) -> None:
        self.values: list[float] = []
        self.hist = hist
        self.key = key
        self.entry: list[Any] | None = None
        self.sketches = tuple(sketches)

    def fold(self) -> None:
        """Move the pending values into the aggregates. Call with the aggregates' lock held."""
        pending = self.values
        vals = pending[:]
        del pending[: len(vals)]
        n = len(vals)
        if not n:
            return
        total = sum(vals)
        if math.isnan(total):  # a NaN: sorting is undefined, count it value by value as ever
            self._fold_each(vals)
            return
        vals.sort()
        hist = self.hist
        if hist is not None:
            entry = self.entry
            if entry is None:
                entry = self.entry = hist.series(self.key)
            hist.add_sorted(entry, vals, total)
        for sketch in self.sketches:
            sketch.add_sorted(vals, total)

    def _fold_each(self, vals: list[float]) -> None:
        hist = self.hist
        if hist is not None:
            if self.entry is None:
                self.entry = hist.series(self.key)
            for v in vals:
                hist.add_one(self.entry, v)
        for sketch in self.sketches:
            for v in vals:
                sketch.add_one(v)


class Pending:
    """The streams of one writer, and the lock its aggregates share."""

    __slots__ = ("lock", "streams")

    def __init__(self, lock: Any = None) -> None:
        self.lock: Any = lock if lock is not None else threading.RLock()
        self.streams: list[Stream] = []

    def stream(
        self, hist: HistogramAgg | None, key: tuple[Any, ...] = (), sketches: Sequence[Sketch] = ()
    ) -> list[float]:
        """A new stream; returns the list the writer appends its values to."""
        if any(a.lock is not self.lock for a in (hist, *sketches) if a is not None):
            raise ValueError("a stream's aggregates must share its Pending's lock")
        st = Stream(hist, key, sketches)
        with self.lock:
            self.streams.append(st)
        return st.values

    def fold(self) -> None:
        """Fold every stream's pending values (any thread)."""
        with self.lock:
            for st in self.streams:
                if st.values:
                    st.fold()


class HistogramAgg:
    """Cumulative explicit-bucket histograms keyed by an attribute tuple."""

    __slots__ = ("bounds", "data", "keys", "lock", "pending", "start_ns")

    def __init__(
        self,
        bounds: tuple[float, ...],
        keys: tuple[str, ...],
        start_ns: int,
        pending: Pending | None = None,
    ) -> None:
        self.bounds = bounds
        self.keys = keys
        # key -> [bucket counts, count, sum, min, max]
        self.data: dict[tuple[Any, ...], list[Any]] = {}
        self.pending = pending
        self.lock: Any = pending.lock if pending is not None else threading.RLock()
        self.start_ns = start_ns

    def record(self, key: tuple[Any, ...], value: float) -> None:
        """Add one observation now (for rare values; per-task ones go through a :class:`Stream`)."""
        with self.lock:
            self.add_one(self.series(key), value)

    def series(self, key: tuple[Any, ...]) -> list[Any]:
        """The series for ``key``, created if needed (lock held). Series are capped at
        ``MAX_SERIES``; further attribute combinations fold into one ``_other`` series."""
        entry = self.data.get(key)
        if entry is not None:
            return entry
        if len(self.data) >= instruments.MAX_SERIES:
            key = (instruments.OVERFLOW,) * len(self.keys)
            entry = self.data.get(key)
            if entry is not None:
                return entry
        entry = self.data[key] = [[0] * (len(self.bounds) + 1), 0, 0.0, math.inf, -math.inf]
        return entry

    def add_one(self, entry: list[Any], value: float) -> None:
        """Add one value to a series (lock held)."""
        entry[0][bisect_left(self.bounds, value)] += 1
        entry[1] += 1
        entry[2] += value
        if value < entry[3]:  # noqa: PLR1730 - a comparison is cheaper than min() here
            entry[3] = value
        if value > entry[4]:  # noqa: PLR1730
            entry[4] = value

    def add_sorted(self, entry: list[Any], vals: list[float], total: float) -> None:
        """Add sorted values (no NaN) whose sum is ``total`` to a series (lock held).

        A value goes in bucket ``bisect_left(bounds, value)``, as :meth:`add_one` puts it:
        the values up to ``bounds[i]`` are ``bisect_right(vals, bounds[i])``, so one bisect
        per bound inside the values' range counts them all.
        """
        n = len(vals)
        lo, hi = vals[0], vals[-1]
        bounds = self.bounds
        counts = entry[0]
        i0 = bisect_left(bounds, lo)
        i1 = bisect_left(bounds, hi, i0)
        if i0 == i1:
            counts[i0] += n
        else:
            ends = list(map(bisect_right, repeat(vals), bounds[i0:i1]))
            ends.append(n)
            counts[i0 : i1 + 1] = map(add, counts[i0 : i1 + 1], map(sub, ends, [0, *ends]))
        entry[1] += n
        entry[2] += total
        entry[3] = min(entry[3], lo)
        entry[4] = max(entry[4], hi)

    def snapshot(self) -> list[tuple[dict[str, Any], list[int], int, float, float, float]]:
        """Return ``(attributes, bucket_counts, count, sum, min, max)`` per series, with
        every value recorded so far."""
        with self.lock:
            if self.pending is not None:
                self.pending.fold()
            items = [(k, list(e[0]), e[1], e[2], e[3], e[4]) for k, e in self.data.items()]
        # None (a task outside any workflow, no backend) is no attribute value: leave it out,
        # as the counters do; OTLP encoders before SDK 1.45 refuse it.
        return [({a: v for a, v in zip(self.keys, k, strict=True) if v is not None}, *rest) for k, *rest in items]


# -- sketch bucket edges ---------------------------------------------------------------------
#
# A value v > 1e-9 is in sketch bucket I(v) = ceil(log(v) / log(1.02)). I is non-decreasing
# in v, so the values of a sorted batch in buckets <= i are those <= E(i), the largest double
# whose bucket is <= i: one bisect per bucket counts a batch, and the buckets come out as
# computing I per value gives.

_pack_d = struct.Struct("<d").pack
_unpack_d = struct.Struct("<d").unpack
_pack_q = struct.Struct("<q").pack
_unpack_q = struct.Struct("<q").unpack


def _bucket(v: float) -> int:
    return _ceil(_math_log(v) * _INV_LOG_GAMMA)


def _edge(i: int) -> float:
    """The largest double ``v`` with ``_bucket(v) <= i``."""
    top = _unpack_q(_pack_d(_INF))[0]
    try:
        guess = math.exp(i / _INV_LOG_GAMMA)
    except OverflowError:
        guess = _INF
    if guess >= _INF:
        if _bucket(math.nextafter(_INF, 0.0)) <= i:
            return _INF
        guess = math.nextafter(_INF, 0.0)
    # Bit patterns of positive doubles are ordered like their values: gallop out from the
    # guess until _bucket(lo) <= i < _bucket(hi) (hi may be inf), then bisect.
    bits = _unpack_q(_pack_d(guess))[0]
    lo = hi = bits
    step = 1
    while _bucket(_unpack_d(_pack_q(lo))[0]) > i:
        if lo == 1:  # below the smallest double's bucket: no positive value is <= it
            return 0.0
        hi = lo
        lo = max(1, bits - step)
        step *= 2
    step = 1
    while hi == lo or (hi < top and _bucket(_unpack_d(_pack_q(hi))[0]) <= i):
        lo = hi
        hi = min(top, bits + step)
        step *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _bucket(_unpack_d(_pack_q(mid))[0]) <= i:
            lo = mid
        else:
            hi = mid
    return float(_unpack_d(_pack_q(lo))[0])


#: The lowest bucket of a value > 1e-9 (smaller ones count as zeros).
_FIRST = _bucket(math.nextafter(1e-9, _INF))
#: _EDGE_TABLE[k] is E(_FIRST + k); grown on demand, computed once per process.
_EDGE_TABLE: list[float] = []
_EDGE_LOCK = threading.Lock()


def _edges(first: int, stop: int) -> list[float]:
    """``[E(first), ..., E(stop - 1)]`` (``first >= _FIRST``)."""
    table = _EDGE_TABLE
    if stop - _FIRST > len(table):
        with _EDGE_LOCK:
            table.extend([_edge(i) for i in range(_FIRST + len(table), stop)])
    return table[first - _FIRST : stop - _FIRST]


class Sketch:
    """Streaming quantiles with ~1 % relative error in bounded memory (log buckets).

    Used by ``summary()`` for p50/p95 without keeping every value. Values come from
    :meth:`add` or from :class:`Stream` folds; every read (:meth:`quantile`, :meth:`stats`,
    :meth:`copy` and the ``count``/``sum``/``min``/``max``/``zeros``/``buckets`` properties)
    folds what is pending first.

    Bucket counts are a dense list over the range of buckets seen (``_win[k]`` counts bucket
    ``_base + k``): a batch is added with one slice operation. Values from ns timestamps span
    at most ~2 200 buckets (1 ns to 292 years); any double at most ~37 000.
    """

    __slots__ = ("_base", "_count", "_max", "_min", "_sum", "_win", "_zeros", "lock", "pending", "values")
    _GAMMA = 1.02

    def __init__(self, pending: Pending | None = None) -> None:
        self._base = 0
        self._win: list[int] = []
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf
        self._zeros = 0
        #: Values from add() not folded yet.
        self.values: list[float] = []
        self.pending = pending
        self.lock: Any = pending.lock if pending is not None else threading.RLock()

    def add(self, value: float) -> None:
        """Add one value (the writer's thread)."""
        values = self.values
        values.append(value)
        if len(values) >= SKETCH_PENDING:
            with self.lock:
                self._fold_own()

    def _fold_own(self) -> None:
        pending = self.values
        vals = pending[:]
        del pending[: len(vals)]
        if not vals:
            return
        total = sum(vals)
        if math.isnan(total):
            for v in vals:
                self.add_one(v)
            return
        vals.sort()
        self.add_sorted(vals, total)

    def _fold(self) -> None:
        """Fold everything pending (lock held)."""
        if self.pending is not None:
            self.pending.fold()
        if self.values:
            self._fold_own()

    def _cover(self, first: int, last: int) -> int:
        """Grow the window to cover buckets ``first..last``; return ``first``'s offset in it."""
        win = self._win
        if not win:
            self._base = first
            win.extend([0] * (last - first + 1))
            return 0
        base = self._base
        if first < base:
            win[0:0] = [0] * (base - first)
            self._base = base = first
        if last - base >= len(win):
            win.extend([0] * (last - base + 1 - len(win)))
        return first - base

    def add_one(self, value: float) -> None:
        """Add one value now (lock held)."""
        self._count += 1
        self._sum += value
        if value < self._min:  # noqa: PLR1730
            self._min = value
        if value > self._max:  # noqa: PLR1730
            self._max = value
        if value <= 1e-9:
            self._zeros += 1
        elif value < _INF:  # NaN and inf have no bucket (quantiles then fall back to max)
            idx = _bucket(value)
            self._win[self._cover(idx, idx)] += 1

    def add_sorted(self, vals: list[float], total: float) -> None:
        """Add sorted values (no NaN) whose sum is ``total`` (lock held): the same buckets as
        :meth:`add_one` per value, counted with one bisect per bucket boundary."""
        n = len(vals)
        self._count += n
        self._sum += total
        self._min = min(self._min, vals[0])
        self._max = max(self._max, vals[-1])
        z = bisect_right(vals, 1e-9)
        self._zeros += z
        end = n if vals[-1] < _INF else bisect_left(vals, _INF, z)
        if z >= end:
            return
        first = _bucket(vals[z])
        last = _bucket(vals[end - 1])
        off = self._cover(first, last)
        if first == last:
            self._win[off] += end - z
            return
        # A bisect per bucket costs about what one value costs one by one: sparse tails (a
        # few values spread over many buckets, common with waits) go one by one.
        n = end - z
        if n >= 64:
            k = n >> 5
            low = _bucket(vals[z + k])
            if low - first > 2 * k:
                self._add_each(vals, z, z + k)
                z += k
                first = _bucket(vals[z])
            high = _bucket(vals[end - 1 - k])
            if last - high > 2 * k:
                self._add_each(vals, end - k, end)
                end -= k
                last = _bucket(vals[end - 1])
        if last - first > 2 * (end - z):  # far more buckets than values
            self._add_each(vals, z, end)
        elif first == last:
            self._win[first - self._base] += end - z
        else:
            # ends[k]: the values in buckets <= first + k (the tails cut off above are below
            # E(first) or above E(last - 1), so they shift nothing).
            ends = list(map(bisect_right, repeat(vals), _edges(first, last)))
            ends.append(end)
            win = self._win
            off = first - self._base
            stop = off + last - first + 1
            win[off:stop] = map(add, win[off:stop], map(sub, ends, [z, *ends]))

    def _add_each(self, vals: list[float], start: int, stop: int) -> None:
        """Bucket ``vals[start:stop]`` (all > 1e-9 and finite, window covering them) one by one."""
        win = self._win
        base = self._base
        for idx in map(_ceil, map(_INV_LOG_GAMMA.__mul__, map(_math_log, vals[start:stop]))):
            win[idx - base] += 1

    # -- readers ------------------------------------------------------------------------------

    def copy(self) -> Sketch:
        """A detached copy with every value recorded so far."""
        with self.lock:
            self._fold()
            return self.copy_folded()

    def copy_folded(self) -> Sketch:
        """:meth:`copy` for a caller that holds the lock and has folded the sketch's
        :class:`Pending` itself (one fold for many sketches)."""
        with self.lock:
            if self.values:
                self._fold_own()
            out = Sketch()
            out._base = self._base
            out._win = list(self._win)
            out._count = self._count
            out._sum = self._sum
            out._min = self._min
            out._max = self._max
            out._zeros = self._zeros
            return out

    def _read(self, name: str) -> Any:
        with self.lock:
            self._fold()
            return getattr(self, name)

    @property
    def count(self) -> int:
        return int(self._read("_count"))

    @property
    def sum(self) -> float:
        return float(self._read("_sum"))

    @property
    def min(self) -> float:
        return float(self._read("_min"))

    @property
    def max(self) -> float:
        return float(self._read("_max"))

    @property
    def zeros(self) -> int:
        return int(self._read("_zeros"))

    @property
    def buckets(self) -> dict[int, int]:
        """Count per bucket index, for the buckets with values."""
        with self.lock:
            self._fold()
            base = self._base
            return {base + k: c for k, c in enumerate(self._win) if c}

    def quantile(self, q: float) -> float | None:
        with self.lock:
            self._fold()
            return self._quantile(q, None)

    def _quantile(self, q: float, seen: list[int] | None) -> float | None:
        """``seen``: ``accumulate(self._win, initial=self._zeros)``, if the caller has it."""
        if self._count == 0:
            return None
        rank = q * (self._count - 1)
        if rank < self._zeros:
            return 0.0
        if seen is None:
            seen = list(accumulate(self._win, initial=self._zeros))
        # The first bucket whose running count passes the rank.
        k = bisect_right(seen, rank)
        if k >= len(seen):
            return self._max
        # Bucket midpoint in log space, clamped to the observed range.
        value = 2 * self._GAMMA ** (self._base + k - 1) / (self._GAMMA + 1)
        return min(max(value, self._min), self._max)

    def stats(self) -> dict[str, float | int | None]:
        with self.lock:
            self._fold()
            if self._count == 0:
                return {"count": 0, "mean": None, "min": None, "max": None, "p50": None, "p95": None}
            seen = list(accumulate(self._win, initial=self._zeros))
            return {
                "count": self._count,
                "mean": self._sum / self._count,
                "min": self._min,
                "max": self._max,
                "p50": self._quantile(0.5, seen),
                "p95": self._quantile(0.95, seen),
            }
