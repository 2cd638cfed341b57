"""otelflow.instrument(flow) on the real radical-asyncflow 0.6 engine (rhapsody-py 0.6 backend)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("radical.asyncflow")
pytest.importorskip("rhapsody")

import otelflow
from otelflow.analysis import open_run
from otelflow.analysis.utilization import peak_concurrency
from otelflow.integrations import asyncflow as af_integration
from otelflow.integrations.asyncflow import _engine
from tests.integration import asyncflow_workflow as wf


async def _sleepy(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


async def _inc(x: float) -> float:
    return x + 1


async def _wait_registered(*futures: Any, timeout: float = 10.0) -> None:
    """AsyncFlow registers a task in an asyncio task of its own: wait until it has."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not all(hasattr(f, "task") for f in futures):
        assert loop.time() < deadline, "AsyncFlow did not register the tasks"
        await asyncio.sleep(0)


def _start(tmp_path: Path) -> otelflow.Telemetry:
    return otelflow.start_telemetry(checkpoint_path=str(tmp_path / "runs"), resource_poll_interval=0, environ={})


def _by_name(run: Any) -> dict[str, Any]:
    return {t.name: t for t in run.data.tasks.values()}


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_the_workflow_is_recorded_as_it_ran(kind: str, tmp_path: Path) -> None:
    async def main() -> dict[str, Any]:
        flow = await wf.make_flow(kind, str(tmp_path))
        otelflow.instrument(flow)
        seen = await wf.run_workflow(flow)
        await flow.shutdown()
        return seen

    tel = _start(tmp_path)
    seen = asyncio.run(main())
    summary = tel.stop()
    assert seen["d"] == 5 and seen["block"] == 2  # the engine still computes the same results
    assert isinstance(seen["g"], ValueError)
    assert type(seen["h"]).__name__ == "DependencyFailureError"

    run = open_run(tel.run_dir)
    tasks = _by_name(run)
    assert sorted(tasks) == list("abcdefgh")
    # Nothing left open after flow.shutdown().
    assert summary["tasks"]["incomplete"] == 0
    assert {t.status for t in tasks.values()} <= {"completed", "failed"}

    # Four levels: session → workflow → block → task.
    spans = list(run.spans())
    session = next(s for s in spans if s["kind"] == "session")
    workflow = next(s for s in spans if s["kind"] == "workflow")
    block = next(s for s in spans if s["kind"] == "block")
    assert workflow["parent_span_id"] == session["span_id"]
    assert workflow["attributes"]["otelflow.workflow.id"] == seen["workflow_id"] == "wf-x"
    assert block["parent_span_id"] == workflow["span_id"]
    assert block["attributes"]["otelflow.block.name"] == "pair"
    task_spans = {s["name"]: s for s in spans if s["kind"] == "task"}
    for name in "ef":
        assert task_spans[name]["parent_span_id"] == block["span_id"]
        assert tasks[name].block_id == block["attributes"]["otelflow.block.id"]
    for name in "abcdgh":
        assert task_spans[name]["parent_span_id"] == workflow["span_id"]
    assert {t.workflow_id for t in tasks.values()} == {"wf-x"}

    # A link for every dependency.
    deps = {"b": "a", "c": "a", "d": "bc", "f": "e", "h": "g"}
    for name, ups in deps.items():
        assert set(task_spans[name]["links"]) == {task_spans[u]["span_id"] for u in ups}, name
        assert set(tasks[name].depends_on) == {tasks[u].task_id for u in ups}

    # Execution measured in the worker, around what the task measured itself: the recorded
    # start and end bracket the task's own readings. No dispatch or queue time in it, shown
    # with the stamps rather than a tolerance a loaded machine's stalls break: AsyncFlow's
    # dispatch lag (most of a second here) ends before the start (submitted <= started,
    # below), and a start stamped before a worker took the task would put more than the
    # pool's two tasks in execution at once.
    for name in "abcdef":
        _, start, end = seen["futures"][name].result()
        own = (end - start) / 1e9
        assert own >= wf.SLEEP
        assert tasks[name].started <= start and tasks[name].ended >= end
        assert own - 1e-6 <= tasks[name].execution_s < own + 1.0, name  # ceiling: stalls only
    assert peak_concurrency(tasks.values())[0] <= 2
    assert tasks["g"].execution_s >= 0.1
    if kind == "processes":  # they ran in the pool's worker processes, not here
        ran = [t for n, t in tasks.items() if n != "h"]
        assert all(t.pid and t.pid != os.getpid() and t.worker.endswith(f":{t.pid}") for t in ran)

    # Resolved never before the upstream's end; never for a task whose upstream failed.
    for name, ups in deps.items():
        if name == "h":
            continue
        assert tasks[name].resolved >= max(tasks[u].ended for u in ups), name
    assert tasks["h"].resolved is None

    # Failures carry their real exception types; h failed because g did.
    assert tasks["g"].status == "failed" and tasks["g"].error_type == "ValueError"
    assert tasks["h"].status == "failed"
    assert tasks["h"].error_type == "radical.asyncflow.errors.DependencyFailureError"
    assert tasks["h"].started is None  # it never ran
    failed = {e["task_id"]: e for e in run.events("TaskFailed")}
    assert "ValueError: boom" in failed[tasks["g"].task_id]["stacktrace"]

    # AsyncFlow's own lag (its scheduler polls) is dispatch wait: Resolved → handed to the
    # backend; then queue wait until the worker started it; neither is in the execution.
    for name in "bcdf":
        t = tasks[name]
        assert t.resolved <= t.submitted <= t.started
        assert t.dispatch_wait_s == pytest.approx((t.submitted - t.resolved) / 1e9)


