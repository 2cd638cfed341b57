"""Session lifecycle: start/stop, repeats, async use, off switch, run directory."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

import otelflow
from otelflow.errors import ConfigError
from tests.conftest import read_lines


def test_start_twice_returns_the_running_one_with_a_warning(tmp_path, caplog_otelflow):
    a = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={})
    b = otelflow.start_telemetry(checkpoint_path=str(tmp_path / "other"), environ={})
    assert a is b
    assert "already running" in caplog_otelflow.text
    a.stop()


def test_stop_twice_returns_the_same_summary(tmp_path):
    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={})
    first = tel.stop()
    assert tel.stop() is first
    assert otelflow.current_telemetry() is None


def test_scopes_and_tasks_without_telemetry_are_documented_noops():
    @otelflow.task
    def f(x):
        return x + 1

    with otelflow.workflow_scope("nothing") as wid, otelflow.block("b") as bid:
        assert f(1) == 2
    assert wid.startswith("wf-") and bid.startswith("blk-")
    assert otelflow.tracker().created(None, "x")  # returns an id, records nothing


def test_context_manager_and_run_json(tmp_path):
    with otelflow.start_telemetry(
        checkpoint_path=str(tmp_path), resource_poll_interval=0, service_name="svc", environ={}
    ) as tel:
        with otelflow.workflow_scope("wf"):
            otelflow.task(lambda: None)()
    meta = json.loads((tel.run_dir / "run.json").read_text())
    assert meta["status"] == "completed"
    assert meta["service_name"] == "svc"
    assert len(meta["trace_id"]) == 32
    assert meta["end_time"] > meta["start_time"]
    assert meta["summary"]["tasks"]["completed"] == 1
    assert "opentelemetry-sdk" in meta["versions"]
    assert meta["config"]["runs_dir"] == str(tmp_path)
    files = list(tel.run_dir.glob("*.jsonl"))
    assert len(files) == 1 and files[0].name.startswith("main-")
    for line in read_lines(tel.run_dir):
        assert line["section"] in {"event", "span", "metric"}
        if line["section"] in ("event", "span"):
            assert len(line["trace_id"]) == 32 and len(line["span_id"]) == 16


def test_lines_reach_the_disk_within_the_flush_interval(tmp_path):
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path), resource_poll_interval=0, flush_interval=0.2, environ={}
    )
    trk = otelflow.tracker()
    trk.created("visible", "t")
    # On disk before stop(): 0.2 s in practice. Without the periodic flush the line would wait
    # in the 64 KiB buffer until stop(), so the deadline need not be tight to 0.2 s (which a
    # loaded machine's stalls would break).
    deadline = time.monotonic() + 5.0
    found = False
    while time.monotonic() < deadline and not found:
        found = any(b'"visible"' in f.read_bytes() for f in tel.run_dir.glob("*.jsonl"))
        time.sleep(0.02)
    assert found, "a created task was not on disk within 5 s"
    tel.stop()


def test_start_inside_a_running_event_loop_does_not_block_it_while_it_stops(tmp_path):
    async def main():
        exited = False
        ran_while_stopping: list[bool] = []

        async def probe() -> None:
            # Scheduled as the body ends: it runs at the loop's next turn, which is inside
            # __aexit__ only if stopping gives the loop back (a blocking stop runs it after).
            ran_while_stopping.append(not exited)

        async with otelflow.start_telemetry(
            checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={}
        ) as tel:

            @otelflow.task
            async def work(i):
                await asyncio.sleep(0.01)
                return i

            with otelflow.workflow_scope("async-wf"):
                assert await asyncio.gather(*(work(i) for i in range(10))) == list(range(10))
            probing = asyncio.create_task(probe())
        exited = True
        await probing
        return tel, ran_while_stopping

    tel, ran_while_stopping = asyncio.run(main())
    assert tel.summary()["tasks"]["completed"] == 10
    assert tel.active is False
    assert ran_while_stopping == [True]


@pytest.mark.parametrize("env", [{"OTEL_SDK_DISABLED": "true"}, {"OTELFLOW_TELEMETRY": "0"}])
def test_off_switch_gives_the_same_api_as_a_noop(tmp_path, env):
    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path), environ=env)
    assert not tel.active and not tel.enabled
    with otelflow.workflow_scope("off"):
        otelflow.task(lambda: 1)()
        assert otelflow.emit("ml.Whatever") is False
    summary = tel.stop()
    assert summary["enabled"] is False
    assert not any(tmp_path.iterdir())


def test_bad_config_is_a_clear_error_at_start(tmp_path):
    with pytest.raises(ConfigError, match="OTELFLOW_FLUSH_INTERVAL"):
        otelflow.start_telemetry(checkpoint_path=str(tmp_path), environ={"OTELFLOW_FLUSH_INTERVAL": "soon"})
    with pytest.raises(ConfigError, match="resource_poll_interval"):
        otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=-1, environ={})
    with pytest.raises(ConfigError, match="metric_readers"):
        otelflow.start_telemetry(checkpoint_path=str(tmp_path), metric_readers=[object()], environ={})
    assert otelflow.current_telemetry() is None


def test_unwritable_runs_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="writable directory"):
        otelflow.start_telemetry(checkpoint_path=str(blocker / "runs"), environ={})


def test_full_disk_keeps_the_workflow_running_and_counts_the_loss(tmp_path, caplog_otelflow):
    from otelflow.sinks.jsonl import JsonlWriter

    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is needed to simulate a full disk")
    w = JsonlWriter("/dev/full", flush_interval=0.01)
    w.write_struct({"a": 1})
    w.flush()
    w.write_struct({"a": 2})
    w.close()
    assert w.lines_lost == 2 and w.write_errors == 2
    assert "No space left" in caplog_otelflow.text


def test_service_name_from_environment_is_not_overridden(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={})
    assert tel.resource.attributes["service.name"] == "from-env"
    tel.stop()


def test_a_worker_session_joins_its_parent_and_writes_only_its_own_file(tmp_path):
    parent = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={})
    worker = otelflow.Telemetry(
        role="worker",
        checkpoint_path=str(tmp_path),
        run_id=parent.run_id,
        resource_poll_interval=0,
        environ={},
        trace_id=parent.trace_id,
        session_id=parent.session_id,
        session_span_id=f"{parent.session_span_id:016x}",
    ).start()
    assert worker is not otelflow.current_telemetry()  # the parent stays current here
    with worker.tracer().start_as_current_span("in-worker"):
        pass
    worker.stop()
    parent.stop()
    files = sorted(p.name for p in parent.run_dir.iterdir())
    assert files[0].startswith("main-") and files[1] == "run.json" and files[2].startswith("worker-")
    worker_lines = read_lines(parent.run_dir)
    worker_only = [
        json.loads(raw) for raw in next(parent.run_dir.glob("worker-*.jsonl")).read_bytes().splitlines()
    ]
    assert [ln["name"] for ln in worker_only if ln["section"] == "span"] == ["in-worker"]
    assert not [ln for ln in worker_only if ln["section"] in ("event", "metric")]
    sessions = [ln for ln in worker_lines if ln.get("kind") == "session"]
    assert len(sessions) == 1 and sessions[0]["trace_id"] == parent.trace_id


def test_joining_ids_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="trace_id"):
        otelflow.Telemetry(checkpoint_path=str(tmp_path), trace_id="xyz", environ={})


def test_start_telemetry_names_every_setting_as_a_parameter():
    """No **options: an IDE and mypy see every setting, and none is forgotten."""
    import inspect

    from otelflow.config.settings import ARGUMENTS

    params = inspect.signature(otelflow.start_telemetry).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    assert set(ARGUMENTS) <= set(params), sorted(set(ARGUMENTS) - set(params))
    others = set(params) - set(ARGUMENTS)
    assert others == {"span_processors", "metric_readers", "resource", "name", "environ"}
