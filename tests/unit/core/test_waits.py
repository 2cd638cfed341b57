"""Issue 12 part 2: lifecycle semantics engines need.

* A task whose upstream failed or was canceled is never Resolved and has no dependency wait.
* Waits split into dependency, dispatch (engine lag) and queue (no free worker) wait, and
  dependency + dispatch + queue wait + execution = lifetime in every view.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import otelflow
from otelflow.analysis import open_run
from otelflow.analysis.compare import compare_runs, format_comparison
from otelflow.analysis.critical_path import critical_path
from otelflow.analysis.report import build_report, format_report
from otelflow.events.model import now_ns
from otelflow.events.waits import dispatched_at
from otelflow.integrations import UpstreamFailedError, instrument, task_id_of, uninstrument

S = 1_000_000_000


def _events(capture, task_id):
    return [e["type"] for e in capture.lines("event") if e.get("task_id") == task_id]


def _hist_points(capture, name):
    data = capture.metric_reader.get_metrics_data()
    out = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    out.extend(m.data.data_points)
    return out


# -- upstream failed / canceled: no TaskResolved ------------------------------------------


def test_task_after_failed_upstream_in_a_real_executor_is_never_resolved(capture):
    def boom():
        raise ValueError("bad input")

    def after(x):
        return x

    with ThreadPoolExecutor(2) as pool:
        instrument(pool)
        try:
            up = pool.submit(boom)
            down = pool.submit(after, up)
            with pytest.raises(UpstreamFailedError) as info:
                down.result(timeout=10)
            up_id, down_id = task_id_of(up), task_id_of(down)
        finally:
            uninstrument(pool)
    s = capture.telemetry.stop()
    assert info.value.upstream_task_id == up_id
    types = _events(capture, down_id)
    assert "TaskResolved" not in types
    assert types[-1] == "TaskFailed"
    failed = next(e for e in capture.lines("event") if e.get("task_id") == down_id and e["type"] == "TaskFailed")
    assert up_id in failed["error_message"]
    span = next(sp for sp in capture.spans() if sp.attributes.get("otelflow.task.id") == down_id)
    assert "TaskResolved" not in [e.name for e in span.events]
    assert "otelflow.task.dependency_wait_s" not in span.attributes
    # Only the upstream (resolved at creation) has a dependency wait; the downstream none.
    assert s["dependency_wait_s"]["count"] == 1
    assert s["tasks"]["resolved"] == 1
    run = open_run(capture.telemetry.run_dir)
    assert run.tasks()[down_id].dependency_wait_s is None
    assert run.tasks()[down_id].resolved is None


def test_tracker_tasks_after_failed_or_canceled_upstream_are_never_resolved(capture):
    trk = otelflow.tracker("engine")
    t = now_ns()
    a = trk.created(None, "a", event_time=t)
    b = trk.created(None, "b", event_time=t)
    wait_a = trk.created(None, "wait-a", depends_on=[a, b], event_time=t)
    wait_b = trk.created(None, "wait-b", depends_on=[b], event_time=t)
    trk.started(a, event_time=t + S)
    trk.failed(a, ValueError("x"), event_time=t + 2 * S)
    trk.canceled(b, event_time=t + 2 * S, reason="user")
    # Created after its upstream already failed: still never resolved.
    late = trk.created(None, "late", depends_on=[a], event_time=t + 3 * S)
    for tid in (wait_a, late):
        trk.failed(tid, f"UpstreamFailed: {a}", event_time=t + 4 * S)
    trk.canceled(wait_b, event_time=t + 4 * S, reason=f"upstream task {b} was canceled")
    s = capture.telemetry.stop()
    for tid in (wait_a, wait_b, late):
        assert "TaskResolved" not in _events(capture, tid), tid
    assert s["tasks"]["resolved"] == 2  # a and b, at creation
    assert s["dependency_wait_s"]["count"] == 2


def test_completed_upstream_still_resolves_its_downstream(capture):
    trk = otelflow.tracker("engine")
    t = now_ns()
    a = trk.created(None, "a", event_time=t)
    b = trk.created(None, "b", depends_on=[a], event_time=t)
    trk.started(a, event_time=t + S)
    trk.completed(a, event_time=t + 2 * S)
    trk.started(b, event_time=t + 3 * S)
    trk.completed(b, event_time=t + 4 * S)
    capture.telemetry.stop()
    resolved = [e for e in capture.lines("event") if e.get("task_id") == b and e["type"] == "TaskResolved"]
    assert [e["event_time"] for e in resolved] == [t + 2 * S]


# -- the split ----------------------------------------------------------------------------------


def test_waits_split_into_dependency_dispatch_queue_in_every_view(capture):
    trk = otelflow.tracker("engine")
    t = now_ns()
    with otelflow.workflow_scope("wf-waits"):
        up = trk.created(None, "up", event_time=t)
        trk.started(up, event_time=t)
        down = trk.created(None, "down", depends_on=[up], event_time=t)
        trk.completed(up, event_time=t + 1 * S)  # dependency wait 1 s
        trk.submitted(down, event_time=t + 3 * S)  # dispatch wait 2 s
        trk.queued(down, event_time=t + 4 * S)
        trk.started(down, event_time=t + 6 * S)  # queue wait 3 s (from Submitted)
        trk.completed(down, event_time=t + 10 * S)  # execution 4 s
    s = capture.telemetry.stop()
    # summary(): 'up' has every wait 0 (resolved, started at once), 'down' the split.
    assert s["dependency_wait_s"]["max"] == 1.0
    assert s["dispatch_wait_s"]["max"] == 2.0
    assert s["queue_wait_s"]["max"] == 3.0
    assert s["scheduling_wait_s"]["max"] == 5.0  # dispatch + queue, kept for compatibility
    # Metrics histograms.
    for name, total in (
        ("otelflow.task.dependency_wait", 1.0),
        ("otelflow.task.dispatch_wait", 2.0),
        ("otelflow.task.queue_wait", 3.0),
    ):
        points = _hist_points(capture, name)
        assert sum(p.count for p in points) == 2, name
        assert math.isclose(sum(p.sum for p in points), total), name
    # Span attributes.
    span = next(sp for sp in capture.spans() if sp.name == "down")
    assert span.attributes["otelflow.task.dependency_wait_s"] == 1.0
    assert span.attributes["otelflow.task.dispatch_wait_s"] == 2.0
    assert span.attributes["otelflow.task.queue_wait_s"] == 3.0
    # Report, critical path.
    run = open_run(capture.telemetry.run_dir)
    info = run.tasks()[down]
    assert (info.dependency_wait_s, info.dispatch_wait_s, info.queue_wait_s, info.execution_s) == (1.0, 2.0, 3.0, 4.0)
    report = build_report(run)
    assert report["dispatch_wait_s"]["total"] == 2.0
    assert report["queue_wait_s"]["total"] == 3.0
    wf = next(iter(report["workflows"].values()))
    assert (wf["dependency_wait_s"], wf["dispatch_wait_s"], wf["queue_wait_s"]) == (1.0, 2.0, 3.0)
    cmp = compare_runs(report, report)
    assert cmp["timings"]["dispatch_wait_s"]["total"]["a"] == 2.0
    assert cmp["timings"]["queue_wait_s"]["total"]["b"] == 3.0
    assert cmp["by_task_name"]["down"]["queue_wait_mean_s"]["a"] == 3.0
    text = format_comparison(cmp)
    assert "dispatch wait total" in text and "queue wait total" in text
    assert "dispatch wait" in format_report(report) and "queue wait" in format_report(report)
    path = critical_path(run)
    assert path is not None
    last = path.steps[-1]
    assert (last.dependency_wait_s, last.dispatch_wait_s, last.queue_wait_s, last.execution_s) == (0.0, 2.0, 3.0, 4.0)
    assert math.isclose(path.total("dispatch_wait_s") + path.total("queue_wait_s"), path.total("scheduling_wait_s"))


def test_queued_before_submitted_and_submitted_before_resolved(capture):
    """AsyncFlow reports Queued before Submitted; Dask submits before a task is ready."""
    trk = otelflow.tracker("engine")
    t = now_ns()
    a = trk.created(None, "asyncflow-like", event_time=t)  # resolved at t
    trk.queued(a, event_time=t + 1 * S)  # picked up by the engine loop: 1 s of lag
    trk.submitted(a, event_time=t + 2 * S)
    trk.started(a, event_time=t + 4 * S)
    trk.completed(a, event_time=t + 5 * S)
    up = trk.created(None, "up", event_time=t)
    d = trk.created(None, "dask-like", depends_on=[up], event_time=t)
    trk.submitted(d, event_time=t)  # submitted up front, before it was ready
    trk.started(up, event_time=t)
    trk.completed(up, event_time=t + 2 * S)  # d resolved at t + 2
    trk.queued(d, event_time=t + 3 * S)  # ready for a worker: 1 s of engine lag
    trk.started(d, event_time=t + 7 * S)
    trk.completed(d, event_time=t + 8 * S)
    capture.telemetry.stop()
    tasks = open_run(capture.telemetry.run_dir).tasks()
    assert (tasks[a].dispatch_wait_s, tasks[a].queue_wait_s) == (1.0, 3.0)
    assert (tasks[d].dependency_wait_s, tasks[d].dispatch_wait_s, tasks[d].queue_wait_s) == (2.0, 1.0, 4.0)
    spans = {sp.name: sp for sp in capture.spans()}
    assert spans["dask-like"].attributes["otelflow.task.dispatch_wait_s"] == 1.0
    assert spans["dask-like"].attributes["otelflow.task.queue_wait_s"] == 4.0


_OPT = st.one_of(st.none(), st.integers(0, 20))


@settings(max_examples=300, deadline=None)
@given(dep=st.integers(0, 5), submitted=_OPT, queued=_OPT, wait=st.integers(0, 10), run=st.integers(0, 5))
def test_parts_add_up_to_the_lifetime_for_any_order_of_reports(dep, submitted, queued, wait, run):
    """Submitted/Queued anywhere (before Resolved, after Started, missing): the sum holds."""
    from otelflow.analysis._tables import TaskInfo

    info = TaskInfo("x")
    info.created = S
    info.resolved = S + dep * S
    info.submitted = S + submitted * S if submitted is not None else None
    info.queued = S + queued * S if queued is not None else None
    info.started = info.resolved + wait * S
    info.ended = info.started + run * S
    parts = (info.dependency_wait_s, info.dispatch_wait_s, info.queue_wait_s, info.execution_s)
    assert all(p is not None and p >= 0 for p in parts)
    assert math.isclose(sum(parts), info.lifetime_s)
    assert math.isclose(info.dispatch_wait_s + info.queue_wait_s, info.scheduling_wait_s)
    hand = dispatched_at(info.ready, info.submitted, info.queued, info.started)
    assert info.resolved <= hand <= info.started


@settings(max_examples=40, deadline=None)
@given(
    dep=st.integers(0, 5), lag=st.integers(0, 5), queue=st.integers(0, 5), run=st.integers(0, 5), queued=st.booleans()
)
def test_live_summary_parts_add_up_to_the_lifetime(dep, lag, queue, run, queued, tmp_path_factory):
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path_factory.mktemp("runs")), resource_poll_interval=0, environ={}
    )
    try:
        trk = otelflow.tracker("engine", telemetry=tel) if _has_telemetry_kw() else otelflow.tracker("engine")
        t = now_ns()
        up = trk.created(None, "up", event_time=t)
        trk.started(up, event_time=t)
        tid = trk.created(None, "down", depends_on=[up], event_time=t)
        trk.completed(up, event_time=t + dep * S)
        (trk.queued if queued else trk.submitted)(tid, event_time=t + (dep + lag) * S)
        trk.started(tid, event_time=t + (dep + lag + queue) * S)
        trk.completed(tid, event_time=t + (dep + lag + queue + run) * S)
    finally:
        s = tel.stop()
    total = sum(s[k]["max"] for k in ("dependency_wait_s", "dispatch_wait_s", "queue_wait_s"))
    total += s["by_task_name"]["down"]["max"]
    assert s["dependency_wait_s"]["max"] == dep
    assert s["dispatch_wait_s"]["max"] == lag
    assert s["queue_wait_s"]["max"] == queue
    assert math.isclose(total, dep + lag + queue + run)


def _has_telemetry_kw() -> bool:
    import inspect

    return "telemetry" in inspect.signature(otelflow.tracker).parameters
