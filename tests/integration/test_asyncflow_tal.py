"""The RHAPSODY telemetry layer (TAL): its checkpoints are readable, and otelflow is a drop-in for it.

Both against the real radical-asyncflow 0.6 + rhapsody-py 0.6: the checkpoint is written by
``await flow.start_telemetry(...)`` itself.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("radical.asyncflow")
pytest.importorskip("rhapsody.telemetry")

import otelflow
from otelflow.analysis import compare_runs, open_run
from otelflow.cli.main import main as cli
from otelflow.integrations import asyncflow as otelflow_asyncflow
from tests.conftest import read_lines
from tests.integration import asyncflow_workflow as wf


@pytest.fixture(scope="module")
def tal_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real TAL checkpoint of the test workflow, written by rhapsody-py's TelemetryManager."""
    tmp = tmp_path_factory.mktemp("tal")

    async def main() -> None:
        flow = await wf.make_flow("threads", str(tmp))
        tal = await flow.start_telemetry(checkpoint_path=str(tmp / "tal"), resource_poll_interval=0.2)
        await wf.run_workflow(flow)
        await flow.shutdown()
        await tal.stop()

    asyncio.run(main())
    (path,) = (tmp / "tal").glob("*.telemetry.jsonl")
    return path


def _report(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    assert cli([*args, "--json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def test_otelflow_report_counts_the_tasks_and_states_of_a_tal_checkpoint(
    tal_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for where in (tal_checkpoint, tal_checkpoint.parent):  # the file, or the TAL's checkpoint directory
        report = _report(capsys, "report", str(where))
        tasks = report["tasks"]
        # What the TAL recorded: a-f completed, g failed; h (failed by g) never got a terminal event.
        assert tasks["total"] == 8
        assert (tasks["completed"], tasks["failed"], tasks["resolved"]) == (6, 1, 1)
        assert tasks["incomplete"] == tasks["canceled"] == 0
    assert report["run"]["service_name"] == "rhapsody" and report["run"]["status"] == "completed"
    assert set(report["workflows"]) == {"wf-x"} and report["workflows"]["wf-x"]["tasks"]["total"] == 8

    run = open_run(tal_checkpoint)
    tasks = {t.name: t for t in run.data.tasks.values()}
    assert sorted(tasks) == list("abcdefgh")  # the @flow.block is a block, not a task
    assert tasks["g"].status == "failed" and tasks["g"].error_type == "unknown"  # as the TAL wrote it
    assert tasks["h"].state == "resolved"
    assert set(tasks["d"].depends_on) == {tasks["b"].task_id, tasks["c"].task_id}
    (block,) = run.data.blocks.values()
    assert block.name == "pair" and block.workflow_id == "wf-x"
    assert {tasks["e"].block_id, tasks["f"].block_id} == {block.id}
    assert run.data.session_start is not None and run.data.session_end is not None
    assert any(k.startswith("node:") for k in run.data.resources)


def test_compare_a_tal_run_with_an_otelflow_run_of_the_same_workflow(
    tal_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def main() -> None:
        flow = await wf.make_flow("threads", str(tmp_path))
        otelflow.instrument(flow)
        await wf.run_workflow(flow)
        await flow.shutdown()

    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path / "runs"), resource_poll_interval=0, environ={})
    asyncio.run(main())
    tel.stop()
    cmp = compare_runs(open_run(tal_checkpoint), open_run(tel.run_dir))
    printed = _report(capsys, "compare", str(tal_checkpoint), str(tel.run_dir))
    assert printed["a"]["run_id"] == cmp["a"]["run_id"] and printed["b"]["run_id"] == cmp["b"]["run_id"]
    # The same 8 tasks by name on both sides; otelflow records h's failure, the TAL did not.
    assert set(cmp["by_task_name"]) == set("abcdefgh") and not cmp["only_in_a"] and not cmp["only_in_b"]
    assert cmp["tasks"]["total"]["a"] == cmp["tasks"]["total"]["b"] == 8
    assert (cmp["tasks"]["failed"]["a"], cmp["tasks"]["failed"]["b"]) == (1, 2)
    # The TAL's TaskStarted is the dispatch time: its 0.2 s tasks look longer than otelflow's.
    # The sleep sets otelflow's floor; the ceiling leaves a loaded machine a second of stalls.
    assert wf.SLEEP <= cmp["by_task_name"]["a"]["mean_s"]["b"] < wf.SLEEP + 1.0


def test_the_drop_in_serves_tal_subscribers(tmp_path: Path) -> None:
    from rhapsody.telemetry import TelemetrySubscriber, define_event
    from rhapsody.telemetry.events import make_event

    DataQualityChecked = define_event("asyncflow.DataQualityChecked", score=float, rows_checked=int)
    seen: list[Any] = []
    seen_async: list[Any] = []

    async def main() -> dict[str, Any]:
        flow = await wf.make_flow("processes", str(tmp_path))
        telemetry = await otelflow_asyncflow.start_telemetry(
            flow, checkpoint_path=str(tmp_path / "runs"), resource_poll_interval=0.2
        )
        # Subscribers as the RHAPSODY telemetry docs write them: a sync callback, and an
        # async one through TelemetrySubscriber.
        telemetry.subscribe(seen.append)

        async def handler(event: Any) -> None:
            seen_async.append(event.event_type)

        TelemetrySubscriber(telemetry).subscribe(handler)
        ran = await wf.run_workflow(flow)
        own = {f.task["uid"]: f.result()[1:] for f in ran["futures"].values()}  # (start, end) ns
        telemetry.emit(
            make_event(
                DataQualityChecked,
                session_id=telemetry._session_id,
                backend="application",
                score=0.97,
                rows_checked=1000,
            )
        )
        await flow.shutdown()  # stops what start_telemetry() started …
        stopped_by_shutdown = not telemetry.telemetry.active
        await telemetry.stop()  # … so this is a no-op, as it is safe to call anyway
        await telemetry.stop()
        return {
            "flow": flow.uid,
            "summary": telemetry.summary(),
            "by_shutdown": stopped_by_shutdown,
            "tel": telemetry,
            "own": own,
        }

    out = asyncio.run(main())
    assert out["by_shutdown"]
    tel = out["tel"]
    assert tel.session_id == out["flow"]
    types = [e.event_type for e in seen]
    assert "asyncflow.TaskResolved" in types and "TaskResolved" not in types
    completed = {e.task_id: e for e in seen if e.event_type == "TaskCompleted"}
    assert len(completed) == 6  # a-f
    assert all(e.task_id.startswith("task.") for e in completed.values())  # AsyncFlow's own uids
    assert set(completed) == set(out["own"])
    recorded = {t.attributes["asyncflow.uid"]: t for t in open_run(tel.telemetry.run_dir).data.tasks.values()}
    for e in completed.values():  # execution as measured in the worker: what the task saw itself
        start, end = out["own"][e.task_id]
        t = recorded[e.task_id]
        # The event carries the run's own execution figure, and its stamps bracket the task's
        # own readings (stated with the stamps: a tolerance is what a loaded machine breaks).
        assert e.duration_seconds == pytest.approx(t.execution_s)
        assert t.started <= start and t.ended >= end
        assert isinstance(e.event_time, float) and e.session_id == out["flow"]
        assert e.attributes["executable"] in "abcdef" and e.attributes["asyncflow.workflow_id"]
    failed = {e.attributes["executable"]: e for e in seen if e.event_type == "TaskFailed"}
    assert failed["g"].error_type == "ValueError"
    assert failed["h"].error_type == "radical.asyncflow.errors.DependencyFailureError"
    created = {e.attributes["executable"]: e for e in seen if e.event_type == "TaskCreated"}
    assert created["d"].attributes["depends_on"] == [created["b"].task_id, created["c"].task_id]
    resources = [e for e in seen if e.event_type == "ResourceUpdate"]
    assert resources and {r.resource_scope for r in resources} == {"per_node"}
    assert any(isinstance(r.cpu_percent, float) and 0 <= r.cpu_percent <= 100 * 64 for r in resources)
    assert sorted(seen_async) == sorted(types)  # the async subscriber saw every event too
    assert "asyncflow.DataQualityChecked" in types

    s = out["summary"]
    assert s["session_id"] == out["flow"]
    assert s["tasks"] == {"submitted": 7, "completed": 6, "failed": 2, "canceled": 0, "running": 0}
    assert set(s["duration"]) == {"total_seconds", "mean_seconds", "min_seconds", "max_seconds"}
    assert s["duration_seconds"] > 0

    run_dir = tel.telemetry.run_dir
    dq = [ln for ln in read_lines(run_dir, "event") if ln["type"] == "asyncflow.DataQualityChecked"]
    assert [(d["score"], d["rows_checked"]) for d in dq] == [(0.97, 1000)]
    tasks = {t.name: t for t in open_run(run_dir).data.tasks.values()}
    assert wf.SLEEP <= tasks["a"].execution_s < wf.SLEEP + 1.0  # ceiling: a second of stalls


def test_the_drop_in_records_on_telemetry_already_running(tmp_path: Path) -> None:
    seen: list[str] = []

    async def main() -> bool:
        flow = await wf.make_flow("threads", str(tmp_path))
        telemetry = await otelflow_asyncflow.start_telemetry(flow)
        telemetry.subscribe(lambda e: seen.append(e.event_type))
        assert wf.value(await flow.function_task(wf.a)()) == 1
        await flow.shutdown()
        await telemetry.stop()
        return telemetry.telemetry.active

    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path / "runs"), resource_poll_interval=0, environ={})
    assert asyncio.run(main())  # the user's telemetry keeps running: it is theirs to stop
    assert tel.stop()["tasks"]["completed"] == 1
    assert "TaskCompleted" in seen
