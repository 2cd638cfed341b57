"""Per-task values are appended on the dispatcher thread and folded in bulk: the aggregates
must come out as recording each value on its own gave, and readers must see every value."""

from __future__ import annotations

import itertools
import math
import random
import sys
import threading
from bisect import bisect_left
from typing import Any

import pytest

from otelflow.events.model import TaskCompleted
from otelflow.events.waits import dispatched_at
from otelflow.metrics import aggregates as agg
from otelflow.metrics import instruments as inst
from otelflow.metrics import recorder as recorder_mod
from otelflow.metrics.aggregates import HistogramAgg, Pending, Sketch
from otelflow.metrics.recorder import MetricRecorder
from otelflow.tracing.records import ScopeRec, TaskRec

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


# -- the recorder --------------------------------------------------------------------------------


def _rec(name: str, wf: ScopeRec | None, backend: str | None, **times: int) -> TaskRec:
    rec = TaskRec()
    rec.name = name
    rec.workflow = wf
    rec.backend = backend
    rec.created = times.get("created", 0)
    rec.resolved = times.get("resolved", 0)
    rec.submitted = times.get("submitted", 0)
    rec.queued = times.get("queued", 0)
    rec.started = times.get("started", 0)
    return rec


def _old_values(rec: TaskRec, end: int) -> dict[str, float]:
    """What the recorder recorded per task before streams (straight from dispatched_at)."""
    out: dict[str, float] = {}
    if rec.started:
        out["duration"] = (end - rec.started) / 1e9
        ready = rec.resolved or rec.submitted or rec.created
        if ready:
            hand = dispatched_at(ready, rec.submitted, rec.queued, rec.started)
            out["sched"] = max(0, rec.started - ready) / 1e9
            out["dispatch"] = (hand - ready) / 1e9
            out["queue"] = max(0, rec.started - hand) / 1e9
    if rec.resolved:
        out["dep"] = max(0, rec.resolved - rec.created) / 1e9
    return out


def test_task_finished_splits_waits_as_dispatched_at_does():
    m = MetricRecorder(0, "node")
    wf = ScopeRec("workflow", "w", "wf", 1, None, 0)
    refs = {k: RefSketch() for k in ("duration", "sched", "dispatch", "queue", "dep")}
    us = 1000  # 1 µs apart: every distinct time is its own sketch bucket
    times = (0, 1, 2, 3, 4, 5)
    for created, resolved, submitted, queued, started in itertools.product(times, repeat=5):
        rec = _rec(
            "t",
            wf,
            "b",
            created=created * us,
            resolved=resolved * us,
            submitted=submitted * us,
            queued=queued * us,
            started=started * us,
        )
        end = 7 * us
        m.task_finished(rec, end, "completed", None)
        for k, v in _old_values(rec, end).items():
            refs[k].add(v)
    s = m.summary()
    for k, summary_key in (
        ("duration", "duration_s"),
        ("sched", "scheduling_wait_s"),
        ("dispatch", "dispatch_wait_s"),
        ("queue", "queue_wait_s"),
        ("dep", "dependency_wait_s"),
    ):
        ref = refs[k]
        got = s[summary_key]
        assert got["count"] == ref.count and got["min"] == ref.min and got["max"] == ref.max, k
        assert got["p50"] == ref.quantile(0.5) and got["p95"] == ref.quantile(0.95), k
        assert math.isclose(got["mean"], ref.sum / ref.count, rel_tol=1e-9, abs_tol=1e-15), k
    for sketch, k in (
        (m.scheduling_wait_stats, "sched"),
        (m.dispatch_wait_stats, "dispatch"),
        (m.queue_wait_stats, "queue"),
        (m.dependency_wait_stats, "dep"),
    ):
        assert sketch.buckets == refs[k].buckets and sketch.zeros == refs[k].zeros, k


