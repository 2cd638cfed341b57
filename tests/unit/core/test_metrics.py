"""Metrics reach real OTel readers with bounded attributes and OTel-conventional names."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader

import otelflow
from otelflow.events.model import now_ns
from otelflow.metrics import instruments as inst


def _metrics(reader):
    out = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = m
    return out


def _run_tasks(n_ok=3, n_fail=1):
    trk = otelflow.tracker("threads")
    t = now_ns()
    with otelflow.workflow_scope("wf-metrics"):
        for i in range(n_ok + n_fail):
            tid = trk.created(None, "step", event_time=t)
            trk.submitted(tid, event_time=t + 100_000_000)
            trk.started(tid, event_time=t + 300_000_000)
            if i < n_ok:
                trk.completed(tid, event_time=t + 800_000_000)
            else:
                trk.failed(tid, RuntimeError("x"), event_time=t + 800_000_000)


def test_counters_gauges_and_histograms_reach_a_reader(capture):
    _run_tasks()
    capture.telemetry.flush()
    m = _metrics(capture.metric_reader)
    completed = m["otelflow.tasks.completed"]
    assert completed.unit == "{task}"
    (point,) = completed.data.data_points
    assert point.value == 3
    assert dict(point.attributes) == {"task.name": "step", "workflow.name": "wf-metrics", "backend": "threads"}
    assert m["otelflow.tasks.failed"].data.data_points[0].value == 1
    duration = m["otelflow.task.duration"]
    assert duration.unit == "s"
    by_status = {p.attributes["status"]: p for p in duration.data.data_points}
    assert by_status["completed"].count == 3
    assert abs(by_status["completed"].sum - 1.5) < 1e-6  # 3 × 0.5 s
    assert list(by_status["completed"].explicit_bounds) == list(inst.DURATION_BUCKETS)
    # Resolved at creation, submitted 0.1 s later, started 0.2 s after that: 0.1 s dispatch
    # and 0.2 s queue wait each; together the old scheduling wait (no longer a metric).
    dispatch = m["otelflow.task.dispatch_wait"].data.data_points[0]
    queue = m["otelflow.task.queue_wait"].data.data_points[0]
    assert dispatch.count == queue.count == 4
    assert abs(dispatch.sum - 0.4) < 1e-6 and abs(queue.sum - 0.8) < 1e-6
    assert "otelflow.task.scheduling_wait" not in m


def test_a_task_outside_any_workflow_has_no_workflow_attribute(capture):
    # None is no attribute value: OTLP encoders before SDK 1.45 fail the whole export on it.
    trk = otelflow.tracker()
    tid = trk.created(None, "loose")
    trk.started(tid)
    trk.completed(tid)
    capture.telemetry.flush()
    for metric in _metrics(capture.metric_reader).values():
        for p in metric.data.data_points:
            assert None not in dict(p.attributes).values(), (metric.name, dict(p.attributes))


def test_no_metric_attribute_holds_a_task_id(capture):
    _run_tasks(n_ok=50, n_fail=0)
    capture.telemetry.flush()
    task_ids = {s.attributes["otelflow.task.id"] for s in capture.spans() if "otelflow.task.id" in s.attributes}
    assert len(task_ids) == 50
    for metric in _metrics(capture.metric_reader).values():
        for p in metric.data.data_points:
            keys = set(p.attributes)
            assert keys <= {"task.name", "workflow.name", "backend", "status", "node", "direction", "gpu", "process"}
            assert not task_ids & {str(v) for v in p.attributes.values()}


def test_delta_reader_gets_deltas(tmp_path):
    from opentelemetry.sdk.metrics import Histogram

    reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path), resource_poll_interval=0, metric_readers=[reader], environ={}
    )
    _run_tasks(n_ok=2, n_fail=0)
    tel.flush()
    first = _metrics(reader)["otelflow.task.duration"].data
    assert first.aggregation_temporality == AggregationTemporality.DELTA
    assert first.data_points[0].count == 2
    _run_tasks(n_ok=1, n_fail=0)
    tel.flush()
    second = _metrics(reader)["otelflow.task.duration"].data
    assert second.data_points[0].count == 1
    tel.stop()


def test_task_name_cardinality_is_bounded(capture, caplog_otelflow, monkeypatch):
    monkeypatch.setattr(inst, "MAX_SERIES", 10)
    trk = otelflow.tracker()
    for i in range(30):
        tid = trk.created(None, f"unique-{i}")
        trk.started(tid)
        trk.completed(tid)
    capture.telemetry.flush()
    points = _metrics(capture.metric_reader)["otelflow.tasks.completed"].data.data_points
    assert len(points) <= 11
    assert sum(p.value for p in points) == 30
    assert "_other" in {p.attributes["task.name"] for p in points}
    assert "Use a task *type*" in caplog_otelflow.text


def test_metric_snapshots_are_written_to_the_jsonl(capture):
    _run_tasks()
    capture.telemetry.stop()
    names = {line["name"] for line in capture.lines("metric")}
    assert {"otelflow.tasks.completed", "otelflow.task.duration"} <= names
