"""Instrumented ThreadPoolExecutor: lifecycle, dependencies, failures, cancellation, context."""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, wait
from typing import Any

import pytest
from opentelemetry import trace

import otelflow
from otelflow.integrations import UpstreamFailedError, instrument, is_instrumented, task_id_of, uninstrument
from tests.conftest import read_lines

ORDER = ("TaskCreated", "TaskResolved", "TaskSubmitted", "TaskStarted")


@pytest.fixture
def tel(tmp_path):
    t = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={})
    yield t
    t.stop()


@pytest.fixture
def pool():
    with instrument(ThreadPoolExecutor(2)) as p:
        yield p


def task_spans(run_dir) -> dict[str, dict[str, Any]]:
    return {s["attributes"]["otelflow.task.id"]: s for s in read_lines(run_dir, "span") if s["kind"] == "task"}


def times(span: dict[str, Any]) -> dict[str, int]:
    return dict(span["events"])


def add(a, b=0):
    return a + b


def total(a, pair, x, y):
    return a + sum(pair) + sum(x) + sum(y.values())


def boom(*_a):
    raise ValueError("boom")


def test_submit_records_the_lifecycle_in_the_callers_scope(tel, pool):
    with otelflow.workflow_scope("wf"), otelflow.block("stage"):
        fut = pool.submit(add, 1, 2)
        assert fut.result() == 3
    tid = task_id_of(fut)
    tel.stop()
    spans = {s["kind"]: s for s in read_lines(tel.run_dir, "span")}
    task = task_spans(tel.run_dir)[tid]
    assert task["name"] == "add" and task["status"] == "completed"
    assert task["parent_span_id"] == spans["block"]["span_id"]
    assert spans["block"]["parent_span_id"] == spans["workflow"]["span_id"]
    assert spans["workflow"]["parent_span_id"] == spans["session"]["span_id"]
    t = times(task)
    stamps = [t[name] for name in ORDER] + [t["TaskCompleted"]]
    assert stamps == sorted(stamps)
    assert task["attributes"]["otelflow.task.backend"] == "threads"
    assert task["attributes"]["otelflow.task.worker"].startswith("ThreadPoolExecutor")


def test_future_arguments_are_resolved_and_become_links(tel, pool):
    gate = threading.Event()
    a = pool.submit(lambda: gate.wait(5) and 1)
    b = pool.submit(add, 2)
    c = pool.submit(total, a, [b, 10], x=(a,), y={"k": b})  # positional, nested, keyword
    d = pool.submit(add, 5, depends_on=[c])
    assert not c.done()
    gate.set()
    assert c.result() == 1 + 2 + 10 + 1 + 2
    assert d.result() == 5
    tel.stop()
    spans = task_spans(tel.run_dir)
    ids = {name: task_id_of(f) for name, f in zip("abcd", (a, b, c, d), strict=True)}
    up_spans = {spans[ids["a"]]["span_id"], spans[ids["b"]]["span_id"]}
    assert set(spans[ids["c"]]["links"]) == up_spans
    assert spans[ids["d"]]["links"] == [spans[ids["c"]]["span_id"]]
    assert spans[ids["d"]]["attributes"]["otelflow.task.depends_on"] == [ids["c"]]
    # Resolved when the last upstream completed, never before; submitted only after that.
    last_up = max(times(spans[ids[k]])["TaskCompleted"] for k in "ab")
    tc = times(spans[ids["c"]])
    assert tc["TaskResolved"] >= last_up
    assert tc["TaskSubmitted"] >= tc["TaskResolved"]
    assert tc["TaskStarted"] >= tc["TaskSubmitted"]


def test_depends_on_is_consumed_not_passed(tel, pool):
    def only_positional(x):
        return x

    up = pool.submit(add, 1)
    assert pool.submit(only_positional, 7, depends_on=[up, "external-id"]).result() == 7
    # A task id alone records a dependency and waits for nothing.
    assert pool.submit(only_positional, 8, depends_on="t-unknown").result() == 8
    with pytest.raises(TypeError, match="depends_on"):
        pool.submit(only_positional, 1, depends_on=[object()])


