"""Per-task values are appended on the dispatcher thread and folded in bulk: the aggregates
must come out as recording each value on its own gave, and readers must see every value."""

from __future__ import annotations

import itertools
import math
import random
import sys
import threading
from bisect import bisect_left

import pytest

from otelflow.metrics import aggregates as agg
from otelflow.metrics import instruments as inst
from otelflow.metrics.aggregates import HistogramAgg, Pending, Sketch

BOUNDS = inst.DURATION_BUCKETS
_INV = 1.0 / math.log(1.02)


class RefSketch:
    """The sketch as it was, one value at a time: the reference."""

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
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        if value <= 1e-9:
            self.zeros += 1
            return
        idx = math.ceil(math.log(value) * _INV)
        self.buckets[idx] = self.buckets.get(idx, 0) + 1

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
                return min(max(2 * 1.02**idx / 2.02, self.min), self.max)
        return self.max


class RefHist:
    def __init__(self, bounds: tuple[float, ...] = BOUNDS) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)


def _nasty_values(rng: random.Random, n: int) -> list[float]:
    """Random values plus the ones at the edges: bounds, sketch bucket edges, zeros, tiny, huge."""
    special = [0.0, -0.0, -1.0, 1e-12, 1e-9, math.nextafter(1e-9, 1.0), 2e-9, 5e-324, 1e300, 1.7e308]
    for b in BOUNDS:
        special += [b, math.nextafter(b, 0.0), math.nextafter(b, math.inf)]
    for i in rng.sample(range(-1000, 1100), 40):
        e = agg._edge(i)
        special += [e, math.nextafter(e, 0.0), math.nextafter(e, math.inf)]
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.2:
            out.append(rng.choice(special))
        elif r < 0.5:
            out.append(rng.randint(0, 10**7) / 1e9)  # ns-derived, like durations and waits
        elif r < 0.8:
            out.append(rng.lognormvariate(math.log(1e-3), 2))
        else:
            out.append(10 ** rng.uniform(-12, 12))
    return out


def _assert_sketch_equal(sk: Sketch, ref: RefSketch) -> None:
    assert sk.count == ref.count
    assert sk.zeros == ref.zeros
    assert sk.min == ref.min and sk.max == ref.max
    assert sk.buckets == ref.buckets
    assert math.isclose(sk.sum, ref.sum, rel_tol=1e-9, abs_tol=1e-12)
    for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0):
        assert sk.quantile(q) == ref.quantile(q), q


def test_sketch_edges_split_the_buckets_exactly():
    for i in [*range(agg._FIRST, 1300), 20_000, 35_000, 35_842]:
        e = agg._edge(i)
        assert agg._bucket(e) <= i < agg._bucket(math.nextafter(e, math.inf)), i
    assert agg._edge(40_000) == math.inf
    assert agg._edges(agg._FIRST, agg._FIRST + 3) == [agg._edge(agg._FIRST + k) for k in range(3)]


@pytest.mark.parametrize("seed", range(4))
def test_bulk_folds_give_the_per_value_buckets(seed):
    rng = random.Random(seed)
    pending = Pending()
    hist = HistogramAgg(BOUNDS, ("k",), 0, pending)
    sk = Sketch(pending)
    stream = pending.stream(hist, ("a",), (sk,))
    own = Sketch()  # values through Sketch.add, folded by the sketch itself
    ref_h, ref_s = RefHist(), RefSketch()
    for size in [1, 2, 3, 17, 500, 1024, 4000, *[rng.randint(1, 3000) for _ in range(6)]]:
        vals = _nasty_values(rng, size)
        stream.extend(vals)
        for v in vals:
            own.add(v)
            ref_h.add(v)
            ref_s.add(v)
        if rng.random() < 0.5:
            pending.fold()
    ((attrs, buckets, count, total, lo, hi),) = hist.snapshot()
    assert attrs == {"k": "a"}
    assert buckets == ref_h.buckets
    assert (count, lo, hi) == (ref_h.count, ref_h.min, ref_h.max)
    assert math.isclose(total, ref_h.sum, rel_tol=1e-9)
    _assert_sketch_equal(sk, ref_s)
    _assert_sketch_equal(own, ref_s)


def test_narrow_and_wide_batches_take_both_sketch_paths():
    rng = random.Random(7)
    for vals in (
        [rng.uniform(0.02, 0.021) for _ in range(3000)],  # one or two buckets
        [rng.uniform(1e-3, 1.0) for _ in range(3000)],  # a bisect per bucket
        [10 ** rng.uniform(-8, 300) for _ in range(50)],  # more buckets than values
    ):
        sk, ref = Sketch(), RefSketch()
        for v in vals:
            sk.add(v)
            ref.add(v)
        _assert_sketch_equal(sk, ref)


