"""``@otelflow.task``: each call records what the tracker calls would, with the task's span
(the span the dispatcher makes for it) and id current inside the call."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otelflow
from otelflow import _otel_compat, tasks
from otelflow._task_context import current_task_id
from tests.conftest import read_lines

_VOLATILE = ("event_id", "event_time", "emit_time", "task_id", "span_id", "cpu_time_s", "stacktrace")


def _start(tmp_path: Path, **kw: Any) -> otelflow.Telemetry:
    return otelflow.start_telemetry(checkpoint_path=str(tmp_path / "runs"), resource_poll_interval=0, environ={}, **kw)


def _events(tel: otelflow.Telemetry, task_id: str) -> list[dict[str, Any]]:
    return [e for e in read_lines(tel.run_dir, "event") if e.get("task_id") == task_id]


def _steady(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in _VOLATILE} for e in events]


def _by_name(spans: list[Any]) -> dict[str, Any]:
    return {s.name: s for s in spans}


def test_inside_a_call_the_current_span_is_the_tasks_and_a_nested_call_hangs_under_it(capture):
    tel = capture.telemetry
    trk = otelflow.tracker()
    seen: dict[str, tuple[str, trace.SpanContext, trace.SpanContext | None]] = {}

    @otelflow.task(name="inner")
    def inner() -> None:
        tid = current_task_id()
        assert tid is not None
        seen["inner"] = (tid, trace.get_current_span().get_span_context(), trk.span_context(tid))

    @otelflow.task(name="outer")
    def outer() -> None:
        tid = current_task_id()
        assert tid is not None
        own = trace.get_current_span().get_span_context()
        seen["outer"] = (tid, own, trk.span_context(tid))
        inner()
        assert trace.get_current_span().get_span_context() == own  # restored after the nested call
        assert current_task_id() == tid

    with otelflow.workflow_scope("wf"), otelflow.block("blk"):
        before = trace.get_current_span().get_span_context()
        outer()
        assert trace.get_current_span().get_span_context() == before
        assert current_task_id() is None
    for tid, ctx, expected in seen.values():
        assert ctx == expected
        assert ctx.trace_id == tel.trace_id_int and ctx.span_id == tel.task_span_id(tid)
        assert ctx.is_valid and not ctx.is_remote and ctx.trace_flags.sampled
    tel.stop()
    spans = _by_name(capture.spans())
    assert spans["outer"].context.span_id == seen["outer"][1].span_id
    assert spans["inner"].context.span_id == seen["inner"][1].span_id
    assert spans["inner"].parent.span_id == spans["outer"].context.span_id
    assert spans["outer"].parent.span_id == spans["block blk"].context.span_id
    created = _events(tel, seen["inner"][0])[0]
    assert created["parent_span_id"] == f"{seen['outer'][1].span_id:016x}"
    assert "parent_span_id" not in _events(tel, seen["outer"][0])[0]  # under its own scope's span


def test_async_calls_each_have_their_own_span_and_nest(capture):
    tel = capture.telemetry
    trk = otelflow.tracker()
    seen: dict[str, list[tuple[str, trace.SpanContext, trace.SpanContext | None]]] = {}

    def note(key: str) -> None:
        tid = current_task_id()
        assert tid is not None
        seen.setdefault(key, []).append((tid, trace.get_current_span().get_span_context(), trk.span_context(tid)))

    @otelflow.task(name="leaf")
    async def leaf() -> None:
        await asyncio.sleep(0)
        note("leaf")

    @otelflow.task(name="branch")
    async def branch() -> None:
        note("branch")
        await asyncio.gather(leaf(), leaf())
        note("branch")  # its own again after the children ran

    with otelflow.workflow_scope("wf"):
        asyncio.run(branch())
    assert len({tid for tid, _, _ in seen["branch"]}) == 1
    assert len({tid for tid, _, _ in seen["leaf"]}) == 2
    for tid, ctx, expected in seen["branch"] + seen["leaf"]:
        assert ctx == expected and ctx.span_id == tel.task_span_id(tid)
    tel.stop()
    spans = capture.spans()
    (branch_span,) = [s for s in spans if s.name == "branch"]
    leaves = [s for s in spans if s.name == "leaf"]
    assert len(leaves) == 2
    assert {s.parent.span_id for s in leaves} == {branch_span.context.span_id}


def test_with_a_trace_per_workflow_the_current_span_is_in_the_workflows_trace(tmp_path):
    exporter = InMemorySpanExporter()
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path / "runs"),
        resource_poll_interval=0,
        span_processors=[SimpleSpanProcessor(exporter)],
        environ={"OTELFLOW_TRACE_PER": "workflow"},
    )
    trk = otelflow.tracker()
    seen = {}

    @otelflow.task(name="in-wf")
    def in_wf() -> None:
        tid = current_task_id()
        assert tid is not None
        seen["ctx"], seen["expected"] = trace.get_current_span().get_span_context(), trk.span_context(tid)
        with tel.tracer("user").start_as_current_span("user-step"):
            pass

    with otelflow.workflow_scope("wf"):
        in_wf()
    tel.stop()
    spans = _by_name(exporter.get_finished_spans())
    assert seen["ctx"] == seen["expected"]
    assert seen["ctx"].trace_id != tel.trace_id_int
    assert spans["in-wf"].context.trace_id == seen["ctx"].trace_id == spans["workflow wf"].context.trace_id
    assert spans["in-wf"].context.span_id == seen["ctx"].span_id
    assert spans["user-step"].parent.span_id == spans["in-wf"].context.span_id


@pytest.mark.parametrize("trace_per", ["session", "workflow"])
def test_a_task_made_inside_a_running_task_hangs_under_its_span(tmp_path, trace_per):
    tel = _start(tmp_path, trace_per=trace_per)

    @otelflow.task(name="inner")
    def inner() -> None:
        pass

    @otelflow.task(name="outer")
    def outer() -> None:
        inner()
        tid = otelflow.tracker().created(None, "made-inside")
        otelflow.tracker().canceled(tid, reason="not needed")

    with otelflow.workflow_scope("wf"):
        outer()
    tel.stop()
    spans = {s["name"]: s for s in read_lines(tel.run_dir, "span")}
    outer_span = spans["outer"]
    assert outer_span["parent_span_id"] == spans["workflow wf"]["span_id"]
    for name in ("inner", "made-inside"):
        assert spans[name]["parent_span_id"] == outer_span["span_id"], name
        assert spans[name]["trace_id"] == outer_span["trace_id"] == spans["workflow wf"]["trace_id"]
    if trace_per == "workflow":
        assert outer_span["trace_id"] != tel.trace_id


@pytest.mark.parametrize("trace_per", ["session", "workflow"])
def test_tracker_enter_makes_the_task_span_current_for_work_in_another_thread(tmp_path, trace_per):
    """What an engine's worker thread does around a task: enter, run, leave."""
    import threading

    tel = _start(tmp_path, trace_per=trace_per)
    trk = otelflow.tracker(backend="engine")
    seen: dict[str, Any] = {}
    with otelflow.workflow_scope("wf"):
        tid = trk.created(None, "step")
        ctx = contextvars.copy_context()

    def worker() -> None:  # runs the task in the submitter's copied context, as a pool does
        outside = trace.get_current_span()
        trk.started(tid)
        entry = trk.enter(tid)
        seen["current"] = trace.get_current_span().get_span_context()
        seen["expected"], seen["task"] = trk.span_context(tid), current_task_id()
        with tel.tracer("user").start_as_current_span("user-step"):
            pass
        otelflow.tracker().canceled(otelflow.tracker().created(None, "made-inside"), reason="x")
        trk.leave(entry)
        seen["after"] = (trace.get_current_span() is outside, current_task_id())
        trk.completed(tid)

    th = threading.Thread(target=ctx.run, args=(worker,))
    th.start()
    th.join()
    tel.stop()
    spans = {s["name"]: s for s in read_lines(tel.run_dir, "span")}
    task = spans["step"]
    assert seen["current"] == seen["expected"] and seen["task"] == tid
    current = seen["current"]
    assert f"{current.span_id:016x}" == task["span_id"] and f"{current.trace_id:032x}" == task["trace_id"]
    assert spans["user-step"]["parent_span_id"] == task["span_id"]
    assert spans["made-inside"]["parent_span_id"] == task["span_id"]
    assert seen["after"] == (True, None)
    if trace_per == "workflow":
        assert task["trace_id"] == spans["workflow wf"]["trace_id"] != tel.trace_id