def test_a_task_that_raises_is_failed_with_its_type(tel, pool):
    fut = pool.submit(boom)
    with pytest.raises(ValueError, match="boom"):
        fut.result()
    tel.stop()
    span = task_spans(tel.run_dir)[task_id_of(fut)]
    assert span["status"] == "failed"
    assert span["attributes"]["error.type"] == "ValueError"
    assert span["error_message"] == "boom"
    assert "TaskStarted" in times(span)


def test_upstream_failure_fails_the_downstream_without_running_it(tel, pool):
    ran = []
    up = pool.submit(boom)
    down = pool.submit(ran.append, up)
    with pytest.raises(UpstreamFailedError, match=r"upstream task .* failed with ValueError: boom") as info:
        down.result()
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.upstream_task_id == task_id_of(up)
    assert ran == []
    tel.stop()
    span = task_spans(tel.run_dir)[task_id_of(down)]
    assert span["status"] == "failed"
    assert span["attributes"]["error.type"] == "otelflow.integrations.futures.UpstreamFailedError"
    assert "TaskStarted" not in times(span)


def test_cancel_before_start_and_while_waiting_for_upstreams(tel):
    with instrument(ThreadPoolExecutor(1)) as pool:
        gate = threading.Event()
        blocker = pool.submit(gate.wait, 5)
        queued = pool.submit(add, 1)  # waits for the only worker
        held = pool.submit(add, blocker)  # waits for its upstream
        after_held = pool.submit(add, held)
        assert queued.cancel() and held.cancel()
        assert held.cancelled()
        gate.set()
        with pytest.raises(CancelledError):
            after_held.result(timeout=5)
    tel.stop()
    spans = task_spans(tel.run_dir)
    for fut in (queued, held, after_held):
        span = spans[task_id_of(fut)]
        assert span["status"] == "canceled"
        assert "TaskStarted" not in times(span)
    assert spans[task_id_of(blocker)]["status"] == "completed"


def test_canceled_future_wakes_waiters(tel, pool):
    gate = threading.Event()
    up = pool.submit(gate.wait, 5)
    held = pool.submit(add, up)
    held.cancel()
    done, _ = wait([held], timeout=2)
    assert held in done
    gate.set()


def test_map_records_one_task_per_item(tel, pool):
    assert list(pool.map(add, range(5), range(5))) == [0, 2, 4, 6, 8]
    summary = tel.stop()
    assert summary["tasks"]["completed"] == 5
    assert {s["name"] for s in task_spans(tel.run_dir).values()} == {"add"}


def test_user_spans_and_events_inside_a_task_belong_to_it(tel, pool):
    otelflow.define_event("tests.ThreadNote", n=int)

    def work():
        with trace.get_tracer("user").start_as_current_span("inside"):
            otelflow.emit("tests.ThreadNote", n=1)
        return trace.get_current_span().get_span_context().span_id

    with otelflow.workflow_scope("wf") as wid:
        fut = pool.submit(work)
        current = fut.result()
    tel.stop()
    task = task_spans(tel.run_dir)[task_id_of(fut)]
    assert current == int(task["span_id"], 16)  # the task span is current in the task
    user = next(s for s in read_lines(tel.run_dir, "span") if s["name"] == "inside")
    assert user["parent_span_id"] == task["span_id"] and user["trace_id"] == task["trace_id"]
    note = next(e for e in read_lines(tel.run_dir, "event") if e["type"] == "tests.ThreadNote")
    assert note["workflow_id"] == wid  # the scope followed the task into the worker thread