def test_otelflow_workflow_scope_and_task_ids_prefixed_by_the_engine(tmp_path: Path) -> None:
    async def main() -> list[Any]:
        flow = await wf.make_flow("threads", str(tmp_path))
        otelflow.instrument(flow)
        inc = flow.function_task(_inc)
        with otelflow.workflow_scope("mine", workflow_id="wf-mine"):
            out = [await inc(1)]
        await flow.shutdown()
        return [flow.uid, *out]

    tel = _start(tmp_path)
    uid, value = asyncio.run(main())
    tel.stop()
    assert value == 2
    (task,) = open_run(tel.run_dir).data.tasks.values()
    assert task.workflow_id == "wf-mine"
    assert task.task_id == f"{uid}:task.000001"
    assert task.attributes["asyncflow.uid"] == "task.000001"


def test_an_engine_created_twice_in_one_process_keeps_its_tasks_apart(tmp_path: Path) -> None:
    async def one() -> str:
        flow = await wf.make_flow("threads", str(tmp_path))
        otelflow.instrument(flow)
        inc = flow.function_task(_inc)
        assert await inc(inc(0)) == 2
        await flow.shutdown()
        return str(flow.uid)

    async def main() -> list[str]:
        return [await one(), await one()]

    tel = _start(tmp_path)
    uids = asyncio.run(main())
    summary = tel.stop()
    tasks = open_run(tel.run_dir).data.tasks
    assert len(tasks) == 4 and summary["dropped"]["duplicate_task_ids"] == 0
    for uid in uids:  # AsyncFlow restarts at task.000001: the engine's uid keeps them apart
        mine = sorted(t for t in tasks if t.startswith(uid + ":"))
        assert [tasks[t].attributes["asyncflow.uid"] for t in mine] == ["task.000001", "task.000002"]
    assert {t.status for t in tasks.values()} == {"completed"}


def test_cancel_of_a_pending_task_and_shutdown_with_work_left(tmp_path: Path) -> None:
    async def main() -> dict[str, Any]:
        flow = await wf.make_flow("threads", str(tmp_path))
        otelflow.instrument(flow)
        sleepy, inc = flow.function_task(_sleepy), flow.function_task(_inc)
        slow = sleepy(0.3)
        pending = inc(slow)
        downstream = inc(pending)
        await _wait_registered(slow, pending, downstream)
        assert pending.cancel()
        assert await slow == 0.3
        with pytest.raises(asyncio.CancelledError):
            await downstream  # AsyncFlow cancels what depended on it
        left_running = sleepy(0.3)
        left_pending = inc(left_running)
        await _wait_registered(left_running, left_pending)
        await flow.shutdown()
        return {
            "pending": pending.task["uid"],
            "downstream": downstream.task["uid"],
            "left_running": left_running.task["uid"],
            "left_pending": left_pending.task["uid"],
            "uid": flow.uid,
            "still_instrumented": af_integration.is_instrumented(flow),
        }

    tel = _start(tmp_path)
    out = asyncio.run(main())
    summary = tel.stop()
    tasks = open_run(tel.run_dir).data.tasks
    by_uid = {t.attributes["asyncflow.uid"]: t for t in tasks.values()}
    assert by_uid[out["pending"]].status == "canceled"
    assert by_uid[out["pending"]].cancel_reason == "canceled before it ran"
    assert by_uid[out["downstream"]].status == "canceled"
    assert by_uid[out["downstream"]].cancel_reason == "an upstream task was canceled"
    assert by_uid[out["downstream"]].resolved is None
    assert by_uid[out["left_pending"]].status == "canceled"
    assert by_uid[out["left_pending"]].cancel_reason == "the engine shut down"
    assert by_uid[out["left_running"]].status == "canceled"
    assert summary["tasks"]["incomplete"] == 0 and summary["tasks"]["completed"] == 1
    assert summary["tasks"]["canceled"] == 4
    assert not out["still_instrumented"]  # shutdown undid what instrument() did