@pytest.mark.parametrize("seed", range(3))
def test_values_at_the_bucket_edges_are_counted_in_their_bucket(seed):
    """Bisecting a batch per bucket: a value equal to an edge is in that edge's bucket."""
    rng = random.Random(seed)
    lo = rng.randint(agg._FIRST + 400, 400)
    vals = []
    # A dense middle, bisected per bucket, and sparse tails (bucketed one by one).
    for i in [*range(lo, lo + 150), *range(lo - 400, lo - 390), *range(lo + 600, lo + 610)]:
        e = agg._edge(i)
        vals += [e, math.nextafter(e, 0.0), math.nextafter(e, math.inf)]
    vals += [rng.uniform(agg._edge(lo), agg._edge(lo + 150)) for _ in range(500)]
    rng.shuffle(vals)
    pending = Pending()
    sk = Sketch(pending)
    hist = HistogramAgg(BOUNDS, ("k",), 0, pending)
    stream = pending.stream(hist, ("a",), (sk,))
    stream.extend(vals)
    ref = RefSketch()
    for v in vals:
        ref.add(v)
    _assert_sketch_equal(sk, ref)


def test_nan_and_inf_do_not_break_a_fold():
    pending = Pending()
    hist = HistogramAgg(BOUNDS, ("k",), 0, pending)
    sk = Sketch(pending)
    stream = pending.stream(hist, ("a",), (sk,))
    stream.extend([1.0, math.inf, 2.0])
    pending.fold()
    ((_, buckets, count, _, lo, hi),) = hist.snapshot()
    assert count == 3 and buckets[-1] == 1 and (lo, hi) == (1.0, math.inf)
    assert sk.count == 3 and sk.max == math.inf and sum(sk.buckets.values()) == 2
    stream.extend([math.nan, 0.5])  # NaN: counted value by value, into bucket 0 as bisect puts it
    ((_, buckets, count, total, _, _),) = hist.snapshot()
    assert count == 5 and buckets[0] == 1 and math.isnan(total)
    assert sk.count == 5


def test_a_stream_without_values_creates_no_series():
    pending = Pending()
    hist = HistogramAgg(BOUNDS, ("k",), 0, pending)
    pending.stream(hist, ("a",))
    pending.fold()
    assert hist.snapshot() == []


class _RacyList(list):
    """A pending list on which the writer "appends" right after a fold has copied it."""

    raced = 0

    def __getitem__(self, i):
        out = super().__getitem__(i)
        if isinstance(i, slice) and self.raced < 3:
            self.raced += 1
            self.append(1000.0 + self.raced)
        return out


def test_a_value_appended_during_a_fold_stays_pending():
    pending = Pending()
    hist = HistogramAgg(BOUNDS, ("k",), 0, pending)
    sk = Sketch(pending)
    st = agg.Stream(hist, ("a",), (sk,))
    st.values = _RacyList([1.0, 2.0])
    pending.streams.append(st)
    pending.fold()
    assert list(st.values) == [1001.0]  # appended after the copy: kept for the next fold
    ((_, _, count, _, _, _),) = hist.snapshot()  # folds 1001, and 1002 lands meanwhile
    assert count == 3 and list(st.values) == [1002.0]
    assert sk.count == 4 and list(st.values) == [1003.0]  # this read folded 1002
    pending.fold()
    assert not st.values and sk.count == 5 and sk.max == 1003.0 and hist.snapshot()[0][2] == 5


def test_readers_see_every_value_while_a_writer_appends():
    """A writer thread appends 200k values without a lock (folding every 1024, as the
    recorder does); a reader snapshots in a loop. Snapshots only grow; the end is exact."""
    pending = Pending()
    hist = HistogramAgg(BOUNDS, ("k",), 0, pending)
    sk = Sketch(pending)
    stream = pending.stream(hist, ("a",), (sk,))
    rng = random.Random(3)
    values = [rng.randint(0, 10**10) / 1e9 for _ in range(200_000)]
    done = threading.Event()
    seen: list[tuple[int, list[int], int]] = []

    def write() -> None:
        append = stream.append
        for i, v in enumerate(values):
            append(v)
            if i % 1024 == 1023:
                pending.fold()
        done.set()

    def read() -> None:
        while not done.is_set():
            snap = hist.snapshot()
            if snap:
                _, buckets, count, _, _, _ = snap[0]
                seen.append((count, buckets, sk.count))

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch often: appends land between a fold's copy and delete
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert len(seen) > 10
    for (c0, b0, s0), (c1, b1, s1) in itertools.pairwise(seen):
        assert c0 <= c1 and s0 <= s1
        assert all(x <= y for x, y in zip(b0, b1, strict=True))
    ref_h, ref_s = RefHist(), RefSketch()
    for v in values:
        ref_h.add(v)
        ref_s.add(v)
    ((_, buckets, count, total, lo, hi),) = hist.snapshot()
    assert buckets == ref_h.buckets and count == 200_000 and (lo, hi) == (ref_h.min, ref_h.max)
    assert math.isclose(total, ref_h.sum, rel_tol=1e-9)
    _assert_sketch_equal(sk, ref_s)