def test_one_worker_measures_execution_and_growing_queue_waits(tel):
    gate = threading.Event()
    with instrument(ThreadPoolExecutor(1)) as pool:
        held = pool.submit(gate.wait, 10)  # the worker waits here until all three are queued
        futs = [pool.submit(time.sleep, 0.2) for _ in range(3)]
        gate.set()
        wait([held, *futs])
    tel.stop()
    spans = task_spans(tel.run_dir)
    stamps = [times(spans[task_id_of(f)]) for f in futs]
    execs = [(t["TaskCompleted"] - t["TaskStarted"]) / 1e9 for t in stamps]
    waits = [(t["TaskStarted"] - t["TaskSubmitted"]) / 1e9 for t in stamps]
    # Execution is the sleep (sleep guarantees the floor; the ceiling leaves a loaded machine
    # a second of stalls). A start stamped at submit time fails the ordering below instead.
    assert all(0.19 < e < 1.2 for e in execs), execs
    # One worker, all three queued before the first starts: each waits in the queue until
    # the task before it ends, so the waits grow by one execution each. Stated with the
    # stamps rather than with wall-clock bounds, which a loaded machine breaks.
    for before, after, wait_s in zip(stamps[:-1], stamps[1:], waits[1:], strict=True):
        assert after["TaskSubmitted"] <= before["TaskCompleted"] <= after["TaskStarted"], stamps
        assert wait_s * 1e9 >= before["TaskCompleted"] - after["TaskSubmitted"], (waits, stamps)


def test_instrument_is_idempotent_and_reversible(tel, caplog_otelflow):
    ex = ThreadPoolExecutor(1)
    assert instrument(ex) is ex and is_instrumented(ex)
    instrument(ex)
    assert "already instrumented" in caplog_otelflow.text
    assert uninstrument(ex) is ex and not is_instrumented(ex)
    assert "submit" not in vars(ex)
    uninstrument(ex)
    assert "not instrumented" in caplog_otelflow.text
    fut = ex.submit(add, 1)
    assert fut.result() == 1 and task_id_of(fut) is None
    ex.shutdown()
    assert tel.stop()["tasks"]["created"] == 0


def test_without_telemetry_arguments_are_still_resolved(pool):
    up = pool.submit(add, 2)
    assert pool.submit(add, up, b=up).result() == 4
    assert task_id_of(up) is None


def test_shutdown_waits_for_tasks_held_on_upstreams(tel):
    pool = instrument(ThreadPoolExecutor(2))
    gate = threading.Event()
    up = pool.submit(gate.wait, 5)
    down = pool.submit(add, 1, depends_on=[up])
    threading.Timer(0.1, gate.set).start()
    pool.shutdown(wait=True)
    assert down.result(timeout=0) == 1


def test_executor_shut_down_under_a_held_task_fails_it(tel):
    pool = instrument(ThreadPoolExecutor(1))
    gate = threading.Event()
    up = pool.submit(gate.wait, 5)
    down = pool.submit(add, 1, depends_on=[up])
    pool.shutdown(wait=False)
    gate.set()
    with pytest.raises(RuntimeError, match="shutdown"):
        down.result(timeout=5)
    tel.stop()
    assert task_spans(tel.run_dir)[task_id_of(down)]["status"] == "failed"


def test_a_new_run_on_the_same_pool_records_there(tmp_path, pool):
    for i in range(2):
        t = otelflow.start_telemetry(checkpoint_path=str(tmp_path / str(i)), resource_poll_interval=0, environ={})
        pool.submit(add, i).result()
        assert t.stop()["tasks"]["completed"] == 1


class Payload:
    pass


_made: list[Any] = []


def produce(_prev: Any = None) -> Payload:
    p = Payload()
    _made.append(weakref.ref(p))
    return p


def test_a_long_chain_keeps_only_the_last_result_alive(tel, pool):
    _made.clear()
    gate = threading.Event()
    f = pool.submit(gate.wait, 5)
    for _ in range(100):
        f = pool.submit(produce, f)  # held until its upstream is done
    gate.set()
    f.result(timeout=10)
    gc.collect()
    assert len(_made) == 100
    assert sum(r() is not None for r in _made) == 1


# --- plain futures as arguments: the hand-off pattern ---------------------------------------------


def produce_into(out: Future, value: Any) -> str:
    out.set_result(value)
    return "set"