def test_tracker_enter_in_a_bare_thread_uses_the_workflow_the_task_was_created_in(tmp_path):
    """An engine's own thread has no copied context (no scope): with a trace per workflow the
    span is still in the trace the dispatcher writes the task in, and leaving twice is safe."""
    import threading

    tel = _start(tmp_path, trace_per="workflow")
    trk = otelflow.tracker(backend="engine")
    with otelflow.workflow_scope("wf"):
        tid = trk.created(None, "step")
    seen: dict[str, Any] = {}

    def worker() -> None:
        trk.started(tid)
        entry = trk.enter(tid)
        seen["current"] = trace.get_current_span().get_span_context()
        with tel.tracer("user").start_as_current_span("user-step"):
            pass
        trk.leave(entry)
        trk.leave(entry)  # twice: changes nothing, raises nothing
        seen["task"] = current_task_id()
        trk.completed(tid)

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    tel.stop()
    spans = {s["name"]: s for s in read_lines(tel.run_dir, "span")}
    assert spans["step"]["trace_id"] == spans["workflow wf"]["trace_id"] != tel.trace_id
    assert f"{seen['current'].trace_id:032x}" == spans["step"]["trace_id"]
    assert spans["user-step"]["trace_id"] == spans["step"]["trace_id"]
    assert spans["user-step"]["parent_span_id"] == spans["step"]["span_id"]
    assert seen["task"] is None