def test_executable_tasks_are_recorded(tmp_path: Path) -> None:
    async def main() -> list[Any]:
        flow = await wf.make_flow("threads", str(tmp_path))
        otelflow.instrument(flow)

        @flow.executable_task
        async def say() -> str:
            return "echo hello"

        @flow.executable_task
        async def refuse() -> str:
            return "sh -c 'echo nope >&2; exit 3'"

        out: list[Any] = [(await say()).strip()]
        try:
            await refuse()
        except Exception as exc:
            out.append(exc)
        await flow.shutdown()
        return out

    tel = _start(tmp_path)
    said, err = asyncio.run(main())
    tel.stop()
    assert said == "hello" and isinstance(err, RuntimeError)
    tasks = _by_name(open_run(tel.run_dir))
    assert tasks["say"].status == "completed" and tasks["say"].execution_s is not None
    assert tasks["say"].attributes["asyncflow.task_type"] == "executable"
    assert tasks["refuse"].status == "failed" and tasks["refuse"].error_type == "RuntimeError"
    assert "exit code 3" in tasks["refuse"].error_message and "nope" in tasks["refuse"].error_message


def test_uninstrument_restores_the_engine_and_its_backend(tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        flow = await wf.make_flow("threads", str(tmp_path))
        backend = flow.backend
        engine_cb = backend._callback_func  # the backend's one callback: the engine's
        assert engine_cb == flow.task_callbacks
        otelflow.instrument(flow)
        assert otelflow.integrations.is_instrumented(flow)
        assert backend._callback_func != flow.task_callbacks  # chained: ours calls the engine's
        inc = flow.function_task(_inc)
        recorded = await inc(1)
        otelflow.integrations.uninstrument(flow)
        assert not af_integration.is_instrumented(flow)
        assert backend._callback_func == flow.task_callbacks
        assert not {"_register_component", "execute_block", "workflow_scope", "shutdown"} & set(vars(flow))
        assert "submit_tasks" not in vars(backend)
        unrecorded = await inc(10)
        await flow.shutdown()
        return recorded, unrecorded

    tel = _start(tmp_path)
    assert asyncio.run(main()) == (2, 11)
    summary = tel.stop()
    assert summary["tasks"]["created"] == 1 and summary["tasks"]["completed"] == 1


def test_an_unknown_asyncflow_version_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import radical.asyncflow

    monkeypatch.setattr(radical.asyncflow, "__version__", "0.9.1")
    monkeypatch.setattr(_engine, "_warned", set())
    caplog.set_level(logging.WARNING, logger="otelflow")

    async def main() -> float:
        flow = await wf.make_flow("threads", str(tmp_path))
        otelflow.instrument(flow)
        out = await flow.function_task(_inc)(1)
        await flow.shutdown()
        return float(out)

    tel = _start(tmp_path)
    assert asyncio.run(main()) == 2
    assert tel.stop()["tasks"]["completed"] == 1
    msg = "\n".join(r.getMessage() for r in caplog.records)
    assert "radical-asyncflow 0.9.1" in msg and "pin radical-asyncflow==0.6.*" in msg


def test_without_telemetry_the_engine_runs_untouched(tmp_path: Path) -> None:
    async def main() -> tuple[int, Any]:
        flow = await wf.make_flow("processes", str(tmp_path))
        otelflow.instrument(flow)
        fut = flow.function_task(wf.b)(1)
        out = wf.value(await fut)
        desc = fut.task
        await flow.shutdown()
        return out, desc["function"]

    value, fn = asyncio.run(main())
    assert value == 2 and fn is wf.b  # nothing wrapped, nothing recorded


def test_import_otelflow_never_imports_asyncflow() -> None:
    code = (
        "import sys, otelflow, otelflow.integrations, otelflow.analysis; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('radical', 'rhapsody')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_uninstrument_with_a_task_in_flight_still_hands_back_its_own_result(tmp_path: Path) -> None:
    async def main() -> tuple[float, bool, bool]:
        flow = await wf.make_flow("threads", str(tmp_path))
        backend = flow.backend
        otelflow.instrument(flow)
        fut = flow.function_task(_sleepy)(0.3)
        await _wait_registered(fut)  # registered: its function is wrapped
        otelflow.integrations.uninstrument(flow)
        kept = backend._callback_func != flow.task_callbacks  # ours stays to unwrap the result
        value = await fut
        restored = backend._callback_func == flow.task_callbacks
        await flow.shutdown()
        return value, kept, restored

    tel = _start(tmp_path)
    value, kept, restored = asyncio.run(main())
    assert value == 0.3  # the task's own value, not otelflow's wrapper
    assert kept and restored
    assert tel.stop()["tasks"]["completed"] == 1  # and it was still recorded
