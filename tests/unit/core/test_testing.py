"""otelflow.testing: the capture helper users test their pipelines with."""

from __future__ import annotations

import pytest

import otelflow
from otelflow.events import TaskCompleted, TaskFailed
from otelflow.testing import capture


def test_capture_records_spans_events_metrics_and_summary(tmp_path):
    @otelflow.task(name="ok")
    def ok():
        return 1

    @otelflow.task(name="bad")
    def bad():
        raise ValueError("x")

    with capture(tmp_path) as cap:
        with otelflow.workflow_scope("wf"):
            ok()
            with pytest.raises(ValueError):
                bad()
        cap.flush()
        assert cap.metrics()["otelflow.tasks.completed"].data.data_points[0].value == 1
    assert cap.span("ok").parent.span_id == cap.span("workflow wf").context.span_id
    assert [e.task_name for e in cap.events_of(TaskCompleted)] == ["ok"]
    assert [e.error_type for e in cap.events_of(TaskFailed)] == ["ValueError"]
    assert cap.summary["tasks"]["failed"] == 1
    assert (cap.run_dir / "run.json").exists()
    assert otelflow.current_telemetry() is None


def test_span_lookup_names_what_is_missing(tmp_path):
    with capture(tmp_path) as cap:
        pass
    with pytest.raises(AssertionError, match="found 0"):
        cap.span("nope")


def test_the_pytest_fixture_is_registered(otelflow_capture):
    otelflow.task(lambda: None)()
    otelflow_capture.flush()
    assert len(otelflow_capture.events_of(TaskCompleted)) == 1