def _record_reference(ref: dict[str, Any], rec: TaskRec, end: int, status: str, ev: Any, overflowed: bool) -> None:
    """The metrics the recorder kept before streams, value by value."""
    wf = rec.workflow.name if rec.workflow is not None else None
    key = (inst.OVERFLOW, inst.OVERFLOW, rec.backend) if overflowed else (rec.name, wf, rec.backend)
    vals = _old_values(rec, end)

    def hist(name: str, k: tuple[Any, ...], v: float) -> None:
        ref.setdefault(name, {}).setdefault(k, RefHist(inst.BYTES_BUCKETS if name == "rss" else BOUNDS)).add(v)

    def sketch(name: str, v: float) -> None:
        ref.setdefault(name, RefSketch()).add(v)

    if "duration" in vals:
        hist("duration", (*key, status), vals["duration"])
        sketch("duration_s", vals["duration"])
        sketch(f"name:{rec.name}", vals["duration"])
    for k, h in (("dispatch", "dispatch"), ("queue", "queue"), ("dep", "dep")):
        if k in vals:
            hist(h, key, vals[k])
    if "sched" in vals:
        sketch("sched", vals["sched"])
    if ev is not None and ev.cpu_time_s is not None:
        hist("cpu", (rec.name, rec.backend), ev.cpu_time_s)
    if ev is not None and ev.peak_rss_bytes is not None:
        hist("rss", (rec.name, rec.backend), float(ev.peak_rss_bytes))


def _tasks(n: int, names: int, rng: random.Random) -> list[tuple[TaskRec, int, str, Any]]:
    wfs = [ScopeRec("workflow", f"w{i}", f"wf{i}", i, None, 0) for i in range(2)]
    out = []
    t0 = 1_700_000_000_000_000_000
    for i in range(n):
        created = t0 + i * 1000
        started = 0 if rng.random() < 0.05 else created + rng.randint(0, 10**7)
        rec = _rec(
            f"n{rng.randrange(names)}",
            rng.choice([None, *wfs]),
            rng.choice(["threads", None]),
            created=created,
            resolved=created + rng.randint(0, 10**5) if rng.random() < 0.8 else 0,
            submitted=created + rng.randint(0, 10**6) if rng.random() < 0.9 else 0,
            queued=created + rng.randint(0, 10**6) if rng.random() < 0.3 else 0,
            started=started,
        )
        end = (started or created) + rng.randint(-1000, 10**9)
        ev = (
            TaskCompleted(
                task_id=str(i),
                event_time=end,
                cpu_time_s=rng.random() if rng.random() < 0.5 else None,
                peak_rss_bytes=rng.randint(2**18, 2**37) if rng.random() < 0.5 else None,
            )
            if rng.random() < 0.9
            else None
        )
        out.append((rec, end, rng.choice(["completed", "completed", "failed", "canceled"]), ev))
    return out


@pytest.mark.parametrize(("names", "max_series"), [(3, 2000), (40, 12)])
def test_recorder_metrics_match_the_per_value_reference(monkeypatch, names, max_series):
    monkeypatch.setattr(inst, "MAX_SERIES", max_series)
    monkeypatch.setattr(recorder_mod, "_FOLD_EVERY", 97)  # many writer folds
    rng = random.Random(names)
    m = MetricRecorder(0, "node")
    ref: dict[str, Any] = {}
    for rec, end, status, ev in _tasks(20_000, names, rng):
        wf = rec.workflow.name if rec.workflow is not None else None
        rec.counts = m.task_counts(rec.name, wf, rec.backend)  # as the trace tree does
        overflowed = (rec.name, wf, rec.backend) not in m.counts
        m.task_finished(rec, end, status, ev)
        _record_reference(ref, rec, end, status, ev, overflowed)
    if max_series < 2000:
        assert any(k[0] == inst.OVERFLOW for k in ref["dispatch"])
    for name, h in (
        ("duration", m.duration),
        ("dispatch", m.dispatch_wait),
        ("queue", m.queue_wait),
        ("dep", m.dependency_wait),
        ("cpu", m.cpu_time),
        ("rss", m.peak_rss),
    ):
        got = {k: (buckets, count, lo, hi, total) for k, (_, buckets, count, total, lo, hi) in _by_key(h)}
        want = ref[name]
        if max_series >= 2000:
            assert set(got) == set(want), name
        # Past the cap, which series each histogram folds into its own "_other" one depends
        # on the order they first get a value; every series it keeps holds all its values.
        assert sum(g[1] for g in got.values()) == sum(r.count for r in want.values()), name
        for k, r in want.items():
            if k in got:
                buckets, count, lo, hi, total = got[k]
                assert (buckets, count, lo, hi) == (r.buckets, r.count, r.min, r.max), (name, k)
                assert math.isclose(total, r.sum, rel_tol=1e-9), (name, k)
    s = m.summary()
    for summary_key, ref_key in (("duration_s", "duration_s"), ("scheduling_wait_s", "sched")):
        r = ref[ref_key]
        got = s[summary_key]
        assert (got["count"], got["min"], got["max"]) == (r.count, r.min, r.max)
        assert (got["p50"], got["p95"]) == (r.quantile(0.5), r.quantile(0.95))
    for name, stats in s["by_task_name"].items():
        r = ref[f"name:{name}"]
        assert (stats["count"], stats["p50"], stats["p95"]) == (r.count, r.quantile(0.5), r.quantile(0.95))
    assert len(s["by_task_name"]) == min(names, max_series)


