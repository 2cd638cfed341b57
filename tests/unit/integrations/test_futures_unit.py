"""The pieces of the executor instrumentation, without real pools."""

from __future__ import annotations

import functools
import pickle
import threading
from concurrent.futures import CancelledError, Executor, Future, ThreadPoolExecutor, wait
from typing import Any

import pytest

import otelflow
from otelflow.integrations import futures as fx
from otelflow.toolkit import Carrier, Measured, ScopeRef, outcome_of
from tests.conftest import read_lines


def done(value: Any = None, exc: BaseException | None = None) -> Future[Any]:
    f: Future[Any] = Future()
    if exc is not None:
        f.set_exception(exc)
    else:
        f.set_result(value)
    return f


def own(value: Any = None) -> Future[Any]:
    """A done future marked as an instrumented executor's (an implicit dependency)."""
    f = done(value)
    setattr(f, fx._OWN, True)
    return f


class InlineExecutor(Executor):
    """Runs each call at submit() in the calling thread: a non-pool Executor."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def submit(self, fn, /, *args, **kwargs):
        self.calls.append(fn)
        f: Future[Any] = Future()
        f.set_running_or_notify_cancel()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            f.set_exception(exc)
        return f


def add(a, b=0):
    return a + b


# --- argument scanning and resolution -------------------------------------------------------


def test_scan_finds_futures_one_level_deep_in_order():
    a, b, c, d = (own(i) for i in range(4))
    found = fx._scan((a, [1, b], (c,), {"k": d}, [[own(9)]]), {"x": a})
    assert found == [a, b, c, d, a]  # nested twice is not looked into; duplicates kept here
    assert fx._scan((1, "x", [2]), {"y": 3}) is None


def test_scan_and_resolve_leave_other_futures_alone():
    plain, mine = done(1), own(2)
    assert fx._scan((plain, [plain]), {"k": plain}) is None
    found = fx._scan((plain, [plain, mine]), {"k": plain})
    assert found == [mine]
    proxy = fx._ChainedFuture()
    assert fx._scan((proxy,), {}) == [proxy]
    args, kwargs = fx._resolve((plain, [plain, mine]), {"k": plain})
    assert args == (plain, [plain, 2]) and kwargs == {"k": plain}


def test_resolve_replaces_futures_and_keeps_container_types():
    a, b = own(1), own(2)
    args, kwargs = fx._resolve((a, [a, 3], (b,), {"k": b}, "s"), {"x": a, "y": [b]})
    assert args == (1, [1, 3], (2,), {"k": 2}, "s")
    assert kwargs == {"x": 1, "y": [2]}


def test_task_names():
    assert fx._task_name(add) == "add"
    assert fx._task_name(functools.partial(functools.partial(add, 1), 2)) == "add"
    assert fx._task_name(len) == "len"

    class Call:
        def __call__(self):
            pass

    assert fx._task_name(Call()) == "Call"
    assert fx._task_name(lambda: 0) == "test_task_names.<locals>.<lambda>"


def test_first_problem_reports_cancel_and_failure_in_argument_order():
    ok, bad = done(1), done(exc=KeyError("k"))
    canceled: Future[Any] = Future()
    canceled.cancel()
    assert fx._first_problem([ok, bad, canceled]) is bad
    assert fx._first_problem([canceled, bad]) is canceled
    assert fx._first_problem([ok, Future()]) is None


# --- the proxy future -------------------------------------------------------------------------


def test_chained_future_cancel_before_hand_over_wakes_waiters():
    p = fx._ChainedFuture()
    waiter = threading.Thread(target=wait, args=([p],))
    waiter.start()
    assert p.cancel() and p.cancelled()
    waiter.join(2)
    assert not waiter.is_alive()
    assert p._attach(lambda: pytest.fail("a canceled task must not be submitted")) is None
    with pytest.raises(CancelledError):
        p.result()


def test_chained_future_forwards_cancel_to_the_executor_future():
    p = fx._ChainedFuture()
    inner: Future[Any] = Future()
    assert p._attach(lambda: inner) is inner
    inner.add_done_callback(functools.partial(fx._copy_outcome, p))
    assert not p.running()
    assert p.cancel()
    assert inner.cancelled() and p.cancelled()


def test_chained_future_cannot_cancel_a_running_task():
    p = fx._ChainedFuture()
    inner: Future[Any] = Future()
    p._attach(lambda: inner)
    inner.set_running_or_notify_cancel()
    assert p.running() and not p.cancel()
    inner.add_done_callback(functools.partial(fx._copy_outcome, p))
    inner.set_result(7)
    assert p.result() == 7


def test_copy_outcome_copies_errors():
    p = fx._ChainedFuture()
    fx._copy_outcome(p, done(exc=OSError("disk")))
    with pytest.raises(OSError, match="disk"):
        p.result()


# --- the remote wrapper ------------------------------------------------------------------------


def test_the_measured_wrapper_returns_its_measurements_with_the_result():
    ret = Measured(add, "t-1", None)(2, b=3)
    out = ret.outcome
    assert ret.value == 5 and out.start_ns <= out.end_ns and out.ok


def test_the_measured_wrapper_attaches_its_measurements_to_the_exception():
    def fail():
        raise ValueError("x")

    with pytest.raises(ValueError) as info:
        Measured(fail, "t-1", None)()
    out = outcome_of(info.value)
    assert out is not None and out.start_ns <= out.end_ns and out.error_type == "ValueError"
    # It survives the pickling a process pool does.
    again = pickle.loads(pickle.dumps(info.value))
    assert outcome_of(again) == out


def test_the_measured_wrapper_and_its_carrier_pickle_small():
    cfg = Carrier(
        run_id="run-1", session_id="s-1", trace_id="ab" * 16, session_span_id="cd" * 8,
        runs_dir="/runs", service_name="svc", parent_pid=1, scope=ScopeRef(workflow_id="wf-1", block_id="blk-1"),
    )  # fmt: skip
    data = pickle.dumps(Measured(add, "t-1", cfg))
    back = pickle.loads(data)
    assert (back.task_id, back.carrier.scope.workflow_id, back.carrier.run_id, back.carrier.join) == (
        "t-1", "wf-1", "run-1", True,
    )  # fmt: skip
    assert len(data) < 600


def test_the_measured_wrapper_makes_the_task_span_current():
    from opentelemetry import trace

    from otelflow.toolkit import task_span_id

    seen = []
    cfg = Carrier(run_id="r", session_id="s", trace_id="ab" * 16, session_span_id="cd" * 8, parent_pid=-1, join=False)
    Measured(lambda: seen.append(trace.get_current_span().get_span_context()), "t", cfg)()
    assert seen[0].trace_id == int("ab" * 16, 16)
    assert f"{seen[0].span_id:016x}" == task_span_id("ab" * 16, "t")
    assert trace.get_current_span().get_span_context().span_id != seen[0].span_id  # detached after


def test_upstream_failed_error_pickles():
    err = fx.UpstreamFailedError("down did not run", "t-9")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == "down did not run" and back.upstream_task_id == "t-9"
    assert isinstance(back, otelflow.OtelflowError)


# --- instrument() on other executors -----------------------------------------------------------


def test_instrument_refuses_what_is_not_an_executor():
    with pytest.raises(TypeError, match=r"concurrent\.futures\.Executor"):
        fx.instrument(object())  # type: ignore[type-var]


def test_any_executor_gets_the_picklable_wrapper_and_is_recorded(tmp_path):
    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={})
    ex = fx.instrument(InlineExecutor())
    up = ex.submit(add, 1)
    down = ex.submit(add, up, b=up)
    assert down.result() == 2
    assert all(isinstance(c, Measured) for c in ex.calls)
    summary = tel.stop()
    assert summary["tasks"]["completed"] == 2
    assert summary["by_task_name"]["add"]["count"] == 2
    spans = read_lines(tel.run_dir, "span")
    backends = {s["attributes"].get("otelflow.task.backend") for s in spans if s["kind"] == "task"}
    assert backends == {"InlineExecutor"}
    # In the submitting process no worker session is started.
    assert not list(tel.run_dir.glob("worker-*.jsonl"))


def test_instrument_on_an_explicit_telemetry_and_backend(tmp_path):
    mine = otelflow.Telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={}).start()
    with fx.instrument(ThreadPoolExecutor(1), telemetry=mine, backend="mypool") as pool:
        assert pool.submit(add, 1).result() == 1
    s = mine.stop()
    assert s["tasks"]["completed"] == 1


def test_submit_failure_is_recorded_and_raised(tmp_path):
    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={})
    pool = fx.instrument(ThreadPoolExecutor(1))
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(add, 1)
    assert tel.stop()["tasks"]["failed"] == 1


def test_an_inline_executor_leaves_the_hosts_peak_rss_alone(tmp_path):
    import resource

    block = bytearray(128 * 1024 * 1024)
    block[::4096] = b"\1" * len(block[::4096])  # the application's own peak
    del block
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={})
    try:
        ex = fx.instrument(InlineExecutor())
        assert ex.submit(add, 1).result() == 1
    finally:
        tel.stop()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert after >= before  # a task run in the submitting process did not reset it
    # The host's high-water mark is not the task's: a task run in the submitting process
    # reports no peak RSS (thread CPU time instead), rather than a misleading number.
    peak = {s["attributes"].get("otelflow.task.peak_rss_bytes") for s in read_lines(tel.run_dir, "span")}
    assert peak == {None}
    cpu = {s["attributes"].get("otelflow.task.cpu_time_s") for s in read_lines(tel.run_dir, "span")} - {None}
    assert cpu, "the in-process task's thread CPU time is recorded"


# --- settling a proxy: cancel races ------------------------------------------------------------


def test_a_claimed_proxy_cannot_be_canceled():
    p = fx._ChainedFuture()
    assert p._claim() and not p._claim()
    assert not p.cancel() and not p.cancelled()
    p.set_exception(KeyError("k"))
    with pytest.raises(KeyError):
        p.result()


def test_a_canceled_proxy_cannot_be_claimed_and_cancel_here_is_idempotent():
    p = fx._ChainedFuture()
    assert p.cancel()
    assert not p._claim()
    p._cancel_here()  # already canceled: no error
    assert p.cancelled()
