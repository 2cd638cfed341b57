"""The metric recorder: running aggregates → OTel instruments and ``summary()``.

Counters and gauges are OTel *observable* instruments whose callbacks read the
aggregates; histograms are fed to every metric reader by :mod:`otelflow.metrics.bridge`.
Either way the per-task cost is a few list operations on the dispatcher thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otelflow.events.model import ResourceUpdate
from otelflow.events.waits import dispatched_at
from otelflow.metrics import instruments as inst
from otelflow.metrics.aggregates import HistogramAgg, Pending, Sketch, TaskCounts

if TYPE_CHECKING:
    from otelflow.tracing.records import ScopeRec, TaskRec

_log = logging.getLogger("otelflow")

_TASK_KEYS = (inst.TASK_NAME, inst.WORKFLOW_NAME, inst.BACKEND)
_MAX_WORKFLOWS = 10_000
#: Tasks between two folds of the pending values by the dispatcher (at least; see
#: MetricRecorder._writer_fold). Each task appends about 5 values, so this bounds what is
#: pending to ~10 000 floats. Measured: larger batches amortize a fold's per-bucket work,
#: but sorting 4 096 scattered floats is slower per value than 2 048.
_FOLD_EVERY = 2048


class _Series:
    """The streams a (task name, workflow name, backend) series' tasks append to."""

    __slots__ = ("cpu", "dep", "dispatch", "dur", "key", "queue", "rss", "sched")

    key: tuple[str, str | None, str | None]
    dur: dict[str, list[float]]  # by status
    sched: list[float]
    dispatch: list[float]
    queue: list[float]
    dep: list[float]
    cpu: list[float]
    rss: list[float]


