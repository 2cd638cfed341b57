"""The four-level trace tree, as exported to real OTel SDK span processors and the JSONL."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

from opentelemetry import trace
from opentelemetry.trace import StatusCode

import otelflow
from otelflow.events.model import now_ns


def _by_name(spans):
    """Spans by name; the session span (``session <service> <run id>``) as ``session``."""
    return {"session" if s.name.startswith("session ") else s.name: s for s in spans}


def test_parent_chain_session_workflow_block_task(capture):
    trk = otelflow.tracker("test")
    with otelflow.workflow_scope("etl") as wid, otelflow.block("load") as bid:
        tid = trk.created(None, "read")
        trk.submitted(tid)
        trk.started(tid)
        trk.completed(tid)
    capture.telemetry.stop()
    spans = _by_name(capture.spans())
    session, wf, blk, task = spans["session"], spans["workflow etl"], spans["block load"], spans["read"]
    assert session.parent is None
    assert wf.parent.span_id == session.context.span_id
    assert blk.parent.span_id == wf.context.span_id
    assert task.parent.span_id == blk.context.span_id
    assert len({s.context.trace_id for s in spans.values()}) == 1
    assert task.attributes["otelflow.workflow.id"] == wid
    assert task.attributes["otelflow.block.id"] == bid
    assert task.attributes["otelflow.task.id"] == tid
    assert task.attributes["otelflow.task.status"] == "completed"
    assert [e.name for e in task.events] == [
        "TaskCreated", "TaskResolved", "TaskSubmitted", "TaskStarted", "TaskCompleted"
    ]


def test_span_times_come_from_event_time_not_processing_time(capture):
    trk = otelflow.tracker("test")
    t0 = now_ns() - 10_000_000_000  # ten seconds ago: processed "late"
    tid = trk.created("late-1", "replayed", event_time=t0)
    trk.started(tid, event_time=t0 + 1_000_000_000)
    trk.completed(tid, event_time=t0 + 3_000_000_000)
    capture.telemetry.stop()
    span = _by_name(capture.spans())["replayed"]
    # The task span is its execution: TaskStarted -> terminal; creation is an event/attribute.
    assert span.start_time == t0 + 1_000_000_000
    assert span.end_time == t0 + 3_000_000_000
    assert span.attributes["otelflow.task.created_time"] == t0
    created = next(e for e in span.events if e.name == "TaskCreated")
    assert created.timestamp == t0
    line = next(s for s in capture.lines("span") if s["name"] == "replayed")
    assert line["end_time"] - line["start_time"] == 2_000_000_000


def test_nested_blocks_and_tasks_outside_scopes(capture):
    trk = otelflow.tracker()
    with otelflow.workflow_scope("wf"):
        with otelflow.block("outer"), otelflow.block("inner"):
            t1 = trk.created(None, "deep")
            trk.started(t1)
            trk.completed(t1)
    t2 = trk.created(None, "loose")
    trk.started(t2)
    trk.completed(t2)
    capture.telemetry.stop()
    spans = _by_name(capture.spans())
    assert spans["block inner"].parent.span_id == spans["block outer"].context.span_id
    assert spans["deep"].parent.span_id == spans["block inner"].context.span_id
    assert spans["loose"].parent.span_id == spans["session"].context.span_id


def test_scope_follows_threads_with_copied_context_and_asyncio_tasks(capture):
    trk = otelflow.tracker()

    def work(name):
        tid = trk.created(None, name)
        trk.started(tid)
        trk.completed(tid)

    async def amain():
        with otelflow.block("async-block"):
            await asyncio.gather(*(asyncio.create_task(_atask(trk, f"a{i}")) for i in range(3)))

    with otelflow.workflow_scope("threads"):
        ctx = contextvars.copy_context()
        t = threading.Thread(target=ctx.run, args=(work, "in-thread"))
        t.start()
        t.join()
        asyncio.run(amain())
    capture.telemetry.stop()
    spans = _by_name(capture.spans())
    assert spans["in-thread"].parent.span_id == spans["workflow threads"].context.span_id
    for i in range(3):
        assert spans[f"a{i}"].parent.span_id == spans["block async-block"].context.span_id


async def _atask(trk, name):
    tid = trk.created(None, name)
    trk.started(tid)
    await asyncio.sleep(0.01)
    trk.completed(tid)


def test_failed_task_sets_error_status_and_records_exception(capture):
    @otelflow.task
    def boom():
        raise KeyError("missing")

    try:
        boom()
    except KeyError:
        pass
    capture.telemetry.stop()
    span = next(s for s in capture.spans() if s.name.endswith("boom"))
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "KeyError"
    exc = next(e for e in span.events if e.name == "exception")
    assert exc.attributes["exception.type"] == "KeyError"
    assert "missing" in exc.attributes["exception.message"]


def test_dependencies_become_links_and_resolved_follows_last_upstream(capture):
    trk = otelflow.tracker()
    a = trk.created("a", "up")
    b = trk.created("b", "up")
    c = trk.created("c", "down", depends_on=[a, b])
    for t in (a, b):
        trk.started(t)
    time.sleep(0.01)
    trk.completed(a)
    time.sleep(0.02)
    trk.completed(b)
    trk.started(c)
    trk.completed(c)
    capture.telemetry.stop()
    spans = _by_name(capture.spans())
    down = spans["down"]
    linked = {link.context.span_id for link in down.links}
    ups = {s.context.span_id for s in capture.spans() if s.name == "up"}
    assert linked == ups
    events = capture.lines("event")
    resolved_c = next(e for e in events if e["type"] == "TaskResolved" and e["task_id"] == "c")
    done_b = next(e for e in events if e["type"] == "TaskCompleted" and e["task_id"] == "b")
    assert resolved_c["event_time"] == done_b["event_time"]
    assert down.attributes["otelflow.task.depends_on"] == ("a", "b")


def test_resolved_is_the_latest_upstream_end_even_when_recorded_out_of_order(capture):
    # Upstreams measured in two worker processes: the one that ended last is recorded first.
    trk = otelflow.tracker()
    b = trk.created("b", "up")
    c = trk.created("c", "up")
    d = trk.created("d", "down", depends_on=[b, c])
    t0 = now_ns()
    for t in (b, c):
        trk.started(t, t0)
    trk.completed(b, t0 + 200_000_000)
    trk.completed(c, t0 + 100_000_000)
    capture.telemetry.stop()
    resolved = [e for e in capture.lines("event") if e["type"] == "TaskResolved" and e["task_id"] == d]
    assert [e["event_time"] for e in resolved] == [t0 + 200_000_000]


def test_scope_span_waits_for_tasks_that_outlive_it(capture):
    trk = otelflow.tracker()
    with otelflow.workflow_scope("short"):
        tid = trk.created(None, "long")
        trk.started(tid)
    time.sleep(0.05)
    trk.completed(tid)
    capture.telemetry.stop()
    spans = _by_name(capture.spans())
    wf, task = spans["workflow short"], spans["long"]
    assert wf.end_time >= task.end_time
    assert task.parent.span_id == wf.context.span_id


def test_tasks_open_at_stop_are_closed_and_marked_incomplete(capture, caplog_otelflow):
    trk = otelflow.tracker()
    with otelflow.workflow_scope("unfinished"):
        tid = trk.created(None, "hang")
        trk.started(tid)
    summary = capture.telemetry.stop()
    span = _by_name(capture.spans())["hang"]
    assert span.attributes["otelflow.task.status"] == "incomplete"
    assert span.end_time is not None
    assert summary["tasks"]["incomplete"] == 1
    assert summary["tasks"]["running"] == 0
    assert "still open at stop()" in caplog_otelflow.text


def test_user_spans_inside_task_and_scope_are_children(capture):
    tracer = capture.telemetry.tracer("user")

    @otelflow.task(name="work")
    def work():
        with tracer.start_as_current_span("inner-step"):
            pass

    with otelflow.workflow_scope("wf"):
        with tracer.start_as_current_span("in-scope"):
            pass
        work()
    capture.telemetry.stop()
    spans = _by_name(capture.spans())
    assert spans["inner-step"].parent.span_id == spans["work"].context.span_id
    assert spans["in-scope"].parent.span_id == spans["workflow wf"].context.span_id
    # the JSONL has the user spans too, with the same ids
    user_lines = {s["name"]: s for s in capture.lines("span") if s["kind"] == "user"}
    assert user_lines["inner-step"]["parent_span_id"] == f"{spans['work'].context.span_id:016x}"


def test_global_tracer_delegates_to_the_running_session(capture):
    tracer = trace.get_tracer("late-bound")

    @otelflow.task(name="t")
    def t():
        with tracer.start_as_current_span("via-global"):
            pass

    t()
    capture.telemetry.stop()
    spans = _by_name(capture.spans())
    assert spans["via-global"].parent.span_id == spans["t"].context.span_id


def test_a_task_inside_work_entered_elsewhere_hangs_under_it(capture):
    """Inside a process-pool task: remote scope ids and the pool task's span as parent."""
    from opentelemetry import context as otel_context

    from otelflow.scope import enter_remote_scope, exit_remote_scope

    outer = 0x1234ABCD5678EF01
    ctx = trace.NonRecordingSpan(capture.telemetry.span_context(outer))
    otel_token = otel_context.attach(trace.set_span_in_context(ctx))
    scope_token = enter_remote_scope("wf-remote", "blk-remote")
    try:
        otelflow.task(lambda: None, name="inner")()
    finally:
        exit_remote_scope(scope_token)
        otel_context.detach(otel_token)
    capture.telemetry.stop()
    span = _by_name(capture.spans())["inner"]
    assert span.parent.span_id == outer
    assert span.attributes["otelflow.workflow.id"] == "wf-remote"
    assert span.attributes["otelflow.block.id"] == "blk-remote"
    line = next(s for s in capture.lines("span") if s["name"] == "inner")
    assert line["parent_span_id"] == f"{outer:016x}"