def _by_key(h: HistogramAgg) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    """snapshot() by the series' key tuple (None attributes are left out of the attributes)."""
    out = []
    for attrs, *rest in h.snapshot():
        out.append((tuple(attrs.get(k) for k in h.keys), (attrs, *rest)))
    return out


def test_a_task_that_never_started_or_resolved_adds_no_series():
    m = MetricRecorder(0, "node")
    m.task_finished(_rec("a", None, "b", created=5), 10, "canceled", None)
    assert m.duration.snapshot() == [] and m.dependency_wait.snapshot() == []
    assert m.summary()["by_task_name"] == {}
    m.task_finished(_rec("a", None, "b", created=5, started=7), 10, "completed", None)
    ((attrs, *_),) = m.duration.snapshot()
    assert attrs == {"task.name": "a", "backend": "b", "status": "completed"}
    assert m.dependency_wait.snapshot() == []
    assert m.summary()["by_task_name"]["a"]["count"] == 1


def test_pending_values_stay_bounded(monkeypatch):
    m = MetricRecorder(0, "node")
    wf = ScopeRec("workflow", "w", "wf", 1, None, 0)
    for i in range(50_000):
        rec = _rec("t", wf, "b", created=i, resolved=i + 1, submitted=i + 2, started=i + 3)
        m.task_finished(rec, i + 10, "completed", TaskCompleted(task_id="x", event_time=0, cpu_time_s=0.1))
        pending = sum(len(st.values) for st in m._pending.streams)
        assert pending <= 6 * recorder_mod._FOLD_EVERY
    assert m.summary()["duration_s"]["count"] == 50_000


def test_readers_see_every_task_while_the_dispatcher_records():
    m = MetricRecorder(0, "node")
    tasks = _tasks(30_000, 4, random.Random(11))
    for rec, *_ in tasks:
        wf = rec.workflow.name if rec.workflow is not None else None
        rec.counts = m.task_counts(rec.name, wf, rec.backend)
    done = threading.Event()
    counts: list[tuple[int, int]] = []

    def read() -> None:
        while not done.is_set():
            n = m.summary()["duration_s"]["count"]
            h = sum(p[2] for p in m.duration.snapshot())
            counts.append((n, h))

    reader = threading.Thread(target=read)
    reader.start()
    for rec, end, status, ev in tasks:
        m.task_finished(rec, end, status, ev)
    done.set()
    reader.join()
    started = sum(1 for rec, _, status, _ in tasks if rec.started)
    assert m.summary()["duration_s"]["count"] == started
    assert sum(p[2] for p in m.duration.snapshot()) == started
    assert all(a <= b for a, b in itertools.pairwise(c[0] for c in counts))
    assert all(a <= b for a, b in itertools.pairwise(c[1] for c in counts))
