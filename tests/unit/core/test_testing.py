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


def test_the_plugin_registered_for_pytest_is_the_light_one():
    from importlib.metadata import entry_points

    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("otelflow") == "otelflow._pytest_plugin"


def test_an_unrelated_pytest_run_loads_neither_the_sdk_nor_the_pipeline(tmp_path):
    import subprocess
    import sys

    (tmp_path / "test_unrelated.py").write_text(
        "import sys\n"
        "def test_nothing_of_otelflow_is_loaded():\n"
        "    assert not [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "    light = {'otelflow._pytest_plugin', 'otelflow._global', 'otelflow._version', 'otelflow.errors'}\n"
        "    loaded = {m for m in sys.modules if m.startswith('otelflow.')}\n"
        "    assert loaded <= light, loaded - light\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:otelflow",
         "-p", "otelflow._pytest_plugin", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