def test_tracker_enter_without_telemetry_or_with_a_bad_id_changes_nothing_or_cleans_it(tmp_path):
    trk = otelflow.tracker()
    assert trk.enter("t-1") is None  # no telemetry: nothing to make current
    trk.leave(None)
    tel = _start(tmp_path)
    entry = trk.enter(42)  # type: ignore[arg-type]
    assert entry is not None and current_task_id() == "42"  # recorded as its text, as the steps do
    trk.leave(entry)
    assert current_task_id() is None
    assert trk.enter("") is None and current_task_id() is None  # no task to enter: refused, counted
    tel.stop()
    assert tel.summary()["dropped"]["invalid_arguments"] == 1


def test_a_call_records_the_events_the_tracker_calls_would(capture):
    tel = capture.telemetry
    trk = otelflow.tracker("inline")
    ids = {}

    @otelflow.task(name="same")
    def same() -> None:
        ids["task"] = current_task_id()

    @otelflow.task(name="same")
    def same_failing() -> None:
        ids["task-failed"] = current_task_id()
        raise KeyError("missing")

    with otelflow.workflow_scope("wf"), otelflow.block("blk"):
        same()
        with pytest.raises(KeyError):
            same_failing()
        ids["tracker"] = tid = trk.created(None, "same")
        trk.started(tid)
        trk.completed(tid, cpu_time_s=0.0)
        ids["tracker-failed"] = tid = trk.created(None, "same")
        trk.started(tid)
        try:
            raise KeyError("missing")
        except KeyError as exc:
            trk.failed(tid, exc, cpu_time_s=0.0)
    tel.stop()
    assert _steady(_events(tel, ids["task"])) == _steady(_events(tel, ids["tracker"]))
    assert _steady(_events(tel, ids["task-failed"])) == _steady(_events(tel, ids["tracker-failed"]))
    assert [e["type"] for e in _events(tel, ids["task"])] == [
        "TaskCreated",
        "TaskResolved",
        "TaskStarted",
        "TaskCompleted",
    ]
    done = _events(tel, ids["task"])[-1]
    assert type(done["cpu_time_s"]) is float and 0 <= done["cpu_time_s"] < 1
    failed = _events(tel, ids["task-failed"])[-1]
    assert failed["type"] == "TaskFailed" and failed["error_type"] == "KeyError"
    assert failed["error_message"] == "'missing'"
    assert "same_failing" in failed["stacktrace"] and type(failed["cpu_time_s"]) is float


def test_a_name_is_checked_once_and_a_fixed_one_is_still_counted_at_every_call(tmp_path):
    tel = _start(tmp_path)

    @otelflow.task(name="zählen")
    def fine() -> None:
        pass

    @otelflow.task(name="bad\ud800")
    def bad() -> None:
        pass

    def ünïcode() -> None:  # noqa: PLC2401 - a non-ASCII qualname is the point
        pass

    fine()
    bad()
    bad()
    otelflow.task(ünïcode)()
    summary = tel.stop()
    assert summary["dropped"]["invalid_arguments"] == 2  # each call of the one with a lone surrogate
    names = [e["task_name"] for e in read_lines(tel.run_dir, "event") if e["type"] == "TaskCreated"]
    assert names[:3] == ["zählen", "bad\ufffd", "bad\ufffd"] and names[3].endswith("<locals>.ünïcode")