@pytest.mark.parametrize("with_telemetry", [False, True], ids=["no-telemetry", "telemetry"])
def test_a_plain_future_argument_is_passed_through_not_waited_for(tmp_path, with_telemetry):
    tel = (
        otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={})
        if with_telemetry
        else None
    )
    pool = instrument(ThreadPoolExecutor(2))
    try:
        fut: Future[Any] = Future()
        task = pool.submit(produce_into, fut, 42)
        assert fut.result(timeout=5) == 42  # the producer ran, with the future itself
        assert task.result(timeout=5) == "set"
        # One level deep, too; and an instrumented future next to it is still resolved.
        box: Future[Any] = Future()
        up = pool.submit(add, 1)
        assert pool.submit(lambda xs: (xs[0].set_result(xs[1]), "ok")[1], [box, up]).result(timeout=5) == "ok"
        assert box.result(timeout=5) == 1
    finally:
        done = threading.Event()
        threading.Thread(target=lambda: (pool.shutdown(wait=True), done.set()), daemon=True).start()
        assert done.wait(5), "shutdown(wait=True) hung"
        if tel is not None:
            assert tel.stop()["tasks"]["completed"] == 3


def test_a_plain_future_in_depends_on_is_waited_for(pool):
    gate: Future[Any] = Future()
    down = pool.submit(add, 1, depends_on=[gate])
    time.sleep(0.05)
    assert not down.done()
    gate.set_result(None)
    assert down.result(timeout=5) == 1


# --- cancel racing an upstream failure -------------------------------------------------------------


def test_cancel_while_an_upstream_failure_is_being_settled_does_not_hang_shutdown(tel, monkeypatch):
    from otelflow.integrations import futures as fx

    pool = instrument(ThreadPoolExecutor(2))
    up: Future[Any] = Future()
    down = pool.submit(add, 1, depends_on=[up])
    canceled: list[bool] = []
    real_short = fx._short

    def cancel_in_the_window(exc: BaseException) -> str:
        # Inside _upstream_problem: the task is settled, its future not yet. The caller
        # cancels it now, from another thread.
        t = threading.Thread(target=lambda: canceled.append(down.cancel()))
        t.start()
        t.join(5)
        return real_short(exc)

    monkeypatch.setattr(fx, "_short", cancel_in_the_window)
    callback_errors: list[str] = []
    handler = _ListHandler(callback_errors)
    cf_log = logging.getLogger("concurrent.futures")
    cf_log.addHandler(handler)
    try:
        up.set_exception(ValueError("boom"))
    finally:
        cf_log.removeHandler(handler)
    assert canceled == [True] and down.cancelled()  # the cancel landed: that is the outcome
    assert not callback_errors
    assert not pool._otelflow_instrumentation._held
    done = threading.Event()
    threading.Thread(target=lambda: (pool.shutdown(wait=True), done.set()), daemon=True).start()
    assert done.wait(5), "shutdown(wait=True) hung"
    tel.stop()
    assert task_spans(tel.run_dir)[task_id_of(down)]["status"] == "canceled"


def test_an_upstream_failure_settled_first_wins_over_a_late_cancel(tel, monkeypatch):
    from otelflow.tasks import TaskTracker

    pool = instrument(ThreadPoolExecutor(2))
    up: Future[Any] = Future()
    down = pool.submit(add, 1, depends_on=[up])
    canceled: list[bool] = []
    real_failed = TaskTracker.failed

    def cancel_after_the_claim(self, tid, *a, **k):
        if tid == task_id_of(down):
            t = threading.Thread(target=lambda: canceled.append(down.cancel()))
            t.start()
            t.join(5)
        return real_failed(self, tid, *a, **k)

    monkeypatch.setattr(TaskTracker, "failed", cancel_after_the_claim)
    up.set_exception(ValueError("boom"))
    assert canceled == [False]
    with pytest.raises(UpstreamFailedError):
        down.result(timeout=5)
    done = threading.Event()
    threading.Thread(target=lambda: (pool.shutdown(wait=True), done.set()), daemon=True).start()
    assert done.wait(5), "shutdown(wait=True) hung"
    tel.stop()
    assert task_spans(tel.run_dir)[task_id_of(down)]["status"] == "failed"


class _ListHandler(logging.Handler):
    def __init__(self, out: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out.append(record.getMessage())
