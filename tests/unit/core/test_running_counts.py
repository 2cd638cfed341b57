"""Running and queued counts never go negative, whatever order events arrive in."""

from __future__ import annotations

import otelflow
from otelflow.events.model import now_ns


def _gauge(reader, name):
    data = reader.get_metrics_data()
    values = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    values += [p.value for p in m.data.data_points]
    return values


def test_failed_and_canceled_before_start_never_drive_running_negative(capture):
    trk = otelflow.tracker("x")
    t = now_ns()
    a = trk.created("a", "job", event_time=t)
    trk.canceled(a, event_time=t + 1)  # canceled before start
    b = trk.created("b", "job", event_time=t)
    trk.queued(b, event_time=t + 1)
    trk.failed(b, ValueError("no worker"), event_time=t + 2)  # failed while queued
    c = trk.created("c", "job", event_time=t)
    trk.completed(c, event_time=t + 5)  # completed with no start seen
    trk.started(c, event_time=t + 3)  # late start after terminal: ignored
    d = trk.created("d", "job")
    trk.started(d)
    trk.started(d)  # duplicate start
    trk.completed(d)
    trk.completed(d)  # duplicate terminal
    capture.telemetry.flush()
    assert all(v >= 0 for v in _gauge(capture.metric_reader, "otelflow.tasks.running"))
    assert all(v >= 0 for v in _gauge(capture.metric_reader, "otelflow.tasks.queued"))
    summary = capture.telemetry.stop()
    tasks = summary["tasks"]
    assert tasks["running"] == 0
    assert tasks["queued_now"] == 0
    assert tasks["canceled"] == 1
    assert tasks["failed"] == 1
    assert tasks["completed"] == 2
    assert summary["dropped"]["late_events"] == 2


def test_running_gauge_tracks_live_tasks(capture):
    trk = otelflow.tracker("x")
    ids = [trk.created(None, "live") for _ in range(3)]
    for tid in ids:
        trk.started(tid)
    capture.telemetry.flush()
    assert sum(_gauge(capture.metric_reader, "otelflow.tasks.running")) == 3
    trk.completed(ids[0])
    capture.telemetry.flush()
    assert sum(_gauge(capture.metric_reader, "otelflow.tasks.running")) == 2
    for tid in ids[1:]:
        trk.completed(tid)