@pytest.mark.parametrize("fails", [False, True])
def test_telemetry_stopped_during_a_call_records_nothing_more_of_it(tmp_path, fails):
    tel = _start(tmp_path)
    later: list[otelflow.Telemetry] = []

    @otelflow.task(name="stops")
    def stops() -> str | None:
        tid = current_task_id()
        tel.stop()
        later.append(_start(tmp_path / "later"))  # another session, started before the call ends
        if fails:
            raise RuntimeError("after stop")
        return tid

    if fails:
        with pytest.raises(RuntimeError):
            stops()
        tid = next(e["task_id"] for e in read_lines(tel.run_dir, "event") if e["type"] == "TaskCreated")
    else:
        tid = stops()
    assert tid is not None
    assert current_task_id() is None
    assert not trace.get_current_span().get_span_context().is_valid
    later[0].stop()
    assert [e["type"] for e in _events(tel, tid)] == ["TaskCreated", "TaskResolved", "TaskStarted"]
    assert _events(later[0], tid) == []  # the later session never hears of a call begun before it
    (span,) = [s for s in read_lines(tel.run_dir, "span") if s["name"] == "stops"]
    assert span["attributes"]["otelflow.task.status"] == "incomplete"


def test_without_telemetry_a_call_is_the_plain_function():
    seen = []

    @otelflow.task
    def plain(x: int, *, y: int) -> int:
        seen.append((current_task_id(), trace.get_current_span().get_span_context().is_valid))
        return x + y

    @otelflow.task
    async def plain_async(x: int) -> int:
        seen.append((current_task_id(), trace.get_current_span().get_span_context().is_valid))
        return x

    assert plain(1, y=2) == 3
    assert asyncio.run(plain_async(4)) == 4
    assert seen == [(None, False), (None, False)]


def test_whether_a_task_hangs_under_the_current_span_follows_every_change_of_it(capture):
    tel = capture.telemetry
    trk = otelflow.tracker()
    tracer = tel.tracer("user")
    made: dict[str, str] = {}
    with otelflow.workflow_scope("wf"):
        made["in-scope"] = trk.created(None, "a")
        with tracer.start_as_current_span("user") as user:
            made["in-user-span"] = trk.created(None, "b")
            made["again-in-user-span"] = trk.created(None, "b")
        made["in-scope-again"] = trk.created(None, "c")
        with otelflow.block("blk"):
            made["in-block"] = trk.created(None, "d")
        made["in-scope-at-last"] = trk.created(None, "c")
    made["outside"] = trk.created(None, "e")
    tel.stop()
    parents = {
        key: next(e for e in _events(tel, tid) if e["type"] == "TaskCreated").get("parent_span_id")
        for key, tid in made.items()
    }
    user_hex = f"{user.get_span_context().span_id:016x}"
    assert parents == {
        "in-scope": None,
        "in-user-span": user_hex,
        "again-in-user-span": user_hex,
        "in-scope-again": None,
        "in-block": None,
        "in-scope-at-last": None,
        "outside": None,
    }


def test_otels_context_variable_is_what_attach_and_detach_set(caplog):
    var = _otel_compat.context_var()
    assert var is not None  # OTel's default runtime context, on every version the suite runs on
    ctx = otel_context.set_value("otelflow-test", 1)
    token = otel_context.attach(ctx)
    try:
        assert var.get() is ctx
    finally:
        otel_context.detach(token)
    before = otel_context.get_current()
    token = var.set(ctx)
    assert otel_context.get_current() is ctx
    var.reset(token)
    assert otel_context.get_current() is before
    # A token from another context is not ours to reset: logged as OTel's detach logs it, never raised.
    foreign = contextvars.copy_context().run(tasks._attach, ctx)
    with caplog.at_level(logging.ERROR, logger="opentelemetry.context"):
        tasks._detach(foreign)
    assert "Failed to detach context" in caplog.text
    assert otel_context.get_current() is before