class MetricRecorder:
    """Owns the aggregates; written by the dispatcher, read by metric readers."""

    def __init__(self, start_ns: int, node: str) -> None:
        self.node = node
        self.counts: dict[tuple[str, str | None, str | None], list[int]] = {}
        self._counts_lock = threading.Lock()
        self._overflow_warned = False
        # Per-task values go through streams (aggregates.Stream): one append on the
        # dispatcher thread, folded in bulk every _FOLD_EVERY tasks and before every read.
        self._pending = pending = Pending()
        self._lock = pending.lock
        self.duration = HistogramAgg(inst.DURATION_BUCKETS, (*_TASK_KEYS, inst.STATUS), start_ns, pending)
        self.dependency_wait = HistogramAgg(inst.DURATION_BUCKETS, _TASK_KEYS, start_ns, pending)
        self.dispatch_wait = HistogramAgg(inst.DURATION_BUCKETS, _TASK_KEYS, start_ns, pending)
        self.queue_wait = HistogramAgg(inst.DURATION_BUCKETS, _TASK_KEYS, start_ns, pending)
        self.workflow_duration = HistogramAgg(
            inst.DURATION_BUCKETS, (inst.WORKFLOW_NAME, inst.STATUS), start_ns, pending
        )
        self.cpu_time = HistogramAgg(inst.DURATION_BUCKETS, (inst.TASK_NAME, inst.BACKEND), start_ns, pending)
        self.peak_rss = HistogramAgg(inst.BYTES_BUCKETS, (inst.TASK_NAME, inst.BACKEND), start_ns, pending)
        # summary(): streaming stats, bounded memory.
        self.duration_stats = Sketch(pending)
        self.dependency_wait_stats = Sketch(pending)
        self.scheduling_wait_stats = Sketch(pending)
        self.dispatch_wait_stats = Sketch(pending)
        self.queue_wait_stats = Sketch(pending)
        # (task name, workflow name, backend) -> its streams; not the overflow series.
        self._series: dict[tuple[str, str | None, str | None], _Series] = {}
        self._fold_in = _FOLD_EVERY
        self.by_name: dict[str, Sketch] = {}
        self.workflows: dict[str, dict[str, Any]] = {}
        self.workflows_forgotten = 0
        self.active_workflows: dict[str, int] = {}
        self.resources: dict[tuple[str, str, str | None], ResourceUpdate] = {}
        self.io_totals: dict[tuple[str, str, str], int] = {}
        self.incomplete_tasks = 0
        self.dropped_fn: Any = None  # set by the session: () -> int
        self.depth_fn: Any = None  # set by the session: () -> items on the bus now
        self.throttled_fn: Any = None  # set by the session: () -> seconds producers waited

    # -- writers (dispatcher thread) ------------------------------------------------------------

    def task_counts(self, name: str, workflow: str | None, backend: str | None) -> list[int]:
        """Return the counts list for a series, creating it (bounded) if needed."""
        key = (name, workflow, backend)
        counts = self.counts.get(key)
        if counts is None:
            if len(self.counts) >= inst.MAX_SERIES:
                if not self._overflow_warned:
                    self._overflow_warned = True
                    _log.warning(
                        "otelflow metrics: more than %d distinct (task name, workflow name, "
                        "backend) combinations; further ones are counted under %r. Use a task "
                        "*type* as the task name, not a per-task value.",
                        inst.MAX_SERIES,
                        inst.OVERFLOW,
                    )
                key = (inst.OVERFLOW, inst.OVERFLOW, backend)
                counts = self.counts.get(key)
                if counts is not None:
                    return counts
            counts = [0] * TaskCounts.SIZE
            with self._counts_lock:
                self.counts[key] = counts
        return counts

    def task_finished(self, rec: TaskRec, end: int, status: str, ev: Any) -> None:
        """Record a finished task's duration and waits: a few appends (dispatcher thread).

        Dependency + dispatch + queue wait + execution add up to the task's lifetime
        (otelflow.events.waits; the report uses the same split).
        """
        if status == "incomplete":
            self.incomplete_tasks += 1
            return
        wf = rec.workflow
        key = (rec.name, wf.name if wf is not None else None, rec.backend)
        s = self._series.get(key)
        if s is None:
            s = self._new_series(key)
            if s is None:
                self._overflow_task_finished(rec, end, status, ev)
                return
        started = rec.started
        if started:
            dur = s.dur.get(status)
            if dur is None:
                dur = self._duration_stream(s, status)
            dur.append((end - started) / 1e9)
            submitted = rec.submitted
            ready = rec.resolved or submitted or rec.created
            if ready:
                if ready <= started:
                    # dispatched_at(ready, submitted, rec.queued, started), inlined: this runs
                    # once per task (test_metrics_fold.py checks that they agree).
                    queued = rec.queued
                    if submitted and submitted >= ready:
                        hand = queued if queued and ready <= queued < submitted else submitted
                    elif queued and queued >= ready:
                        hand = queued
                    else:
                        hand = ready
                    if hand > started:  # noqa: PLR1730 - cheaper than min() here
                        hand = started
                    s.sched.append((started - ready) / 1e9)
                    s.dispatch.append((hand - ready) / 1e9)
                    s.queue.append((started - hand) / 1e9)
                else:  # started before it was ready: every wait is 0
                    s.sched.append(0.0)
                    s.dispatch.append(0.0)
                    s.queue.append(0.0)
        resolved = rec.resolved
        if resolved:
            created = rec.created
            s.dep.append((resolved - created) / 1e9 if resolved > created else 0.0)
        if ev is not None:
            cpu = ev.cpu_time_s
            if cpu is not None:
                s.cpu.append(cpu)
            rss = ev.peak_rss_bytes
            if rss is not None:
                s.rss.append(float(rss))
        self._fold_in -= 1
        if not self._fold_in:
            self._writer_fold()

    def _writer_fold(self) -> None:
        """Fold every stream (dispatcher thread): bounds the values held pending."""
        pending = self._pending
        pending.fold()
        # Each fold looks at every stream: with many series, fold less often (the values
        # pending stay bounded by a few per stream).
        self._fold_in = max(_FOLD_EVERY, len(pending.streams))

    def _new_series(self, key: tuple[str, str | None, str | None]) -> _Series | None:
        """The streams of a (task name, workflow name, backend) series; None for a task in
        the overflow series, which is recorded value by value."""
        if key not in self.counts and max(len(self.counts), len(self._series)) >= inst.MAX_SERIES:
            return None
        name, _, backend = key
        p = self._pending
        s = _Series()
        s.dur = {}
        s.key = key
        # summary()["scheduling_wait_s"] only (compatibility): no histogram, the dispatch and
        # queue wait histograms add up to it.
        s.sched = p.stream(None, (), (self.scheduling_wait_stats,))
        s.dispatch = p.stream(self.dispatch_wait, key, (self.dispatch_wait_stats,))
        s.queue = p.stream(self.queue_wait, key, (self.queue_wait_stats,))
        s.dep = p.stream(self.dependency_wait, key, (self.dependency_wait_stats,))
        s.cpu = p.stream(self.cpu_time, (name, backend))
        s.rss = p.stream(self.peak_rss, (name, backend))
        self._series[key] = s
        return s

    def _by_name(self, name: str) -> Sketch | None:
        sketch = self.by_name.get(name)
        if sketch is None and len(self.by_name) < inst.MAX_SERIES:
            sketch = self.by_name[name] = Sketch(self._pending)
        return sketch

    def _duration_stream(self, s: _Series, status: str) -> list[float]:
        sketches = [self.duration_stats]
        by_name = self._by_name(s.key[0])
        if by_name is not None:
            sketches.append(by_name)
        dur = s.dur[status] = self._pending.stream(self.duration, (*s.key, status), sketches)
        return dur

    def _overflow_task_finished(self, rec: TaskRec, end: int, status: str, ev: Any) -> None:
        """task_finished() for a task beyond MAX_SERIES series: value by value, as ever."""
        name = rec.name
        key = (inst.OVERFLOW, inst.OVERFLOW, rec.backend)
        started = rec.started
        if started:
            duration = (end - started) / 1e9
            self.duration.record((*key, status), duration)
            self.duration_stats.add(duration)
            sketch = self._by_name(name)
            if sketch is not None:
                sketch.add(duration)
            ready = rec.resolved or rec.submitted or rec.created
            if ready:
                hand = dispatched_at(ready, rec.submitted, rec.queued, started)
                self.scheduling_wait_stats.add(max(0, started - ready) / 1e9)
                wait = (hand - ready) / 1e9
                self.dispatch_wait.record(key, wait)
                self.dispatch_wait_stats.add(wait)
                wait = max(0, started - hand) / 1e9
                self.queue_wait.record(key, wait)
                self.queue_wait_stats.add(wait)
        if rec.resolved:
            wait = max(0, rec.resolved - rec.created) / 1e9
            self.dependency_wait.record(key, wait)
            self.dependency_wait_stats.add(wait)
        if ev is not None:
            cpu = ev.cpu_time_s
            if cpu is not None:
                self.cpu_time.record((name, rec.backend), cpu)
            rss = ev.peak_rss_bytes
            if rss is not None:
                self.peak_rss.record((name, rec.backend), float(rss))

    def workflow_started(self, rec: ScopeRec) -> None:
        if rec.name in self.active_workflows or len(self.active_workflows) < inst.MAX_SERIES:
            self.active_workflows[rec.name] = self.active_workflows.get(rec.name, 0) + 1

    def workflow_finished(self, rec: ScopeRec, status: str) -> None:
        if rec.name in self.active_workflows:
            # Kept at 0 rather than removed, so dashboards show 0 and not "no data"; the
            # number of names is capped in workflow_started(), so this stays bounded.
            self.active_workflows[rec.name] = max(0, self.active_workflows[rec.name] - 1)
        duration = (rec.end - rec.start) / 1e9
        self.workflow_duration.record((rec.name, status), duration)
        if len(self.workflows) >= _MAX_WORKFLOWS:
            del self.workflows[next(iter(self.workflows))]
            self.workflows_forgotten += 1
        self.workflows[rec.id] = {
            "name": rec.name,
            "status": status,
            "start_time": rec.start,
            "end_time": rec.end,
            "duration_s": duration,
            "tasks": {"completed": rec.counts[0], "failed": rec.counts[1], "canceled": rec.counts[2]},
        }

    def resource_update(self, ev: ResourceUpdate) -> None:
        self.resources[(ev.scope, ev.node, ev.device)] = ev
        if ev.scope == "node":
            for field, direction, metric in (
                ("disk_read_bytes", "read", inst.NODE_DISK_IO),
                ("disk_write_bytes", "write", inst.NODE_DISK_IO),
                ("net_recv_bytes", "receive", inst.NODE_NETWORK_IO),
                ("net_sent_bytes", "transmit", inst.NODE_NETWORK_IO),
            ):
                value = getattr(ev, field)
                if value:
                    k = (metric, ev.node, direction)
                    self.io_totals[k] = self.io_totals.get(k, 0) + value

    # -- OTel instruments (reader threads) --------------------------------------------------------

    def register(self, meter: Meter) -> None:
        """Create the observable instruments on ``meter``."""
        for i, transition in enumerate(inst.TRANSITIONS):
            meter.create_observable_counter(
                inst.COUNTER_NAMES[transition],
                [self._counter_cb(i)],
                unit="{task}",
                description=f"Tasks that reached the {transition} state.",
            )
        meter.create_observable_up_down_counter(
            inst.TASKS_RUNNING, [self._counter_cb(TaskCounts.RUNNING)], unit="{task}",
            description="Tasks running now.",
        )  # fmt: skip
        meter.create_observable_up_down_counter(
            inst.TASKS_QUEUED, [self._counter_cb(TaskCounts.QUEUED)], unit="{task}",
            description="Tasks queued now, waiting for a worker.",
        )  # fmt: skip
        meter.create_observable_up_down_counter(
            inst.WORKFLOWS_ACTIVE, [self._workflows_cb], unit="{workflow}",
            description="Workflows whose span is open.",
        )  # fmt: skip
        meter.create_observable_counter(
            inst.EVENTS_DROPPED, [self._dropped_cb], unit="{event}",
            description="Events otelflow dropped (bus full or telemetry stopped).",
        )  # fmt: skip
        meter.create_observable_gauge(
            inst.QUEUE_DEPTH, [self._own_cb("depth_fn")], unit="{event}",
            description="Events on otelflow's bus now, waiting for its dispatcher.",
        )  # fmt: skip
        meter.create_observable_counter(
            inst.THROTTLED, [self._own_cb("throttled_fn")], unit="s",
            description="Seconds producers waited because otelflow's bus was full.",
        )  # fmt: skip
        for scope, gauges in (("node", inst.NODE_GAUGES), ("process", inst.PROCESS_GAUGES), ("gpu", inst.GPU_GAUGES)):
            for name, unit, desc, field in gauges:
                meter.create_observable_gauge(name, [self._resource_cb(scope, field)], unit=unit, description=desc)
        meter.create_observable_counter(
            inst.NODE_DISK_IO, [self._io_cb(inst.NODE_DISK_IO)], unit="By",
            description="Bytes read from and written to the host's disks.",
        )  # fmt: skip
        meter.create_observable_counter(
            inst.NODE_NETWORK_IO, [self._io_cb(inst.NODE_NETWORK_IO)], unit="By",
            description="Bytes received and sent on the host's network interfaces.",
        )  # fmt: skip

    def _counter_cb(self, slot: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            with self._counts_lock:
                items = list(self.counts.items())
            out = []
            for (name, wf, backend), counts in items:
                value = counts[slot]
                if slot >= TaskCounts.RUNNING:
                    value = max(0, value)
                elif value == 0:
                    continue
                attrs = {inst.TASK_NAME: name}
                if wf is not None:
                    attrs[inst.WORKFLOW_NAME] = wf
                if backend is not None:
                    attrs[inst.BACKEND] = backend
                out.append(Observation(value, attrs))
            return out

        return callback

    def _workflows_cb(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {inst.WORKFLOW_NAME: w}) for w, n in list(self.active_workflows.items())]

    def _own_cb(self, attr: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            fn = getattr(self, attr)
            return [Observation(fn())] if fn is not None else []

        return callback

    def _dropped_cb(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.dropped_fn() if self.dropped_fn else 0)]

    def _resource_cb(self, scope: str, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        label = {"gpu": inst.GPU, "process": inst.PROCESS}.get(scope)

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for (s, node, device), ev in list(self.resources.items()):
                if s != scope:
                    continue
                value = getattr(ev, field)
                if value is None:
                    continue
                attrs = {inst.NODE: node}
                if label is not None and device is not None:
                    attrs[label] = device
                out.append(Observation(value, attrs))
            return out

        return callback

    def _io_cb(self, metric: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(v, {inst.NODE: node, inst.DIRECTION: direction})
                for (m, node, direction), v in list(self.io_totals.items())
                if m == metric
            ]

        return callback

    def histograms(self) -> list[tuple[tuple[str, str, str], HistogramAgg]]:
        """The histogram aggregates with their (name, unit, description)."""
        return [
            (inst.TASK_DURATION, self.duration),
            (inst.DEPENDENCY_WAIT, self.dependency_wait),
            (inst.DISPATCH_WAIT, self.dispatch_wait),
            (inst.QUEUE_WAIT, self.queue_wait),
            (inst.WORKFLOW_DURATION, self.workflow_duration),
            (inst.TASK_CPU_TIME, self.cpu_time),
            (inst.TASK_PEAK_RSS, self.peak_rss),
        ]

    # -- summary --------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        totals = dict.fromkeys(inst.TRANSITIONS, 0)
        running = queued = 0
        with self._counts_lock:
            items = list(self.counts.values())
        for counts in items:
            for i, t in enumerate(inst.TRANSITIONS):
                totals[t] += counts[i]
            running += max(0, counts[TaskCounts.RUNNING])
            queued += max(0, counts[TaskCounts.QUEUED])
        resources: dict[str, Any] = {}
        for (scope, node, device), ev in list(self.resources.items()):
            key = f"{scope}:{node}" + (f":{device}" if device is not None else "")
            resources[key] = {
                k: v
                for k, v in (
                    ("cpu_utilization", ev.cpu_utilization),
                    ("memory_utilization", ev.memory_utilization),
                    ("memory_used_bytes", ev.memory_used_bytes),
                    ("memory_total_bytes", ev.memory_total_bytes),
                    ("gpu_utilization", ev.gpu_utilization),
                    ("time", ev.event_time),
                )
                if v is not None
            }
        # Fold once, copy the sketches under the lock, compute their stats outside it.
        with self._lock:
            self._pending.fold()
            sketches = [
                s.copy_folded()
                for s in (
                    self.duration_stats,
                    self.dependency_wait_stats,
                    self.dispatch_wait_stats,
                    self.queue_wait_stats,
                    self.scheduling_wait_stats,
                )
            ]
            by_name = [(name, s.copy_folded()) for name, s in sorted(self.by_name.items())]
        duration, dependency_wait, dispatch_wait, queue_wait, scheduling_wait = (s.stats() for s in sketches)
        return {
            "tasks": {**totals, "running": running, "queued_now": queued, "incomplete": self.incomplete_tasks},
            "duration_s": duration,
            "dependency_wait_s": dependency_wait,
            "dispatch_wait_s": dispatch_wait,
            "queue_wait_s": queue_wait,
            "scheduling_wait_s": scheduling_wait,
            "by_task_name": {name: s.stats() for name, s in by_name},
            "workflows": dict(self.workflows),
            "resources": resources,
        }
